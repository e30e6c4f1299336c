"""The report site as a workbench, without a browser: search index, word diff, filters declared
on tables, score matrix, failures browser, essay pages (prompts, usage, rubrics, other cohorts),
downloads, heatmaps, navigation and 404. The browser half is in test_site_browser.py."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from pipeline.sitegen import build_site, diff, pages, render, search
from pipeline.sitegen.build import relative_404
from pipeline.store import read_json
from test_site import HOSTILE_NAME, _essay_ids, make_site_root, search_docs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    paths = make_site_root(tmp_path_factory.mktemp("workbench"), n_essays=12, hostile_names=True)
    return paths, build_site(paths)


def _scores(paths, cohort="alpha") -> pd.DataFrame:
    return pd.read_csv(paths.reports_dir(cohort) / "scores.csv", dtype=str, keep_default_na=False)


def _generations(paths, cohort="alpha") -> pd.DataFrame:
    return pd.read_csv(paths.reports_dir(cohort) / "generations.csv", dtype=str, keep_default_na=False)


# -- search -------------------------------------------------------------------------------------


def test_search_documents_hold_whole_texts_reasoning_ids_and_concepts(site):
    paths, build = site
    docs = {d["u"]: d for d in search_docs(build, "cohorts/alpha")}
    s = _scores(paths)
    v = s[s["status"] == "done"].iloc[-1]
    doc = docs[f"cohorts/alpha/essays/{v['essay_gen_id']}.html"]
    assert doc["c"] == "alpha" and doc["t"] == f"alpha: essay {v['essay_gen_id']}"
    parts = {p[0]: p for p in doc["p"]}
    essay_text = paths.gen_file("essay", v["essay_gen_id"], "parsed.txt").read_text()
    assert parts["essay"][2] == " ".join(essay_text.split()), "the whole essay, not an excerpt"
    assert " ".join(paths.gen_file("draft", v["draft_gen_id"], "parsed.txt").read_text().split()) == parts["draft"][2]
    reasoning = paths.gen_file("evaluation", v["evaluation_gen_id"], "raw.txt").read_text()
    assert " ".join(reasoning.split()) in parts[v["evaluation_gen_id"]][2], "the evaluator's whole reasoning"
    assert "by" in parts[v["evaluation_gen_id"]][1] and "replicate" in parts[v["evaluation_gen_id"]][1]
    for gid in s.loc[s["essay_gen_id"] == v["essay_gen_id"], "evaluation_gen_id"]:
        assert gid in parts["lineage"][2], "every evaluation id finds its essay"
    assert v["draft_gen_id"] in parts["lineage"][2] and v["combo_id"] in parts["lineage"][2]
    assert "Coastal communities keep records" in parts["concepts"][2] or "failures" in parts["concepts"][2], \
        "concept descriptions are searchable"


def test_search_page_loads_every_index_and_no_worker(site):
    _, build = site
    html = (build / "search.html").read_text()
    for src in ("search/pages.js", "search/cohorts/alpha.js", "search/cohorts/beta.js"):
        assert f'<script src="{src}"></script>' in html
    for page in build.rglob("*.html"):
        text = page.read_text()
        assert "search/main.js" not in text and "new Worker" not in text, page
    assert not (build / "search" / "worker.js").exists() and not (build / "search" / "lunr.js").exists()


def test_index_script_cannot_close_its_script_element():
    doc = search.essay_doc("c", {"gen_id": "e_1", "text": "</script><script>alert(1)</script> & x\u2028y",
                                 "template_name": "t", "model_name": "m"}, None, [], None)
    js = search.index_script([doc])
    assert "<" not in js and ">" not in js and "\u2028" not in js
    prefix = "window.DDSEARCH=(window.DDSEARCH||[]).concat("
    assert json.loads(js[len(prefix):-3])[0]["p"][0][2] == "</script><script>alert(1)</script> & x y"


def test_page_documents_are_prose_not_banner_or_tables():
    page = pages.Page("cohorts/x/leaderboard.md", "x: leaderboard", "Leaderboard",
                      [pages.Section("Ranked", render.Markup("<b>Means</b> of score_norm"),
                                     [render.table([render.Col("a")], [{"a": "tablecellword"}])])], True, lead="Lead.")
    doc = search.page_doc(page.path, page.title, page.heading, page.lead, page.sections)
    assert doc == {"u": "cohorts/x/leaderboard.html", "t": "x: leaderboard", "c": "x",
                   "p": [["", "Leaderboard", "Lead."], ["", "Ranked", "Means of score_norm"]]}


# -- word diff ----------------------------------------------------------------------------------


def test_word_diff_marks_a_revision_and_recognises_a_copy():
    draft = "Tidal memory meets edge repair.\n\nA small team could test it."
    essay = "Tidal memory meets careful edge repair.\n\nA small team could test it in a month."
    ops = diff.word_diff(draft, essay)
    assert [(op, a.strip(), b.strip()) for op, a, b in ops if op != "equal"] == \
        [("insert", "", "careful"), ("replace", "it.", "it in a month.")]
    assert "".join(a for _, a, _ in ops) == draft and "".join(b for _, _, b in ops) == essay
    assert 0.6 < diff.similarity(ops) < 1
    assert diff.similarity(diff.word_diff(draft, draft)) == 1.0
    assert diff.word_diff(draft, "Completely unrelated words about nothing else whatsoever here.") is None


def test_side_by_side_escapes_both_texts():
    html = str(diff.side_by_side("<script>alert(1)</script> same", "<img src=x> same", "a <b>", "b"))
    assert "<script>" not in html and "<img" not in html and "a &lt;b&gt;" in html
    assert "<del>" in html and "<ins>" in html


# -- tables: filters and downloads --------------------------------------------------------------


def test_filters_are_declared_by_column_kind():
    assert render.default_filter("essay_llm", "text") == "select"
    assert render.default_filter("evaluation_template", "text") == "select"
    assert render.default_filter("status", "text") == "select"
    assert render.default_filter("mean", "num") == "range"
    assert render.default_filter("score", "score") == "range"
    assert render.default_filter("concepts", "text") == ""
    assert render.default_filter("n", "int") == ""
    html = str(render.table([render.Col("essay_llm"), render.Col("mean", kind="num"), render.Col("concepts")],
                            [{"essay_llm": "m", "mean": 0.5, "concepts": "c"}], tid="lb", csv="data/x.csv"))
    assert 'data-table="lb"' in html and 'href="data/x.csv"' in html
    assert re.search(r'<th data-key="essay_llm"[^>]*data-filter="select"', html)
    assert re.search(r'<th data-key="mean"[^>]*data-filter="range"', html)
    assert not re.search(r'<th data-key="concepts"[^>]*data-filter', html)


def test_every_page_table_is_filterable_or_small_and_has_a_download(site):
    _, build = site
    for page in list((build / "cohorts" / "alpha").glob("*.html")) + [build / "cross-cohort.html"]:
        html = page.read_text()
        for m in re.finditer(r'<table class="([^"]+)"([^>]*)>', html):
            if "dd-sortable" in m.group(1):
                assert "data-table=" in m.group(2), (page.name, "a filter needs a stable name in the URL")
    cross = (build / "cross-cohort.html").read_text()
    assert 'href="data/cross_cohort.csv"' in cross, "the cross-cohort CSV is linked"
    assert 'href="data/long.csv"' in (build / "cohorts" / "alpha" / "index.html").read_text()


def test_long_table_has_one_row_per_evaluation_with_usage_and_unknown_cost(site):
    paths, build = site
    long = pd.read_csv(build / "cohorts" / "alpha" / "data" / "long.csv", dtype=str, keep_default_na=False)
    s, g = _scores(paths), _generations(paths)
    assert sorted(long["evaluation_gen_id"]) == sorted(s["evaluation_gen_id"])
    for col in ("essay_gen_id", "draft_template", "essay_llm", "evaluation_template", "score", "score_norm", "status",
                "prompt_tokens", "completion_tokens", "cost_usd", "concepts", "evaluation_llm_name"):
        assert col in long.columns, col
    gv = g[g["stage"] == "evaluation"].set_index("gen_id")
    for _, r in long.iterrows():
        assert r["cost_usd"] == gv.loc[r["evaluation_gen_id"], "cost_usd"], "unknown cost stays blank, never 0"
        assert r["prompt_tokens"] == gv.loc[r["evaluation_gen_id"], "prompt_tokens"]


# -- score matrix -------------------------------------------------------------------------------


def _matrix_links(html: str) -> list[tuple[str, str, str, str]]:
    """(essay, evaluation, class, text) of each link in a matrix cell."""
    return re.findall(r'<a (?:class="(dd-fail|dd-pending)" )?href="essays/(e_[a-z0-9]+)\.html#(v_[a-z0-9]+)"[^>]*>([^<]*)</a>',
                      html)


def test_matrix_links_every_evaluation_to_its_reasoning_and_shows_failures(site):
    paths, build = site
    html = (build / "cohorts" / "alpha" / "matrix.html").read_text()
    links = _matrix_links(html)
    s = _scores(paths).set_index("evaluation_gen_id")
    assert sorted(v for _, _, v, _ in links) == sorted(s.index), "every evaluation once"
    for cls, eid, vid, text in links:
        r = s.loc[vid]
        assert r["essay_gen_id"] == eid
        if r["status"] == "done":
            assert cls == "" and float(text) == float(r["score"])
        elif r["status"] == "failed":
            assert cls == "dd-fail" and text == f"✗ {r['error']}", "a failure is shown as a failure"
        else:
            assert cls == "dd-pending" and text == "pending"
        page = (build / "cohorts" / "alpha" / "essays" / f"{eid}.html").read_text()
        assert f'id="{vid}"' in page, "the link lands on that evaluation"
    assert "dd-fail" in html and "dd-heat dd-heat-" in html


def test_matrix_is_one_page_of_data_linking_every_evaluation(tmp_path, monkeypatch):
    from pipeline.ids import evaluation_gen_id
    from test_site import data_table

    paths = make_site_root(tmp_path, n_essays=9)
    monkeypatch.setattr(render, "INLINE_ROWS", 4)
    build = build_site(paths, ["alpha"])
    mdir = build / "cohorts" / "alpha"
    assert not list(mdir.glob("matrix-*.html"))
    keys, rows, blob = data_table((mdir / "matrix.html").read_text(), "matrix")
    s = _scores(paths)
    seen = {}
    shortened = 0
    for has_page, row in zip(blob["e"], rows):
        essay = row[keys.index("essay")] if has_page == 1 else has_page
        for j, (k, cell) in enumerate(zip(keys, row)):
            if k.startswith("m") and k[1:].isdigit() and cell and "m" in cell:
                for e in cell["m"]:
                    gid = e[0]
                    if gid == 0:   # rebuilt from the row's essay, the column and the replicate
                        model, rubric = blob["ev"][str(j)]
                        gid = evaluation_gen_id(essay, rubric, model, e[4] if e[3:4] in (["f"], ["p"]) else e[2])
                        shortened += 1
                    seen[gid] = essay
    assert sorted(seen) == sorted(s["evaluation_gen_id"]), "every evaluation is in the matrix's data"
    assert shortened > len(seen) / 2, "most ids travel as 0"
    want = dict(zip(s["evaluation_gen_id"], s["essay_gen_id"]))
    assert all(seen[g] in ("", want[g]) for g in seen), "each under its essay"


def test_heat_class_bounds():
    assert pages.heat_class(None) == "" and pages.heat_class(float("nan")) == ""
    assert pages.heat_class(0) == "dd-heat dd-heat-0"
    assert pages.heat_class(1) == "dd-heat dd-heat-9"
    assert pages.heat_class(0.61) == "dd-heat dd-heat-6"


# -- failures browser ---------------------------------------------------------------------------


def test_failures_page_lists_every_failure_with_reason_tail_and_files(site):
    paths, build = site
    g = _generations(paths)
    failed = g[g["status"] == "failed"]
    assert len(failed) >= 2
    html = (build / "cohorts" / "alpha" / "failures.html").read_text()
    for _, r in failed.iterrows():
        assert r["gen_id"] in html
        assert str(render.escape(r["error_detail"])) in html
        raw = paths.gen_file(r["stage"], r["gen_id"], "raw.txt")
        if raw.is_file():
            href = f"files/{r['stage']}/{r['gen_id']}/raw.txt"
            assert f'href="{href}"' in html
            assert (build / "cohorts" / "alpha" / href).read_bytes() == raw.read_bytes()
    assert 'class="dd-tail"' in html, "the end of a failed response is shown"
    parse = failed[failed["error"] == "parse_failure"].iloc[0]
    tail = read_json(paths.gen_file("evaluation", parse["gen_id"], "parsed_metadata.json"))["raw_tail_preview"]
    assert str(render.escape(tail.strip()))[:60] in html


# -- essay pages --------------------------------------------------------------------------------


def test_essay_page_shows_prompts_usage_rubric_text_and_other_cohorts(site):
    paths, build = site
    shared = sorted(set(_essay_ids(paths, "alpha")) & set(_essay_ids(paths, "beta")))
    assert shared, "the synthetic cohorts share essays"
    eid = shared[0]
    html = (build / "cohorts" / "alpha" / "essays" / f"{eid}.html").read_text()
    g = _generations(paths).set_index("gen_id")
    s = _scores(paths)
    mine = s[s["essay_gen_id"] == eid]
    draft = mine["draft_gen_id"].iloc[0]
    for stage, gid in [("draft", draft), ("essay", eid)] + [("evaluation", v) for v in mine["evaluation_gen_id"]]:
        prompt = paths.gen_file(stage, gid, "prompt.txt")
        if prompt.is_file():
            assert str(render.escape(prompt.read_text())) in html, (stage, gid)
    assert html.count('<details class="dd-prompt">') >= 2, "prompts are folded by default"
    assert " open" not in re.findall(r"<details[^>]*>", html)[0]
    tokens = g.loc[eid, "prompt_tokens"]
    assert f"{int(float(tokens)):,} prompt + " in html, "token counts per call"
    rubric = paths.raw / "templates" / "evaluation" / f"{mine['evaluation_template'].iloc[0]}.txt"
    if rubric.is_file():
        assert str(render.escape(rubric.read_text())) in html, "the rubric's text"
    assert f'href="../../beta/essays/{eid}.html"' in html, "the same essay in the other cohort"
    assert (build / "cohorts" / "beta" / "essays" / f"{eid}.html").is_file()
    assert 'id="compare-draft"' in html and "<ins>" in html, "draft → essay word diff"


def test_unknown_cost_is_unknown_not_zero(tmp_path):
    from pipeline.reports import build_reports
    from pipeline.store import atomic_write_json

    paths = make_site_root(tmp_path, n_essays=4)
    g = _generations(paths)
    eid = g.loc[(g["stage"] == "essay") & (g["mode"] == "llm") & (g["status"] == "done"), "gen_id"].iloc[0]
    meta_path = paths.gen_file("essay", eid, "raw_metadata.json")
    meta = read_json(meta_path)
    assert meta["cost_usd"] is not None
    atomic_write_json(meta_path, dict(meta, cost_usd=None))
    build_reports(paths, "alpha")
    cohort = build_site(paths, ["alpha"]) / "cohorts" / "alpha"
    html = (cohort / "essays" / f"{eid}.html").read_text()
    essay = html[html.index('<h2 id="essay">'):html.index('<h2 id="compare">')]
    assert "cost unknown" in essay and "$0.0000" not in essay
    # the overview's spend table: that call's stage and the cohort total are unknown, the known
    # parts stay in the reported / estimated columns, and the unknown call is counted
    overview = (cohort / "index.html").read_text()
    spend_table = overview[overview.index('data-table="spend"'):]
    spend_table = spend_table[:spend_table.index("</table>")]
    cells = [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
             for row in re.findall(r"<tr>(.*?)</tr>", spend_table, re.S)]
    rows = {(r[0], r[1]): r for r in cells if r}
    for key in (("essay", "all models"), ("all stages", "all models")):
        assert rows[key][5] == "unknown" and rows[key][-1] == "1", (key, rows[key])
    assert rows[("draft", "all models")][5].startswith("$"), "a stage whose costs are all known has a total"
    assert any(k[0] == "essay" and k[1] != "all models" for k in rows), "per-model rows too"
    assert (cohort / "data" / "spend.csv").exists()


# -- charts -------------------------------------------------------------------------------------


def _figures(html: str) -> dict[str, dict]:
    return {m.group(1): json.loads(m.group(2)) for m in
            re.finditer(r'<script type="application/json" id="chart-([^"]+)-data">(.*?)</script>', html, re.S)}


def test_heatmaps_write_values_round_hovers_and_link_each_cell(site):
    _, build = site
    cdir = build / "cohorts" / "alpha"
    figs = _figures((cdir / "evaluators.html").read_text())
    ee = figs["essay-evaluator"]["data"][0]
    assert ee["texttemplate"] == "%{z:.2f}", "cell values are written in the cells"
    hovers = [h for row in ee["text"] for h in row]
    assert all(not re.search(r"\d\.\d{3,}", h) for h in hovers), "hovers are rounded"
    assert all("n=" in h for h in hovers), "hovers give n"
    for row, links in zip(ee["y"], ee["customdata"]):
        for href in links:
            if href:
                page, frag = href.split("#")
                assert page == f"essays/{row}.html" and f'id="{frag}"' in (cdir / page).read_text()
    er = figs["evaluator-rubric"]["data"][0]
    assert all(re.search(r"\[\d\.\d\d, \d\.\d\d\], n=\d+ essays", h) for row in er["text"] for h in row), \
        "evaluator × rubric hovers carry the interval and n"
    assert all(h.startswith("matrix.html?matrix.sort=m") for row in er["customdata"] for h in row)
    html = (cdir / "evaluators.html").read_text()
    for key, fig in figs.items():
        title = fig["layout"]["title"]["text"]
        assert title, f"{key}: the figure keeps its title (an exported image is titled)"
        assert re.search(r'<p class="dd-chart-title">[^<]*</p>\s*<div class="dd-chart" id="chart-' + re.escape(key), html), \
            "and the page shows it as HTML above the chart"
        assert fig["layout"]["meta"]["titleMargin"] > fig["layout"]["margin"]["t"], "with room for it on export"
    factors = _figures((cdir / "factors.html").read_text())
    for key in ("pivot-draft", "pivot-essay", "pivot-draft-essay"):
        if key in factors:
            for href in (h for row in factors[key]["data"][0]["customdata"] for h in row):
                target = urlsplit(href)
                assert target.path == "leaderboard.html" and parse_qs(target.query)
    assert '<p class="dd-chart-title">' in (cdir / "factors.html").read_text()


# -- navigation and 404 -------------------------------------------------------------------------


def test_nav_groups_cohorts_and_lists_only_their_titles_at_the_top(site):
    _, build = site
    html = (build / "cohorts" / "alpha" / "leaderboard.html").read_text()
    nav = html[html.index('<div class="wy-menu wy-menu-vertical"'):html.index("</nav>")]
    assert re.search(r'<li class="toctree-l1 current">\s*<a class="reference internal current"[^>]*>alpha</a>', nav) or \
        re.search(r'toctree-l1 current"[^>]*>.*?>alpha<', nav, re.S)
    assert nav.count(">beta<") == 1
    assert 'class="caption-text">Cohorts<' in nav


def test_404_uses_relative_links(site):
    _, build = site
    html = (build / "404.html").read_text()
    assert not re.search(r"""(?:href|src)=["']/(?!/)""", html)
    assert 'href="index.html"' in html and 'src="assets/daydream.js"' in html
    assert relative_404('<a href="/x.html"><img src="/a.png"><a href="//host/">') == \
        '<a href="x.html"><img src="a.png"><a href="//host/">'


def test_hostile_names_stay_text_on_new_pages(site):
    _, build = site
    for name in ("matrix.html", "failures.html"):
        html = (build / "cohorts" / "alpha" / name).read_text()
        assert "<script>alert" not in html
        assert "&lt;script&gt;alert(&#34;name&#34;)" in html or "&lt;script&gt;alert(&quot;name&quot;)" in html \
            or name == "failures.html"
    assert any(HOSTILE_NAME in p[1] or HOSTILE_NAME in p[2] for d in search_docs(build, "cohorts/alpha") for p in d["p"])



def test_heatmap_with_links_is_a_valid_figure_and_writes_values_only_when_they_fit():
    import plotly.graph_objects as go

    from pipeline.sitegen import figures

    fig = figures.heatmap([[0.1, None], [0.5, 1]], ["m1", "m2"], ["e1", "e2"], title="t", zmin=0, zmax=1,
                          hover=[["a", "b"], ["c", "d"]], links=[["x.html#1", ""], ["y.html", "z.html"]],
                          row_links=["e1.html", "e2.html"])
    go.Figure(fig)
    assert fig["layout"]["meta"]["rowLinks"] == ["e1.html", "e2.html"]
    assert fig["data"][0]["customdata"][0][0] == "x.html#1" and fig["data"][0]["texttemplate"] == "%{z:.2f}"
    tall = figures.heatmap([[0.5]] * (figures.VALUES_MAX_ROWS + 1), ["m"], [f"e{i}" for i in range(101)], title="t")
    assert "texttemplate" not in tall["data"][0], "values are left out where they cannot be read"
