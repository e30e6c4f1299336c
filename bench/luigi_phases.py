"""The ``luigi`` command with one probe, for ``cohort.py`` (not a benchmark itself).

    DAYDREAM_BENCH_PHASES=out.json python bench/luigi_phases.py --module pipeline.tasks RunCohort ...

Runs ``luigi.cmdline.luigi_run`` with the given arguments, which is all the ``luigi`` console
script does, after wrapping the report and site tasks' ``complete`` and ``run``: the first of
them to be called (the moment a run's generations are over: a fresh run asks nothing of them
before its last chunk has settled) writes to ``$DAYDREAM_BENCH_PHASES`` the wall clock and this
process's CPU seconds so far, its reaped children's and its running ones' (the executor's)
included (``main_cpu_s``: this process alone, Luigi's; ``children_cpu_s``: the rest;
``kernel_cpu_s``: the kernel's share of the whole, the store's writes on a disk). So a
run's CPU up to its reports is measured in the processes that spent it, with their start-up and
imports, and nothing of the reports' own.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402


def install(out: Path) -> None:
    from pipeline import tasks

    seen = []

    def probe() -> None:
        if not seen:
            seen.append(1)
            own = resource.getrusage(resource.RUSAGE_SELF)
            main = own.ru_utime + own.ru_stime
            user, kernel = c.cpu_split()
            # the process running Luigi apart from the executor's (and any other child's)
            out.write_text(json.dumps({"reports_start_at": time.time(), "cpu_s": user + kernel, "main_cpu_s": main,
                                       "children_cpu_s": user + kernel - main, "kernel_cpu_s": kernel}))

    for cls in (tasks.CohortReports, tasks.ReportSite):
        for name in ("complete", "run"):
            def wrapped(self, *args, _original=cls.__dict__[name], **kwargs):
                probe()
                return _original(self, *args, **kwargs)

            setattr(cls, name, wrapped)


def profile(prefix: str) -> None:
    """cProfile both processes (``$DAYDREAM_BENCH_PROFILE``: a path prefix; written at exit as
    ``<prefix>.luigi.prof`` and ``<prefix>.executor.prof``): for looking at, never for timing."""
    import atexit
    import cProfile

    from pipeline.run import executor

    main = cProfile.Profile()
    main.enable()
    atexit.register(lambda: (main.disable(), main.dump_stats(f"{prefix}.luigi.prof")))
    serve = executor._serve

    def profiled_serve(*args):
        main.disable()  # the fork's copy of the parent's profiler
        prof = cProfile.Profile()  # the loop's thread, where the generations run
        post_init = executor.Executor.__post_init__

        def profiled_post_init(ex):
            run = ex.loop.run_forever

            def profiled_run():
                prof.enable()
                run()

            ex.loop.run_forever = profiled_run
            post_init(ex)

        executor.Executor.__post_init__ = profiled_post_init
        try:
            serve(*args)
        finally:
            prof.dump_stats(f"{prefix}.executor.prof")

    executor._serve = profiled_serve


if __name__ == "__main__":
    if os.environ.get("DAYDREAM_BENCH_PROFILE"):
        profile(os.environ["DAYDREAM_BENCH_PROFILE"])
    install(Path(os.environ["DAYDREAM_BENCH_PHASES"]))
    from luigi.cmdline import luigi_run

    sys.argv[0] = "luigi"
    sys.exit(luigi_run())
