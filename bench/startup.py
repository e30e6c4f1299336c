"""How long a ``daydream`` command takes to start: ``--help`` and ``status`` of a compiled demo
cohort, each run as a fresh process ``--runs`` times (wall seconds: min, median, max), with the
machine's load average before and after. The demo is compiled first into a data root of its own
(a copy of ``data/1_raw`` and the demo's spec), so the figures do not depend on what the repository's data holds.

    .venv/bin/python bench/startup.py [--runs 7] [--source DIR]

Each command runs as the ``daydream`` script does (``pipeline.cli.main``), from ``--source`` (this
checkout by default; e.g. ``git archive <commit> pipeline luigi.cfg`` unpacked elsewhere, to time
an older version with the same interpreter and packages).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
MAIN = "import sys; from pipeline.cli import main; sys.exit(main())"  # what .venv/bin/daydream runs


def timed(args: list[str], env: dict, runs: int, source: Path) -> dict:
    seconds = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run([str(PYTHON), "-c", MAIN, *args], env=env, cwd=source, stdout=subprocess.DEVNULL)
        if done.returncode > 1:  # 1: `status` of a cohort with work left
            raise SystemExit(f"daydream {' '.join(args)} exited {done.returncode}")
        seconds.append(time.perf_counter() - t0)
    return {"min_s": round(min(seconds), 3), "median_s": round(statistics.median(seconds), 3),
            "max_s": round(max(seconds), 3), "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--source", type=Path, default=REPO, help="the checkout whose pipeline/ is timed")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        shutil.copytree(REPO / "data" / "1_raw", root / "1_raw")
        shutil.copytree(REPO / "data" / "cohorts" / "demo" / "spec", root / "cohorts" / "demo" / "spec")
        env = dict(os.environ, DAYDREAM_DATA_ROOT=str(root))
        subprocess.run([str(PYTHON), "-c", MAIN, "compile", "demo", "--yes"], env=env, cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run([str(PYTHON), "-c", MAIN, "--help"], env=env, cwd=args.source, check=True,
                       stdout=subprocess.DEVNULL)  # its bytecode compiled before the first timed run
        load_before = os.getloadavg()
        out = {"source": str(args.source), "help": timed(["--help"], env, args.runs, args.source),
               "status": timed(["status", "demo"], env, args.runs, args.source)}
        out.update(load_before=[round(x, 2) for x in load_before],
                   load_after=[round(x, 2) for x in os.getloadavg()], cpus=os.cpu_count(), python=sys.version.split()[0])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
