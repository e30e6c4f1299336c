"""Human ratings round trip in headless Chromium, over HTTP and from files: rate essays blind on
the site, export the CSV, `daydream ratings import` it, rebuild reports and site, and find the
human evaluator beside the LLM judges (paired comparisons, agreement, the essay's scores)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.run import generation
from pipeline.reports import build_reports
from pipeline.sitegen import build_site, serve
from pipeline.sitegen.data import Names
from pipeline.ops.synthetic import make_synthetic_cohort
from test_site_browser import Watched, base_url, browser, deadline  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("test_site_ratings_browser")]  # its module-scoped site built by one worker


@pytest.fixture(scope="module")
def rated_site(tmp_path_factory):
    paths = make_synthetic_cohort(tmp_path_factory.mktemp("rate") / "data", "alpha", n_essays=8, include_hostile=False)
    build_reports(paths, "alpha")
    build = build_site(paths, ["alpha"])
    server, url = serve(build)
    old = os.environ.get("DAYDREAM_DATA_ROOT")
    os.environ["DAYDREAM_DATA_ROOT"] = str(paths.root)
    generation.forget_runtimes()
    yield paths, build, url
    generation.forget_runtimes()
    if old is None:
        os.environ.pop("DAYDREAM_DATA_ROOT", None)
    else:
        os.environ["DAYDREAM_DATA_ROOT"] = old
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_rate_blind_export_import_rebuild_and_see_the_human(rated_site, browser, scheme, tmp_path):  # noqa: F811
    paths, build, url = rated_site
    base = base_url(build, url, scheme)
    rater = f"tester-{scheme}"
    w = Watched(browser, base)
    try:
        w.goto(base + "cohorts/alpha/rate.html")
        w.page.wait_for_function("document.getElementById('dd-rate-essay').textContent !== 'Loading…'")
        # blind: nothing of the essays' models or templates on the page
        names = Names.load(paths)
        # (the synthetic essays name their writer in their own text: only the page around them counts)
        region = w.page.evaluate("""() => { const r = document.getElementById('dd-rate').cloneNode(true);
            r.querySelector('#dd-rate-essay').remove(); return r.innerText; }""")
        for m in ("sim-writer-1", "sim-writer-2"):
            assert m not in region and names.model(m) not in region
        for t in ("essay-expand", "essay-copy"):
            assert names.template("essay", t) not in region
        rows = rate_and_export(w, base, paths, "alpha", "novelty-v1", rater, ("3", "7.5", "9"), tmp_path / "ratings.csv")
        assert cli.main(["ratings", "import", str(tmp_path / "ratings.csv"), "--rater", rater]) == 0
        build_reports(paths, "alpha")
        build_site(paths, ["alpha"])
        check_human_beside_judges(w, base, "alpha", rater, rows[0]["essay_gen_id"])
    finally:
        w.close()


def rate_and_export(w, base, paths, cohort, rubric, rater, scores, exported: Path) -> list[dict]:
    """Rate the first len(scores) essays of the blind page on `rubric`, check the page keeps them and
    refuses an out-of-scale score, download the CSV to `exported` and return its rows."""
    w.goto(base + f"cohorts/{cohort}/rate.html")
    box = w.page.locator("#dd-rate-essay")
    w.page.wait_for_function("document.getElementById('dd-rate-essay').textContent !== 'Loading…'")
    w.page.locator("#dd-rate-rubric").select_option(rubric)
    assert rubric.split("-")[0] in w.page.locator("#dd-rate-rubric-text").inner_text().lower()
    texts, n = [], len(scores)
    for i, score in enumerate(scores):
        assert w.page.locator("#dd-rate-heading").inner_text() == f"Essay {i + 1} of {len(_essays(paths, cohort))}"
        texts.append(box.inner_text())
        w.page.locator("#dd-rate-score").fill(score)
        w.page.locator("#dd-rate-note").fill(f"{rater} note {i}, \"quoted\"")
        w.page.locator("#dd-rate-save").click()
        if i < n - 1:
            w.page.wait_for_function(f"document.getElementById('dd-rate-heading').textContent.startsWith('Essay {i + 2} ')")
            w.page.wait_for_function("document.getElementById('dd-rate-essay').textContent !== 'Loading…'")
    assert f"{n} of" in w.page.locator("#dd-rate-progress").inner_text()
    # an out-of-scale score is refused, not stored
    w.page.locator("#dd-rate-score").fill("12")
    w.page.locator("#dd-rate-save").click()
    assert f"{n} of" in w.page.locator("#dd-rate-progress").inner_text()
    # kept in the browser: a reload shows the same progress
    w.page.reload()
    w.page.wait_for_load_state("load")
    assert f"{n} of" in w.page.locator("#dd-rate-progress").inner_text()
    with w.page.expect_download() as dl:
        w.page.locator("#dd-rate-export").click()
    exported.write_bytes(Path(dl.value.path()).read_bytes())
    rows = list(csv.DictReader(exported.open()))
    assert [float(r["score"]) for r in sorted(rows, key=lambda r: r["rated_at"])] == [float(s) for s in scores]
    for r in rows:   # the texts shown were these essays' own
        assert any(paths.gen_file("essay", r["essay_gen_id"], "parsed.txt").read_text().split() == t.split()
                   for t in texts)
    return rows


def check_human_beside_judges(w, base, cohort, rater, eid) -> None:
    """After import and rebuild: paired differences against each LLM judge, the evaluators table, a
    matrix column beside the judges' and the essay page all show `human:<rater>`."""
    w.goto(base + f"cohorts/{cohort}/rubrics.html")
    pairs = w.page.locator('table[data-table="pairs-models"]').inner_text()
    assert f"human:{rater}" in pairs
    w.goto(base + f"cohorts/{cohort}/evaluators.html")
    assert f"human:{rater}" in w.page.locator('table[data-table="evaluator-rubric"]').inner_text()
    w.goto(base + f"cohorts/{cohort}/matrix.html")   # a column of the human's scores beside each judge's
    heads = w.page.locator('table[data-table="matrix"] thead th').all_inner_texts()
    assert any(h.startswith(f"human:{rater} · ") for h in heads) and sum("·" in h for h in heads) > 1
    w.goto(base + f"cohorts/{cohort}/essays/{eid}.html")
    scores = w.page.locator('table[data-table="scores"]').inner_text()
    assert f"human:{rater}" in scores
    assert f"{rater} note" in w.page.locator("#evaluations ~ .dd-eval").filter(has_text=f"human:{rater}").first.inner_text()
    assert not w.errors, w.errors


def _essays(paths, cohort: str) -> list[str]:
    import pandas as pd

    g = pd.read_csv(paths.reports_dir(cohort) / "generations.csv", dtype=str, keep_default_na=False)
    return g[(g["stage"] == "essay") & (g["status"] == "done")]["gen_id"].tolist()
