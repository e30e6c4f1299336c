"""The mixed-model path of the factor tables (``stats.mixed_emm``): calibration of its intervals
on simulated lineages at small n (a fast subset: bench/stats_calibration.py runs thousands of
seeds), and the fallback to the t over cluster means with its reason."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.reports import stats, tables

sys.path.insert(0, str(Path(__file__).parent))
from test_stats_calibration import lineage_scores, simulate  # noqa: E402

ADJUST = ["evaluation_llm", "evaluation_template"]


def mixed_coverage(frames, factor: str, mean_truth: float | None, diff_truth: float) -> dict:
    """Coverage of the tB mean and tB − tA difference intervals as the tables make them: the mixed
    model's where it is fitted, else the t over the cluster means (on the raw values: the designs
    here are balanced over evaluators, so the evaluator adjustment moves no level mean). Returns
    the share fitted, the coverage of both together (what the tables report) and of the mixed
    model's alone (selected: it is fitted where the top variance is away from 0, where intervals
    are wider, so alone it over-covers)."""
    fitted = 0
    hit = {"mean": 0, "diff": 0, "mixed_mean": 0, "mixed_diff": 0}
    for df in frames:
        try:
            r = stats.mixed_emm(df, "score_norm", factor, ADJUST)
            m, d = r["mean"]["tB"], r["diff"]["tB"]
            assert m["ci_low"] < m["estimate"] < m["ci_high"] and m["df"] >= 1 and d["df"] >= 1
            fitted += 1
        except stats.MixedUnavailable:
            r = None
            v, lin = df["score_norm"].to_numpy(), [df[c].astype(str).to_numpy() for c in stats.LINEAGE[::-1]]
            b = df[factor].to_numpy() == "tB"
            m = stats.t_cluster_mean(v[b], *stats.lineage_ids(*(x[b] for x in lin))[::-1])
            pair_level, clusters = stats.lineage_ids(*lin)
            d = stats.t_cluster_diff(v, clusters, b, pair_level)
        ok_m = mean_truth is None or m["ci_low"] <= mean_truth <= m["ci_high"]
        ok_d = d["ci_low"] <= diff_truth <= d["ci_high"]
        hit["mean"] += ok_m
        hit["diff"] += ok_d
        if r is not None:
            hit["mixed_mean"] += ok_m
            hit["mixed_diff"] += ok_d
    n = len(frames)
    return {"fitted": fitted / n, "mean": hit["mean"] / n, "diff": hit["diff"] / n,
            "mixed_mean": hit["mixed_mean"] / max(fitted, 1), "mixed_diff": hit["mixed_diff"] / max(fitted, 1)}


@pytest.mark.parametrize("design", ["essays", "drafts", "within"])
def test_mixed_model_intervals_cover_at_small_n(design):
    """95 % intervals as the factor tables make them (the mixed model where fitted, else the t over
    cluster means) cover the planted values at 3 essays a level (one essay per draft: the essay is
    the top cluster, df 4), at 6 essays a level in drafts of 2 that carry their own effect (the
    combo is the top cluster, df 4), and with the template varying within combos (estimated within
    them). 80 seeds each: ±4.9 points at two standard errors, so the bounds here are loose; the
    bench measures 93–97 % over thousands."""
    seeds = range(80)
    if design == "essays":
        frames = [lineage_scores(s, per_level=3, effect=0.1, judge_b_bias=0.05) for s in seeds]
        cov = mixed_coverage(frames, "essay_template", 0.525, -0.1)
    elif design == "drafts":
        frames = [lineage_scores(s, per_level=6, effect=0.1, judge_b_bias=0.05, essays_per_draft=2,
                                 draft_sd=0.08, rubrics=(("novelty", 0, 9),)) for s in seeds]
        cov = mixed_coverage(frames, "essay_template", 0.525, -0.1)
    else:
        frames = [simulate(s, template_effect=0.1, n_essays=12, replicates=1) for s in seeds]
        cov = mixed_coverage(frames, "essay_template", None, -0.1)
    assert cov["fitted"] >= 0.5, cov
    assert 0.9 <= cov["diff"] <= 0.99, cov
    if design != "within":  # the level mean there is not planted (essay models vary with it)
        assert 0.9 <= cov["mean"] <= 0.99, cov


def test_mixed_model_matches_the_pooled_t_on_cluster_means():
    """Balanced, the factor between top clusters: the EMM's interval is the pooled-variance t on
    the cluster means with df = clusters − levels (what an ANOVA on the cluster means gives)."""
    from scipy import stats as st

    df = lineage_scores(5, per_level=4, essays_per_draft=2, draft_sd=0.1, judge_b_bias=0.05)
    r = stats.mixed_emm(df, "score_norm", "essay_template", ADJUST)
    b = df[df["essay_template"] == "tB"].groupby("combo_id")["score_norm"].mean()
    a = df[df["essay_template"] == "tA"].groupby("combo_id")["score_norm"].mean()
    se = math.sqrt((a.var() + b.var()) / 2 / len(b))
    m = r["mean"]["tB"]
    assert m["df"] == pytest.approx(2.0) and m["se"] == pytest.approx(se, rel=1e-3)
    assert m["ci_method"] == "mixed-model EMM, Satterthwaite t (df 2.0)"
    d = r["diff"]["tB"]
    assert d["estimate"] == pytest.approx(b.mean() - a.mean(), abs=1e-6)
    assert d["p_value"] == pytest.approx(st.ttest_ind(b, a).pvalue, rel=1e-3)


def test_mixed_model_falls_back_with_its_reason():
    # two combos, one a level: nothing is left to estimate the combo variance from
    two = lineage_scores(1, per_level=3, essays_per_draft=3, draft_sd=0.1)
    with pytest.raises(stats.MixedUnavailable, match="combo variance is not identified"):
        stats.mixed_emm(two, "score_norm", "essay_template", ADJUST)
    # a template varying within 4 combos: below 6 the paired t over the combos is used
    with pytest.raises(stats.MixedUnavailable, match="varies within 4 combos only"):
        stats.mixed_emm(simulate(0, n_essays=8), "score_norm", "essay_template", ADJUST)
    # above the size a fit is kept to: refused before fitting
    big = lineage_scores(1, per_level=(stats.MIXED_MAX_ROWS // 8) + 1)
    with pytest.raises(stats.MixedUnavailable, match="above the 1,500"):
        stats.mixed_emm(big, "score_norm", "essay_template", ADJUST)
    # through the table (the combo variance at 0 here): the t over the level's combo means, and
    # the note says why
    zero = lineage_scores(6, per_level=4, essays_per_draft=2, draft_sd=0.1, judge_b_bias=0.05)
    f = tables.factors(zero, 0.8, 0.3)
    row = f[(f["factor"] == "essay_template") & (f["level"] == "tB") & (f["rubric"] == tables.ALL)].iloc[0]
    assert row["ci_method"] == "t over combo means (df 1)" and np.isfinite(row["ci_low"])
    assert row["ci_note"].startswith("mixed model not fitted: the combo variance is estimated at 0")
    combos = f[f["factor"] == "combo_id"]
    assert combos["ci_note"].str.contains("mixed model not fitted: a combo is the lineage's top random level").all()
