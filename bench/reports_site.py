"""Benchmark: a synthetic store of N evaluations → report tables → report site.

    .venv/bin/python bench/reports_site.py [--evaluations 10000] [--root DIR] [--keep] [--browser] [--live]

Prints one JSON object: the evaluations reported, the seconds to synthesise the store, build the
report tables and build the site, the number of HTML pages, the site's size, its largest page
and its largest search-index script (a separate file, loaded only by search.html). With
``--browser``: the data tables' pages (leaderboard, score matrix, essay index) opened from files
in headless Chromium (/usr/bin/chromium): rows, time to load, and a filter keystroke's time
(median and worst of 20, measured in the page). With ``--live``: the live run view's ``live.json``
(``sitegen.live.live_status``, what ``daydream preview`` serves during a run) over the same store,
before the reports: its size and the seconds to compute it in a fresh process's runtime (cold) and
again (warm, the classifier's states cached while the files are unchanged), as the preview
server recomputes it at most every ``CACHE_S`` while a page polls. ``--live-only`` skips the
reports and the site.
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
from pipeline.ops.synthetic import make_synthetic_cohort  # noqa: E402

EVALUATORS = ("sim-alpha", "sim-beta")
RUBRICS = (("novelty-v1", 0, 9), ("rigor-v1", 0, 10))
REPLICATES = 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluations", type=int, default=10_000)
    ap.add_argument("--root", type=Path, help="data root to use (kept afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary data root")
    ap.add_argument("--browser", action="store_true", help="time the data tables in headless Chromium")
    ap.add_argument("--live", action="store_true", help="time the live run view's live.json over the store")
    ap.add_argument("--live-only", action="store_true", help="--live, without the reports and the site")
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
        live = _live(paths) if args.live or args.live_only else None
        if args.live_only:
            c.emit({"benchmark": "reports_site", "data_root_fs": "tmpfs" if str(root).startswith("/dev/shm/") else "disk",
                    "n_evaluations": n_essays * per_essay, "n_essays": n_essays, "synth_s": round(t1 - t0, 2),
                    "live": live, "root": str(root), "machine": c.machine()})
            return 0
        t1 = time.perf_counter()
        out = build_reports(paths, "bench")
        build_cross_cohort(paths, {"bench": out["scores"]})
        t2 = time.perf_counter()
        built = Path(build_site(paths, ["bench"]))
        t3 = time.perf_counter()
        pages = [p for p in built.rglob("*.html")]
        largest = max(pages, key=lambda p: p.stat().st_size)
        index = max((built / "search").rglob("*.js"), key=lambda p: p.stat().st_size)  # loaded by search.html only
        browser = _browser(built, "bench") if args.browser else None
        c.emit({
            "benchmark": "reports_site", "data_root_fs": "tmpfs" if str(root).startswith("/dev/shm/") else "disk",
            "n_evaluations": len(out["scores"]), "n_essays": n_essays,
            "synth_s": round(t1 - t0, 2), "reports_s": round(t2 - t1, 2), "site_s": round(t3 - t2, 2),
            "pages": len(pages),
            "site_mb": round(sum(p.stat().st_size for p in built.rglob("*") if p.is_file()) / 2**20, 1),
            "largest_page": {"path": str(largest.relative_to(built)), "kb": round(largest.stat().st_size / 1024)},
            "largest_search_index": {"path": str(index.relative_to(built)), "kb": round(index.stat().st_size / 1024)},
            "pages_kb": {rel: round((built / "cohorts" / "bench" / rel).stat().st_size / 1024)
                         for rel in ("leaderboard.html", "matrix.html", "essays/index.html", "rate.html", "compare.html")},
            **({"live": live} if live else {}),
            **({"browser": browser} if browser else {}),
            "root": str(root), "machine": c.machine(),
        })
    finally:
        if not (args.keep or args.root):
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _live(paths) -> dict:
    """live.json over the store: its size, and the seconds to compute it cold and warm."""
    import json

    from pipeline.run import generation
    from pipeline.sitegen.live import live_status

    os.environ["DAYDREAM_DATA_ROOT"] = str(paths.root)   # the one runtime reads this store's catalog
    generation.forget_runtimes()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        body = json.dumps(live_status(paths), default=str).encode()
        times.append(round(time.perf_counter() - t0, 2))
    st = json.loads(body)["cohorts"][0]
    return {"kb": round(len(body) / 1024, 1), "cold_s": times[0], "warm_s": times[1:],
            "generations": st["total"], "done": st["done"], "progress_rows": len(st["progress"]),
            "failure_reasons": len(st["failures"])}


_KEYS = """(text) => { const box = document.querySelector('input.dd-filter-text'), out = [];
  for (let i = 0; i < 20; i++) {
    box.value = text.slice(0, 2 + (i % (text.length - 1)));
    const t0 = performance.now(); box.dispatchEvent(new Event('input', {bubbles: true})); out.push(performance.now() - t0);
  }
  box.value = ''; box.dispatchEvent(new Event('input', {bubbles: true}));
  out.sort((a, b) => a - b);
  return {median_ms: +out[10].toFixed(1), max_ms: +out[19].toFixed(1),
          rows: document.querySelector('.dd-filter-count').textContent}; }"""


def _browser(built: Path, cohort: str) -> dict:
    """Each data table page from file://: load time, rows and filter keystroke times."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = b.new_context(viewport={"width": 1366, "height": 900}).new_page()
        for rel in ("leaderboard.html", "matrix.html", "essays/index.html"):
            path = built / "cohorts" / cohort / rel
            t0 = time.perf_counter()
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            page.locator(".dd-filter-count").first.wait_for()
            load_s = time.perf_counter() - t0
            eid = page.locator("table.dd-data tbody tr a").first.inner_text()
            out[rel] = {"kb": round(path.stat().st_size / 1024), "load_s": round(load_s, 2), **page.evaluate(_KEYS, eid)}
        b.close()
    return out


if __name__ == "__main__":
    raise SystemExit(main())
