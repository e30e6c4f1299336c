"""The built report site in headless Chromium: every page kind loads cleanly, charts draw, links
resolve, hostile model output stays text, search works offline.

Needs the Debian ``chromium`` package at /usr/bin/chromium (CI installs it; never run
``playwright install``). Without it these tests fail, on purpose: a skipped browser test would
let a broken site pass. Screenshots of the main pages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pandas as pd
import pytest

from pipeline.sitegen import build_site, serve
from test_site import make_site_root

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
COHORT_PAGES = ("index", "leaderboard", "factors", "evaluators", "rubrics", "agreement", "quality", "essays/index")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-site")
    paths = make_site_root(root, n_essays=20)
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
    results = watched.page.locator("#mkdocs-search-results article")
    results.first.wait_for(timeout=15000)
    assert results.count() >= 1
    assert "tidal" in watched.page.inner_text("#mkdocs-search-results").lower()
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

    header.click()
    assert column() == sorted(column())
    header.click()
    assert column() == sorted(column(), reverse=True)
