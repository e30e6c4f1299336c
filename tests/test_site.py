"""The report site (pipeline.sitegen): pages, escaping, offline assets, banner. No browser here.

The site is built once per module from pipeline.ops.synthetic (two cohorts sharing essays; cohort
``alpha`` carries hostile model output) with hostile catalog names and a hostile issue added, so
every page kind is checked against text that would break naive rendering.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from pipeline.errors import DaydreamError
from pipeline.reports import build_cross_cohort, build_reports, write_table
from pipeline.sitegen import build_site, figures, serve
from pipeline.store import DataPaths, atomic_write_json, atomic_write_text, read_json
from pipeline.ops.synthetic import make_synthetic_cohort

HOSTILE_NAME = '<script>alert("name")</script> **bold** # hash [x](javascript:alert(1)) {{ jinja }} </div>'
HOSTILE_DETAIL = "first line </div></td>\n\n# heading\n\n**bold** <script>alert('issue')</script>\n\n    indented code"
COHORT_PAGES = ("index", "leaderboard", "factors", "evaluators", "rubrics", "agreement", "quality", "essays/index",
                "matrix", "failures")


def _set_catalog_value(paths: DataPaths, csv_name: str, key_col: str, key: str, col: str, value: str) -> None:
    path = paths.catalog_csv(csv_name)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[df[key_col] == key, col] = value
    atomic_write_text(path, df.to_csv(index=False, lineterminator="\n"))


def make_site_root(root: Path, *, n_essays: int = 20, hostile_names: bool = False) -> DataPaths:
    """Two synthetic cohorts (``alpha`` with hostile essay text, ``beta`` sharing some essays),
    their reports and the cross-cohort table. Shared with tests/test_site_browser.py."""
    paths = make_synthetic_cohort(root, "alpha", n_essays=n_essays)
    make_synthetic_cohort(root, "beta", n_essays=max(4, n_essays // 2), evaluators=("sim-alpha", "sim-gamma"),
                          seed=1, include_hostile=False)
    if hostile_names:
        _set_catalog_value(paths, "evaluation_templates.csv", "template_id", "novelty-v1", "template_name", HOSTILE_NAME)
        _set_catalog_value(paths, "llm_models.csv", "id", "sim-beta", "display_name", HOSTILE_NAME)
    for cohort in ("alpha", "beta"):
        build_reports(paths, cohort)
    build_cross_cohort(paths)
    if hostile_names:
        issues_csv = paths.reports_dir("alpha") / "issues.csv"
        issues = pd.read_csv(issues_csv, dtype=str, keep_default_na=False)
        extra = pd.DataFrame([{"stage": "essay", "gen_id": "e_hostile", "issue": "failed", "detail": HOSTILE_DETAIL}])
        write_table(issues_csv, pd.concat([issues, extra], ignore_index=True))
    return paths


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    paths = make_site_root(root, hostile_names=True)
    build = build_site(paths)
    return paths, build


def _html_files(build: Path) -> list[Path]:
    return sorted(build.rglob("*.html"))


def _essay_ids(paths: DataPaths, cohort: str) -> list[str]:
    g = pd.read_csv(paths.reports_dir(cohort) / "generations.csv", dtype=str, keep_default_na=False)
    return g.loc[g["stage"] == "essay", "gen_id"].tolist()


def _hostile_essay(paths: DataPaths, build: Path) -> Path:
    for eid in _essay_ids(paths, "alpha"):
        page = build / "cohorts" / "alpha" / "essays" / f"{eid}.html"
        if "not_jinja" in page.read_text():
            return page
    raise AssertionError("no essay page shows the hostile synthetic text")


# -- pages -----------------------------------------------------------------------------------


def test_every_page_kind_is_built(site):
    paths, build = site
    assert build == paths.site_dir / "build"
    for rel in ("index.html", "cross-cohort.html", "search.html", "404.html", "search/pages.js",
                "search/cohorts/alpha.js", "search/cohorts/beta.js", "data/cross_cohort.csv"):
        assert (build / rel).is_file(), rel
    for cohort in ("alpha", "beta"):
        for stem in COHORT_PAGES:
            assert (build / "cohorts" / cohort / f"{stem}.html").is_file(), (cohort, stem)
        essays = _essay_ids(paths, cohort)
        assert essays
        for eid in essays:
            assert (build / "cohorts" / cohort / "essays" / f"{eid}.html").is_file(), eid
        assert (build / "cohorts" / cohort / "data" / "leaderboard.csv").read_bytes() == \
            (paths.reports_dir(cohort) / "leaderboard.csv").read_bytes()
    assert not list(build.rglob("_essay*")), "essay shells must not be published"
    assert not list(build.rglob("*.md"))


def test_essay_page_shows_lineage_concepts_and_every_evaluation(site):
    paths, build = site
    scores = pd.read_csv(paths.reports_dir("alpha") / "scores.csv", dtype=str, keep_default_na=False)
    eid = scores.loc[scores["status"] == "done", "essay_gen_id"].iloc[0]
    html = (build / "cohorts" / "alpha" / "essays" / f"{eid}.html").read_text()
    mine = scores[scores["essay_gen_id"] == eid]
    assert mine["draft_gen_id"].iloc[0] in html and mine["combo_id"].iloc[0] in html
    for vid in mine["evaluation_gen_id"]:
        assert f'id="{vid}"' in html, "every evaluation has its own block"
    done = mine[mine["status"] == "done"].iloc[0]
    reasoning = paths.gen_file("evaluation", done["evaluation_gen_id"], "raw.txt").read_text()
    assert reasoning.splitlines()[0] in html, "the evaluator's full reasoning comes from raw.txt"
    assert "Simulated writer-1" in html or "Simulated writer-2" in html, "models show display names"
    assert "Tidal memory" in html or "Slow feedback" in html, "concepts show names"


def test_concepts_of_spec_defined_combos_come_from_the_manifest(tmp_path):
    """Combos a spec defines are not in combo_mappings.csv; the cohort manifest records them."""
    paths = make_site_root(tmp_path, n_essays=4)
    mappings = pd.read_csv(paths.catalog_csv("combo_mappings.csv"), dtype=str)
    manifest = read_json(paths.manifest_json("alpha"))
    manifest["combos"] = {cid: {"concept_ids": list(g["concept_id"]), "level": "paragraph", "k": len(g)}
                          for cid, g in mappings.groupby("combo_id")}
    atomic_write_json(paths.manifest_json("alpha"), manifest)
    atomic_write_text(paths.catalog_csv("combo_mappings.csv"), "combo_id,concept_id,description_level,k\n")
    build = build_site(paths, ["alpha"])
    html = (build / "cohorts" / "alpha" / "essays" / f"{_essay_ids(paths, 'alpha')[0]}.html").read_text()
    assert "Tidal memory" in html and "Coastal communities keep records" in html


def data_table(html: str, tid: str) -> tuple[list[str], list[list], dict]:
    """(header keys, decoded rows, the whole payload) of the data table ``tid`` of a page: string
    columns sent once per distinct value are expanded back."""
    heads = re.search(rf'<table [^>]*data-table="{tid}"[^>]*>\s*<thead><tr>(.*?)</tr>', html, re.S).group(1)
    keys = re.findall(r'<th data-key="([^"]+)"', heads)
    blob = json.loads(re.search(rf'<script type="application/json" id="dd-rows-{tid}">(.*?)</script>', html, re.S).group(1))
    rows = [[blob["d"][str(j)][v] if str(j) in blob["d"] and isinstance(v, int) else v for j, v in enumerate(r)]
            for r in blob["rows"]]
    return keys, rows, blob


def test_essay_index_holds_every_essay_on_one_page_as_data(tmp_path, monkeypatch):
    from pipeline.sitegen import render

    paths = make_site_root(tmp_path, n_essays=9)
    monkeypatch.setattr(render, "INLINE_ROWS", 4)
    build = build_site(paths, ["alpha"])
    essays_dir = build / "cohorts" / "alpha" / "essays"
    assert not list(essays_dir.glob("page-*.html")), "no pagination: the browser pages over the data"
    index = (essays_dir / "index.html").read_text()
    assert "<tbody>\n\n</tbody>" in index, "rows travel as data, not HTML"
    keys, rows, blob = data_table(index, "essays")
    col = keys.index("essay")
    before, after, code = blob["h"][str(col)]
    assert (before, after, code) == ("", ".html", 1), "links of one pattern send only their text"
    assert {r[col] for r in rows} == set(_essay_ids(paths, "alpha"))


def test_rebuild_leaves_no_stale_pages(tmp_path):
    paths = make_site_root(tmp_path, n_essays=6)
    build = build_site(paths)
    beta_essay = _essay_ids(paths, "beta")[0]
    assert (build / "cohorts" / "beta" / "essays" / f"{beta_essay}.html").is_file()
    stray = paths.site_dir / "docs" / "old-page.md"
    atomic_write_text(stray, "# left over\n")

    build = build_site(paths, ["alpha"])
    assert not (build / "cohorts" / "beta").exists()
    assert not (paths.site_dir / "docs" / "cohorts" / "beta").exists()
    assert not stray.exists() and not (build / "old-page.html").exists()
    assert "beta" not in (build / "index.html").read_text()
    assert not (paths.site_dir / "build.tmp").exists() and not (paths.site_dir / "build.old").exists()


def test_unknown_or_unreported_cohort_is_a_site_error(tmp_path):
    paths = make_site_root(tmp_path, n_essays=4)
    with pytest.raises(DaydreamError) as err:
        build_site(paths, ["nope"])
    assert err.value.code == "site" and "is missing" in str(err.value)
    with pytest.raises(DaydreamError) as err:
        build_site(paths, ["../alpha"])
    assert err.value.code == "unsafe_id"


def test_mkdocs_failure_is_a_site_error_and_keeps_the_old_site(tmp_path, monkeypatch):
    from pipeline.sitegen import build as sitebuild

    paths = make_site_root(tmp_path / "data", n_essays=4)
    good = build_site(paths)
    project = tmp_path / "project"
    atomic_write_text(project / "mkdocs.yml", "site_name: x\ntheme:\n  name: no-such-theme\n")
    monkeypatch.setattr(sitebuild, "SITE_PROJECT", project)
    with pytest.raises(DaydreamError) as err:
        build_site(paths)
    assert err.value.code == "site" and "mkdocs" in str(err.value)
    assert (good / "index.html").is_file(), "a failed build leaves the previous site in place"
    monkeypatch.setattr(sitebuild, "SITE_PROJECT", tmp_path / "nowhere")
    with pytest.raises(DaydreamError) as err:
        build_site(paths)
    assert err.value.code == "site" and "mkdocs.yml" in str(err.value)


def test_empty_data_root_builds_an_empty_site(tmp_path):
    build = build_site(DataPaths(tmp_path))
    assert "No cohort has reports yet" in (build / "index.html").read_text()


# -- escaping --------------------------------------------------------------------------------


def test_model_output_is_shown_as_literal_text(site):
    paths, build = site
    html = _hostile_essay(paths, build).read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "# Not a heading * not a list _ not emphasis [x](javascript:alert(1))" in html
    assert "{{ not_jinja }} {% raw %} &lt;/pre&gt;&lt;/textarea&gt;&lt;/code&gt; &amp;amp; &amp;lt;b&amp;gt;" in html
    assert "It quotes: &lt;script&gt;" in html, "evaluation reasoning is escaped too"


def test_no_page_contains_live_hostile_markup(site):
    _, build = site
    for page in _html_files(build):
        html = page.read_text()
        assert "<script>alert" not in html, page
        assert "<img src=x" not in html, page
        assert not re.search(r"""href\s*=\s*["']?\s*javascript:""", html, re.I), page
        assert "<strong>bold</strong>" not in html and "<h1>hash" not in html, page
        assert not re.search(r"<h\d[^>]*>\s*heading", html), page


def test_hostile_catalog_names_stay_text_in_tables_and_charts(site):
    _, build = site
    evaluators = (build / "cohorts" / "alpha" / "evaluators.html").read_text()
    assert "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt; **bold** # hash [x](javascript:alert(1)) {{ jinja }}" \
        in evaluators, "names in tables are escaped, and Markdown never sees them"
    charts = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', evaluators, re.S)
    assert charts
    assert any(HOSTILE_NAME in json.dumps(json.loads(c)) or "alert(\\\"name\\\")" in json.dumps(json.loads(c))
               for c in charts), "chart data keeps the name intact"
    for c in charts:
        assert "<" not in c and ">" not in c, "chart JSON cannot close its script element"
    quality = (build / "cohorts" / "alpha" / "quality.html").read_text()
    assert "first line &lt;/div&gt;&lt;/td&gt;" in quality and "**bold** &lt;script&gt;" in quality


def test_no_url_to_another_host_in_scripts_styles_or_links(site):
    _, build = site
    pattern = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
    for f in list(build.rglob("*.html")) + list(build.rglob("*.css")):
        text = f.read_text(errors="replace")
        assert not pattern.search(text), f
        assert not re.search(r"""@import\s+url\(\s*["']?https?://|url\(\s*["']?https?://""", text), f
    import plotly

    shipped = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert (build / "assets" / "plotly.min.js").read_bytes() == shipped.read_bytes()
    chart_pages = [p for p in _html_files(build) if 'class="dd-chart"' in p.read_text()]
    assert chart_pages
    for p in chart_pages:
        assert re.search(r'<script src="(\.\./)*assets/plotly\.min\.js"></script>', p.read_text()), p


def search_docs(build: Path, name: str) -> list[dict]:
    """The documents of one search index script (``window.DDSEARCH=(...).concat(<json>);``)."""
    text = (build / "search" / f"{name}.js").read_text()
    prefix = "window.DDSEARCH=(window.DDSEARCH||[]).concat("
    assert text.startswith(prefix) and text.endswith(");\n")
    return json.loads(text[len(prefix):-3])


def test_search_index_covers_pages_and_essays_without_placeholders(site):
    paths, build = site
    docs = search_docs(build, "pages") + search_docs(build, "cohorts/alpha") + search_docs(build, "cohorts/beta")
    locations = {d["u"] for d in docs}
    assert "cohorts/alpha/leaderboard.html" in locations and "index.html" in locations
    assert all(f"cohorts/alpha/essays/{e}.html" in locations for e in _essay_ids(paths, "alpha"))
    assert "search.html" not in locations, "the search page does not find itself"
    text = json.dumps(docs)
    assert "DDSLOT" not in text and "DDESSAY" not in text and "_essay.html" not in text
    for d in docs:
        assert d["u"].startswith("cohorts/") == bool(d["c"]), "a cohort's page names its cohort"
        for _, _, part, *_ in d["p"]:
            assert not part.startswith("Simulated output"), "the banner is not indexed"
    raw = (build / "search" / "cohorts" / "alpha.js").read_text()
    assert "</script" not in raw.lower() and "<script" not in raw.lower(), "index texts cannot close a script"


# -- simulator banner ------------------------------------------------------------------------


def test_banner_on_every_page_showing_simulated_output(site):
    _, build = site
    for page in _html_files(build):
        if page.name == "404.html":
            continue
        assert 'class="dd-banner"' in page.read_text(), page


def test_no_banner_for_real_output(tmp_path):
    paths = make_synthetic_cohort(tmp_path, "real", n_essays=4)
    for stage in ("draft", "essay", "evaluation"):
        for d in (paths.gens / stage).iterdir():
            for name in ("raw_metadata.json", "parsed_metadata.json"):
                meta = read_json(d / name)
                if meta is not None:
                    meta["simulated"] = False
                    if "provider" in meta and meta["provider"]:
                        meta["provider"] = "openai"
                    atomic_write_json(d / name, meta)
    df = pd.read_csv(paths.catalog_csv("llm_models.csv"), dtype=str, keep_default_na=False)
    df["provider"] = "openai"
    atomic_write_text(paths.catalog_csv("llm_models.csv"), df.to_csv(index=False, lineterminator="\n"))
    build_reports(paths, "real")
    build = build_site(paths)
    for page in _html_files(build):
        assert "dd-banner" not in page.read_text(), page


# -- figures and server ----------------------------------------------------------------------


def test_figure_builders_produce_valid_plotly_figures():
    figs = [
        figures.histogram({"a": [1, 2, None, float("nan")], "b": [3]}, title="t", x_title="x", bin_size=0.5),
        figures.heatmap([[0.1, None], [float("nan"), 1]], ["m1", "m2"], ["e1", "e2"], title="t", zmin=0, zmax=1,
                        hover=[["a", "b"], ["c", "d"]]),
        figures.bars(["l1", "l2"], {"s": [0.5, None]}, intervals={"s": ([0.4, 0.1], [0.6, float("nan")])},
                     hover={"s": ["a", "b"]}, title="t", y_title="y",
                     y_range=(0, 1)),
        figures.boxes({"g": [0.1, 0.2, "x"]}, title="t", y_title="y"),
        figures.scatter([0.1, 0.5], [0.2, None], ["e1", "e2"], title="t", x_title="x", y_title="y"),
    ]
    for fig in figs:
        go.Figure(fig)  # raises on any invalid property
        json.dumps(fig, allow_nan=False)


def test_serve_binds_loopback_only(site):
    _, build = site
    server, url = serve(build)
    try:
        assert server.server_address[0] == "127.0.0.1" and url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "cohorts/alpha/index.html") as resp:
            assert resp.status == 200 and b"Cohort alpha" in resp.read()
        with urllib.request.urlopen(url + "assets/daydream.js") as resp:
            assert resp.headers["Content-Type"].startswith("text/javascript")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(DaydreamError) as err:
        serve(build / "nowhere")
    assert err.value.code == "site"


def test_essays_scored_but_not_listed_by_the_cohort_get_pages(tmp_path):
    """A cohort may score existing essays without listing them (membership holds only the
    evaluations); those essays still get a page with their draft and texts."""
    paths = make_site_root(tmp_path, n_essays=4)
    rows = (paths.membership_csv("alpha")).read_text().splitlines()
    keep = [rows[0]] + [r for r in rows[1:] if r.startswith("evaluation,")]
    atomic_write_text(paths.membership_csv("gamma"), "\n".join(keep) + "\n")
    build_reports(paths, "gamma")
    build = build_site(paths, ["gamma"])
    for eid in _essay_ids(paths, "alpha"):
        html = (build / "cohorts" / "gamma" / "essays" / f"{eid}.html").read_text()
        assert "Tidal memory" in html
    leaderboard = (build / "cohorts" / "gamma" / "leaderboard.html").read_text()
    assert f'href="essays/{_essay_ids(paths, "alpha")[0]}.html"' in leaderboard


def _build_in_child(paths):
    import os

    try:
        build_site(paths)
    except BaseException:
        os._exit(1)
    os._exit(0)


def test_concurrent_builders_take_turns_and_swap_the_site_in(tmp_path):
    import multiprocessing
    import os

    paths = make_site_root(tmp_path, n_essays=4)
    first = build_site(paths)
    assert first.is_symlink() and (first / "index.html").is_file()
    ctx = multiprocessing.get_context("fork")  # fcntl locks are per process: builders in processes
    builders = [ctx.Process(target=_build_in_child, args=(paths,)) for _ in range(3)]
    for b in builders:
        b.start()
    seen_missing = 0
    while any(b.is_alive() for b in builders):  # a reader never finds the site gone mid-swap
        seen_missing += not (paths.site_dir / "build" / "index.html").is_file()
    for b in builders:
        b.join()
        assert b.exitcode == 0
    assert seen_missing == 0
    versions = sorted(p.name for p in paths.site_dir.glob("build*") if p.name != "build.lock")
    assert versions == ["build", os.readlink(paths.site_dir / "build")], versions
