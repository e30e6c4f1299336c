"""Benchmark: a whole draft → essay → evaluation cohort through the ``luigi`` command, with the
data root on tmpfs and on a disk.

    .venv/bin/python bench/cohort.py [--generations 2880] [--latency 0.2] [--concurrency 64]
        [--workers 1] [--roots tmpfs,disk]

Each run is the user's command, ``luigi --module pipeline.tasks RunCohort --cohort-id bench
--local-scheduler --workers N``, in a fresh data root holding a cohort of about
``--generations`` model calls (per concept: one draft, one LLM essay, two evaluations, so three
quarters of the calls wait on a parent), against the test server in a child process answering
each request after ``--latency`` seconds. ``[llm.testsrv] concurrency`` = C.

Per data root:

* ``busy``: the share of the C call slots in use from the first request to the last answer
  (calls × latency / (C × that window));
* ``seconds``: the whole command (compile, every generation, reports and the site);
* ``cpu_ms_per_generation``: the command's CPU (it and its children) over the generations,
  reports and site included;
* ``data_root_fs``: where the root lived (``tmpfs``: /dev/shm; ``disk``: the system's temporary
  directory, on the machine's disk), where every store write is fsynced.

Prints one JSON object; progress on stderr.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

ROOTS = {"tmpfs": "/dev/shm", "disk": tempfile.gettempdir()}


def run_once(where: str, generations: int, latency: float, concurrency: int, workers: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix="daydream-bench-cohort-", dir=ROOTS[where]))
    try:
        root, counts = c.sized_root(base, generations)
        with c.ServerProcess(latency) as server:
            cfg = c.write_luigi_cfg(base / "bench.cfg", server.base_url, concurrency=concurrency)
            c.log(f"{where}: {counts['total']} generations, C = {concurrency}, workers = {workers}")
            out = c.run_command(c.luigi_command(workers), cfg, root)
            stats = server.stats()
        if out["returncode"] != 0:
            raise SystemExit(f"{where}: the command failed ({out['returncode']}):\n{out['stderr_tail']}")
        window = stats["last_response_at"] - stats["first_request_at"]
        return {"data_root_fs": where, "generations": counts["total"], "calls": stats["requests"],
                "max_concurrency_seen": stats["max_concurrency_seen"], "window_s": round(window, 2),
                "busy": round(stats["requests"] * latency / (concurrency * window), 3),
                "seconds": round(out["seconds"], 2),
                "cpu_ms_per_generation": round(1000 * out["cpu_s"] / counts["total"], 2)}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--generations", type=int, default=2880)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--roots", default="tmpfs,disk", help="comma-separated: tmpfs, disk")
    a = p.parse_args()
    runs = [run_once(w, a.generations, a.latency, a.concurrency, a.workers) for w in a.roots.split(",")]
    c.emit({"benchmark": "cohort", "machine": c.machine(), "latency_s": a.latency, "concurrency": a.concurrency,
            "workers": a.workers, "runs": runs})


if __name__ == "__main__":
    main()
