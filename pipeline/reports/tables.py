"""Report tables as pure functions of the collected frames (no I/O).

Scores are compared across rubrics only on ``score_norm`` (0–1 on each rubric's own scale); raw
scores are aggregated only within one rubric. Unscored evaluations (failed, pending) are never
zeros: they count in ``n_unscored`` / ``expected`` and nowhere else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..spend import SPEND_COLUMNS, spend_rows
from ..store import STAGES
from . import stats

ALL = "(all)"  # the pooled-rubric level; parentheses cannot occur in an id
FACTORS = ["draft_template", "draft_llm", "essay_template", "essay_llm", "essay_mode", "evaluation_template",
           "evaluation_llm", "combo_id"]
EPS = 1e-9  # tolerance for thresholds on score_norm (7.2/9 must count as ≥ 0.8)
JOINT = " × "  # joins the names (and levels) of aliased factors
EVALUATION_FACTORS = ("evaluation_template", "evaluation_llm")
CI = ["ci_low", "ci_high"]

NORM_STATS = ["n", "n_unscored", "n_essays", "mean", "std", "min", "max"]
SPREAD_STATS = ["n", "mean", "std", "min", "max", "range", "range_norm", "cv", "agreement"]
COLUMNS = {
    "pivot_essay_evaluator": ["essay_gen_id", "evaluation_llm", "evaluation_template", "scale_min", "scale_max",
                              "n", "n_unscored", "mean", "std", "min", "max", "mean_norm"],
    "pivot_generation": ["stage", "template", "llm"] + NORM_STATS,
    "pivot_draft_essay_template": ["draft_template", "essay_template"] + NORM_STATS,
    "factors": ["factor", "level", "rubric", "n", "n_unscored", "n_essays", "mean"] + CI + ["std", "min", "max",
                "share_high", "share_low", "share_max", "note"],
    "factor_effects": ["factor", "rubric", "level", "reference", "n_essays", "n_essays_reference", "mean",
                       "mean_reference", "diff"] + CI + ["excludes_zero", "note"],
    "paired_comparisons": ["factor", "level_a", "level_b", "matched_on", "n_units", "n_essays", "mean_a", "mean_b",
                           "diff"] + CI + ["excludes_zero", "r", "r_ci_low", "r_ci_high"],
    "variance_models": ["essay_gen_id", "evaluation_template", "scale_min", "scale_max"] + SPREAD_STATS,
    "variance_rubrics": ["essay_gen_id", "evaluation_llm"] + SPREAD_STATS,
    "variance_replicates": ["essay_gen_id", "evaluation_template", "evaluation_llm", "scale_min", "scale_max"]
                           + SPREAD_STATS,
    "agreement": ["evaluation_template", "scale_min", "scale_max", "n_raters", "n_essays", "icc2_1", "icc2_1_ci_low",
                  "icc2_1_ci_high", "icc_class", "mean_pearson", "mean_pearson_ci_low", "mean_pearson_ci_high",
                  "n_pearson_essays", "n_rater_pairs", "retest_icc2_1", "retest_icc2_1_ci_low",
                  "retest_icc2_1_ci_high", "n_retest_units"],
    "leaderboard": ["rank", "essay_gen_id", "draft_gen_id", "combo_id", "draft_template", "draft_llm",
                    "essay_template", "essay_llm", "essay_mode", "essay_status", "in_cohort", "mean", "ci_low",
                    "ci_high", "std", "min", "max", "n_cells", "n", "expected", "coverage", "simulated"],
    "coverage": ["stage", "expected", "done", "stale", "failed", "pending", "coverage", "prompt_tokens",
                 "completion_tokens", "cost_usd", "n_cost_unknown", "n_simulated"],
    "spend": list(SPEND_COLUMNS),
    "cross_cohort": ["essay_gen_id", "cohort_id", "n_cohorts", "draft_template", "draft_llm", "essay_template",
                     "essay_llm", "n_cells", "n", "mean", "ci_low", "ci_high", "std", "min", "max", "rubrics",
                     "evaluators", "mean_across_cohorts", "delta", "delta_ci_low", "delta_ci_high"],
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


def factor_design(scores: pd.DataFrame) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """The factor columns of ``scores`` with aliased factors merged into joint factors.

    Returns (frame with one column per factor, joint ones added as ``a × b`` with levels
    ``x × y``; the factor names in FACTORS order; {factor: note}). Aliasing is judged on every
    evaluation in membership (the design), not only the scored ones.
    """
    df = scores.copy()
    names: list[str] = []
    notes: dict[str, str] = {}
    groups = {g[0]: g for g in stats.aliased_groups(df, FACTORS)}
    grouped = {f for g in groups.values() for f in g}
    for f in FACTORS:
        if f in groups and len(groups[f]) > 1:
            g = groups[f]
            name = JOINT.join(g)
            df[name] = df[g].astype(str).agg(JOINT.join, axis=1)
            names.append(name)
            notes[name] = (f"aliased: {', '.join(g)} change together in this cohort's design (their levels pair "
                           "one-to-one), so their effects cannot be separated; shown once as a joint factor")
        elif f in groups or f not in grouped:
            names.append(f)
            if f not in grouped:
                notes[f] = "one level only: nothing to compare"
    return df, names, notes


def _with_ci(long: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group: 95 % cluster-bootstrap interval of the mean score_norm, resampling essays."""
    rows = []
    for key, grp in long[long["score_norm"].notna()].groupby(keys, sort=True):
        _, lo, hi, _ = stats.cluster_mean_ci(grp["essay_gen_id"], grp["score_norm"])
        rows.append((*key, lo, hi))
    return pd.DataFrame(rows, columns=keys + CI)


def factors(scores: pd.DataFrame, high: float, low: float) -> pd.DataFrame:
    """Every factor × level, pooled over rubrics (rubric ``(all)``) and per rubric, on score_norm.

    The mean is over scored evaluations; its interval resamples essays with all their evaluations,
    so the unit behind it is ``n_essays``. Aliased factors appear once, as a joint factor, with a
    ``note``. share_high: score_norm ≥ ``high``; share_low: score_norm ≤ ``low``; share_max: the
    rubric's own maximum (so a 10 is never "perfect" on a 0–9 rubric: it is out of scale and
    unscored).
    """
    if scores.empty:
        return _empty("factors")
    design, names, notes = factor_design(scores)
    norm = scores["score_norm"]
    scored = norm.notna()
    base = design[["essay_gen_id", "score_norm"] + names].assign(
        rubric=scores["evaluation_template"],
        _high=np.where(scored, norm >= high - EPS, np.nan),
        _low=np.where(scored, norm <= low + EPS, np.nan),
        _max=np.where(scored, norm >= 1 - EPS, np.nan),
    )
    long = base.melt(id_vars=["essay_gen_id", "score_norm", "rubric", "_high", "_low", "_max"], value_vars=names,
                     var_name="factor", value_name="level")
    # within one rubric a factor involving the rubric itself has a single level: nothing to show
    per_rubric = long[~long["factor"].str.contains("evaluation_template", regex=False)]
    long = pd.concat([long.assign(rubric=ALL), per_rubric], ignore_index=True)
    keys = ["factor", "rubric", "level"]
    out = _norm_stats(long, keys)
    shares = long.groupby(keys, sort=True, dropna=False)[["_high", "_low", "_max"]].mean()
    out[["share_high", "share_low", "share_max"]] = shares.to_numpy()
    out = out.merge(_with_ci(long, keys), on=keys, how="left")
    out["note"] = out["factor"].map(notes).fillna("")
    # FACTORS order, pooled rubric first, then levels alphabetically
    out["_f"] = out["factor"].map(names.index)
    out["_r"] = out["rubric"] != ALL
    out = out.sort_values(["_f", "_r", "rubric", "level"], kind="stable")
    return out[COLUMNS["factors"]].reset_index(drop=True)


def factor_effects(scores: pd.DataFrame) -> pd.DataFrame:
    """Differences between the levels of each generation factor (joint when aliased), pooled and
    per rubric: each level's mean score_norm − the reference level's (the first in sort order).

    Essays with different generation choices are different essays, so the difference is
    unpaired: each level's essays are resampled on their own (stratified cluster bootstrap) for
    the 95 % interval. ``combo_id`` is left out (one essay per level, mostly); evaluation factors
    are compared on matched units in ``paired_comparisons``.
    """
    if scores.empty:
        return _empty("factor_effects")
    design, names, notes = factor_design(scores)
    s = design[design["score_norm"].notna()]
    rows = []
    for factor in names:
        if factor == "combo_id" or any(f in factor for f in EVALUATION_FACTORS) or factor not in s.columns:
            continue
        for rubric in [ALL] + sorted(s["evaluation_template"].unique()):
            sub = s if rubric == ALL else s[s["evaluation_template"] == rubric]
            levels = sorted(sub[factor].unique())
            if len(levels) < 2:
                continue
            ref = sub[sub[factor] == levels[0]]
            for level in levels[1:]:
                cur = sub[sub[factor] == level]
                diff, lo, hi, k, k_ref = stats.cluster_diff_ci(cur["essay_gen_id"], cur["score_norm"],
                                                               ref["essay_gen_id"], ref["score_norm"])
                rows.append({"factor": factor, "rubric": rubric, "level": level, "reference": levels[0],
                             "n_essays": k, "n_essays_reference": k_ref, "mean": cur["score_norm"].mean(),
                             "mean_reference": ref["score_norm"].mean(), "diff": diff, "ci_low": lo, "ci_high": hi,
                             "excludes_zero": _excludes_zero(lo, hi), "note": notes.get(factor, "")})
    return pd.DataFrame(rows, columns=COLUMNS["factor_effects"])


def _excludes_zero(lo: float, hi: float):
    """True/False when there is an interval, blank (None) when there is none."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return bool(lo > 0 or hi < 0)


def paired_comparisons(scores: pd.DataFrame) -> pd.DataFrame:
    """Rubrics compared on matched units only (same essay, same evaluation model), and evaluation
    models on matched units (same essay, same rubric), on score_norm with replicates averaged.

    For each pair of levels: n matched units, the essays they come from, both means over those
    units, their mean difference (a − b) with a 95 % interval that resamples essays, and Pearson r
    of the matched pairs with the same kind of interval.
    """
    s = _scored(scores)
    if s.empty:
        return _empty("paired_comparisons")
    cells = essay_cells(s)
    rows = []
    for factor, other in (EVALUATION_FACTORS, EVALUATION_FACTORS[::-1]):
        wide = cells.pivot_table(index=["essay_gen_id", other], columns=factor, values="score_norm", aggfunc="mean")
        levels = sorted(wide.columns)
        for i, a in enumerate(levels):
            for b in levels[i + 1:]:
                both = wide[[a, b]].dropna()
                essays = both.index.get_level_values("essay_gen_id")
                d = both[a] - both[b]
                diff, lo, hi, k = stats.cluster_mean_ci(essays, d)
                r, rlo, rhi, _, _ = stats.cluster_pearson_ci(essays, both[a], both[b])
                rows.append({"factor": factor, "level_a": a, "level_b": b, "matched_on": f"essay_gen_id × {other}",
                             "n_units": len(both), "n_essays": k, "mean_a": both[a].mean(), "mean_b": both[b].mean(),
                             "diff": diff, "ci_low": lo, "ci_high": hi, "excludes_zero": _excludes_zero(lo, hi),
                             "r": r, "r_ci_low": rlo, "r_ci_high": rhi})
    return pd.DataFrame(rows, columns=COLUMNS["paired_comparisons"])


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
    """Per rubric: ICC(2,1) across evaluation models (essays scored by all of them) with its
    analytic 95 % interval, and mean pairwise Pearson r with a bootstrap interval over essays;
    retest ICC(2,1) treats replicates as raters of each (essay, model)."""
    rows = []
    s = _scored(scores)
    for rubric in sorted(scores["evaluation_template"].unique()):
        sub = s[s["evaluation_template"] == rubric]
        sc = scores.loc[scores["evaluation_template"] == rubric, ["scale_min", "scale_max"]].iloc[0]
        matrix = sub.pivot_table(index="essay_gen_id", columns="evaluation_llm", values="score", aggfunc="mean")
        complete = matrix.dropna()
        _, pairs = stats.mean_pairwise_pearson(matrix)
        r, rlo, rhi, rn = stats.mean_pairwise_pearson_ci(matrix)
        retest = sub.pivot_table(index=["essay_gen_id", "evaluation_llm"], columns="evaluation_replicate",
                                 values="score", aggfunc="mean").dropna()
        nan3 = (float("nan"),) * 3
        icc = stats.icc2_1_ci(complete.to_numpy()) if matrix.shape[1] >= 2 else nan3
        ricc = stats.icc2_1_ci(retest.to_numpy()) if retest.shape[1] >= 2 else nan3
        rows.append({
            "evaluation_template": rubric, "scale_min": sc["scale_min"], "scale_max": sc["scale_max"],
            "n_raters": matrix.shape[1], "n_essays": len(complete), "icc2_1": icc[0], "icc2_1_ci_low": icc[1],
            "icc2_1_ci_high": icc[2], "icc_class": stats.icc_class(icc[0]), "mean_pearson": r,
            "mean_pearson_ci_low": rlo, "mean_pearson_ci_high": rhi, "n_pearson_essays": rn if pairs else 0,
            "n_rater_pairs": pairs, "retest_icc2_1": ricc[0], "retest_icc2_1_ci_low": ricc[1],
            "retest_icc2_1_ci_high": ricc[2], "n_retest_units": len(retest),
        })
    return pd.DataFrame(rows, columns=COLUMNS["agreement"])


def essay_cells(scores: pd.DataFrame) -> pd.DataFrame:
    """Per essay × rubric × evaluator: mean score_norm over replicates (the unit essays are ranked on)."""
    keys = ["essay_gen_id", "evaluation_template", "evaluation_llm"]
    return scores[scores["score_norm"].notna()].groupby(keys, sort=True)["score_norm"].mean().reset_index()


def _essay_stats(scores: pd.DataFrame) -> pd.DataFrame:
    """mean (with a 95 % t interval)/std/min/max over an essay's cells (each rubric × evaluator weighs the same whatever its
    replicate count), n scored evaluations, n_cells, expected evaluations."""
    cells = essay_cells(scores).groupby("essay_gen_id")["score_norm"]
    out = cells.agg(mean="mean", std="std", min="min", max="max", n_cells="count")
    # a t interval over the cells: an essay has a handful of them, too few for a bootstrap
    lo, hi = stats.t_interval(out["mean"], out["std"], out["n_cells"])
    # score_norm lives in [0, 1]; a symmetric t interval can overshoot it with few cells
    out["ci_low"], out["ci_high"] = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
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


def _unknown_cost(g: pd.DataFrame) -> pd.Series:
    """Generations that called a model (done or failed, not a copy) but recorded no cost."""
    called = (g["status"] != "pending") & (g["llm_model_id"] != "copy")
    return called & g["cost_usd"].isna()


def _known_cost(g: pd.DataFrame) -> float:
    """The stage's cost, or NaN (unknown) when any call's cost is unknown: a partial sum printed
    as the total would understate it, and 0 would claim the calls were free."""
    return float("nan") if _unknown_cost(g).any() else float(g["cost_usd"].sum())


def coverage(generations: pd.DataFrame) -> pd.DataFrame:
    """Per stage (always all three): expected, done, stale, failed, pending, coverage, tokens, cost."""
    rows = []
    for stage in STAGES:
        g = generations[generations["stage"] == stage]
        st = g["status"].value_counts()
        n = len(g)
        rows.append({
            "stage": stage, "expected": n, "done": int(st.get("done", 0)), "stale": int(st.get("stale", 0)),
            "failed": int(st.get("failed", 0)),
            "pending": int(st.get("pending", 0)), "coverage": st.get("done", 0) / n if n else np.nan,
            "prompt_tokens": int(g["prompt_tokens"].sum()), "completion_tokens": int(g["completion_tokens"].sum()),
            "cost_usd": _known_cost(g), "n_cost_unknown": int(_unknown_cost(g).sum()),
            "n_simulated": int(g["simulated"].sum()),
        })
    return pd.DataFrame(rows, columns=COLUMNS["coverage"])


def spend(generations: pd.DataFrame) -> pd.DataFrame:
    """Tokens and cost of the recorded model calls per stage and model, per stage, and for the
    cohort (``spend.spend_rows``): which part the provider reported, which was estimated from the
    catalog prices, and how many calls' cost is unknown."""
    called = generations[generations["cost_source"] != ""]
    records = [{"stage": r.stage, "llm_model_id": r.llm_model_id, "cost_source": r.cost_source,
                "prompt_tokens": None if pd.isna(r.prompt_tokens) else int(r.prompt_tokens),
                "completion_tokens": None if pd.isna(r.completion_tokens) else int(r.completion_tokens),
                "cost_usd": None if pd.isna(r.cost_usd) else float(r.cost_usd), "simulated": bool(r.simulated)}
               for r in called.itertuples(index=False)]
    return pd.DataFrame(spend_rows(records), columns=COLUMNS["spend"])


def _delta_ci(grp: pd.DataFrame) -> np.ndarray:
    """95 % t intervals of each cohort's delta, treating the cohorts' cell means as independent:
    delta_i = (1 − 1/K)·m_i − (1/K)·Σ_{j≠i} m_j, so var = (1 − 1/K)²·v_i + Σ_{j≠i} v_j / K² with
    v = std² / n_cells; df = the smallest n_cells − 1 (conservative). Cells shared by cohorts are
    the same files, so the interval is wider than needed, never narrower."""
    from scipy.stats import t

    k = len(grp)
    n = grp["n_cells"].to_numpy(dtype=float)
    v = grp["std"].to_numpy(dtype=float) ** 2 / np.where(n > 0, n, np.nan)
    var = (1 - 1 / k) ** 2 * v + (v.sum() - v) / k ** 2
    if n.min() < 2 or not np.isfinite(var).all():
        return np.full((k, 2), np.nan)
    half = t.ppf(0.975, n.min() - 1) * np.sqrt(var)
    d = grp["delta"].to_numpy(dtype=float)
    return np.column_stack([d - half, d + half])


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
    df[["delta_ci_low", "delta_ci_high"]] = np.nan
    for _, grp in df.groupby("essay_gen_id"):
        df.loc[grp.index, ["delta_ci_low", "delta_ci_high"]] = _delta_ci(grp)
    df[["rubrics", "evaluators"]] = df[["rubrics", "evaluators"]].fillna("")
    return df.sort_values(["essay_gen_id", "cohort_id"])[COLUMNS["cross_cohort"]].reset_index(drop=True)
