"""Benchmark: re-running a finished 10,000-generation cohort (nothing to do).

    .venv/bin/python bench/noop.py [--generations 10000] [--workers 1] [--batch-size 32]

Runs a cohort of N LLM generations (N/4 drafts, N/4 essays, N/2 evaluations) to completion with
``pipeline.running.run_cohort`` (local scheduler, instant test server in a child process), reports
and site included. Then times two re-runs of the finished cohort:

* ``run_cohort``: what ``daydream run`` does: recompile (writes nothing), find ``RunCohort``
  complete (every generation, the reports and the site are current), print the status;
* ``drive``: the generations phase alone (every generation checked; none is handed to Luigi).

and counts the model requests each re-run made (must be 0; the benchmark fails otherwise).
Runs in ~90 s on 2 cores. Prints one JSON object; progress (and run_cohort's own output) on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402


class DriveTimer:
    """Time spent in ``pipeline.running.drive`` while installed (RunCohort.run looks it up per call)."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def __enter__(self):
        from pipeline import running

        self._original = running.drive

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            self.calls += 1
            try:
                return self._original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        running.drive = timed
        return self

    def __exit__(self, *exc):
        from pipeline import running

        running.drive = self._original


def run_cohort(workers: int) -> tuple[int, float, DriveTimer]:
    """``run_cohort`` with its stdout sent to stderr; returns (exit code, seconds, drive timer)."""
    from pipeline.running import run_cohort as run

    c.reset_state()
    with DriveTimer() as timer, contextlib.redirect_stdout(sys.stderr):
        t0 = time.perf_counter()
        code = run(c.COHORT, workers=workers, local_scheduler=True)
        seconds = time.perf_counter() - t0
    return code, seconds, timer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generations", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--chunk-size", type=int, default=500)
    args = ap.parse_args(argv)

    c.quiet_luigi()
    started = time.perf_counter()
    with c.scratch_dir() as (base, fs), c.ServerProcess(latency=0.0) as server:
        _, counts = c.sized_root(base, args.generations)
        c.configure(server.base_url, concurrency=args.concurrency, batch_size=args.batch_size,
                    chunk_size=args.chunk_size)

        c.log(f"first run: {counts['total']} generations, data root on {fs}")
        code, first_s, first_drive = run_cohort(args.workers)
        first_requests = server.stats()["requests"]
        if code != 0 or first_requests != counts["total"]:
            raise SystemExit(f"first run failed: exit {code}, {first_requests} model requests")

        c.log("re-run: run_cohort")
        server.reset()
        code, rerun_s, rerun_drive = run_cohort(args.workers)
        rerun_requests = server.stats()["requests"]
        if code != 0:
            raise SystemExit(f"re-run failed: exit {code}")

        c.log("re-run: drive only")
        server.reset()
        drive_s, result = c.drive_generations(args.workers)
        drive_requests = server.stats()["requests"]
        c.check_all_done(result, counts["total"])
        if rerun_requests or drive_requests:
            raise SystemExit(f"a no-op re-run called the model: {rerun_requests} + {drive_requests} requests")

    n = counts["total"]
    c.emit({
        "benchmark": "noop",
        "data_root_fs": fs,
        "generations": n, "per_stage": {k: v for k, v in counts.items() if k != "total"},
        "settings": {"workers": args.workers, "batch_size": args.batch_size, "concurrency": args.concurrency,
                     "chunk_size": args.chunk_size, "scheduler": "local", "server": "child process",
                     "server_tcp_nodelay": c.SERVER_TCP_NODELAY},
        "first_run": {"run_cohort_s": round(first_s, 2), "generations_s": round(first_drive.seconds, 2),
                      "other_s": round(first_s - first_drive.seconds, 2), "model_requests": first_requests},
        "rerun_run_cohort": {"seconds": round(rerun_s, 2), "drive_calls": rerun_drive.calls,
                             # 0 drive calls: RunCohort was found complete, so Luigi never ran it
                             "ms_per_generation": c.ms_per(rerun_s, n), "model_requests": rerun_requests},
        "rerun_drive": {"seconds": round(drive_s, 2), "ms_per_generation": c.ms_per(drive_s, n),
                        "model_requests": drive_requests},
        "total_s": round(time.perf_counter() - started, 1),
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
