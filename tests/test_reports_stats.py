"""Statistics of the reports against values worked out by hand (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.reports import stats, tables


def test_cv_is_std_over_mean_and_never_infinite():
    # 1/2 = 0.5; mean 0 → NaN (not inf); NaN mean → NaN; negative mean uses |mean|: 1/|-4| = 0.25
    out = stats.cv([1.0, 2.0, 0.5, 1.0], [2.0, 0.0, np.nan, -4.0])
    assert out[0] == pytest.approx(0.5)
    assert math.isnan(out[1]) and math.isnan(out[2])
    assert out[3] == pytest.approx(0.25)
    assert not np.isinf(out).any()


def test_icc2_1_by_hand():
    # X = [[1,2],[3,3],[5,7]], n=3 subjects, k=2 raters.
    # grand mean 21/6 = 3.5; row means 1.5, 3, 6; column means 3, 4.
    # MSR = k·Σ(row−grand)²/(n−1) = 2·(4 + 0.25 + 6.25)/2 = 10.5
    # MSC = n·Σ(col−grand)²/(k−1) = 3·(0.25 + 0.25)/1 = 1.5
    # residuals x−row−col+grand: 0,0 / .5,−.5 / −.5,.5 → SSE = 1, MSE = 1/((n−1)(k−1)) = 0.5
    # ICC = (MSR−MSE) / (MSR + (k−1)MSE + k(MSC−MSE)/n) = 10 / (10.5 + 0.5 + 2/3) = 10/(35/3) = 6/7
    assert stats.icc2_1([[1, 2], [3, 3], [5, 7]]) == pytest.approx(6 / 7)
    # A constant offset of 2 between raters: rows 3,5,7; cols 4,6; grand 5; SSE = 0 → MSE = 0
    # MSR = 2·(4+0+4)/2 = 8; MSC = 3·(1+1)/1 = 6 → ICC = 8 / (8 + 0 + 2·6/3) = 8/12 = 2/3
    assert stats.icc2_1([[2, 4], [4, 6], [6, 8]]) == pytest.approx(2 / 3)
    # identical raters agree perfectly
    assert stats.icc2_1([[1, 1], [2, 2], [3, 3]]) == pytest.approx(1.0)
    # undefined: one subject, one rater, missing values, or no variance at all
    assert math.isnan(stats.icc2_1([[1, 2]]))
    assert math.isnan(stats.icc2_1([[1], [2]]))
    assert math.isnan(stats.icc2_1([[1, np.nan], [2, 3]]))
    assert math.isnan(stats.icc2_1([[5, 5], [5, 5]]))


def test_icc_classes():
    assert [stats.icc_class(x) for x in (0.2, 0.5, 0.8, 0.95, float("nan"))] == \
        ["poor", "moderate", "good", "excellent", "n/a"]


def test_mean_pairwise_pearson_by_hand():
    # a=[1,2,3], b=[2,4,6] → r(a,b)=1; c=[3,2,1] → r(a,c)=r(b,c)=−1; mean = (1−1−1)/3 = −1/3.
    # d is constant → no correlation defined → its pairs are skipped.
    df = pd.DataFrame({"a": [1, 2, 3], "b": [2, 4, 6], "c": [3, 2, 1], "d": [5, 5, 5]})
    r, pairs = stats.mean_pairwise_pearson(df)
    assert r == pytest.approx(-1 / 3) and pairs == 3
    # a=[1,3,5], b=[2,3,7]: deviations [−2,0,2] and [−2,−1,3]; Σxy = 4+0+6 = 10,
    # Σx² = 8, Σy² = 14 → r = 10/√112 = 0.944911
    r, pairs = stats.mean_pairwise_pearson(pd.DataFrame({"a": [1, 3, 5], "b": [2, 3, 7]}))
    assert r == pytest.approx(10 / math.sqrt(112)) and pairs == 1


def test_agreement_classes_relative_to_scale():
    # thresholds: range_norm ≤ 0.10 high, ≤ 0.25 moderate, else low; n < 2 or NaN → n/a
    out = stats.agreement_class([0.0, 0.10, 0.1001, 0.25, 0.30, np.nan, 0.0], [2, 2, 2, 2, 2, 2, 1])
    assert list(out) == ["high", "high", "moderate", "moderate", "low", "n/a", "n/a"]
    # a range of 1 point: 1/9 = 0.111 on a 0–9 rubric is moderate, 1/10 = 0.10 on 0–10 is high
    df = pd.DataFrame({"k": ["nine", "nine", "ten", "ten"], "v": [5, 6, 5, 6], "w": [9, 9, 10, 10]})
    out = stats.spread(df, ["k"], "v", "w").set_index("k")
    assert out.loc["nine", "agreement"] == "moderate" and out.loc["ten", "agreement"] == "high"


def test_spread_by_hand():
    # values 2, 4, 9 on a 0–10 scale: mean 5; deviations −3, −1, 4 → Σd² = 26;
    # sample var = 26/2 = 13 → std = √13 = 3.605551; range 7 → range_norm 0.7 (low); cv = √13/5
    df = pd.DataFrame({"k": ["x"] * 3, "v": [2.0, 4.0, 9.0], "w": [10.0] * 3})
    row = stats.spread(df, ["k"], "v", "w").iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(5.0)
    assert row["std"] == pytest.approx(math.sqrt(13))
    assert row["range"] == 7 and row["range_norm"] == pytest.approx(0.7)
    assert row["cv"] == pytest.approx(math.sqrt(13) / 5) and row["agreement"] == "low"
    # one value: std is NaN (sample std undefined), agreement n/a; all-zero values: cv NaN, not inf
    df = pd.DataFrame({"k": ["one", "zero", "zero"], "v": [3.0, 0.0, 0.0], "w": [9.0] * 3})
    out = stats.spread(df, ["k"], "v", "w").set_index("k")
    assert math.isnan(out.loc["one", "std"]) and out.loc["one", "agreement"] == "n/a"
    assert math.isnan(out.loc["zero", "cv"]) and out.loc["zero", "agreement"] == "high"


def _scores(rows):
    """A minimal scores frame for the pure table functions."""
    cols = ["essay_gen_id", "evaluation_template", "evaluation_llm", "evaluation_replicate", "score",
            "scale_min", "scale_max"]
    df = pd.DataFrame(rows, columns=cols)
    df["score_norm"] = (df["score"] - df["scale_min"]) / (df["scale_max"] - df["scale_min"])
    for c in ("draft_template", "draft_llm", "essay_template", "essay_llm", "essay_mode", "combo_id"):
        df[c] = "x"
    df["simulated"] = False
    return df


def test_thresholds_are_relative_to_each_rubric_scale():
    # high = 0.8, low = 0.3 on score_norm.
    # 0–9: 7 → .778 (not high), 8 → .889 (high), 9 → 1 (high, at max) → share_high 2/3, share_max 1/3
    # 0–10: 8 → .8 (high, boundary counts), 9 → .9, 10 → 1 → share_high 3/3, share_max 1/3
    # low: 0–9 none (≤ 2.7); 0–10: none. Pooled: share_high 5/6.
    s = _scores([["e", "r9", "A", "1", 7, 0, 9], ["e", "r9", "A", "2", 8, 0, 9], ["e", "r9", "B", "1", 9, 0, 9],
                 ["e", "r10", "A", "1", 8, 0, 10], ["e", "r10", "A", "2", 9, 0, 10], ["e", "r10", "B", "1", 10, 0, 10]])
    f = tables.factors(s, high=0.8, low=0.3)
    by = f[f["factor"] == "evaluation_template"].set_index("level")
    assert by.loc["r9", "share_high"] == pytest.approx(2 / 3) and by.loc["r9", "share_max"] == pytest.approx(1 / 3)
    assert by.loc["r10", "share_high"] == pytest.approx(1.0) and by.loc["r10", "share_max"] == pytest.approx(1 / 3)
    pooled = f[(f["factor"] == "essay_mode") & (f["rubric"] == tables.ALL)].iloc[0]
    assert pooled["share_high"] == pytest.approx(5 / 6) and pooled["share_low"] == 0
    # mixed scales are pooled on score_norm only: (7/9 + 8/9 + 1 + .8 + .9 + 1)/6, never raw (51/6 = 8.5)
    assert pooled["mean"] == pytest.approx((7 / 9 + 8 / 9 + 1 + 0.8 + 0.9 + 1) / 6)
    # other thresholds are honoured: high 0.9 → r9: 9 only (1/3); r10: 9, 10 (2/3)
    f = tables.factors(s, high=0.9, low=0.8)
    by = f[f["factor"] == "evaluation_template"].set_index("level")
    assert by.loc["r9", "share_high"] == pytest.approx(1 / 3) and by.loc["r10", "share_high"] == pytest.approx(2 / 3)
    # low 0.8 → r9: 7 (.778) only; r10: 8 (.8, boundary)
    assert by.loc["r9", "share_low"] == pytest.approx(1 / 3) and by.loc["r10", "share_low"] == pytest.approx(1 / 3)


def test_agreement_table_by_hand():
    # rubric r (0–10), raters A, B, essays x, y, z: A = 1, 3, 5 and B = 2, 3, 7 → ICC(2,1) = 6/7 (above),
    # Pearson r = 10/√112. A has two replicates on x (1 and 1) so the replicate mean is still 1.
    s = _scores([["x", "r", "A", "1", 1, 0, 10], ["x", "r", "A", "2", 1, 0, 10], ["y", "r", "A", "1", 3, 0, 10],
                 ["z", "r", "A", "1", 5, 0, 10], ["x", "r", "B", "1", 2, 0, 10], ["y", "r", "B", "1", 3, 0, 10],
                 ["z", "r", "B", "1", 7, 0, 10]])
    row = tables.agreement(s).iloc[0]
    assert row["n_raters"] == 2 and row["n_essays"] == 3
    # 6/7 would be "good", but three essays cannot tell good from poor (interval spans classes)
    assert row["icc2_1"] == pytest.approx(6 / 7) and row["icc_class"] == "uncertain"
    assert row["mean_pearson"] == pytest.approx(10 / math.sqrt(112))
    # retest: only (x, A) has two replicates → one unit, ICC undefined
    assert row["n_retest_units"] == 1 and math.isnan(row["retest_icc2_1"])


def test_variance_tables_never_pool_essays():
    # Two essays with opposite evaluator patterns: pooled they would look alike; per essay they differ.
    # e1: A=2, B=8 on 0–10 → range 6 (low); e2: A=5, B=5 → range 0 (high).
    s = _scores([["e1", "r", "A", "1", 2, 0, 10], ["e1", "r", "B", "1", 8, 0, 10],
                 ["e2", "r", "A", "1", 5, 0, 10], ["e2", "r", "B", "1", 5, 0, 10]])
    v = tables.variance_models(s).set_index("essay_gen_id")
    assert list(v.index) == ["e1", "e2"]
    assert v.loc["e1", "range"] == 6 and v.loc["e1", "agreement"] == "low"
    assert v.loc["e2", "range"] == 0 and v.loc["e2", "agreement"] == "high"
    # std of e1: mean 5, deviations ±3 → Σd² = 18, /1 → √18 = 4.242641
    assert v.loc["e1", "std"] == pytest.approx(math.sqrt(18))


def test_icc2_1_interval_matches_published_values():
    # Shrout & Fleiss (1979) 6 targets × 4 judges: ICC(2,1) = 0.29 with 95% interval [0.019, 0.76],
    # as psych::ICC and pingouin.intraclass_corr report it (McGraw & Wong 1996)
    sf = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    icc, lo, hi = stats.icc2_1_ci(sf)
    assert icc == pytest.approx(0.29, abs=0.005)
    assert lo == pytest.approx(0.019, abs=0.001) and hi == pytest.approx(0.76, abs=0.005)
    # the same data's other forms as published: ICC(3,1) = 0.71 [0.34, 0.95], ICC(2,k) = 0.62 [0.07, 0.93]
    forms = stats.icc_forms(sf)
    assert forms["icc3_1"] == pytest.approx((0.715, 0.342, 0.946), abs=0.002)
    assert forms["icc2_k"] == pytest.approx((0.620, 0.071, 0.927), abs=0.002)


def test_icc_class_only_when_determined():
    # few essays or an interval spanning classes → uncertain; a tight interval inside one class keeps it
    assert stats.icc_class_of(0.8, 0.76, 0.85, 30) == "good"
    assert stats.icc_class_of(0.8, 0.76, 0.85, 4) == "uncertain"
    assert stats.icc_class_of(0.8, 0.3, 0.95, 30) == "uncertain"
    assert stats.icc_class_of(0.8, float("nan"), float("nan"), 30) == "uncertain"
    assert stats.icc_class_of(float("nan"), 0, 1, 30) == "n/a"


def test_small_sample_mean_interval_is_t_not_the_range():
    # essays 0.80, 0.85, 0.80: mean 0.8167, sd 0.02887, se 0.01667, t(2) = 4.3027 → [0.745, 0.888]
    r = stats.t_cluster_mean([0.8, 0.85, 0.8], ["a", "b", "c"])
    m, lo, hi, k = r["estimate"], r["ci_low"], r["ci_high"], r["n_clusters"]
    assert k == 3 and m == pytest.approx(0.81667, abs=1e-4) and r["ci_method"] == "t over essay means (df 2)"
    assert lo == pytest.approx(0.74496, abs=1e-4) and hi == pytest.approx(0.88838, abs=1e-4)
    # identical essay means: not estimable (blank with the reason), never [x, x]
    r = stats.t_cluster_mean([0.5, 0.5, 0.5], ["a", "b", "c"])
    assert math.isnan(r["ci_low"]) and r["ci_note"].startswith("not estimable")
    # one cluster only
    assert stats.t_cluster_mean([0.4, 0.6], ["a", "a"])["ci_note"] == "not estimable: one essay only"


def test_lineage_clusters_go_to_the_highest_shared_level():
    rows = pd.DataFrame({"essay_gen_id": ["e1", "e2", "e3", "e4"], "draft_gen_id": ["d1", "d1", "d2", "d3"],
                         "combo_id": ["c1", "c1", "c1", "c2"]})
    level, ids = stats.lineage_clusters(rows)
    assert level == "combo_id" and list(ids) == ["c1", "c1", "c1", "c2"]
    # a single combo holds every row: the drafts are what varies
    level, ids = stats.lineage_clusters(rows.iloc[:3])
    assert level == "draft_gen_id" and list(ids) == ["d1", "d1", "d2"]
    # unknown lineage is no evidence of sharing
    unk = pd.DataFrame({"essay_gen_id": ["e1", "e2"], "draft_gen_id": ["unknown"] * 2, "combo_id": ["unknown"] * 2})
    assert stats.lineage_clusters(unk)[0] == "essay_gen_id"


def test_diff_is_paired_within_shared_clusters_and_welch_otherwise():
    # combos c1..c3 each hold one essay of level a and one of b: the within-combo differences are
    # 0.1, 0.2, 0.3 → mean 0.2, sd 0.1, se 0.0577, t(2) 4.3027 → [−0.0484, 0.4484]
    v = [0.6, 0.5, 0.7, 0.5, 0.8, 0.5]
    d = stats.t_cluster_diff(v, ["c1", "c1", "c2", "c2", "c3", "c3"], [True, False] * 3, "combo_id")
    assert d["paired"] and d["n_clusters"] == 3 and d["estimate"] == pytest.approx(0.2)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((0.2 - 4.302653 * 0.1 / math.sqrt(3),
                                                         0.2 + 4.302653 * 0.1 / math.sqrt(3)), abs=1e-5)
    # disjoint essays: Welch; a: 0.6, 0.7, 0.8 (var 0.01), b: 0.5, 0.5, 0.6 (var 1/300)
    d = stats.t_cluster_diff([0.6, 0.7, 0.8, 0.5, 0.5, 0.6], list("abcdef"), [True] * 3 + [False] * 3)
    va, vb = 0.01 / 3, (1 / 300) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    assert not d["paired"] and d["df"] == pytest.approx(df)
    from scipy.stats import t
    assert d["ci_high"] - d["estimate"] == pytest.approx(t.ppf(0.975, df) * math.sqrt(va + vb))
    # a constant difference in every combo: not estimable, not [0.1, 0.1]
    d = stats.t_cluster_diff([0.6, 0.5, 0.7, 0.6], ["c1", "c1", "c2", "c2"], [True, False] * 2, "combo_id")
    assert math.isnan(d["ci_low"]) and "not estimable" in d["ci_note"]


def test_holm_by_hand():
    # p sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → monotone 0.03, 0.06, 0.06
    out = stats.holm([0.01, 0.04, np.nan, 0.03])
    assert out[0] == pytest.approx(0.03) and out[1] == pytest.approx(0.06) and out[3] == pytest.approx(0.06)
    assert math.isnan(out[2])


def test_unknown_is_never_zero_on_the_site():
    from pipeline.sitegen.render import duration, interval, usd

    assert usd(None) == usd(float("nan")) == "unknown" and usd(0.0) == "$0.0000"
    assert duration(0.0004) == "0.4 ms" and duration(None) == "unknown" and duration(2.5) == "2.50 s"
    assert interval(0.1, None) == "" and interval(0.1, 0.25) == "[0.10, 0.25]"


def test_krippendorff_alpha_matches_the_package_and_its_resamples_use_the_same_formula():
    import krippendorff

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (30, 3)) + rng.normal(0, 1, (30, 1))
    x[0, 1] = x[3, 2] = np.nan
    ref = krippendorff.alpha(reliability_data=x.T, level_of_measurement="interval")
    # the resamples' formula, on the whole sample, is the package's α
    assert stats._alpha_from_sums(*np.column_stack(stats._alpha_parts(x)).sum(axis=0)) == pytest.approx(ref)
    a, lo, hi = stats.krippendorff_alpha(x)
    assert a == pytest.approx(ref) and lo < a < hi
    # under 5 units: α, but no interval
    a, lo, hi = stats.krippendorff_alpha(x[:4])
    assert math.isfinite(a) and math.isnan(lo) and math.isnan(hi)


def _cells(rows):
    """A scores frame from (essay, rubric, evaluator, score_norm) rows on a 0–1 scale."""
    return _scores([[e, r, m, "1", v, 0, 1] for e, r, m, v in rows])


def _essays(ids):
    return pd.DataFrame([{"essay_gen_id": e, "draft_gen_id": "d-" + e, "combo_id": "c-" + e, "draft_template": "x",
                          "draft_llm": "x", "essay_template": "x", "essay_llm": "x", "essay_mode": "llm",
                          "essay_status": "done", "in_cohort": True, "essay_simulated": False} for e in ids])


def test_certainty_is_never_made_from_nothing():
    # an essay whose two cells agree exactly borrows the other essays' spread: never [0.5, 0.5]
    s = _cells([("a", "r", "A", 0.5), ("a", "r", "B", 0.5), ("b", "r", "A", 0.2), ("b", "r", "B", 0.4),
                ("c", "r", "A", 0.9), ("c", "r", "B", 0.7)])  # B − A: +0.2 and −0.2, no net offset
    essays = _essays("abc")
    lb = tables.leaderboard(s, essays).set_index("essay_gen_id")
    assert lb.loc["a", "ci_low"] < 0.5 < lb.loc["a", "ci_high"]
    assert "pooled" in lb.loc["a", "ci_method"]
    # alone, the same essay has no spread to borrow: not estimable, not a zero-width interval
    alone = tables.leaderboard(s[s["essay_gen_id"] == "a"], essays[essays["essay_gen_id"] == "a"]).iloc[0]
    assert math.isnan(alone["ci_low"]) and alone["ci_note"].startswith("not estimable")
    # a constant evaluator offset over 5 essays: the paired difference has no spread, so no interval
    # and no flag (it used to be [0.1, 0.1], excludes_zero)
    rows = [(e, "r", "A", 0.3 + 0.1 * i) for i, e in enumerate("vwxyz")] + \
           [(e, "r", "B", 0.2 + 0.1 * i) for i, e in enumerate("vwxyz")]
    pc = tables.paired_comparisons(_cells(rows))
    row = pc[pc["factor"] == "evaluation_llm"].iloc[0]
    assert row["diff"] == pytest.approx(0.1) and math.isnan(row["ci_low"])
    assert row["excludes_zero"] is None and row["excludes_zero_holm"] is None and "not estimable" in row["ci_note"]


def test_partial_confounding_is_adjusted_and_said():
    # novelty is scored by a fair and a harsh evaluator, rigor by the fair one only. Per essay the
    # rubrics agree (fair: novelty = rigor), the harsh evaluator gives 0.3 less.
    rows = []
    for i, e in enumerate("abcdef"):
        q = 0.5 + 0.05 * (i % 3)
        rows += [(e, "novelty", "fair", q), (e, "rigor", "fair", q + 0.01 * (i % 2)), (e, "novelty", "harsh", q - 0.3)]
    s = _cells(rows)
    f = tables.factors(s, 0.8, 0.3)
    by = f[(f["factor"] == "evaluation_template") & (f["rubric"] == tables.ALL)].set_index("level")
    # raw: novelty pays for the harsh evaluator (−0.15 on average); adjusted, the rubrics are close
    assert by.loc["rigor", "mean_marginal"] - by.loc["novelty", "mean_marginal"] > 0.14
    assert abs(by.loc["rigor", "mean"] - by.loc["novelty", "mean"]) < 0.02
    assert "partially confounded" in by.loc["novelty", "note"] and "unbalanced" in by.loc["novelty", "note"]
    # an essay that lacks the harsh evaluator does not rank first for that alone
    s2 = _cells(rows + [("g", "novelty", "fair", 0.56), ("g", "rigor", "fair", 0.56)])
    essays = _essays("abcdefg")
    lb = tables.leaderboard(s2, essays)
    assert lb.iloc[0]["essay_gen_id"] != "g"
    assert lb.set_index("essay_gen_id").loc["g", "mean_raw"] == lb["mean_raw"].max()


def test_retest_is_per_model_and_a_model_bias_does_not_pass_for_reliability():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(12):
        q = rng.normal(5, 1)
        for m, bias in (("A", 0.0), ("B", 3.0)):
            for rep in ("1", "2"):
                rows.append([f"e{i}", "r", m, rep, q + bias + rng.normal(0, 1), 0, 10])
    s = _scores(rows)
    rt = tables.agreement_retest(s).set_index("evaluation_llm")
    assert list(rt.index) == ["A", "B"] and (rt["n_essays"] == 12).all()
    pooled_raw = stats.icc2_1(s.pivot_table(index=["essay_gen_id", "evaluation_llm"], columns="evaluation_replicate",
                                            values="score").to_numpy())
    ag = tables.agreement(s).iloc[0]
    # the bias between models inflates a pooled retest ICC; with each model's mean removed it does not
    assert pooled_raw > ag["retest_icc2_1"] + 0.2
    assert ag["retest_icc2_1"] < max(rt["retest_icc2_1"]) + 0.15


def test_variance_components_recover_planted_sizes():
    # essay sd 0.15 (var .0225), replicate noise sd 0.05 (var .0025), evaluator offsets ±0.05
    rng = np.random.default_rng(11)
    rows = []
    for i in range(40):
        q = rng.normal(0.5, 0.15)
        for m, off in (("A", -0.05), ("B", 0.05)):
            for rep in ("1", "2"):
                rows.append([f"e{i}", "r", m, rep, q + off + rng.normal(0, 0.05), 0, 1])
    vc = tables.variance_components(_scores(rows)).set_index("component")
    assert vc.loc["essay", "variance"] == pytest.approx(0.0225, rel=0.5)
    assert vc.loc["replicate", "variance"] == pytest.approx(0.0025, rel=0.3)
    assert vc.loc["essay", "ci_low"] < vc.loc["essay", "variance"] < vc.loc["essay", "ci_high"]
    assert vc.loc["replicate", "ci_low"] < 0.0025 < vc.loc["replicate", "ci_high"]
    assert vc.loc["evaluator", "variance"] > 0 and vc["share"].sum() == pytest.approx(1.0)
    gain = stats.precision_gain(vc["variance"].to_dict(), 2, 2)
    assert gain["noise_more_evaluators"] <= gain["noise_more_replicates"] < gain["noise"]


def test_intervals_recomputed_independently_from_cluster_means():
    """The tables' intervals against scipy on the highest shared cluster's means (a crossed,
    balanced design, where the evaluator adjustment moves every cluster mean alike). The mixed
    model's EMM and contrast are then the pooled-variance t on the combo means (df = combos − 2);
    where REML puts the combo variance at 0 (seed 6) the table falls back to the t over one level's
    combo means and Welch's t, and says so."""
    import sys
    from pathlib import Path

    from scipy import stats as st

    sys.path.insert(0, str(Path(__file__).parent))
    from test_stats_calibration import lineage_scores

    for seed, mixed in ((5, True), (6, False)):
        df = lineage_scores(seed, per_level=4, essays_per_draft=2, drafts_per_combo=1, draft_sd=0.1,
                            judge_b_bias=0.05)
        f = tables.factors(df, 0.8, 0.3)
        row = f[(f["factor"] == "essay_template") & (f["level"] == "tB") & (f["rubric"] == tables.ALL)].iloc[0]
        means = df[df["essay_template"] == "tB"].groupby("combo_id")["score_norm"].mean()  # 2 essays a combo
        a = df[df["essay_template"] == "tA"].groupby("combo_id")["score_norm"].mean()
        fe = tables.factor_effects(df)
        e = fe[(fe["factor"] == "essay_template") & (fe["rubric"] == tables.ALL)].iloc[0]
        assert row["n_clusters"] == 2 and e["n_clusters"] == 4
        if mixed:
            se = math.sqrt((means.var() + a.var()) / 2 / len(means))
            lo, hi = st.t.interval(0.95, 2, loc=means.mean(), scale=se)
            assert row["ci_method"] == "mixed-model EMM, Satterthwaite t (df 2.0)" and row["ci_note"] == ""
            w = st.ttest_ind(means, a, equal_var=True)
            assert e["ci_method"] == "mixed-model contrast, Satterthwaite t (df 2.0)"
            tol = {"rel": 1e-3, "abs": 1e-4}  # REML's optimiser stops within this of the ANOVA solution
        else:
            lo, hi = st.t.interval(0.95, len(means) - 1, loc=means.mean(), scale=st.sem(means))
            assert row["ci_method"] == "t over combo means (df 1)"
            assert row["ci_note"].startswith("mixed model not fitted: the combo variance is estimated at 0")
            w = st.ttest_ind(means, a, equal_var=False)
            assert e["ci_method"].startswith("Welch t over combo means")
            tol = {}
        assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo, **tol), pytest.approx(hi, **tol))
        assert e["p_value"] == pytest.approx(w.pvalue, **tol)
        assert e["diff"] == pytest.approx(means.mean() - a.mean(), **tol)
