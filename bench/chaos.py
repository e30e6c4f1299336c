"""Chaos benchmark: kill -9 at random moments of runs of one cohort (``daydream run`` or the
``luigi`` command, random ``--workers``, sometimes two at once) against the test server with
faults, then a clean run; checks that everything is done and nothing was paid twice.

    .venv/bin/python bench/chaos.py [--rounds 5] [--iterations 20] [--drafts 10] [--seed 1] [--root disk]

Each round is a fresh data root (``tests/datafactory.py``) and ``--iterations`` kills
(``tests/chaos.py``: what is checked and how). ``--root``: ``disk`` (default: the system's
temporary directory, on the machine's disk, where every commit waits for fsync) or ``tmpfs``
(/dev/shm). Prints one JSON object: per round the kills, requests, faults, successful calls
against the generations and the calls in flight at the kills, repeated calls, calls after done,
done generations found torn at a kill, and its problems (none when everything held). Exits 1
if any round has a problem.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--drafts", type=int, default=10, help="draft replicates (each: 1 + 1 + 8 LLM calls)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kill-after", default="0.5:4", help="seconds after the runs start: a kill at a uniform moment in MIN:MAX")
    ap.add_argument("--root", choices=("disk", "tmpfs"), default="disk", help="where the data roots live")
    args = ap.parse_args()

    from chaos import KEY_ENV, SPEC, run_chaos
    from conftest import server_cfg
    from datafactory import make_data_root, responder
    from llm_server import LLMServer

    rounds = []
    with _scratch(args.root) as (scratch, fs):
        for r in range(args.rounds):
            root = make_data_root(Path(scratch) / f"round{r}" / "data", spec=SPEC.format(drafts=args.drafts))
            with LLMServer() as server:
                server.responder = responder
                cfg = server_cfg(Path(scratch) / f"round{r}" / "chaos.cfg", server, {"chunk_size": 40}, timeout=5,
                                 max_attempts=3, backoff_base=0.05, backoff_max=0.2, api_key_env=KEY_ENV)
                result = run_chaos(root, cfg, server, iterations=args.iterations, seed=args.seed + r,
                                   kill_after=tuple(float(x) for x in args.kill_after.split(":")))
            c.log(f"round {r}: {result['seconds']} s, {result['successful_calls']} calls for "
                  f"{result['llm_generations']} generations (≤ {result['in_flight_at_kills']} in flight at kills), "
                  f"{len(result['problems'])} problems", *result["problems"][:5])
            rounds.append(result)
        fs_used = fs
    c.emit({"benchmark": "chaos", "machine": c.machine(), "data_root_fs": fs_used, "rounds": rounds,
            "problems": sum(len(r["problems"]) for r in rounds),
            "kills": sum(len(r["kills"]) for r in rounds),
            "repeated_calls": sum(r["repeated_calls"] for r in rounds),
            "torn": sum(r["torn"] for r in rounds),
            "calls_after_done": sum(r["calls_after_done"] for r in rounds)})
    return 1 if any(r["problems"] for r in rounds) else 0


@contextlib.contextmanager
def _scratch(where: str):
    if where == "tmpfs":
        with c.scratch_dir("daydream-chaos-") as found:
            yield found
        return
    path = Path(tempfile.mkdtemp(prefix="daydream-chaos-", dir=tempfile.gettempdir()))
    try:
        yield path, "disk"
    finally:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
