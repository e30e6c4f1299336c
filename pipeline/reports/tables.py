"""Report tables as pure functions of the collected frames (no I/O).

Scores are compared across rubrics only on ``score_norm`` (0–1 on each rubric's own scale); raw
scores are aggregated only within one rubric. Unscored evaluations (failed, pending) are never
zeros: they count in ``n_unscored`` / ``expected`` and nowhere else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..store import STAGES
from . import stats

ALL = "(all)"  # the pooled-rubric level; parentheses cannot occur in an id
FACTORS = ["draft_template", "draft_llm", "essay_template", "essay_llm", "essay_mode", "evaluation_template",
           "evaluation_llm", "combo_id"]
EPS = 1e-9  # tolerance for thresholds on score_norm (7.2/9 must count as ≥ 0.8)

NORM_STATS = ["n", "n_unscored", "n_essays", "mean", "std", "min", "max"]
SPREAD_STATS = ["n", "mean", "std", "min", "max", "range", "range_norm", "cv", "agreement"]
COLUMNS = {
    "pivot_essay_evaluator": ["essay_gen_id", "evaluation_llm", "evaluation_template", "scale_min", "scale_max",
                              "n", "n_unscored", "mean", "std", "min", "max", "mean_norm"],
    "pivot_generation": ["stage", "template", "llm"] + NORM_STATS,
    "pivot_draft_essay_template": ["draft_template", "essay_template"] + NORM_STATS,
    "factors": ["factor", "level", "rubric"] + NORM_STATS + ["share_high", "share_low", "share_max"],
    "variance_models": ["essay_gen_id", "evaluation_template", "scale_min", "scale_max"] + SPREAD_STATS,
    "variance_rubrics": ["essay_gen_id", "evaluation_llm"] + SPREAD_STATS,
    "variance_replicates": ["essay_gen_id", "evaluation_template", "evaluation_llm", "scale_min", "scale_max"]
                           + SPREAD_STATS,
    "agreement": ["evaluation_template", "scale_min", "scale_max", "n_raters", "n_essays", "icc2_1", "icc_class",
                  "mean_pearson", "n_rater_pairs", "retest_icc2_1", "n_retest_units"],
    "leaderboard": ["rank", "essay_gen_id", "draft_gen_id", "combo_id", "draft_template", "draft_llm",
                    "essay_template", "essay_llm", "essay_mode", "essay_status", "in_cohort", "mean", "std",
                    "min", "max", "n_cells", "n", "expected", "coverage", "simulated"],
    "coverage": ["stage", "expected", "done", "failed", "pending", "coverage", "prompt_tokens",
                 "completion_tokens", "cost_usd", "n_simulated"],
    "cross_cohort": ["essay_gen_id", "cohort_id", "n_cohorts", "draft_template", "draft_llm", "essay_template",
                     "essay_llm", "n_cells", "n", "mean", "std", "min", "max", "rubrics", "evaluators",
                     "mean_across_cohorts", "delta"],
}


def _empty(name: str) -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS[name])


def _norm_stats(scores: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """n scored, n unscored, distinct essays, and mean/std/min/max of score_norm per group."""
    g = scores.groupby(keys, sort=True, dropna=False)
    out = g["score_norm"].agg(n="count", mean="mean", std="std", min="min", max="max")
    out["n_unscored"] = g.size() - out["n"]
    out["n_essays"] = g["essay_gen_id"].nunique()
    return out.reset_index()


def pivot_essay_evaluator(scores: pd.DataFrame) -> pd.DataFrame:
    if scores.empty:
        return _empty("pivot_essay_evaluator")
    keys = ["essay_gen_id", "evaluation_llm", "evaluation_template", "scale_min", "scale_max"]
    g = scores.groupby(keys, sort=True, dropna=False)
    out = g["score"].agg(n="count", mean="mean", std="std", min="min", max="max")
    out["n_unscored"] = g.size() - out["n"]
    out["mean_norm"] = g["score_norm"].mean()
    return out.reset_index()[COLUMNS["pivot_essay_evaluator"]]


def pivot_generation(scores: pd.DataFrame) -> pd.DataFrame:
    parts = [
        _norm_stats(scores, [f"{st}_template", f"{st}_llm"])
        .rename(columns={f"{st}_template": "template", f"{st}_llm": "llm"}).assign(stage=st)
        for st in ("draft", "essay") if not scores.empty
    ]
    return pd.concat(parts, ignore_index=True)[COLUMNS["pivot_generation"]] if parts else _empty("pivot_generation")


def pivot_draft_essay_template(scores: pd.DataFrame) -> pd.DataFrame:
    if scores.empty:
        return _empty("pivot_draft_essay_template")
    return _norm_stats(scores, ["draft_template", "essay_template"])[COLUMNS["pivot_draft_essay_template"]]


def factors(scores: pd.DataFrame, high: float, low: float) -> pd.DataFrame:
    """Every factor × level, pooled over rubrics (rubric ``(all)``) and per rubric, on score_norm.

    share_high: score_norm ≥ ``high``; share_low: score_norm ≤ ``low``; share_max: the rubric's own
    maximum (so a 10 is never "perfect" on a 0–9 rubric: it is out of scale and unscored).
    """
    if scores.empty:
        return _empty("factors")
    norm = scores["score_norm"]
    scored = norm.notna()
    base = scores[["essay_gen_id", "score_norm"] + FACTORS].assign(
        rubric=scores["evaluation_template"],
        _high=np.where(scored, norm >= high - EPS, np.nan),
        _low=np.where(scored, norm <= low + EPS, np.nan),
        _max=np.where(scored, norm >= 1 - EPS, np.nan),
    )
    long = base.melt(id_vars=["essay_gen_id", "score_norm", "rubric", "_high", "_low", "_max"], value_vars=FACTORS,
                     var_name="factor", value_name="level")
    per_rubric = long[long["factor"] != "evaluation_template"]
    long = pd.concat([long.assign(rubric=ALL), per_rubric], ignore_index=True)
    keys = ["factor", "rubric", "level"]
    out = _norm_stats(long, keys)
    shares = long.groupby(keys, sort=True, dropna=False)[["_high", "_low", "_max"]].mean()
    out[["share_high", "share_low", "share_max"]] = shares.to_numpy()
    # FACTORS order, pooled rubric first, then levels alphabetically
    out["_f"] = out["factor"].map(FACTORS.index)
    out["_r"] = out["rubric"] != ALL
    out = out.sort_values(["_f", "_r", "rubric", "level"], kind="stable")
    return out[COLUMNS["factors"]].reset_index(drop=True)


def _scored(scores: pd.DataFrame) -> pd.DataFrame:
    s = scores[scores["score_norm"].notna()].copy()
    s["scale_width"] = s["scale_max"] - s["scale_min"]
    return s


def variance_replicates(scores: pd.DataFrame) -> pd.DataFrame:
    """Test-retest: the replicates of one evaluator on one essay and rubric (raw score units)."""
    s = _scored(scores)
    if s.empty:
        return _empty("variance_replicates")
    keys = ["essay_gen_id", "evaluation_template", "evaluation_llm", "scale_min", "scale_max"]
    return stats.spread(s, keys, "score", "scale_width")[COLUMNS["variance_replicates"]]


def variance_models(scores: pd.DataFrame) -> pd.DataFrame:
    """Evaluation models on one essay and rubric, each model's replicates averaged first."""
    s = _scored(scores)
    if s.empty:
        return _empty("variance_models")
    keys = ["essay_gen_id", "evaluation_template", "scale_min", "scale_max", "scale_width"]
    per_model = s.groupby(keys + ["evaluation_llm"], sort=True)["score"].mean().reset_index()
    return stats.spread(per_model, keys[:-1], "score", "scale_width")[COLUMNS["variance_models"]]


def variance_rubrics(scores: pd.DataFrame) -> pd.DataFrame:
    """Rubrics on one essay by one model, on score_norm (replicates averaged first)."""
    s = _scored(scores)
    if s.empty:
        return _empty("variance_rubrics")
    keys = ["essay_gen_id", "evaluation_llm"]
    per_rubric = s.groupby(keys + ["evaluation_template"], sort=True)["score_norm"].mean().reset_index()
    return stats.spread(per_rubric, keys, "score_norm")[COLUMNS["variance_rubrics"]]


def agreement(scores: pd.DataFrame) -> pd.DataFrame:
    """Per rubric: ICC(2,1) across evaluation models (essays scored by all of them) and mean
    pairwise Pearson r; retest ICC(2,1) treats replicates as raters of each (essay, model)."""
    rows = []
    s = _scored(scores)
    for rubric in sorted(scores["evaluation_template"].unique()):
        sub = s[s["evaluation_template"] == rubric]
        sc = scores.loc[scores["evaluation_template"] == rubric, ["scale_min", "scale_max"]].iloc[0]
        matrix = sub.pivot_table(index="essay_gen_id", columns="evaluation_llm", values="score", aggfunc="mean")
        complete = matrix.dropna()
        r, pairs = stats.mean_pairwise_pearson(matrix)
        retest = sub.pivot_table(index=["essay_gen_id", "evaluation_llm"], columns="evaluation_replicate",
                                 values="score", aggfunc="mean").dropna()
        icc = stats.icc2_1(complete.to_numpy()) if matrix.shape[1] >= 2 else float("nan")
        rows.append({
            "evaluation_template": rubric, "scale_min": sc["scale_min"], "scale_max": sc["scale_max"],
            "n_raters": matrix.shape[1], "n_essays": len(complete), "icc2_1": icc, "icc_class": stats.icc_class(icc),
            "mean_pearson": r, "n_rater_pairs": pairs,
            "retest_icc2_1": stats.icc2_1(retest.to_numpy()) if retest.shape[1] >= 2 else float("nan"),
            "n_retest_units": len(retest),
        })
    return pd.DataFrame(rows, columns=COLUMNS["agreement"])


def essay_cells(scores: pd.DataFrame) -> pd.DataFrame:
    """Per essay × rubric × evaluator: mean score_norm over replicates (the unit essays are ranked on)."""
    keys = ["essay_gen_id", "evaluation_template", "evaluation_llm"]
    return scores[scores["score_norm"].notna()].groupby(keys, sort=True)["score_norm"].mean().reset_index()


def _essay_stats(scores: pd.DataFrame) -> pd.DataFrame:
    """mean/std/min/max over an essay's cells (each rubric × evaluator weighs the same whatever its
    replicate count), n scored evaluations, n_cells, expected evaluations."""
    cells = essay_cells(scores).groupby("essay_gen_id")["score_norm"]
    out = cells.agg(mean="mean", std="std", min="min", max="max", n_cells="count")
    g = scores.groupby("essay_gen_id", sort=True)
    return out.join(g["score_norm"].count().rename("n"), how="outer").join(g.size().rename("expected"), how="outer")


def leaderboard(scores: pd.DataFrame, essays: pd.DataFrame) -> pd.DataFrame:
    """Every essay of the cohort ranked by mean score_norm (unscored essays last, rank blank)."""
    if essays.empty:
        return _empty("leaderboard")
    agg = _essay_stats(scores)
    agg["_sim"] = scores.groupby("essay_gen_id")["simulated"].any()
    out = essays.merge(agg.reset_index(), on="essay_gen_id", how="left")
    for k in ("n", "n_cells", "expected"):
        out[k] = out[k].fillna(0).astype("int64")
    out["coverage"] = np.where(out["expected"] > 0, out["n"] / out["expected"].where(out["expected"] > 0, 1), np.nan)
    out["simulated"] = out["essay_simulated"].astype(bool) | out["_sim"].fillna(False).astype(bool)
    out["rank"] = out["mean"].rank(ascending=False, method="min").astype("Int64")
    out = out.sort_values(["mean", "essay_gen_id"], ascending=[False, True], na_position="last", kind="stable")
    return out[COLUMNS["leaderboard"]].reset_index(drop=True)


def coverage(generations: pd.DataFrame) -> pd.DataFrame:
    """Per stage (always all three): expected, done, failed, pending, coverage, tokens, cost."""
    rows = []
    for stage in STAGES:
        g = generations[generations["stage"] == stage]
        st = g["status"].value_counts()
        n = len(g)
        rows.append({
            "stage": stage, "expected": n, "done": int(st.get("done", 0)), "failed": int(st.get("failed", 0)),
            "pending": int(st.get("pending", 0)), "coverage": st.get("done", 0) / n if n else np.nan,
            "prompt_tokens": int(g["prompt_tokens"].sum()), "completion_tokens": int(g["completion_tokens"].sum()),
            "cost_usd": float(g["cost_usd"].sum()), "n_simulated": int(g["simulated"].sum()),
        })
    return pd.DataFrame(rows, columns=COLUMNS["coverage"])


def cross_cohort(per_cohort: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Essays evaluated in ≥ 2 cohorts: one row per (essay, cohort) with that cohort's scores.

    ``delta`` = this cohort's mean − the mean of the cohorts' means (on score_norm), so a cohort
    whose rubrics or evaluators rate the shared essay differently stands out.
    """
    parts = []
    for cohort_id, s in per_cohort.items():
        if s.empty:
            continue
        g = s.groupby("essay_gen_id", sort=True)
        out = _essay_stats(s).drop(columns="expected")
        out["n_cells"] = out["n_cells"].fillna(0).astype("int64")
        first = g[["draft_template", "draft_llm", "essay_template", "essay_llm"]].first()
        sc = s[s["score_norm"].notna()].groupby("essay_gen_id")
        out["rubrics"] = sc["evaluation_template"].agg(lambda x: ";".join(sorted(set(x))))
        out["evaluators"] = sc["evaluation_llm"].agg(lambda x: ";".join(sorted(set(x))))
        parts.append(out.join(first).reset_index().assign(cohort_id=cohort_id))
    if not parts:
        return _empty("cross_cohort")
    df = pd.concat(parts, ignore_index=True)
    df["n_cohorts"] = df.groupby("essay_gen_id")["cohort_id"].transform("nunique")
    df = df[df["n_cohorts"] >= 2].copy()
    df["mean_across_cohorts"] = df.groupby("essay_gen_id")["mean"].transform("mean")
    df["delta"] = df["mean"] - df["mean_across_cohorts"]
    df[["rubrics", "evaluators"]] = df[["rubrics", "evaluators"]].fillna("")
    return df.sort_values(["essay_gen_id", "cohort_id"])[COLUMNS["cross_cohort"]].reset_index(drop=True)
