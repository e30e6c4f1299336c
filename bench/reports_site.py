"""Benchmark: a synthetic store of N evaluations → report tables → report site.

    .venv/bin/python bench/reports_site.py [--evaluations 10000] [--root DIR] [--keep]

Prints one JSON object: the evaluations reported, the seconds to synthesise the store, build the
report tables and build the site, the number of HTML pages, the site's size, its largest page
and its largest search-index script (a separate file, loaded only by search.html).
The store goes on /dev/shm when writable (every file is fsynced: on a disk the synthetic step is
~5× slower); it is deleted afterwards unless --keep or --root is given. Runs in ~20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

from pipeline.reports import build_cross_cohort, build_reports  # noqa: E402
from pipeline.sitegen import build_site  # noqa: E402
from pipeline.synthetic import make_synthetic_cohort  # noqa: E402

EVALUATORS = ("sim-alpha", "sim-beta")
RUBRICS = (("novelty-v1", 0, 9), ("rigor-v1", 0, 10))
REPLICATES = 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluations", type=int, default=10_000)
    ap.add_argument("--root", type=Path, help="data root to use (kept afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data root")
    args = ap.parse_args(argv)

    per_essay = len(EVALUATORS) * len(RUBRICS) * REPLICATES
    n_essays = math.ceil(args.evaluations / per_essay)
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    root = args.root or Path(tempfile.mkdtemp(prefix="daydream-bench-", dir=base))
    try:
        t0 = time.perf_counter()
        paths = make_synthetic_cohort(root, "bench", n_essays=n_essays, evaluators=EVALUATORS, rubrics=RUBRICS,
                                      replicates=REPLICATES)
        t1 = time.perf_counter()
        out = build_reports(paths, "bench")
        build_cross_cohort(paths, {"bench": out["scores"]})
        t2 = time.perf_counter()
        built = Path(build_site(paths, ["bench"]))
        t3 = time.perf_counter()
        pages = [p for p in built.rglob("*.html")]
        largest = max(pages, key=lambda p: p.stat().st_size)
        index = max((built / "search").rglob("*.js"), key=lambda p: p.stat().st_size)  # loaded by search.html only
        c.emit({
            "benchmark": "reports_site", "data_root_fs": "tmpfs" if str(root).startswith("/dev/shm/") else "disk",
            "n_evaluations": len(out["scores"]), "n_essays": n_essays,
            "synth_s": round(t1 - t0, 2), "reports_s": round(t2 - t1, 2), "site_s": round(t3 - t2, 2),
            "pages": len(pages),
            "site_mb": round(sum(p.stat().st_size for p in built.rglob("*") if p.is_file()) / 2**20, 1),
            "largest_page": {"path": str(largest.relative_to(built)), "kb": round(largest.stat().st_size / 1024)},
            "largest_search_index": {"path": str(index.relative_to(built)), "kb": round(index.stat().st_size / 1024)},
            "root": str(root), "machine": c.machine(),
        })
    finally:
        if not (args.keep or args.root):
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
