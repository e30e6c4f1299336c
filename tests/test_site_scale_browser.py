"""A 10,000-evaluation site in headless Chromium, over the preview server and from files: every
table holds every row (filter, sort and page over all of them), a filter keystroke answers before
its event returns and draws one page of rows at most, no page is large, and a chart that shows a
subset says so. How long a keystroke takes is measured, not asserted: bench/reports_site.py times
it at 100,000 evaluations (bench/README.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline.reports import build_reports
from pipeline.sitegen import build_site, serve
from pipeline.ops.synthetic import make_synthetic_cohort
from test_site_browser import Watched, base_url, browser, deadline  # noqa: F401  (fixtures)

# One worker runs the whole module (`--dist loadgroup` in the Makefile), so the 10k site is built
# once, not once per worker that takes some of its tests.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("site-10k")]

N_ESSAYS = 1250   # × 2 evaluators × 2 rubrics × 2 replicates = 10,000 evaluations
PAGE_MB = 1.0     # no page of the 10k site above this (the 100k site: bench/README.md)
PAGE_ROWS = 100   # the tables' page (daydream.js)


@pytest.fixture(scope="module")
def big_site(tmp_path_factory):
    import os
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    on_shm = shm.is_dir() and os.access(shm, os.W_OK)   # the store fsyncs every file: tmpfs is ~5x faster
    root = Path(tempfile.mkdtemp(prefix="dd-big-", dir=shm)) if on_shm else tmp_path_factory.mktemp("big")
    paths = make_synthetic_cohort(root, "big", n_essays=N_ESSAYS)
    build_reports(paths, "big")
    build = build_site(paths, ["big"])
    server, url = serve(build)
    yield paths, build, url
    server.shutdown()
    server.server_close()
    if on_shm:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["http", "file"])
def where(request, big_site, browser):  # noqa: F811
    paths, build, url = big_site
    base = base_url(build, url, request.param)
    w = Watched(browser, base)
    yield w, base, paths
    w.close()
    assert not w.dialogs and not w.external
    assert not w.errors, f"console errors: {w.errors}"


def test_no_page_of_a_10k_site_is_large(big_site):
    paths, build, _ = big_site
    s = pd.read_csv(paths.reports_dir("big") / "scores.csv")
    assert len(s) == 10_000
    sizes = {p.relative_to(build).as_posix(): p.stat().st_size for p in build.rglob("*.html")}
    largest = max(sizes, key=sizes.get)
    assert sizes[largest] < PAGE_MB * 2**20, f"{largest}: {sizes[largest] / 2**20:.2f} MB"
    assert not any(re.fullmatch(r"cohorts/big/(matrix-\d+|essays/page-\d+)\.html", p) for p in sizes), "no pagination pages"


def _keystroke(w: Watched, selector: str, text: str) -> dict:
    """One keystroke into a filter box, seen from inside the page: the rows the tables drew for it,
    and whether `text` was on show when the event returned. Drawing one page, not every matching
    row, is what keeps a keystroke fast over 100,000 rows; a wall-clock bound here would fail on a
    loaded machine rather than on slow code."""
    return w.page.evaluate("""([sel, text]) => {
        const bodies = Array.from(document.querySelectorAll('table[data-table] tbody'));
        const seen = new MutationObserver(() => {});
        bodies.forEach(b => seen.observe(b, {childList: true}));
        const box = document.querySelector(sel);
        box.value = text;
        box.dispatchEvent(new Event('input', {bubbles: true}));
        const drawn = seen.takeRecords().reduce((n, r) =>
            n + Array.from(r.addedNodes).filter(x => x.nodeName === 'TR').length, 0);
        seen.disconnect();
        return {drawn, answered: bodies.some(b => b.textContent.includes(text))}; }""", [selector, text])


def _assert_one_keystroke_answers(w: Watched, selector: str, text: str) -> None:
    k = _keystroke(w, selector, text)
    assert k["answered"], f"{text!r} was not on show when the keystroke's event returned"
    assert 0 < k["drawn"] <= PAGE_ROWS, f"a keystroke drew {k['drawn']} rows"


def test_leaderboard_filters_sorts_and_pages_over_every_essay(where):
    w, base, paths = where
    lb = pd.read_csv(paths.reports_dir("big") / "leaderboard.csv", dtype={"rank": "Int64"})
    w.goto(base + "cohorts/big/leaderboard.html")
    table = w.page.locator('table[data-table="leaderboard"]')
    count = w.page.locator(".dd-filter-count").first
    assert count.inner_text() == f"{len(lb):,} rows", "every essay, not the first 500"
    assert table.locator("tbody tr").count() == 100, "shown a page at a time"
    # the worst-ranked essay is found by a keystroke, far past the first page
    last = lb.sort_values("rank").dropna(subset=["rank"]).iloc[-1]["essay_gen_id"]
    _assert_one_keystroke_answers(w, "input.dd-filter-text", last)
    assert table.locator("tbody tr").count() == 1 and last in table.locator("tbody tr").inner_text()
    # a select filter counts over all rows
    w.page.locator("input.dd-filter-text").first.fill("")
    select = w.page.locator('select[data-key="essay_llm_name"]')
    value = [o for o in select.locator("option").evaluate_all("os => os.map(o => o.value)") if o][0]
    select.select_option(value)
    from pipeline.sitegen.data import Names
    names = Names.load(paths)
    want = int((lb["essay_llm"].map(names.model) == value).sum())
    assert count.inner_text() == f"{want:,} of {len(lb):,} rows"
    # the CSV holds every filtered row, on every page
    with w.page.expect_download() as dl:
        w.page.locator("button", has_text="CSV of these rows").first.click()
    assert len(Path(dl.value.path()).read_text().strip().splitlines()) == want + 1
    # paging: the second page, kept in the URL
    w.page.locator("button.dd-page-next").first.click()
    assert "rows 101–200 of" in w.page.locator(".dd-page-where").first.inner_text()
    assert "leaderboard.page=2" in w.page.url
    second = table.locator("tbody tr").first.inner_text()
    w.page.reload()
    w.page.wait_for_load_state("load")
    assert w.page.locator('table[data-table="leaderboard"] tbody tr').first.inner_text() == second
    # sorting by mean: the best essay of all comes first
    w.page.locator("button", has_text="Clear").first.click()
    head = w.page.locator('table[data-table="leaderboard"] thead th[data-key="mean"]')
    head.click()
    col = w.page.locator('table[data-table="leaderboard"] thead th').all_inner_texts().index("mean")
    first = float(w.page.locator(f'table[data-table="leaderboard"] tbody tr >> nth=0 >> td >> nth={col}').inner_text())
    assert first == round(lb["mean"].max(), 2)


def test_matrix_holds_every_essay_and_links_each_evaluation(where):
    w, base, paths = where
    s = pd.read_csv(paths.reports_dir("big") / "scores.csv", dtype=str, keep_default_na=False)
    w.goto(base + "cohorts/big/matrix.html")
    n_essays = s["essay_gen_id"].nunique()
    assert w.page.locator(".dd-filter-count").first.inner_text() == f"{n_essays:,} rows"
    done = s[s["status"] == "done"]
    v = done.iloc[-1]   # an evaluation of an essay far down the matrix
    _assert_one_keystroke_answers(w, "input.dd-filter-text", v["essay_gen_id"])
    link = w.page.locator(f'table[data-table="matrix"] a[href$="#{v["evaluation_gen_id"]}"]')
    assert link.count() == 1
    assert link.get_attribute("href") == f"essays/{v['essay_gen_id']}.html#{v['evaluation_gen_id']}"
    assert re.fullmatch(r"replicate \d+: [\d.]+ on [\d.]+–[\d.]+", link.get_attribute("title"))
    assert "dd-heat-" in link.locator("xpath=..").get_attribute("class")
    link.click()
    w.page.wait_for_url(f"**/essays/{v['essay_gen_id']}.html#{v['evaluation_gen_id']}")


def test_essay_index_lists_every_essay_and_heatmap_says_it_is_a_subset(where):
    w, base, paths = where
    g = pd.read_csv(paths.reports_dir("big") / "generations.csv", dtype=str, keep_default_na=False)
    w.goto(base + "cohorts/big/essays/index.html")
    n = int((g["stage"] == "essay").sum())
    assert w.page.locator(".dd-filter-count").first.inner_text() == f"{n:,} rows"
    last = g[g["stage"] == "essay"].iloc[-1]["gen_id"]
    _assert_one_keystroke_answers(w, "input.dd-filter-text", last)
    assert last in w.page.locator('table[data-table="essays"] tbody').inner_text()
    w.goto(base + "cohorts/big/evaluators.html")
    assert "A subset: the 40 best and 40 worst" in w.page.content()
    title = w.page.locator("#chart-essay-evaluator").locator("xpath=preceding-sibling::p[1]").inner_text()
    assert title.startswith("The 40 best and 40 worst of")
    w.page.locator("#chart-essay-evaluator svg.main-svg").first.wait_for(state="attached", timeout=15000)
    labels = w.page.locator("#chart-essay-evaluator .ytick text").evaluate_all("ts => ts.map(t => t.textContent)")
    assert any("essays not shown" in t for t in labels), "the join between best and worst is marked"


def test_search_as_you_type_and_compare_on_a_10k_site(where):
    import test_site_browser as checks

    w, base, paths = where
    checks.check_search_as_you_type(w, base, paths, "big")
    checks.check_compare_any_essays(w, base, paths, "big")


def test_compare_one_combo_under_two_templates_on_a_10k_site(where):
    """From the leaderboard, the essays of one concept combo (found by filtering on its concepts,
    far past the first page), two of them under different essay templates picked and compared."""
    from pipeline.sitegen.data import Names

    w, base, paths = where
    lb = pd.read_csv(paths.reports_dir("big") / "leaderboard.csv", dtype=str, keep_default_na=False)
    a = lb[lb["rank"] != ""].iloc[-1]
    b = lb[(lb["combo_id"] == a["combo_id"]) & (lb["essay_template"] != a["essay_template"])
           & (lb["rank"] != "")].iloc[0]
    w.goto(base + "cohorts/big/leaderboard.html")
    box = w.page.locator("input.dd-filter-text").first
    box.fill(a["essay_gen_id"])
    heads = w.page.locator('table[data-table="leaderboard"] thead th').all_inner_texts()
    row = w.page.locator('table[data-table="leaderboard"] tbody tr').first
    concepts = row.locator("td").nth(heads.index("concepts")).inner_text()
    box.fill(concepts)
    n = int((lb["combo_id"] == a["combo_id"]).sum())
    assert w.page.locator(".dd-filter-count").first.inner_text() == f"{n:,} of {len(lb):,} rows"
    # picked right after typing: the box's change on losing focus (the click's mousedown) must not
    # redraw the rows under the click
    for e in (a, b):
        w.page.locator(f'table[data-table="leaderboard"] button.dd-pick[data-essay="{e["essay_gen_id"]}"]').click()
    w.page.locator("#dd-tray a.dd-tray-go").click()
    w.page.wait_for_url("**/cohorts/big/compare.html?e=*")
    assert w.page.url.split("?e=")[1].split(",") == [a["essay_gen_id"], b["essay_gen_id"]]
    cols = w.page.locator(".dd-compare-col")
    cols.nth(1).wait_for(timeout=15000)
    names = Names.load(paths)
    for i, e in enumerate((a, b)):
        text = cols.nth(i).inner_text()
        assert names.template("essay", e["essay_template"]) in text and concepts.split(" · ")[0] in text
    assert w.page.locator(".dd-word-diff").count() == 1

def test_failures_and_quality_tables_hold_every_row(where):
    w, base, paths = where
    g = pd.read_csv(paths.reports_dir("big") / "generations.csv", dtype=str, keep_default_na=False)
    issues = pd.read_csv(paths.reports_dir("big") / "issues.csv", dtype=str, keep_default_na=False)
    failed = g[g["status"] == "failed"]
    assert len(failed) > 200
    w.goto(base + "cohorts/big/failures.html")
    assert w.page.locator(".dd-filter-count").first.inner_text() == f"{len(failed):,} rows"
    last = failed.iloc[-1]["gen_id"]   # far past the first page
    _assert_one_keystroke_answers(w, "input.dd-filter-text", last)
    assert last in w.page.locator('table[data-table="failures"] tbody').inner_text()
    w.goto(base + "cohorts/big/quality.html")
    counts = w.page.locator(".dd-filter-count").all_inner_texts()
    assert f"{len(failed):,} rows" in counts and f"{len(issues):,} rows" in counts


def test_the_listed_defects_stay_fixed_on_a_10k_site(big_site):
    """Titled figures with the legend clear of the modebar, score_norm axes, normalised evaluator
    means, and every essay page's previous / next in the leaderboard's order (ties included)
    under its cohort."""
    import test_site_fixes as fixes

    paths, build, _ = big_site
    for check in (fixes.check_charts_titled, fixes.check_rubric_scatter_axes, fixes.check_evaluator_means,
                  fixes.check_essay_rank_order):
        check(paths, build, "big")


def test_charts_legend_clear_titled_export_integer_counts_404_on_a_10k_site(big_site, browser):  # noqa: F811
    """Over HTTP only (the 404 is the preview server's; the charts draw alike from files, as
    the demo's and the small site's tests check)."""
    import test_site_browser as checks

    _, _, url = big_site
    w = Watched(browser, url)
    try:
        checks.check_charts_legend_clear_titled_export_integer_counts(w, url, "big")
        assert not w.dialogs and not w.external and not w.errors, w.errors
    finally:
        w.close()


def test_live_run_view_of_a_10k_store(big_site, browser, monkeypatch):  # noqa: F811
    """`daydream preview`'s live view over the 10,000-evaluation store, part of it pending, failed,
    and in flight (claims planted on pending generations, as a run's workers hold them): progress per
    stage from the one classifier as the reports count it, every failure reason, the calls in
    flight by the runs' own claim rule, the spend so far; and the page catching up by itself."""
    import time as clock

    from pipeline.store import claims
    from pipeline.run import generation
    from pipeline.store import atomic_write_json, utc_stamp

    paths, build, _ = big_site
    monkeypatch.setenv("DAYDREAM_DATA_ROOT", str(paths.root))   # as `daydream preview` of this data root
    generation.forget_runtimes()
    g = pd.read_csv(paths.reports_dir("big") / "generations.csv", dtype=str, keep_default_na=False)
    spend = pd.read_csv(paths.reports_dir("big") / "spend.csv", dtype=str, keep_default_na=False)
    pending = g[g["status"] == "pending"]
    assert len(pending) >= 3
    planted = []
    for n, (_, r) in enumerate(pending.head(3).iterrows()):
        beat = utc_stamp() if n < 2 else "2026-01-01T00:00:00.000+00:00"   # the third: a stopped worker's
        f = paths.gen_dir(r["stage"], r["gen_id"]) / claims.CLAIM
        atomic_write_json(f, {"owner": f"elsewhere:{n}:r", "host": "elsewhere", "pid": n + 2, "run": "r",
                              "started_at": beat, "heartbeat_at": beat})
        planted.append(f)
    server, url = serve(build, live=paths)
    w = Watched(browser, url)
    try:
        done = int((g["status"] == "done").sum())
        t0 = clock.perf_counter()
        w.goto(url + "live.html")
        h2 = f"Cohort big: {done} of {len(g)} done, 2 calls in flight"
        w.page.wait_for_function("t => (document.querySelector('section.live-cohort h2') || {}).textContent === t",
                                 arg=h2, timeout=30000)
        shown_s = clock.perf_counter() - t0
        sec = w.page.locator('section.live-cohort[data-cohort="big"]')
        rows = sec.locator("table").first.evaluate("""t => Array.from(t.tBodies[0].rows).map(r =>
            Array.from(r.cells).map(c => c.textContent))""")
        heads = sec.locator("table").first.locator("thead th").all_inner_texts()
        col = {h: i for i, h in enumerate(heads)}
        for stage, sg in g.groupby("stage"):
            mine = [r for r in rows if r[0] == stage]
            for kind in ("done", "failed", "stale", "total"):
                want = len(sg) if kind == "total" else int((sg["status"] == kind).sum())
                assert sum(int(r[col[kind]]) for r in mine) == want, (stage, kind)
            # the reports' pending: waiting (in flight or not) or blocked behind a failed parent
            waiting = sum(int(r[col["pending"]]) + int(r[col["in flight"]]) + int(r[col["blocked"]]) for r in mine)
            assert waiting == int((sg["status"] == "pending").sum()), stage
        text = sec.inner_text()
        failures = sec.locator("table").nth(1).evaluate("""t => Array.from(t.tBodies[0].rows).map(r =>
            Array.from(r.cells).map(c => c.textContent))""")
        assert sum(int(r[3]) for r in failures) == int((g["status"] == "failed").sum())
        assert "no score found at the end of the response" in text and "truncated" in text
        total = spend[(spend["stage"] == "(all)") & (spend["llm_model_id"] == "(all)")].iloc[0]
        assert f"(all)\t(all)\t{total['calls']}\t" in text, "the spend so far, as the reports count it"
        # the claims end (their calls answered or given up): the page catches up by itself
        for f in planted:
            f.unlink()
        planted.clear()
        w.page.wait_for_function("t => document.querySelector('section.live-cohort h2').textContent === t",
                                 arg=h2.replace("2 calls", "0 calls"), timeout=30000)
        assert not w.errors, w.errors
        assert shown_s < 30
    finally:
        for f in planted:
            f.unlink(missing_ok=True)
        w.close()
        server.shutdown()
        server.server_close()
        generation.forget_runtimes()


# Last: it adds human ratings to the shared 10k store and rebuilds its reports and site.
def test_rate_blind_import_and_see_humans_beside_the_judges_on_a_10k_site(big_site, browser, tmp_path,  # noqa: F811
                                                                         monkeypatch):
    """The human ratings round trip on the 10,000-evaluation site: rate essays blind from files and
    over HTTP (each keeps its own ratings), export each CSV, `daydream ratings import` it, rebuild
    once, and find each rater beside the LLM judges: paired differences, agreement, the evaluators
    table, a score matrix column, the essay page, and the essay's leaderboard row counting the
    rating."""
    from pipeline import cli
    from pipeline.run import generation
    from test_site_ratings_browser import check_human_beside_judges, rate_and_export

    paths, build, url = big_site
    monkeypatch.setenv("DAYDREAM_DATA_ROOT", str(paths.root))
    generation.forget_runtimes()
    lb_before = pd.read_csv(paths.reports_dir("big") / "leaderboard.csv").set_index("essay_gen_id")
    rated = {}
    try:
        for scheme, scores in (("file", ("3", "7.5")), ("http", ("8",))):
            base = base_url(build, url, scheme)
            w = Watched(browser, base)
            try:
                rated[scheme] = rate_and_export(w, base, paths, "big", "novelty-v1", f"big-{scheme}", scores,
                                                tmp_path / f"{scheme}.csv")
                assert not w.errors, w.errors
            finally:
                w.close()
            assert cli.main(["ratings", "import", str(tmp_path / f"{scheme}.csv"), "--rater", f"big-{scheme}"]) == 0
        build_reports(paths, "big")
        build_site(paths, ["big"])
        lb = pd.read_csv(paths.reports_dir("big") / "leaderboard.csv").set_index("essay_gen_id")
        for scheme, rows in rated.items():
            base = base_url(build, url, scheme)
            eid = rows[0]["essay_gen_id"]
            w = Watched(browser, base)
            try:
                check_human_beside_judges(w, base, "big", f"big-{scheme}", eid)
                w.goto(base + "cohorts/big/agreement.html")
                assert f"human:big-{scheme}" in w.page.inner_text("div[role=main]")
                w.goto(base + "cohorts/big/leaderboard.html")
                w.page.locator("input.dd-filter-text").first.fill(eid)
                heads = w.page.locator('table[data-table="leaderboard"] thead th').all_inner_texts()
                cells = w.page.locator('table[data-table="leaderboard"] tbody tr').first.locator("td").all_inner_texts()
                n_rated = sum(r["essay_gen_id"] == eid for rs in rated.values() for r in rs)
                assert int(cells[heads.index("n evaluations")]) == lb_before.loc[eid, "n"] + n_rated == lb.loc[eid, "n"]
                assert not w.errors, w.errors
            finally:
                w.close()
            assert not w.dialogs and not w.external
    finally:
        generation.forget_runtimes()
