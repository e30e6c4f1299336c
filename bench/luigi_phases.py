"""The ``luigi`` command with one probe, for ``cohort.py`` (not a benchmark itself).

    DAYDREAM_BENCH_PHASES=out.json python bench/luigi_phases.py --module pipeline.tasks RunCohort ...

Runs ``luigi.cmdline.luigi_run`` with the given arguments, which is all the ``luigi`` console
script does, after wrapping the report and site tasks' ``complete`` and ``run``: the first of
them to be called (the moment a run's generations are over: a fresh run asks nothing of them
before its last chunk has settled) writes to ``$DAYDREAM_BENCH_PHASES`` the wall clock and this
process's CPU seconds so far, its reaped children's and its running ones' (the executor's)
included. So a run's CPU up to its reports is measured in the process that spent it, with its
start-up and imports, and nothing of the reports' own.
"""

from __future__ import annotations

import json
import os
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
            out.write_text(json.dumps({"reports_start_at": time.time(), "cpu_s": c.cpu_s()}))

    for cls in (tasks.CohortReports, tasks.ReportSite):
        for name in ("complete", "run"):
            def wrapped(self, *args, _original=cls.__dict__[name], **kwargs):
                probe()
                return _original(self, *args, **kwargs)

            setattr(cls, name, wrapped)


if __name__ == "__main__":
    install(Path(os.environ["DAYDREAM_BENCH_PHASES"]))
    from luigi.cmdline import luigi_run

    sys.argv[0] = "luigi"
    sys.exit(luigi_run())
