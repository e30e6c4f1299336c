"""Defects of the report site, each pinned (the browser half is in test_site_browser.py): titled
figures, integer count axes, score_norm axes named as such, evaluator means normalised, essay
pages in rank order under their cohort, and the preview server's own 404 page."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pandas as pd
import plotly.graph_objects as go
import pytest

from pipeline.sitegen import build_site, figures, serve
from test_site import make_site_root


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    paths = make_site_root(tmp_path_factory.mktemp("fixes"), n_essays=12)
    return paths, build_site(paths)


def _figures(html: str) -> dict[str, dict]:
    return {m.group(1): json.loads(m.group(2)) for m in
            re.finditer(r'<script type="application/json" id="chart-([^"]+)-data">(.*?)</script>', html, re.S)}


def _table(html: str, tid: str) -> tuple[list[str], list[list[str]]]:
    """(header labels, rows of cell texts) of the table ``data-table=tid``."""
    t = html[html.index(f'data-table="{tid}"'):]
    t = t[:t.index("</table>")]
    heads = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", t)]
    rows = [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r)]
            for r in re.findall(r"<tr>(.*?)</tr>", t.split("<tbody>")[1], re.S)]
    return heads, rows


def test_every_chart_of_every_page_keeps_its_title(site):
    check_charts_titled(*site, "alpha")


def check_charts_titled(paths, build, cohort: str) -> None:
    n = 0
    for page in (build / "cohorts" / cohort).glob("*.html"):
        for key, fig in _figures(page.read_text()).items():
            assert fig["layout"]["title"]["text"].strip(), f"{page.name} {key}: untitled figure"
            assert fig["layout"]["legend"]["xanchor"] == "left", "the legend keeps clear of the modebar (top right)"
            n += 1
    assert n >= 5


def test_count_axes_tick_whole_numbers():
    small = figures.histogram({"a": [0.1, 0.12, 0.5]}, title="t", x_title="x", bin_size=0.05)
    go.Figure(small)
    y = small["layout"]["yaxis"]
    assert y["dtick"] == 1 and y["tick0"] == 0 and y["tickformat"] == ",d"
    big = figures.histogram({"a": [0.1] * 50}, title="t", x_title="x", bin_size=0.05)
    assert "dtick" not in big["layout"]["yaxis"] and big["layout"]["yaxis"]["tickformat"] == ",d"
    bars = figures.bars(["high", "low"], {"s": [1, 2]}, title="t", y_title="units", counts=True)
    go.Figure(bars)
    assert bars["layout"]["yaxis"]["dtick"] == 1


def test_rubric_scatter_axes_say_score_norm_not_the_rubric_scale(site):
    check_rubric_scatter_axes(*site, "alpha")


def check_rubric_scatter_axes(paths, build, cohort: str) -> None:
    figs = _figures((build / "cohorts" / cohort / "rubrics.html").read_text())
    pairs = [f for k, f in figs.items() if k.startswith("rubric-pair-")]
    assert pairs
    for f in pairs:
        for axis in ("xaxis", "yaxis"):
            label = f["layout"][axis]["title"]["text"]
            assert label.endswith("score_norm (0–1)"), label
            assert not re.search(r"\(\s*\d+\s*[-–]\s*(?!1\))\d+\s*\)", label), f"a rubric scale on a 0–1 axis: {label}"
        xs = [v for v in f["data"][0]["x"] if v is not None]
        assert 0 <= min(xs) and max(xs) <= 1


def test_evaluator_table_means_are_normalised_and_raw_means_carry_their_scale(site):
    check_evaluator_means(*site, "alpha")


def check_evaluator_means(paths, build, cohort: str) -> None:
    heads, rows = _table((build / "cohorts" / cohort / "evaluators.html").read_text(), "evaluator-rubric")
    s = pd.read_csv(paths.reports_dir(cohort) / "scores.csv")
    s = s[s["score_norm"].notna()]
    assert s.groupby("evaluation_template")["scale_max"].nunique().max() == 1 and s["scale_max"].nunique() > 1, \
        "the synthetic cohort mixes rubric scales"
    mean_i, raw_i = heads.index("mean"), heads.index("raw mean (rubric scale)")
    means = sorted(float(r[mean_i]) for r in rows)
    expect = sorted(round(x, 2) for x in s.groupby(["evaluation_llm", "evaluation_template"])["score_norm"].mean())
    assert means == pytest.approx(expect, abs=0.006), "mean is the mean score_norm"
    assert all(re.fullmatch(r"[\d.]+ on \d+(\.\d+)?–\d+(\.\d+)?", r[raw_i]) for r in rows), "raw means name their scale"


def test_essay_pages_step_in_rank_order_under_their_cohort(site):
    check_essay_rank_order(*site, "alpha")


def check_essay_rank_order(paths, build, cohort: str) -> None:
    """Every ranked essay's page links the essays ranked just above and below it, and its
    breadcrumb keeps the cohort."""
    lb = pd.read_csv(paths.reports_dir(cohort) / "leaderboard.csv", dtype={"rank": "Int64"})
    ranked = lb[lb["rank"].notna()].sort_values("rank", kind="stable")["essay_gen_id"].tolist()
    assert len(ranked) >= 3
    edir = build / "cohorts" / cohort / "essays"
    for prev, here, nxt in zip(ranked, ranked[1:], ranked[2:]):
        html = (edir / f"{here}.html").read_text()
        assert f'href="{prev}.html" rel="prev"' in html and f'href="{nxt}.html" rel="next"' in html
    first = (edir / f"{ranked[0]}.html").read_text()
    assert 'rel="prev"' not in first
    crumbs = first[first.index('class="wy-breadcrumbs"'):first.index("wy-breadcrumbs-aside")]
    assert f'<a href="../index.html">{cohort}</a>' in crumbs and '<a href="index.html">Essays</a>' in crumbs
    assert f"essay {ranked[0]}" in crumbs


def test_preview_answers_a_missing_page_with_the_sites_404(site):
    _, build = site
    server, url = serve(build)
    try:
        for path in ("no-such-page.html", "cohorts/alpha/essays/e_nothere.html"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url + path, timeout=10)
            assert err.value.code == 404
            body = err.value.read().decode()
            assert "daydream" in body and "assets/daydream.css" in body, "the site's own 404 page"
            assert '<base href="/">' in body, "its relative links resolve from any depth"
            assert "Error response" not in body
        with urllib.request.urlopen(url + "index.html", timeout=10) as r:
            assert r.status == 200
    finally:
        server.shutdown()
        server.server_close()
