"""Report tables built from real files in tmp_path (hand-written stores and pipeline.ops.synthetic)."""

from __future__ import annotations

import io
import math
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import DaydreamError
from pipeline.reports import TABLES, build_cross_cohort, build_reports, tables
from pipeline.reports.collect import GENERATION_COLUMNS, ISSUE_COLUMNS, SCORE_COLUMNS
from pipeline.store import DataPaths, atomic_write_csv, atomic_write_json, atomic_write_text
from pipeline.ops.synthetic import make_synthetic_cohort

MEMBERSHIP = ["stage", "gen_id", "parent_gen_id", "combo_id", "template_id", "llm_model_id", "replicate", "mode"]
HEADERS = {**tables.COLUMNS, "generations": GENERATION_COLUMNS, "scores": SCORE_COLUMNS, "issues": ISSUE_COLUMNS}


def write_catalog(paths: DataPaths) -> None:
    cols = ["template_id", "template_name", "description", "parser", "generator"]
    atomic_write_csv(paths.catalog_csv("concepts_metadata.csv"), ["concept_id", "name"], [["c1", "Concept one"]])
    atomic_write_csv(paths.catalog_csv("draft_templates.csv"), cols, [["draft-a", "A", "", "identity", "llm"]])
    atomic_write_csv(paths.catalog_csv("essay_templates.csv"), cols,
                     [["essay-x", "X", "", "essay_block", "llm"], ["essay-c", "C", "", "identity", "copy"]])
    atomic_write_csv(paths.catalog_csv("evaluation_templates.csv"), cols + ["score_min", "score_max"],
                     [["r9", "R9", "", "score", "llm", "0", "9"], ["r10", "R10", "", "score", "llm", "0", "10"]])
    atomic_write_csv(paths.catalog_csv("llm_models.csv"), ["id", "model", "provider", "display_name"],
                     [[m, f"offline/{m}", "offline", m] for m in ("w", "A", "B")])


def gen(paths, stage, gen_id, template, model, *, parent="", combo="combo-1", rep=1, mode="llm", state="done",
        score=None, scale=(0, 9), meta=True):
    """Write one generation's files in the given state; return its membership row."""
    if meta:
        atomic_write_json(paths.gen_file(stage, gen_id, "metadata.json"), {
            "stage": stage, "gen_id": gen_id, "template_id": template, "llm_model_id": model or None,
            "replicate": rep, "mode": mode, "parent_gen_id": parent or None, "combo_id": combo})
    if state != "pending":
        f = lambda name: paths.gen_file(stage, gen_id, name)  # noqa: E731
        atomic_write_text(f("prompt.txt"), "prompt\n")
        atomic_write_text(f("raw.txt"), "reasoning\nSCORE: x\n")
        atomic_write_json(f("raw_metadata.json"), {
            "gen_id": gen_id, "simulated": True, "valid": state != "truncated", "prompt_tokens": 10,
            "completion_tokens": 5, "cost_usd": 0.001, "invalid_reason": "truncated" if state == "truncated" else None,
            "finish_reason": "length" if state == "truncated" else "stop"})
        if state in ("done", "parse"):
            pm = {"gen_id": gen_id, "stage": stage, "success": state == "done",
                  "error": None if state == "done" else "no score found", "raw_tail_preview": "…",
                  "score": score, "scale_min": scale[0], "scale_max": scale[1]}
            atomic_write_json(f("parsed_metadata.json"), pm)
            if state == "done":
                atomic_write_text(f("parsed.txt"), f"{score:g}\n" if score is not None else "text\n")
    return [stage, gen_id, parent, combo, template, "" if mode == "copy" else model, rep, mode]


def write_membership(paths, cohort, rows):
    atomic_write_csv(paths.membership_csv(cohort), MEMBERSHIP, rows)


@pytest.fixture
def fast_path(tmp_path):
    """A scratch root on tmpfs when there is one: synthetic stores fsync every file (slow on disk)."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    root = Path(tempfile.mkdtemp(prefix="daydream-test-", dir=shm))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hand(fast_path):
    """d1 → e1 (llm, model w) and e2 (copy); rubrics r9 (0–9) and r10 (0–10); evaluators A, B.

    e1: r9 A rep1 = 9, A rep2 = 7, B = 6; r10 A = 10, B = 5             (5 scored)
    e2: r9 A = 0, B = parse failure; r10 A rep1 = 5, A rep2 = truncated, B = pending (2 scored)
    """
    paths = DataPaths(fast_path)
    write_catalog(paths)
    rows = [gen(paths, "draft", "d1", "draft-a", "w"),
            gen(paths, "essay", "e1", "essay-x", "w", parent="d1"),
            gen(paths, "essay", "e2", "essay-c", None, parent="d1", mode="copy")]
    ev = lambda vid, e, t, m, rep=1, state="done", score=None: gen(  # noqa: E731
        paths, "evaluation", vid, t, m, parent=e, rep=rep, state=state, score=score,
        scale=(0, 9) if t == "r9" else (0, 10))
    rows += [ev("v1", "e1", "r9", "A", 1, score=9), ev("v2", "e1", "r9", "A", 2, score=7),
             ev("v3", "e1", "r9", "B", score=6), ev("v4", "e1", "r10", "A", score=10), ev("v5", "e1", "r10", "B", score=5),
             ev("v6", "e2", "r9", "A", score=0), ev("v7", "e2", "r9", "B", state="parse"),
             ev("v8", "e2", "r10", "A", 1, score=5), ev("v9", "e2", "r10", "A", 2, state="truncated"),
             ev("v10", "e2", "r10", "B", state="pending")]
    write_membership(paths, "c", rows)
    return paths


def read(paths, cohort, name):
    return pd.read_csv(paths.reports_dir(cohort) / f"{name}.csv", keep_default_na=False, na_values=[""])


def test_hand_fixture_scores_and_leaderboard(hand):
    out = build_reports(hand, "c")
    s = out["scores"].set_index("evaluation_gen_id")
    assert len(s) == 10  # every evaluation, failures included
    assert s.loc["v7", "status"] == "failed" and s.loc["v7", "error"] == "parse_failure"
    assert s.loc["v9", "error"] == "truncated" and s.loc["v10", "status"] == "pending"
    assert math.isnan(s.loc["v7", "score"])  # a failure is never a zero
    assert s.loc["v6", "score"] == 0 and s.loc["v6", "score_norm"] == 0
    assert s.loc["v6", "essay_llm"] == "copy" and s.loc["v6", "essay_mode"] == "copy"
    assert s.loc["v4", "score_norm"] == 1.0 and s.loc["v2", "score_norm"] == pytest.approx(7 / 9)
    assert s.loc["v1", "draft_gen_id"] == "d1" and s.loc["v1", "evaluation_raw_path"] == "gens/evaluation/v1/raw.txt"
    assert s.loc["v10", "evaluation_raw_path"] == "" and s.loc["v1", "essay_parsed_path"] == "gens/essay/e1/parsed.txt"

    lb = out["leaderboard"].set_index("essay_gen_id")
    # Essays are ranked on cell means (rubric × evaluator, replicates averaged first), so A's two
    # replicates on r9 do not weigh double. e1 cells (in 36ths): r9/A (1 + 7/9)/2 = 32, r9/B 6/9 = 24,
    # r10/A 1 = 36, r10/B .5 = 18 → mean 110/4 = 27.5/36; deviations 4.5, −3.5, 8.5, −9.5 →
    # Σd² = 20.25 + 12.25 + 72.25 + 90.25 = 195 → sample var 65 → std √65/36.
    assert lb.loc["e1", "mean_raw"] == pytest.approx(27.5 / 36)
    assert lb.loc["e1", "std"] == pytest.approx(math.sqrt(65) / 36)
    # The ranked mean is adjusted for which cells scored the essay: e2 lacks B's cells (failed,
    # pending), so the essays are compared on the cells both have, A × r9 and A × r10: e1 − e2 =
    # ((32/36 − 0) + (1 − .5))/2 = 25/36 (the B cells are fitted exactly by their own effects).
    assert lb.loc["e1", "mean"] - lb.loc["e2", "mean"] == pytest.approx(25 / 36)
    assert lb.loc["e2", "n_cells_missing"] == 2 and "missing cells" in lb.loc["e2", "note"]
    assert lb.loc["e1", "ci_method"].startswith("t over") and lb.loc["e1", "ci_low"] < lb.loc["e1", "mean"]
    assert (lb.loc["e1", "min"], lb.loc["e1", "max"]) == (pytest.approx(0.5), pytest.approx(1.0))
    assert (lb.loc["e1", "rank"], lb.loc["e1", "n_cells"], lb.loc["e1", "n"], lb.loc["e1", "expected"]) == (1, 4, 5, 5)
    assert lb.loc["e1", "coverage"] == 1.0
    # e2 cells r9/A 0 and r10/A .5 → mean .25; 2 of 5 expected evaluations scored → coverage .4
    assert lb.loc["e2", "mean_raw"] == pytest.approx(0.25)
    assert (lb.loc["e2", "rank"], lb.loc["e2", "n"], lb.loc["e2", "expected"]) == (2, 2, 5)
    assert lb.loc["e2", "coverage"] == pytest.approx(0.4) and lb.loc["e2", "essay_llm"] == "copy"


def test_hand_fixture_pivots_factors_variance(hand):
    out = build_reports(hand, "c")
    p = out["pivot_essay_evaluator"].set_index(["essay_gen_id", "evaluation_llm", "evaluation_template"])
    cell = p.loc[("e1", "A", "r9")]  # 9 and 7 → mean 8, min 7, max 9, n 2, mean_norm 8/9
    assert (cell["n"], cell["mean"], cell["min"], cell["max"]) == (2, 8, 7, 9)
    assert cell["mean_norm"] == pytest.approx(8 / 9)
    assert p.loc[("e2", "B", "r9"), "n"] == 0 and p.loc[("e2", "B", "r9"), "n_unscored"] == 1

    f = out["factors"]
    a = f[(f["factor"] == "evaluation_llm") & (f["level"] == "A") & (f["rubric"] == tables.ALL)].iloc[0]
    # A's norms: 1, 7/9, 1, 0, .5 → mean (2.5 + 7/9)/5 = 29.5/45; raw mean would be 31/5 = 6.2 (never used)
    assert a["mean_marginal"] == pytest.approx(29.5 / 45) and a["n"] == 5 and a["n_unscored"] == 1
    # ``mean`` is adjusted for the rubric mix (A: 3 of its 5 on r9, the table 4 of 7): close, not equal
    assert a["mean"] == pytest.approx(29.5 / 45, abs=0.01) and a["ci_method"].startswith("t over")
    # high (≥ .8): 1, 1 → 2/5; low (≤ .3): 0 → 1/5; at max: 2/5
    assert a["share_high"] == pytest.approx(0.4) and a["share_low"] == pytest.approx(0.2)
    assert a["share_max"] == pytest.approx(0.4)

    rep = out["variance_replicates"].set_index(["essay_gen_id", "evaluation_template", "evaluation_llm"])
    r = rep.loc[("e1", "r9", "A")]  # 9, 7: mean 8, std √2, range 2 → 2/9 = .222 moderate, cv √2/8
    assert r["n"] == 2 and r["mean"] == 8 and r["std"] == pytest.approx(math.sqrt(2))
    assert r["range_norm"] == pytest.approx(2 / 9) and r["agreement"] == "moderate"
    assert r["cv"] == pytest.approx(math.sqrt(2) / 8)

    vm = out["variance_models"].set_index(["essay_gen_id", "evaluation_template"])
    # e1 r9: A = (9+7)/2 = 8, B = 6 → mean 7, std √2, range 2/9 moderate
    assert vm.loc[("e1", "r9"), "mean"] == 7 and vm.loc[("e1", "r9"), "agreement"] == "moderate"
    # e1 r10: A 10, B 5 → mean 7.5, std √12.5, range 5/10 = .5 → low
    assert vm.loc[("e1", "r10"), "std"] == pytest.approx(math.sqrt(12.5))
    assert vm.loc[("e1", "r10"), "agreement"] == "low"
    # e2 r9: only A scored (B failed) → n 1, std NaN, agreement n/a
    assert vm.loc[("e2", "r9"), "n"] == 1 and vm.loc[("e2", "r9"), "agreement"] == "n/a"

    vr = out["variance_rubrics"].set_index(["essay_gen_id", "evaluation_llm"])
    # e1 A: r9 (1 + 7/9)/2 = 8/9, r10 1 → mean 17/18, range 1/9 = .111 → moderate
    assert vr.loc[("e1", "A"), "mean"] == pytest.approx(17 / 18)
    assert vr.loc[("e1", "A"), "range"] == pytest.approx(1 / 9) and vr.loc[("e1", "A"), "agreement"] == "moderate"

    cov = out["coverage"].set_index("stage")
    assert cov.loc["evaluation", ["expected", "done", "failed", "pending"]].tolist() == [10, 7, 2, 1]
    assert cov.loc["essay", "done"] == 2 and cov.loc["evaluation", "coverage"] == pytest.approx(0.7)
    pg = out["pivot_generation"].set_index(["stage", "template", "llm"])
    assert pg.loc[("essay", "essay-c", "copy"), "n"] == 2
    issues = out["issues"]
    assert set(issues.loc[issues["issue"] == "failed", "gen_id"]) == {"v7", "v9"}


def test_no_row_vanishes(hand):
    """Blank keys, missing metadata.json, missing files, unknown parent, out-of-scale score."""
    rows = pd.read_csv(hand.membership_csv("c"), dtype=str, keep_default_na=False).values.tolist()
    rows.append(gen(hand, "evaluation", "v20", "", "", parent="e1", combo=""))  # blank template/model/combo
    rows.append(gen(hand, "evaluation", "v21", "r9", "A", parent="e-gone", score=3))  # parent nowhere
    rows.append(gen(hand, "evaluation", "v22", "r9", "B", parent="e1", score=10))  # 10 on a 0–9 rubric
    rows.append(gen(hand, "evaluation", "v23", "r10", "B", parent="e1", score=4, meta=False))  # no metadata.json
    (hand.gen_file("evaluation", "v3", "raw.txt")).unlink()  # a done evaluation lost a file
    write_membership(hand, "c", rows)
    out = build_reports(hand, "c")
    s = out["scores"].set_index("evaluation_gen_id")
    assert len(s) == 14
    assert s.loc["v20", "evaluation_template"] == "unknown" and s.loc["v20", "evaluation_llm"] == "unknown"
    assert s.loc["v20", "combo_id"] == "combo-1"  # recovered from the essay's lineage
    assert s.loc["v21", "essay_template"] == "unknown" and s.loc["v21", "draft_gen_id"] == "unknown"
    assert s.loc["v21", "score"] == 3  # its own score is still reported
    assert s.loc["v22", "status"] == "failed" and s.loc["v22", "error"] == "score_out_of_scale"
    assert math.isnan(s.loc["v22", "score_norm"])  # never counted as a "perfect" 9
    assert s.loc["v23", "status"] == "done"
    issues = out["issues"]
    kinds = set(zip(issues["gen_id"], issues["issue"]))
    assert {("v21", "broken_lineage"), ("v22", "failed"), ("v23", "missing_file"), ("v3", "missing_file"),
            ("", "unknown_template")} <= kinds
    assert "e-gone" in out["leaderboard"]["essay_gen_id"].tolist()
    lb = out["leaderboard"].set_index("essay_gen_id")
    assert lb.loc["e-gone", "essay_status"] == "not_found"
    # the written CSVs hold the same rows
    assert len(read(hand, "c", "scores")) == 14 and len(read(hand, "c", "generations")) == 17


def test_membership_blank_keys_and_corrupt_metadata(hand):
    rows = pd.read_csv(hand.membership_csv("c"), dtype=str, keep_default_na=False).values.tolist()
    rows.append(["evaluation", "v30", "", "", "r9", "A", "", "llm"])  # blank parent, combo, replicate
    gen(hand, "evaluation", "v31", "r9", "A", parent="e1", score=4)
    atomic_write_text(hand.gen_file("evaluation", "v31", "parsed_metadata.json"), "{not json")
    rows.append(["evaluation", "v31", "e1", "combo-1", "r9", "A", "1", "llm"])
    write_membership(hand, "c", rows)
    out = build_reports(hand, "c")
    s = out["scores"].set_index("evaluation_gen_id")
    assert s.loc["v30", "essay_gen_id"] == "unknown" and s.loc["v30", "evaluation_replicate"] == "unknown"
    assert s.loc["v31", "status"] == "pending" and s.loc["v31", "error"] == "corrupt_metadata"
    kinds = set(zip(out["issues"]["gen_id"], out["issues"]["issue"]))
    assert ("v30", "broken_lineage") in kinds and ("v31", "corrupt_metadata") in kinds


def test_unknown_template_scale_from_parsed_metadata_else_default(hand):
    rows = pd.read_csv(hand.membership_csv("c"), dtype=str, keep_default_na=False).values.tolist()
    rows.append(gen(hand, "evaluation", "v40", "r5", "A", parent="e1", score=4, scale=(0, 5)))
    gen(hand, "evaluation", "v41", "r-none", "A", parent="e1", score=3)
    pm = hand.gen_file("evaluation", "v41", "parsed_metadata.json")
    atomic_write_json(pm, {"success": True, "score": 3})  # no scale recorded
    rows.append(["evaluation", "v41", "e1", "combo-1", "r-none", "A", "1", "llm"])
    write_membership(hand, "c", rows)
    s = build_reports(hand, "c")["scores"].set_index("evaluation_gen_id")
    assert s.loc["v40", "scale_source"] == "parsed_metadata" and s.loc["v40", "score_norm"] == pytest.approx(0.8)
    assert s.loc["v41", "scale_source"] == "default" and s.loc["v41", "scale_max"] == 9
    assert s.loc["v41", "score_norm"] == pytest.approx(3 / 9)
    assert s.loc["v1", "scale_source"] == "catalog"


def test_reports_without_a_catalog(hand):
    shutil.rmtree(hand.raw)
    out = build_reports(hand, "c")
    assert "catalog_error" in set(out["issues"]["issue"])
    s = out["scores"].set_index("evaluation_gen_id")
    assert s.loc["v2", "scale_source"] == "parsed_metadata" and s.loc["v2", "score_norm"] == pytest.approx(7 / 9)


def test_missing_membership_is_a_report_error(tmp_path):
    with pytest.raises(DaydreamError) as err:
        build_reports(DataPaths(tmp_path), "nothing")
    assert err.value.code == "report"
    with pytest.raises(DaydreamError) as err:
        build_reports(DataPaths(tmp_path), "../escape")
    assert err.value.code == "unsafe_id"


def test_empty_cohort_writes_every_table_with_its_header(tmp_path):
    paths = DataPaths(tmp_path)
    write_membership(paths, "empty", [])
    out = build_reports(paths, "empty")
    assert tuple(out) == TABLES
    for name in TABLES:
        text = (paths.reports_dir("empty") / f"{name}.csv").read_text()
        assert text.splitlines()[0].split(",") == list(HEADERS[name]), name
        assert list(out[name].columns) == list(HEADERS[name])
    assert len(out["coverage"]) == 3 and out["scores"].empty and out["leaderboard"].empty


def test_rerun_after_deleting_evaluations_leaves_no_stale_rows(fast_path):
    paths = make_synthetic_cohort(fast_path, "s", n_essays=6, replicates=2)
    first = build_reports(paths, "s")
    assert len(first["scores"]) == 6 * 2 * 2 * 2 and not first["variance_models"].empty
    m = pd.read_csv(paths.membership_csv("s"), dtype=str, keep_default_na=False)
    atomic_write_text(paths.membership_csv("s"), m[m["stage"] != "evaluation"].to_csv(index=False))
    build_reports(paths, "s")
    for name in ("scores", "pivot_essay_evaluator", "variance_models", "variance_rubrics", "variance_replicates",
                 "agreement"):
        assert read(paths, "s", name).empty, name
    lb = read(paths, "s", "leaderboard")
    assert len(lb) == 6 and (lb["n"] == 0).all() and lb["rank"].isna().all()
    # deleting evaluation files (not rows) turns their scores into pending rows, never stale numbers
    atomic_write_text(paths.membership_csv("s"), m.to_csv(index=False))
    shutil.rmtree(paths.gens / "evaluation")
    s = build_reports(paths, "s")["scores"]
    assert len(s) == 48 and (s["status"] == "pending").all() and s["score"].isna().all()


def test_csv_round_trip_with_hostile_text(fast_path):
    paths = make_synthetic_cohort(fast_path, "s", n_essays=3, include_hostile=True)
    out = build_reports(paths, "s")
    for name in TABLES:
        back = pd.read_csv(io.StringIO((paths.reports_dir("s") / f"{name}.csv").read_text()))
        assert len(back) == len(out[name]), name


def test_synthetic_cohort_end_to_end(fast_path):
    paths = make_synthetic_cohort(fast_path, "s", n_essays=12, replicates=2, failure_rate=0.05)
    out = build_reports(paths, "s")
    s = out["scores"]
    assert len(s) == 12 * 2 * 2 * 2
    assert {"parse_failure", "truncated", "missing", "upstream_failure"} <= set(s["error"])
    assert s["simulated"].all() and set(s["scale_source"]) == {"catalog"}
    assert set(s.loc[s["essay_mode"] == "copy", "essay_llm"]) == {"copy"}
    assert (out["agreement"]["n_raters"] == 2).all()
    assert not (set(out["issues"]["issue"]) - {"failed"})  # a clean store has only failures to report


def test_cross_cohort(fast_path):
    make_synthetic_cohort(fast_path, "a", n_essays=6, evaluators=("sim-alpha", "sim-beta"), failure_rate=0)
    paths = make_synthetic_cohort(fast_path, "b", n_essays=3, evaluators=("sim-gamma",), failure_rate=0,
                                  rubrics=(("rigor-v1", 0, 10),))
    cc = build_cross_cohort(paths)
    assert (paths.cross_cohort_dir() / "cross_cohort.csv").exists()
    shared = set(cc["essay_gen_id"])
    assert len(shared) == 3  # b's three essays are a's first three
    assert set(cc["cohort_id"]) == {"a", "b"} and (cc["n_cohorts"] == 2).all() and len(cc) == 6
    a_lb = build_reports(paths, "a")["leaderboard"].set_index("essay_gen_id")
    for essay, grp in cc.groupby("essay_gen_id"):
        assert grp["delta"].sum() == pytest.approx(0)
        row = grp.set_index("cohort_id").loc["a"]
        assert row["mean"] == pytest.approx(a_lb.loc[essay, "mean"])
        assert grp.set_index("cohort_id").loc["b", "evaluators"] == "sim-gamma"


def test_cross_cohort_empty_is_written_with_header(tmp_path):
    paths = DataPaths(tmp_path)
    df = build_cross_cohort(paths)
    assert df.empty
    text = (paths.cross_cohort_dir() / "cross_cohort.csv").read_text()
    assert text.splitlines()[0].split(",") == tables.COLUMNS["cross_cohort"]


def test_thresholds_validated(hand):
    with pytest.raises(DaydreamError) as err:
        build_reports(hand, "c", high=0.2, low=0.5)
    assert err.value.code == "report"


def test_docstring_lists_every_column():
    """The site engineer reads pipeline.reports' docstring: it must name every column of every table."""
    import re

    import pipeline.reports as reports

    doc = reports.__doc__
    for name, cols in {**HEADERS, "cross_cohort": tables.COLUMNS["cross_cohort"]}.items():
        m = re.search(rf"- ``{name}``(.*?)(?=\n- ``|\Z)", doc, re.S)
        assert m, f"table {name} is not documented"
        words = set(re.findall(r"[a-z_0-9]+", m.group(1)))
        missing = [c for c in cols if c not in words]
        assert not missing, f"{name}: undocumented columns {missing}"
