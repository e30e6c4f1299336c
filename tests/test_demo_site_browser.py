"""The demo cohort, run end to end through the CLI exactly as `make demo` does, then its site in
headless Chromium: every page kind loads, every chart draws, every internal link resolves; and
the workbench checks of test_site_browser.py, over the preview server and from files."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import deque
from urllib.parse import urldefrag

import pandas as pd
import pytest

from pipeline.sitegen import serve
import test_site_browser as checks
from test_site_browser import SCREENSHOTS, Watched, browser, deadline  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("test_demo_site_browser")]  # its module-scoped site built by one worker

PAGES = ("index", "leaderboard", "factors", "evaluators", "rubrics", "agreement", "quality", "essays/index", "matrix",
         "failures")


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory):
    import shutil

    from conftest import REPO

    root = tmp_path_factory.mktemp("demo") / "data"
    shutil.copytree(REPO / "data" / "1_raw", root / "1_raw")
    for spec in (REPO / "data" / "cohorts").glob("*/spec"):
        shutil.copytree(spec, root / "cohorts" / spec.parent.name / "spec")
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(root))
    for cohort in ("demo", "demo-rubrics"):  # as `make demo` does
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", cohort], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "report site:" in r.stdout and "daydream preview" in r.stdout
    build = root / "site" / "build"
    server, url = serve(build)
    yield root, url
    server.shutdown()
    server.server_close()


@pytest.fixture
def watched(browser, demo_site):  # noqa: F811
    w = Watched(browser, demo_site[1])
    yield w
    w.close()
    assert not w.dialogs and not w.external


def test_every_page_kind_of_the_demo_site(demo_site, watched):
    root, url = demo_site
    g = pd.read_csv(root / "cohorts" / "demo" / "reports" / "generations.csv", dtype=str)
    essay = g.loc[(g["stage"] == "essay") & (g["mode"] == "llm"), "gen_id"].iloc[0]
    pages = ["index.html", "cross-cohort.html"] + [f"cohorts/demo/{p}.html" for p in PAGES]
    pages.append(f"cohorts/demo/essays/{essay}.html")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    charts = 0
    for rel in pages:
        watched.goto(url + rel)
        divs = watched.page.locator("div.dd-chart")
        for i in range(divs.count()):
            divs.nth(i).locator("svg.main-svg").first.wait_for(state="attached", timeout=15000)
            charts += 1
        assert watched.page.locator(".dd-banner").count() >= 1, f"{rel}: simulator banner missing"
        assert not watched.errors, f"{rel}: {watched.errors}"
        name = "demo_" + ("essay" if "/essays/e_" in rel else rel.replace("/", "_").replace(".html", ""))
        watched.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    assert charts >= 10
    body = watched.page.inner_text("div[role=main]")
    assert essay in body and "Evaluations" in body
    watched.goto(url + "cross-cohort.html")
    shared = pd.read_csv(root / "reports" / "cross_cohort.csv", dtype=str)
    assert set(shared["cohort_id"]) == {"demo", "demo-rubrics"}
    assert shared["essay_gen_id"].iloc[0] in watched.page.inner_text("div[role=main]")


def test_every_internal_link_of_the_demo_site_resolves(demo_site, watched):
    _, url = demo_site
    queue, seen, checked = deque([url + "index.html"]), set(), set()
    while queue:
        page = queue.popleft()
        if page in seen:
            continue
        seen.add(page)
        watched.goto(page)
        for href in watched.page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            target = urldefrag(href)[0]
            assert target.startswith(url), f"{page} links off-site to {href}"
            if target in checked:
                continue
            checked.add(target)
            assert watched.context.request.get(target).status == 200, f"{page} → {target}"
            if target.endswith(".html"):
                queue.append(target)
        assert not watched.errors, f"{page}: {watched.errors}"
    assert len(seen) > 20


@pytest.fixture(params=["http", "file"])
def where(request, demo_site, browser):  # noqa: F811
    from pipeline.store import DataPaths

    root, url = demo_site
    base = checks.base_url(root / "site" / "build", url, request.param)
    w = Watched(browser, base)
    yield w, base, DataPaths(root)
    w.close()
    assert not w.dialogs and not w.external
    assert not w.errors, f"console errors: {w.errors}"


def test_demo_search_finds_a_word_only_in_reasoning(where):
    checks.check_search_finds_reasoning(*where, "demo")


def test_demo_filter_narrows_a_table_and_survives_reload(where):
    w, base, _ = where
    checks.check_filter_survives_reload(w, base, "demo")


def test_demo_matrix_cell_opens_its_evaluation(where):
    w, base, _ = where
    checks.check_matrix_cell_opens_its_evaluation(w, base, "demo")


def test_demo_essay_page_shows_its_prompts(where):
    checks.check_essay_page_shows_prompts(*where, "demo")


def test_demo_pages_fit_the_screen_at_400_and_1400px(where):
    checks.check_pages_fit(*where, "demo")


def test_demo_sidebar_folds_other_cohorts(where):
    w, base, _ = where
    checks.check_sidebar_folds_other_cohorts(w, base, "demo", "demo-rubrics")


def test_demo_charts_legend_clear_titled_export_integer_counts_404(where):
    w, base, _ = where
    checks.check_charts_legend_clear_titled_export_integer_counts(w, base, "demo")


def test_demo_search_as_you_type(where):
    checks.check_search_as_you_type(*where, "demo")


def test_demo_compare_any_essays(where):
    checks.check_compare_any_essays(*where, "demo")


def test_demo_human_ratings_round_trip(demo_site, browser, tmp_path, monkeypatch):  # noqa: F811
    """Rate demo essays blind from files and over HTTP, export, `daydream ratings import` each file,
    rebuild, and find each human rater beside the LLM judges. On a copy of the demo data, so the
    other tests of this module see the demo as `make demo` leaves it."""
    import shutil

    from pipeline import cli
    from pipeline.run import generation
    from pipeline.reports import build_reports
    from pipeline.sitegen import build_site
    from pipeline.store import DataPaths
    from test_site_ratings_browser import check_human_beside_judges, rate_and_export

    shutil.copytree(demo_site[0], tmp_path / "data")
    paths = DataPaths(tmp_path / "data")
    monkeypatch.setenv("DAYDREAM_DATA_ROOT", str(paths.root))
    generation.forget_runtimes()
    server, url = serve(paths.root / "site" / "build")
    bases = {s: checks.base_url(paths.root / "site" / "build", url, s) for s in ("file", "http")}
    try:
        rated = {}
        for scheme, scores in (("file", ("3", "7.5", "9")), ("http", ("2", "8"))):
            w = Watched(browser, bases[scheme])
            try:
                rated[scheme] = rate_and_export(w, bases[scheme], paths, "demo", "novelty-v1", f"demo-{scheme}",
                                                scores, tmp_path / f"{scheme}.csv")
                assert not w.errors, w.errors
            finally:
                w.close()
            assert cli.main(["ratings", "import", str(tmp_path / f"{scheme}.csv"), "--rater", f"demo-{scheme}"]) == 0
        build_reports(paths, "demo")
        build_site(paths, paths.compiled_cohorts())
        for scheme, rows in rated.items():
            w = Watched(browser, bases[scheme])
            try:
                check_human_beside_judges(w, bases[scheme], "demo", f"demo-{scheme}", rows[0]["essay_gen_id"])
                w.goto(bases[scheme] + "cohorts/demo/agreement.html")
                assert f"human:demo-{scheme}" in w.page.inner_text("div[role=main]")
            finally:
                w.close()
            assert not w.dialogs and not w.external
    finally:
        generation.forget_runtimes()
        server.shutdown()
        server.server_close()


def test_demo_live_run_view(demo_site, browser):  # noqa: F811
    """`daydream preview`'s live view of the demo's data root after `make demo`: each cohort's
    generations done as the reports count them, none in flight, its spend so far."""
    from pipeline.store import DataPaths

    root, _ = demo_site
    paths = DataPaths(root)
    server, url = serve(root / "site" / "build", live=paths)
    w = Watched(browser, url)
    try:
        w.goto(url + "live.html")
        for cohort in ("demo", "demo-rubrics"):
            g = pd.read_csv(paths.reports_dir(cohort) / "generations.csv", dtype=str, keep_default_na=False)
            done = int((g["status"] == "done").sum())
            h2 = w.page.locator(f'section.live-cohort[data-cohort="{cohort}"] h2')
            h2.wait_for(timeout=15000)
            assert h2.inner_text() == f"Cohort {cohort}: {done} of {len(g)} done, 0 calls in flight"
            sec = w.page.locator(f'section.live-cohort[data-cohort="{cohort}"]').inner_text()
            spend = pd.read_csv(paths.reports_dir(cohort) / "spend.csv", dtype=str, keep_default_na=False)
            total = spend[(spend["stage"] == "(all)") & (spend["llm_model_id"] == "(all)")].iloc[0]
            assert f"(all)\t(all)\t{total['calls']}\t" in sec
        assert not w.errors, w.errors
    finally:
        w.close()
        server.shutdown()
        server.server_close()
