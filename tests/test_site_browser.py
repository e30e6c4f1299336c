"""The built report site in headless Chromium: every page kind loads cleanly, charts draw, links
resolve, hostile model output stays text, search works offline; and the workbench (search,
filters, score matrix, essay prompts, narrow screens), each over the preview server AND opened
from files (file://), as researchers open a site they were sent.

Needs the Debian ``chromium`` package at /usr/bin/chromium (CI installs it; never run
``playwright install``). Without it these tests fail, on purpose: a skipped browser test would
let a broken site pass. Screenshots of the main pages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pandas as pd
import pytest

from pipeline.sitegen import build_site, serve
from test_site import make_site_root

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("test_site_browser")]  # its module-scoped site built by one worker

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
COHORT_PAGES = ("index", "leaderboard", "factors", "evaluators", "rubrics", "agreement", "quality", "essays/index",
                "matrix", "failures")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    from pipeline.sitegen import render

    root = tmp_path_factory.mktemp("browser-site")
    paths = make_site_root(root, n_essays=20)
    with pytest.MonkeyPatch.context() as mp:
        # tables above 8 rows travel as data here, so every check below runs on both kinds
        # (the demo site's tables are small: HTML rows)
        mp.setattr(render, "INLINE_ROWS", 8)
        build = build_site(paths)
    server, url = serve(build)
    yield paths, build, url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install the Debian package `chromium` (apt-get install -y chromium); "
                    "browser tests never download a browser")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watched:
    """A page that records console errors, page errors and dialogs, and any request that left
    127.0.0.1 (the site must be fully offline)."""

    def __init__(self, browser, base: str):
        self.context = browser.new_context(viewport={"width": 1366, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.external: list[str] = []
        host = urlparse(base).netloc
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda r: urlparse(r.url).scheme in ("http", "https")
                     and urlparse(r.url).netloc != host and self.external.append(r.url))

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, url: str):
        resp = self.page.goto(url)
        if not url.startswith("file:"):   # a file has no HTTP status
            assert resp is not None and resp.status == 200, url
        self.page.wait_for_load_state("load")
        return resp

    def close(self):
        self.context.close()


@pytest.fixture
def watched(browser, site):
    w = Watched(browser, site[2])
    yield w
    w.close()
    assert not w.dialogs, f"a dialog fired: {w.dialogs}"
    assert not w.external, f"requests left 127.0.0.1: {w.external}"


def _essay_ids(paths, cohort):
    g = pd.read_csv(paths.reports_dir(cohort) / "generations.csv", dtype=str, keep_default_na=False)
    return g.loc[g["stage"] == "essay", "gen_id"].tolist()


def _page_kinds(paths) -> list[str]:
    kinds = ["index.html", "cross-cohort.html", "search.html?q=tidal"]
    kinds += [f"cohorts/alpha/{stem}.html" for stem in COHORT_PAGES]
    kinds.append(f"cohorts/alpha/essays/{_essay_ids(paths, 'alpha')[0]}.html")
    return kinds


def test_every_page_kind_loads_without_errors_and_draws_its_charts(site, watched):
    paths, _, url = site
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    n_charts = 0
    for rel in _page_kinds(paths):
        watched.goto(url + rel)
        charts = watched.page.locator("div.dd-chart")
        for i in range(charts.count()):
            charts.nth(i).locator("svg.main-svg").first.wait_for(state="attached", timeout=15000)
            n_charts += 1
        assert watched.page.locator(".dd-banner").count() >= 1 or rel.startswith("search"), rel
        name = rel.split("?")[0].replace("/", "_").replace(".html", "")
        if "essays_e_" in name:
            name = "cohorts_alpha_essay"
        watched.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        assert not watched.errors, f"{rel}: {watched.errors}"
    assert n_charts >= 10


def test_every_internal_link_resolves(site, watched):
    _, _, url = site
    seen: set[str] = set()
    queue = deque([url + "index.html"])
    checked: set[str] = set()
    while queue:
        page_url = queue.popleft()
        if page_url in seen:
            continue
        seen.add(page_url)
        watched.goto(page_url)
        hrefs = watched.page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
        anchors = watched.page.eval_on_selector_all("[id]", "els => els.map(e => e.id)")
        for href in hrefs:
            target, frag = urldefrag(href)
            if not target.startswith(url):
                pytest.fail(f"{page_url} links off-site to {href}")
            if frag and target == urldefrag(page_url)[0]:
                assert frag in anchors, f"{page_url}: anchor #{frag} does not exist"
            if target in checked:
                continue
            checked.add(target)
            resp = watched.context.request.get(target)
            assert resp.status == 200, f"{page_url} links to {target}: HTTP {resp.status}"
            if target.endswith(".html") and target not in seen:
                queue.append(target)
        assert not watched.errors, f"{page_url}: {watched.errors}"
    assert len(seen) > 40, "the crawl should reach every cohort page and essay"


def test_hostile_essay_shows_markup_as_text(site, watched):
    paths, build, url = site
    hostile = next(e for e in _essay_ids(paths, "alpha")
                   if "not_jinja" in (build / "cohorts" / "alpha" / "essays" / f"{e}.html").read_text())
    watched.goto(f"{url}cohorts/alpha/essays/{hostile}.html")
    text = watched.page.inner_text("div[role=main]")
    assert "<script>alert(1)</script>" in text
    assert "<img src=x onerror=alert(2)>" in text
    assert "# Not a heading * not a list _ not emphasis [x](javascript:alert(1))" in text
    assert "{{ not_jinja }} {% raw %} </pre></textarea></code> &amp; &lt;b&gt;" in text
    assert watched.page.locator("div.dd-output script, div.dd-output img, div.dd-output a").count() == 0
    watched.page.wait_for_timeout(300)
    assert not watched.dialogs
    watched.page.locator(".dd-eval").first.screenshot(path=str(SCREENSHOTS / "hostile_evaluation.png"))


def test_search_finds_a_known_word_offline(site, watched):
    _, _, url = site
    watched.goto(url + "cohorts/alpha/index.html")
    box = watched.page.locator("input[name=q]").first
    box.fill("tidal")
    box.press("Enter")
    watched.page.wait_for_url("**/search.html?q=tidal*")
    results = watched.page.locator("#dd-search-results li")
    results.first.wait_for(timeout=15000)
    assert results.count() >= 1
    assert "tidal" in watched.page.inner_text("#dd-search-results").lower()
    watched.page.screenshot(path=str(SCREENSHOTS / "search.png"), full_page=True)
    assert not watched.errors, watched.errors


def test_leaderboard_sorts_by_a_column(site, watched):
    _, _, url = site
    watched.goto(url + "cohorts/alpha/leaderboard.html")
    table = watched.page.locator("table.dd-sortable").first
    header = table.locator("thead th", has_text="mean").first
    col = table.locator("thead th").all_inner_texts().index(header.inner_text())

    def column():
        cells = table.locator(f"tbody tr td:nth-child({col + 1})").all_inner_texts()
        return [float(c) for c in cells if c.strip()]

    header.click()   # a number column sorts best first on the first click
    assert column() == sorted(column(), reverse=True)
    header.click()
    assert column() == sorted(column())


# -- the workbench, over HTTP and from files -------------------------------------------------------
# Each check takes a Watched page and the site's base URL, so the demo site's tests
# (test_demo_site_browser.py) run the very same checks.

DEADLINE_S = 180


@pytest.fixture(autouse=True)
def deadline():
    """Fail a test that hangs (no pytest-timeout here): SIGALRM raises in the test's thread."""
    import signal

    def expire(*_):
        raise TimeoutError(f"test ran over its {DEADLINE_S} s deadline")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(DEADLINE_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def base_url(build: Path, http_url: str, scheme: str) -> str:
    return http_url if scheme == "http" else build.absolute().as_uri() + "/"


@pytest.fixture(params=["http", "file"])
def where(request, site, browser):
    """(Watched page, base URL) over the preview server or from files."""
    paths, build, url = site
    base = base_url(build, url, request.param)
    w = Watched(browser, base)
    yield w, base, paths
    w.close()
    assert not w.dialogs, f"a dialog fired: {w.dialogs}"
    assert not w.external, f"requests left the site: {w.external}"
    assert not w.errors, f"console errors: {w.errors}"


_WORD = re.compile(r"[a-z]{5,}")


def reasoning_only_word(paths, cohort: str) -> tuple[str, set[str]]:
    """A word found in evaluators' reasoning and nowhere (not even inside a longer word) in any
    essay, draft, concept text or catalog file, with the essays whose evaluations use it (the
    rarest such word)."""
    scores = pd.read_csv(paths.reports_dir(cohort) / "scores.csv", dtype=str, keep_default_na=False)
    texts = [f.read_text(errors="replace").lower() for stage in ("draft", "essay")
             for f in (paths.gens / stage).glob("*/parsed.txt")]
    texts += [f.read_text(errors="replace").lower() for f in paths.raw.rglob("*") if f.is_file()]
    elsewhere = "\n".join(texts)
    found: dict[str, set[str]] = {}
    for _, r in scores.iterrows():
        raw = paths.gen_file("evaluation", r["evaluation_gen_id"], "raw.txt")
        if raw.is_file():
            for w in set(_WORD.findall(raw.read_text(errors="replace").lower())):
                found.setdefault(w, set()).add(r["essay_gen_id"])
    found = {w: e for w, e in found.items() if w not in elsewhere}
    assert found, "no word occurs only in reasoning"
    word = min(found, key=lambda w: (len(found[w]), w))
    return word, found[word]


def check_search_finds_reasoning(w: Watched, base: str, paths, cohort: str) -> None:
    word, essays = reasoning_only_word(paths, cohort)
    w.goto(base + "index.html")
    box = w.page.locator("input[name=q]").first
    box.fill(word)
    box.press("Enter")
    w.page.wait_for_url(f"**/search.html?q={word}*")
    results = w.page.locator("#dd-search-results li")
    results.first.wait_for(timeout=15000)
    hrefs = results.locator(".dd-result-head a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    found = {h.split("/")[-1].split(".html")[0] for h in hrefs if f"cohorts/{cohort}/essays/" in h}
    assert found & essays, f"searching {word!r} should find {essays}, found {hrefs}"
    hit = results.filter(has=w.page.locator(f'a[href*="essays/{sorted(found & essays)[0]}.html"]')).first
    assert "found in: evaluation" in hit.inner_text(), "the hit names the part it was found in"
    assert hit.locator(".dd-result-head a").get_attribute("href").split("#")[1].startswith("v_"), "and links to it"
    assert word in hit.locator("mark").first.inner_text().lower()
    assert f"cohort {cohort}" in hit.locator(".dd-tag").inner_text(), "results name their cohort"
    for snippet in results.locator(".dd-snippet").all_inner_texts():
        assert not snippet.lstrip("…").startswith("Simulated output"), "no result starts with the banner"
    # an evaluation's gen_id finds its essay
    scores = pd.read_csv(paths.reports_dir(cohort) / "scores.csv", dtype=str, keep_default_na=False)
    v = scores.iloc[len(scores) // 2]
    w.goto(base + f"search.html?q={v['evaluation_gen_id']}")
    link = w.page.locator("#dd-search-results li .dd-result-head a").first
    link.wait_for(timeout=15000)
    assert link.get_attribute("href") == f"cohorts/{cohort}/essays/{v['essay_gen_id']}.html#{v['evaluation_gen_id']}"
    link.click()
    w.page.wait_for_url(f"**/essays/{v['essay_gen_id']}.html#{v['evaluation_gen_id']}")


def _visible_rows(table) -> list:
    return table.locator("tbody tr:visible")


def check_filter_survives_reload(w: Watched, base: str, cohort: str) -> None:
    w.goto(base + f"cohorts/{cohort}/leaderboard.html")
    table = w.page.locator('table[data-table="leaderboard"]')
    total = table.locator("tbody tr").count()
    select = w.page.locator('select[data-key="essay_llm_name"]')
    options = [o for o in select.locator("option").evaluate_all("os => os.map(o => o.value)") if o]
    assert len(options) >= 2
    value = options[0]
    select.select_option(value)
    col = table.locator("thead th").all_inner_texts().index("essay_llm")
    shown = _visible_rows(table)
    n = shown.count()
    assert 0 < n < total, "the filter narrows the table"
    assert set(shown.locator(f"td:nth-child({col + 1})").all_inner_texts()) == {value}
    w.page.locator('input[data-key="mean.min"]').fill("0.3")
    w.page.locator('input[data-key="mean.min"]').dispatch_event("input")
    mcol = table.locator("thead th").all_inner_texts().index("mean")
    means = [float(x) for x in _visible_rows(table).locator(f"td:nth-child({mcol + 1})").all_inner_texts()]
    assert all(m >= 0.3 for m in means)
    n2 = _visible_rows(table).count()
    assert "leaderboard.essay_llm_name=" in w.page.url and "leaderboard.mean.min=0.3" in w.page.url
    # free text narrows further, and clearing it gives the rows back
    eid = _visible_rows(table).nth(0).locator('a[href*="essays/"]').first.inner_text()
    text = w.page.locator('input.dd-filter-text').first
    text.fill(eid)
    assert _visible_rows(table).count() == 1
    text.fill("")
    assert _visible_rows(table).count() == n2
    with w.page.expect_download() as dl:
        w.page.locator("button", has_text="CSV of these rows").first.click()
    lines = Path(dl.value.path()).read_text().strip().splitlines()
    assert len(lines) == n2 + 1, "the CSV holds the rows shown"
    w.page.reload()
    w.page.wait_for_load_state("load")
    table = w.page.locator('table[data-table="leaderboard"]')
    assert _visible_rows(table).count() == n2, "the filter survives a reload"
    assert w.page.locator('select[data-key="essay_llm_name"]').input_value() == value
    assert w.page.locator('input[data-key="mean.min"]').input_value() == "0.3"
    # an essay opened from the filtered view steps through that view
    first = _visible_rows(table).nth(0).locator('a[href*="essays/"]').first
    second = _visible_rows(table).nth(1).locator('a[href*="essays/"]').first.get_attribute("href") if n2 > 1 else None
    first.click()
    w.page.wait_for_load_state("load")
    seq = w.page.locator("#dd-seq")
    assert seq.is_visible() and f"1 of {n2}" in seq.inner_text()
    if second:
        assert w.page.locator("#dd-seq a.dd-seq-next").get_attribute("href").endswith(second.split("/")[-1])


def check_matrix_cell_opens_its_evaluation(w: Watched, base: str, cohort: str) -> None:
    w.goto(base + f"cohorts/{cohort}/matrix.html")
    cell = w.page.locator('table[data-table="matrix"] td.dd-heat a').first
    score, href = cell.inner_text(), cell.get_attribute("href")
    eid, vid = href[len("essays/"):].split(".html#")
    cell.click()
    w.page.wait_for_url(f"**/essays/{eid}.html#{vid}")
    target = w.page.locator(":target")
    assert target.get_attribute("id") == vid and "dd-eval" in target.get_attribute("class")
    assert target.locator(".dd-score").inner_text() == score
    # every link of the first rows names an evaluation on its essay's page (the page rebuilds most ids)
    w.goto(base + f"cohorts/{cohort}/matrix.html")
    hrefs = w.page.eval_on_selector_all('table[data-table="matrix"] td a[href*="#"]', "as => as.map(a => a.getAttribute('href'))")
    by_essay: dict[str, set] = {}
    for h in hrefs:
        page, frag = h.split("#")
        by_essay.setdefault(page, set()).add(frag)
    for page in list(by_essay)[:3]:
        w.goto(base + f"cohorts/{cohort}/{page}")
        ids = set(w.page.eval_on_selector_all(".dd-eval[id]", "es => es.map(e => e.id)"))
        assert by_essay[page] <= ids, f"{page}: {sorted(by_essay[page] - ids)}"
    # failures are shown as failures
    w.goto(base + f"cohorts/{cohort}/matrix.html")
    fails = w.page.locator("table[data-table=matrix] a.dd-fail")
    if fails.count():
        assert fails.first.inner_text().startswith("✗ ")
    # sorting by a matrix column orders the rows by that column's mean score, blanks last
    w.page.locator("table[data-table=matrix] thead th[data-key=m0]").click()   # best first
    keys = w.page.locator("table[data-table=matrix]").evaluate(
        "t => { const i = Array.from(t.tHead.rows[0].cells).findIndex(h => h.dataset.key === 'm0');"
        " return Array.from(t.tBodies[0].rows).map(r => r.cells[i].getAttribute('data-sort')); }")
    nums = [float(k) for k in keys if k]
    assert nums and nums == sorted(nums, reverse=True) and keys[: len(nums)] == [k for k in keys if k]


def check_essay_page_shows_prompts(w: Watched, base: str, paths, cohort: str) -> None:
    g = pd.read_csv(paths.reports_dir(cohort) / "generations.csv", dtype=str, keep_default_na=False)
    essay = g[(g["stage"] == "essay") & (g["mode"] == "llm") & (g["status"] == "done")].iloc[0]
    w.goto(base + f"cohorts/{cohort}/essays/{essay['gen_id']}.html")
    prompts = w.page.locator("details.dd-prompt")
    assert prompts.count() >= 2
    assert not prompts.first.locator(".dd-output").is_visible(), "prompts are folded by default"
    essay_prompt = w.page.locator("h2#essay ~ details.dd-prompt").first
    essay_prompt.locator("summary").click()
    shown = essay_prompt.locator(".dd-output").inner_text()
    on_disk = paths.gen_file("essay", essay["gen_id"], "prompt.txt").read_text()
    assert shown.split() == on_disk.split()
    assert "prompt +" in w.page.locator(".dd-usage").first.inner_text()
    assert w.page.locator("details.dd-rubric").count() >= 1


NARROW_PAGES = ("index.html", "cross-cohort.html", "search.html?q=essay", "cohorts/{c}/index.html",
                "cohorts/{c}/leaderboard.html", "cohorts/{c}/factors.html", "cohorts/{c}/evaluators.html",
                "cohorts/{c}/rubrics.html", "cohorts/{c}/agreement.html", "cohorts/{c}/essays/index.html",
                "cohorts/{c}/matrix.html", "cohorts/{c}/failures.html", "cohorts/{c}/quality.html",
                "cohorts/{c}/compare.html", "cohorts/{c}/rate.html")

_WIDE = """() => {
  const W = document.documentElement.clientWidth, out = [];
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    // the theme's menu drawer waits off-screen to the left until opened, and Plotly keeps a
    // measuring element far off-screen: neither is seen nor widens the page
    if (r.width === 0 || r.right <= W + 1 && (r.left >= -1 || r.right <= 0 || e.closest('.wy-nav-side'))) continue;
    const wrap = e.closest('.dd-table-wrap');
    if (wrap) {
      const wr = wrap.getBoundingClientRect();
      if (wr.right <= W + 1 && getComputedStyle(wrap).overflowX === 'auto') continue;
    }
    out.push(e.tagName + '.' + (e.getAttribute('class') || '') + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
  }
  return {overflow: document.documentElement.scrollWidth > W, wide: out.slice(0, 10)};
}"""


def check_pages_fit(w: Watched, base: str, paths, cohort: str) -> None:
    """At 400 px (and at 1400 px, where wide tables used to be cut) no element is wider than the
    viewport, except inside a table's own scrolling box."""
    essay = pd.read_csv(paths.reports_dir(cohort) / "generations.csv", dtype=str, keep_default_na=False)
    essay = essay.loc[essay["stage"] == "essay", "gen_id"].iloc[0]
    for width in (400, 1400):
        w.page.set_viewport_size({"width": width, "height": 800})
        for rel in NARROW_PAGES + (f"cohorts/{cohort}/essays/{essay}.html",):
            w.goto(base + rel.format(c=cohort))
            for chart in w.page.locator("div.dd-chart").all():
                chart.locator("svg.main-svg").first.wait_for(state="attached", timeout=15000)
            found = w.page.evaluate(_WIDE)
            assert not found["overflow"] and not found["wide"], f"{rel} at {width} px: {found}"


def check_sidebar_folds_other_cohorts(w: Watched, base: str, cohort: str, other: str) -> None:
    w.goto(base + f"cohorts/{cohort}/leaderboard.html")
    nav = w.page.locator(".wy-menu-vertical")
    assert nav.locator(f'a[href$="cohorts/{cohort}/matrix.html"], a[href="matrix.html"]').first.is_visible()
    hidden = nav.locator(f'a[href*="{other}/leaderboard.html"]')
    assert hidden.count() == 1 and not hidden.is_visible(), "another cohort's pages are folded"
    assert nav.get_by_text(other, exact=True).is_visible()


def check_heatmap_cell_click_opens_its_evaluation(w: Watched, base: str, cohort: str) -> None:
    w.goto(base + f"cohorts/{cohort}/evaluators.html")
    w.page.locator("#chart-essay-evaluator svg.main-svg").first.wait_for(state="attached", timeout=15000)
    w.page.wait_for_timeout(300)
    spot = w.page.evaluate("""() => {
      const gd = document.getElementById('chart-essay-evaluator'), fl = gd._fullLayout, tr = gd.data[0];
      const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
      for (let i = 0; i < tr.y.length; i++) for (let j = 0; j < tr.x.length; j++) if (tr.customdata[i][j])
        return {x: box.left + fl.xaxis.c2p(j), y: box.top + fl.yaxis.c2p(i), href: tr.customdata[i][j]};
      return null; }""")
    assert spot, "some heatmap cell links to an evaluation"
    w.page.mouse.move(spot["x"], spot["y"])
    w.page.wait_for_timeout(200)
    w.page.mouse.click(spot["x"], spot["y"])
    w.page.wait_for_url("**/" + spot["href"])
    # a row's label (the essay id) opens the essay
    w.goto(base + f"cohorts/{cohort}/evaluators.html")
    label = w.page.locator("#chart-essay-evaluator .ytick text[data-href]").first
    label.wait_for(state="attached", timeout=15000)
    href = label.get_attribute("data-href")
    assert href == f"essays/{label.text_content()}.html"
    label.click()
    w.page.wait_for_url("**/" + href)


def test_search_finds_a_word_only_in_reasoning(where):
    w, base, paths = where
    check_search_finds_reasoning(w, base, paths, "alpha")


def test_filter_narrows_a_table_and_survives_reload(where):
    w, base, _ = where
    check_filter_survives_reload(w, base, "alpha")


def test_matrix_cell_opens_its_evaluation(where):
    w, base, _ = where
    check_matrix_cell_opens_its_evaluation(w, base, "alpha")


def test_essay_page_shows_its_prompts(where):
    w, base, paths = where
    check_essay_page_shows_prompts(w, base, paths, "alpha")


def test_pages_fit_the_screen_at_400_and_1400px(where):
    w, base, paths = where
    check_pages_fit(w, base, paths, "alpha")


def test_sidebar_folds_other_cohorts(where):
    w, base, _ = where
    check_sidebar_folds_other_cohorts(w, base, "alpha", "beta")


def test_heatmap_cell_click_opens_its_evaluation(where):
    w, base, _ = where
    check_heatmap_cell_click_opens_its_evaluation(w, base, "alpha")


def check_charts_legend_clear_titled_export_integer_counts(w: Watched, base: str, cohort: str) -> None:
    """The modebar never covers a legend; count axes tick whole numbers; a chart's download
    carries its title; a missing page (over HTTP) is the site's 404 page."""
    w.goto(base + f"cohorts/{cohort}/factors.html")
    charts = w.page.locator("div.dd-chart")
    for i in range(charts.count()):
        charts.nth(i).locator("svg.main-svg").first.wait_for(state="attached", timeout=15000)
    overlaps = w.page.evaluate("""() => Array.from(document.querySelectorAll('div.dd-chart')).map(gd => {
        const leg = gd.querySelector('g.legend'), bar = gd.querySelector('.modebar');
        if (!leg || !bar) return null;
        const a = leg.getBoundingClientRect(), b = bar.getBoundingClientRect();
        return a.right > b.left && b.right > a.left && a.bottom > b.top && b.bottom > a.top; })""")
    assert any(o is not None for o in overlaps), "some chart has a legend"
    assert not any(overlaps), f"the modebar covers a legend: {overlaps}"
    node = w.page.locator("div.dd-chart").first
    title = w.page.evaluate("""() => { const gd = document.querySelector('div.dd-chart');
        return [daydream.exportFigure(gd).layout.title.text, gd.parentNode.querySelector('.dd-chart-title').textContent,
                gd.layout.title.text]; }""")
    assert title[0] and title[0] == title[1], "the exported figure carries the title shown above the chart"
    assert title[2] == "", "the plot itself does not draw it twice"
    node.hover()
    with w.page.expect_download() as dl:
        node.locator('.modebar-btn[data-title^="Download plot"]').click()
    assert dl.value.suggested_filename.endswith(".png")
    assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    w.goto(base + f"cohorts/{cohort}/index.html")
    hist = w.page.locator("#chart-score-histogram")
    hist.locator("svg.main-svg").first.wait_for(state="attached", timeout=15000)
    ticks = hist.locator(".yaxislayer-above .ytick text").evaluate_all("ts => ts.map(t => t.textContent)")
    assert ticks and all(re.fullmatch(r"[\d,]+", t) for t in ticks), f"count ticks: {ticks}"
    assert len(set(ticks)) == len(ticks)
    if base.startswith("http"):
        resp = w.page.goto(base + f"cohorts/{cohort}/essays/e_missing.html")
        assert resp.status == 404
        # the browser logs the 404 of the page itself: expected here, and only that
        assert [e for e in w.errors if "404" in e] == w.errors and len(w.errors) == 1, w.errors
        w.errors.clear()
        assert w.page.locator(".wy-nav-side").count() == 1, "the site's 404 page, with its navigation"
        w.page.locator(".wy-nav-side a", has_text="Search").first.click()
        w.page.wait_for_url("**/search.html")


def test_charts_legend_clear_titled_export_integer_counts_404(where):
    w, base, _ = where
    check_charts_legend_clear_titled_export_integer_counts(w, base, "alpha")


def check_search_as_you_type(w: Watched, base: str, paths, cohort: str) -> None:
    """Results follow the box without Enter, every word is highlighted, results carry scores."""
    lb = pd.read_csv(paths.reports_dir(cohort) / "leaderboard.csv", dtype=str, keep_default_na=False)
    eid = lb[lb["rank"] != ""].iloc[0]["essay_gen_id"]
    words = list(dict.fromkeys(_WORD.findall(paths.gen_file("essay", eid, "parsed.txt").read_text().lower())))
    a, b = words[0], words[-1]
    w.goto(base + "search.html")
    box = w.page.locator("#dd-search-q")
    box.press_sequentially(f"{a} {b}", delay=15)
    # the results of the whole query (a loaded machine may show those of "tidal m" first)
    w.page.wait_for_function("q => new URLSearchParams(location.search).get('q') === q", arg=f"{a} {b}", timeout=15000)
    w.page.locator("#dd-search-results li").first.wait_for(timeout=15000)
    # the essay, or (a large site showing its first 200 results) the best hit, which holds both words too
    hit = w.page.locator(f'#dd-search-results li:has(.dd-result-head a[href^="cohorts/{cohort}/essays/{eid}.html"])')
    if not hit.count():
        assert "(the first 200 shown)" in w.page.locator("#dd-search-status").inner_text()
        hit = w.page.locator("#dd-search-results li:has(.dd-result-score)")
    hit = hit.first
    marks = {m.lower() for m in hit.locator(".dd-snippet mark").all_inner_texts()}
    assert a in marks and b in marks, f"both words are highlighted: {marks}"
    assert re.search(r"rank \d+ of [\d,]+ · mean score_norm \d\.\d\d", hit.locator(".dd-result-score").inner_text())
    assert f"q={a}+{b}" in w.page.url or f"q={a}%20{b}" in w.page.url, "the query is in the URL"
    # a word of the reasoning: the hit names the evaluation and its score
    word, _ = reasoning_only_word(paths, cohort)
    box.fill(word)
    ev = w.page.locator("#dd-search-results li", has_text="found in: evaluation").first
    ev.wait_for(timeout=15000)
    assert re.search(r"score [\d.]+ on [\d.]+–[\d.]+|failed: ", ev.locator(".dd-part-score").inner_text())
    box.fill("")
    w.page.wait_for_function("document.querySelectorAll('#dd-search-results li').length === 0")


def test_search_as_you_type_highlights_every_word_with_scores(where):
    w, base, paths = where
    check_search_as_you_type(w, base, paths, "alpha")


def check_compare_any_essays(w: Watched, base: str, paths, cohort: str) -> None:
    """Pick essays on the leaderboard, an essay page and in search; compare them side by side
    (texts, word diff, every evaluator's score and reasoning, prompts, lineage) at a URL that
    shows the same comparison in a fresh browser."""
    s = pd.read_csv(paths.reports_dir(cohort) / "scores.csv", dtype=str, keep_default_na=False)
    w.goto(base + f"cohorts/{cohort}/leaderboard.html")
    picks = w.page.locator('table[data-table="leaderboard"] button.dd-pick')
    a, b = picks.nth(0).get_attribute("data-essay"), picks.nth(1).get_attribute("data-essay")
    picks.nth(0).click()
    picks.nth(1).click()
    assert picks.nth(0).get_attribute("aria-pressed") == "true"
    # a third from its own page
    third = [e for e in _essay_ids(paths, cohort) if e not in (a, b)][0]
    w.goto(base + f"cohorts/{cohort}/essays/{third}.html")
    w.page.locator("#essay-title button.dd-pick").click()
    go = w.page.locator("#dd-tray a.dd-tray-go")
    assert go.inner_text() == f"Compare 3 essays of {cohort} →"
    go.click()
    w.page.wait_for_url(f"**/cohorts/{cohort}/compare.html?e=*")
    assert w.page.url.split("?e=")[1].split(",") == [a, b, third]
    w.page.locator(".dd-compare-col").nth(2).wait_for(timeout=15000)
    url = w.page.url
    assert w.page.locator(".dd-compare-col h3 a").all_inner_texts() == [a, b, third]
    texts = w.page.locator(".dd-compare-text").all_inner_texts()
    for eid, shown in zip((a, b, third), texts):
        f = paths.gen_file("essay", eid, "parsed.txt")
        if f.is_file():
            assert shown.split() == f.read_text().split()
    assert w.page.locator(".dd-word-diff").count() == 2
    assert w.page.locator(".dd-word-diff ins, .dd-word-diff del").count() > 0
    # every evaluation of the three essays: its score, linked to its reasoning
    mine = s[s["essay_gen_id"].isin([a, b, third])]
    for _, v in mine.iterrows():
        cell = w.page.locator(f'table.dd-compare-scores a[href="essays/{v["essay_gen_id"]}.html#{v["evaluation_gen_id"]}"]')
        if v["status"] == "done" and v["score"]:
            assert cell.count() == 1 and cell.inner_text().startswith(str(float(v["score"])).rstrip("0").rstrip(".") + " on")
    n_keys = mine.groupby(["evaluation_template", "evaluation_llm", "evaluation_replicate"]).ngroups
    assert w.page.locator("table.dd-compare-scores tbody tr").count() == n_keys
    assert w.page.locator("#compare-reasoning ~ details.dd-compare-block").count() >= n_keys
    assert "concepts" in w.page.locator(".dd-compare-col").first.inner_text()
    prompts = w.page.locator("details.dd-compare-block", has_text="essay prompts")
    prompts.locator("summary").click()
    assert len(prompts.locator(".dd-output").first.inner_text()) > 20
    # the URL alone shows the same comparison (a fresh browser: no picks stored)
    other = Watched(w.page.context.browser, base)
    try:
        other.goto(url)
        other.page.locator(".dd-compare-col").nth(2).wait_for(timeout=15000)
        assert other.page.locator(".dd-compare-col h3 a").all_inner_texts() == [a, b, third]
        other.page.locator(".dd-compare-remove").nth(1).click()
        other.page.wait_for_url(f"**/compare.html?e={a}%2C{third}")
        other.page.locator(".dd-compare-col").nth(1).wait_for(timeout=15000)
        assert other.page.locator(".dd-compare-col").count() == 2
        assert not other.errors, other.errors
    finally:
        other.close()
    # the score matrix offers the same picks, shown as picked
    w.goto(base + f"cohorts/{cohort}/matrix.html")
    w.page.locator("input.dd-filter-text").first.fill(a)
    assert w.page.locator(f'table[data-table="matrix"] button.dd-pick[data-essay="{a}"]').get_attribute("aria-pressed") == "true"
    # search results pick too
    w.goto(base + f"search.html?q={b}")
    hit = w.page.locator(f'#dd-search-results .dd-result-head button.dd-pick[data-essay="{b}"]').first
    hit.wait_for(timeout=15000)
    assert hit.get_attribute("aria-pressed") == "true", "picked on another page, shown as picked here"
    w.page.locator("#dd-tray button", has_text="clear picks").click()
    assert hit.get_attribute("aria-pressed") == "false" and w.page.locator("#dd-tray").count() == 0


def test_compare_any_essays_side_by_side(where):
    w, base, paths = where
    check_compare_any_essays(w, base, paths, "alpha")
