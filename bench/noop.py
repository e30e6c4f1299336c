"""Benchmark: re-running a finished 10,000-generation cohort (nothing to do).

    .venv/bin/python bench/noop.py [--generations 10000] [--workers 1] [--batch-size B] [--chunk-size K]

Runs a cohort of N LLM generations (N/4 drafts, N/4 essays, N/2 evaluations) to completion with
``pipeline.run.running.run_cohort`` (local scheduler, instant test server in a child process),
reports and site included. Then re-runs the finished cohort, timing each end to end and counting
the model requests it made (must be 0; the benchmark fails otherwise):

* ``run_cohort``: in this process, what ``daydream run`` does (recompile, which writes nothing;
  prepare providers; one ``luigi.build([RunCohort])``, found complete; the summary);
* ``daydream run``: the CLI as a subprocess (Python and import start-up included);
* ``luigi`` command: ``luigi --module pipeline.tasks RunCohort --cohort-id bench
  --local-scheduler --workers N`` as a subprocess, from the repository (its luigi.cfg) with the
  benchmark's settings layered on through LUIGI_CONFIG_PATH;
* ``build``: the bare ``luigi.build([RunCohort])`` in this process (no compile, no counts).

``import_s`` is the cost of a fresh ``python -c "import pipeline.tasks"`` (the part of a
subprocess re-run that is start-up, not checking). Runs in ~2 minutes on 2 cores. Prints one
JSON object; progress (and the commands' own output) on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402


def run_cohort(workers: int) -> tuple[int, float]:
    """``run_cohort`` with its stdout sent to stderr; returns (exit code, seconds)."""
    from pipeline.run.running import run_cohort as run

    c.reset_state()
    with contextlib.redirect_stdout(sys.stderr):
        t0 = time.perf_counter()
        code = run(c.COHORT, workers=workers, local_scheduler=True)
        seconds = time.perf_counter() - t0
    return code, seconds


def import_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import pipeline.tasks, pipeline.run.running"], cwd=c.REPO, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None, help="[daydream] batch_size (default: the pipeline's)")
    ap.add_argument("--chunk-size", type=int, default=None, help="[daydream] chunk_size (default: the pipeline's)")
    ap.add_argument("--concurrency", type=int, default=64)
    args = ap.parse_args(argv)

    c.quiet_luigi()
    started = time.perf_counter()
    with c.scratch_dir() as (base, fs), c.ServerProcess(latency=0.0) as server:
        root, counts = c.sized_root(base, args.generations)
        n = counts["total"]
        c.configure(server.base_url, concurrency=args.concurrency, batch_size=args.batch_size,
                    chunk_size=args.chunk_size)
        cfg = c.write_luigi_cfg(base / "bench.cfg", server.base_url, concurrency=args.concurrency,
                                batch_size=args.batch_size, chunk_size=args.chunk_size)

        c.log(f"first run: {n} generations, data root on {fs}")
        code, first_s = run_cohort(args.workers)
        first_requests = server.stats()["requests"]
        if code != 0 or first_requests != n:
            raise SystemExit(f"first run failed: exit {code}, {first_requests} model requests for {n}")
        c.check_all_done(n)

        reruns = {}
        c.log("re-run: run_cohort (in process)")
        server.reset()
        code, seconds = run_cohort(args.workers)
        reruns["run_cohort"] = {"seconds": seconds, "returncode": code}
        reruns["run_cohort"]["model_requests"] = server.stats()["requests"]

        for name, cmd in (("daydream_run", c.daydream_command(args.workers)),
                          ("luigi_command", c.luigi_command(args.workers))):
            c.log(f"re-run: {name}")
            server.reset()
            out = c.run_command(cmd, cfg, root)
            out["model_requests"] = server.stats()["requests"]
            if out["returncode"] != 0:
                c.log(out["stderr_tail"])
            reruns[name] = out

        c.log("re-run: bare luigi.build([RunCohort]) (in process)")
        server.reset()
        build = c.build_run_cohort(args.workers)
        reruns["build"] = {"seconds": build["seconds"], "returncode": 0 if build["status"] == "SUCCESS" else 1,
                           "status": build["status"], "model_requests": server.stats()["requests"]}
        c.check_all_done(n)
        imports = import_seconds()

    for name, r in reruns.items():
        r["seconds"] = round(r["seconds"], 2)
        r["ms_per_generation"] = c.ms_per(r["seconds"], n)
        if "cpu_s" in r:
            r["cpu_s"] = round(r["cpu_s"], 2)
        r.pop("stderr_tail", None) if r["returncode"] == 0 else None
    bad = {k: (r["returncode"], r["model_requests"]) for k, r in reruns.items() if r["returncode"] or r["model_requests"]}
    if bad:
        c.emit({"benchmark": "noop", "error": "a no-op re-run failed or called the model", "reruns": reruns})
        raise SystemExit(f"a no-op re-run failed or called the model: {bad}")
    c.emit({
        "benchmark": "noop",
        "data_root_fs": fs,
        "generations": n, "per_stage": {k: v for k, v in counts.items() if k != "total"},
        "settings": {"workers": args.workers, "batch_size": args.batch_size or "default",
                     "chunk_size": args.chunk_size or "default", "concurrency": args.concurrency,
                     "scheduler": "local", "server": "child process", "server_tcp_nodelay": c.SERVER_TCP_NODELAY},
        "first_run": {"run_cohort_s": round(first_s, 2), "ms_per_generation": c.ms_per(first_s, n),
                      "model_requests": first_requests},
        "reruns": reruns,
        "import_s": round(imports, 2),
        "total_s": round(time.perf_counter() - started, 1),
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
