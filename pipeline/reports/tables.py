"""Report tables as pure functions of the collected frames (no I/O).

Scores are compared across rubrics only on ``score_norm`` (0–1 on each rubric's own scale); raw
scores are aggregated only within one rubric. Unscored evaluations (failed, pending) are never
zeros: they count in ``n_unscored`` / ``expected`` and nowhere else.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.store.spend import SPEND_COLUMNS, spend_rows
from pipeline.store import STAGES
from pipeline.reports import stats

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
    "factors": ["factor", "level", "rubric", "n", "n_unscored", "n_essays", "mean"] + CI + ["ci_method", "ci_note",
                "n_clusters", "mean_marginal", "std", "min", "max", "share_high", "share_low", "share_max", "note"],
    "factor_effects": ["factor", "rubric", "level", "reference", "n_essays", "n_essays_reference", "mean",
                       "mean_reference", "diff"] + CI + ["ci_method", "ci_note", "n_clusters", "diff_marginal",
                       "p_value", "p_holm", "n_family", "excludes_zero", "excludes_zero_holm", "note"],
    "paired_comparisons": ["factor", "level_a", "level_b", "matched_on", "n_units", "n_essays", "mean_a", "mean_b",
                           "diff"] + CI + ["ci_method", "ci_note", "n_clusters", "p_value", "p_holm", "n_family",
                           "excludes_zero", "excludes_zero_holm", "r", "r_ci_low", "r_ci_high", "r_ci_method"],
    "variance_models": ["essay_gen_id", "evaluation_template", "scale_min", "scale_max"] + SPREAD_STATS,
    "variance_rubrics": ["essay_gen_id", "evaluation_llm"] + SPREAD_STATS,
    "variance_replicates": ["essay_gen_id", "evaluation_template", "evaluation_llm", "scale_min", "scale_max"]
                           + SPREAD_STATS,
    "agreement": ["evaluation_template", "scale_min", "scale_max", "n_raters", "n_essays", "icc2_1", "icc2_1_ci_low",
                  "icc2_1_ci_high", "icc_class", "icc3_1", "icc3_1_ci_low", "icc3_1_ci_high", "icc3_class", "icc2_k",
                  "icc2_k_ci_low", "icc2_k_ci_high", "icc_ci_method", "alpha", "alpha_ci_low", "alpha_ci_high",
                  "n_alpha_essays", "alpha_ci_method", "mean_pearson", "mean_pearson_ci_low",
                  "mean_pearson_ci_high", "r_ci_method", "n_pearson_essays", "n_rater_pairs", "retest_icc2_1",
                  "retest_icc2_1_ci_low", "retest_icc2_1_ci_high", "retest_class", "n_retest_units"],
    "variance_components": ["evaluation_template", "component", "variance", "ci_low", "ci_high", "sd", "share",
                            "n_levels", "ci_method", "ci_note", "method"],
    "agreement_retest": ["evaluation_template", "evaluation_llm", "scale_min", "scale_max", "n_replicates",
                         "n_essays", "retest_icc2_1", "retest_icc2_1_ci_low", "retest_icc2_1_ci_high", "retest_class",
                         "icc_ci_method"],
    "leaderboard": ["rank", "essay_gen_id", "draft_gen_id", "combo_id", "draft_template", "draft_llm",
                    "essay_template", "essay_llm", "essay_mode", "essay_status", "in_cohort", "mean", "ci_low",
                    "ci_high", "ci_method", "ci_note", "rank_ci_low", "rank_ci_high", "tier", "mean_raw", "std",
                    "min", "max", "n_cells", "n_cells_missing", "n", "expected", "coverage", "simulated", "note"],
    "coverage": ["stage", "expected", "done", "stale", "failed", "pending", "coverage", "prompt_tokens",
                 "completion_tokens", "cost_usd", "n_cost_unknown", "n_simulated"],
    "spend": list(SPEND_COLUMNS),
    "cross_cohort": ["essay_gen_id", "cohort_id", "n_cohorts", "draft_template", "draft_llm", "essay_template",
                     "essay_llm", "n_cells", "n", "mean", "ci_low", "ci_high", "ci_method", "std", "min", "max",
                     "rubrics",
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


ADJUST = ("evaluation_llm", "evaluation_template")  # evaluation factors a mean is adjusted for
CONFOUND_TOL = 0.005  # |adjusted − marginal| above this on score_norm is reported as partial confounding
MIX_TOL = 0.05  # a level's share of an evaluator (or rubric) differing by more than this from the table's: unbalanced


def evaluation_effects(s: pd.DataFrame) -> dict[str, pd.Series]:
    """Evaluator and rubric effects on score_norm in an additive fit with essays
    (score_norm ~ essay + evaluation_llm + evaluation_template, by ``stats.backfit``), so an
    evaluator's effect is judged on the essays it scored against the others on the same essays.
    Factors with one level, or aliased with each other, are left out (no effect to separate)."""
    fs = [f for f in ADJUST if s[f].nunique() >= 2]
    if len(fs) == 2 and len(stats.aliased_groups(s, fs)) == 1:
        fs = []
    if not fs or s.empty:
        return {}
    eff = stats.backfit(s, "score_norm", ["essay_gen_id"] + fs)
    return {f: eff[f] for f in fs}


def adjusted_values(s: pd.DataFrame, effects: dict[str, pd.Series], keep: str = "") -> np.ndarray:
    """score_norm minus the evaluation effects of ``effects`` (those named in ``keep`` stay): what
    the row would score from an average evaluator on an average rubric of the table."""
    y = s["score_norm"].to_numpy(dtype=float).copy()
    for f, e in effects.items():
        if f not in keep:
            y -= s[f].astype(str).map(e).fillna(0.0).to_numpy(dtype=float)
    return y


def _mix_shares(rows: pd.DataFrame, factor: str) -> dict[str, pd.DataFrame]:
    """{evaluation factor: each level's share of its levels − the table's share} for the
    evaluation factors other than ``factor`` that vary in ``rows``."""
    out = {}
    lv, li = np.unique(rows[factor].astype(str).to_numpy(), return_inverse=True)
    for f in ADJUST:
        if f in factor:
            continue
        fv, fi = np.unique(rows[f].astype(str).to_numpy(), return_inverse=True)
        if len(fv) < 2:
            continue
        counts = np.bincount(li * len(fv) + fi, minlength=len(lv) * len(fv)).reshape(len(lv), len(fv)).astype(float)
        share = counts / counts.sum(axis=1, keepdims=True)
        overall = counts.sum(axis=0) / counts.sum()
        out[f] = pd.DataFrame(share - overall, index=lv, columns=fv)
    return out


def _mix_note(mix: dict[str, pd.DataFrame], *levels) -> str:
    """Which evaluation factors the levels' evaluations are unevenly spread over (``_mix_shares``)."""
    return ", ".join(f for f, d in mix.items()
                     if any(d.loc[str(lv)].abs().max() > MIX_TOL for lv in levels if str(lv) in d.index))


def _confounding_note(marginal: float, adjusted: float, uneven: str, what: str = "mean") -> str:
    parts = []
    if uneven:
        parts.append(f"unbalanced: scored by a different mix of {uneven} than the other levels")
    if np.isfinite(marginal) and np.isfinite(adjusted) and abs(marginal - adjusted) > CONFOUND_TOL:
        parts.append(f"partially confounded: the {what} adjusted for evaluators and rubrics is {adjusted:.3f}, "
                     f"the raw {what} {marginal:.3f}")
    return "; ".join(parts)


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)


def _subsets(s: pd.DataFrame):
    """(rubric, rows): the pooled table on score_norm, then each rubric on its own."""
    yield ALL, s
    for rubric, sub in s.groupby("evaluation_template", sort=True):
        yield rubric, sub


def _lineage_arrays(rows: pd.DataFrame) -> tuple[np.ndarray, ...]:
    return tuple(rows[c].astype(str).to_numpy() if c in rows.columns else None for c in stats.LINEAGE[::-1])


def _mixed(scored: pd.DataFrame, factor: str, effects: dict, fits: dict | None, rubric: str) -> tuple[dict | None, str]:
    """(``stats.mixed_emm`` of the generation factor ``factor`` adjusted for the evaluation factors
    in ``effects``, "") or (None, why not, for ``ci_note``). Combos are the lineage's top level,
    so the combo factor is never a fixed effect: its means are t over each combo's own clusters.
    ``fits`` (the caller's dict, keyed by rubric and factor) keeps each fit for the next table
    built from the same scores, so ``factors`` and ``factor_effects`` fit each model once."""
    if factor == "combo_id":
        return None, f"{stats.MIXED_NOT_FITTED}: a combo is the lineage's top random level"
    if any(f in factor for f in EVALUATION_FACTORS):
        # evaluators and rubrics are compared on matched units (paired_comparisons); their level
        # means here are the adjusted evaluations' t over cluster means, by design, not a fallback
        return None, ""
    key = (rubric, factor)
    if fits is not None and key in fits:
        return fits[key]
    try:
        out = stats.mixed_emm(scored, "score_norm", factor, [f for f in effects if f not in factor]), ""
    except stats.MixedUnavailable as exc:
        out = None, f"{stats.MIXED_NOT_FITTED}: {exc}"
    if fits is not None:
        fits[key] = out
    return out


def factors(scores: pd.DataFrame, high: float, low: float, fits: dict | None = None) -> pd.DataFrame:
    """Every factor × level, pooled over rubrics (rubric ``(all)``) and per rubric, on score_norm.

    ``mean`` is adjusted for which evaluators and rubrics scored the level (their effects from an
    additive fit with essays, ``evaluation_effects``); ``mean_marginal`` is the raw mean over
    scored evaluations (the two are equal in a crossed, balanced design). For a generation factor
    the mean and its interval are, where the model is kept, the estimated marginal mean of a mixed
    model (``stats.mixed_emm``, Satterthwaite t); otherwise, and for evaluation factors and combos,
    a t interval over the highest lineage clusters the level's essays share
    (``stats.lineage_ids``), with ``ci_note`` saying why the model was not used. ``ci_method``
    says which; ``n_clusters`` is the number of the level's own clusters. Aliased factors appear once, as a joint
    factor, with a ``note``; so do partial confounding and unbalanced designs. share_high:
    score_norm ≥ ``high``; share_low: ≤ ``low``; share_max: the rubric's own maximum (so a 10 is
    never "perfect" on a 0–9 rubric: it is out of scale and unscored).
    """
    if scores.empty:
        return _empty("factors")
    design, names, notes = factor_design(scores)
    parts = []
    for rubric, full in _subsets(design):
        scored = full[full["score_norm"].notna()]
        effects = evaluation_effects(scored)
        lineage = _lineage_arrays(scored)
        norm = full["score_norm"]
        flags = full.assign(_high=np.where(norm.notna(), norm >= high - EPS, np.nan),
                            _low=np.where(norm.notna(), norm <= low + EPS, np.nan),
                            _max=np.where(norm.notna(), norm >= 1 - EPS, np.nan))
        for factor in names:
            # within one rubric a factor involving the rubric itself has a single level: nothing to show
            if rubric != ALL and "evaluation_template" in factor:
                continue
            out = _norm_stats(full, [factor]).rename(columns={factor: "level", "mean": "mean_marginal"})
            out[["share_high", "share_low", "share_max"]] = flags.groupby(factor, sort=True)[
                ["_high", "_low", "_max"]].mean().to_numpy()
            y_all = adjusted_values(scored, effects, keep=factor)
            index = scored.groupby(factor, sort=True).indices if len(scored) else {}
            mix = _mix_shares(scored, factor) if len(scored) else {}
            mixed, why = _mixed(scored, factor, effects, fits, rubric) if len(scored) and len(index) >= 2 \
                else (None, "")
            cis = []
            for level, marginal in zip(out["level"], out["mean_marginal"]):
                mask = index.get(level)
                if mask is None:
                    cis.append({"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "ci_method": "",
                                "ci_note": f"{stats.NOT_ESTIMABLE}: no scored evaluations", "n_clusters": 0,
                                "note": notes.get(factor, "")})
                    continue
                cl_level, clusters = stats.lineage_ids(*(a[mask] if a is not None else None for a in lineage))
                ci = stats.t_cluster_mean(y_all[mask], clusters, cl_level)
                if mixed is not None:
                    ci = {**mixed["mean"][str(level)], "n_clusters": ci["n_clusters"], "ci_note": ""}
                else:
                    ci["ci_note"] = _join(ci["ci_note"], why)
                cis.append({"mean": ci["estimate"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                            "ci_method": ci["ci_method"], "ci_note": ci["ci_note"], "n_clusters": ci["n_clusters"],
                            "note": _join(notes.get(factor, ""),
                                          _confounding_note(marginal, ci["estimate"], _mix_note(mix, level)))})
            out = pd.concat([out, pd.DataFrame(cis, index=out.index)], axis=1)
            parts.append(out.assign(factor=factor, rubric=rubric))
    out = pd.concat(parts, ignore_index=True)
    # FACTORS order, pooled rubric first, then levels alphabetically
    out["_f"] = out["factor"].map(names.index)
    out["_r"] = out["rubric"] != ALL
    out = out.sort_values(["_f", "_r", "rubric", "level"], kind="stable")
    out["n_clusters"] = out["n_clusters"].astype("int64")
    return out[COLUMNS["factors"]].reset_index(drop=True)


def _holm(out: pd.DataFrame) -> pd.DataFrame:
    """Holm's correction over the table's rows with a p-value (the table is the family)."""
    p = out["p_value"].to_numpy(dtype=float) if len(out) else np.array([])
    out["p_holm"] = stats.holm(p)
    out["n_family"] = int(np.isfinite(p).sum())
    out["excludes_zero_holm"] = [None if not np.isfinite(q) else bool(q < 1 - stats.CONFIDENCE) for q in out["p_holm"]]
    return out


def factor_effects(scores: pd.DataFrame, fits: dict | None = None) -> pd.DataFrame:
    """Differences between the levels of each generation factor (joint when aliased), pooled and
    per rubric: each level's mean score_norm − the reference level's (the first in sort order),
    adjusted for which evaluators and rubrics scored them (``diff``; ``diff_marginal`` is the raw
    difference of the raw means).

    The difference is the mixed model's contrast (``stats.mixed_emm``: EMM of the level − EMM of
    the reference, Satterthwaite t) where the model is kept; otherwise (``ci_note`` says why) the
    interval follows the lineage (``stats.t_cluster_diff``): where the levels' essays share no
    combo or draft, Welch's t over the clusters' means; where the factor varies within combos (or
    drafts), a paired t over the clusters that hold both levels. ``p_holm`` is Holm's correction
    over every row of the table, ``excludes_zero_holm`` its flag. ``combo_id`` is left out (one
    essay per level, mostly); evaluation factors are compared on matched units in
    ``paired_comparisons``.
    """
    if scores.empty:
        return _empty("factor_effects")
    design, names, notes = factor_design(scores)
    s = design[design["score_norm"].notna()]
    rows = []
    for rubric, sub in _subsets(s):
        effects = evaluation_effects(sub)
        y_all = adjusted_values(sub, effects)
        lineage = _lineage_arrays(sub)
        essays, norm = sub["essay_gen_id"].to_numpy(), sub["score_norm"].to_numpy(dtype=float)
        for factor in names:
            if factor == "combo_id" or any(f in factor for f in EVALUATION_FACTORS) or factor not in s.columns:
                continue
            codes = sub[factor].to_numpy()
            levels = sorted(set(codes))
            if len(levels) < 2:
                continue
            mix = _mix_shares(sub, factor)
            is_ref = codes == levels[0]
            mixed, why = _mixed(sub, factor, effects, fits, rubric)
            for level in levels[1:]:
                is_cur = codes == level
                pair = is_cur | is_ref
                cl_level, clusters = stats.lineage_ids(*(a[pair] if a is not None else None for a in lineage))
                d = stats.t_cluster_diff(y_all[pair], clusters, is_cur[pair], cl_level)
                if mixed is not None:
                    d = {**mixed["diff"][str(level)], "n_clusters": d["n_clusters"], "ci_note": ""}
                else:
                    d["ci_note"] = _join(d["ci_note"], why)
                marginal = norm[is_cur].mean() - norm[is_ref].mean()
                uneven = _mix_note(mix, level, levels[0])
                rows.append({"factor": factor, "rubric": rubric, "level": level, "reference": levels[0],
                             "n_essays": len(set(essays[is_cur])), "n_essays_reference": len(set(essays[is_ref])),
                             "mean": norm[is_cur].mean(), "mean_reference": norm[is_ref].mean(),
                             "diff": d["estimate"], "ci_low": d["ci_low"], "ci_high": d["ci_high"],
                             "ci_method": d["ci_method"], "ci_note": d["ci_note"], "n_clusters": d["n_clusters"],
                             "diff_marginal": marginal, "p_value": d["p_value"],
                             "excludes_zero": _excludes_zero(d["ci_low"], d["ci_high"]),
                             "note": _join(notes.get(factor, ""),
                                           _confounding_note(marginal, d["estimate"], uneven, "difference"))})
    out = pd.DataFrame(rows, columns=COLUMNS["factor_effects"])
    return _holm(out)[COLUMNS["factor_effects"]]


def _excludes_zero(lo: float, hi: float):
    """True/False when there is an interval, blank (None) when there is none."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return bool(lo > 0 or hi < 0)


def _lineage(scores: pd.DataFrame) -> pd.DataFrame:
    """essay_gen_id → draft_gen_id, combo_id (the first seen; one essay has one lineage)."""
    cols = [c for c in ("draft_gen_id", "combo_id") if c in scores.columns]
    return scores.groupby("essay_gen_id", sort=True)[cols].first() if cols else pd.DataFrame(
        index=pd.Index(sorted(scores["essay_gen_id"].unique()), name="essay_gen_id"))


def paired_comparisons(scores: pd.DataFrame) -> pd.DataFrame:
    """Rubrics compared on matched units only (same essay, same evaluation model), and evaluation
    models on matched units (same essay, same rubric), on score_norm with replicates averaged.

    For each pair of levels: n matched units, the essays they come from, both means over those
    units, their mean difference (a − b) with a 95 % t interval over the highest lineage clusters
    the units share (essays, or drafts/combos when essays share them), Holm's correction over the
    table, and Pearson r of the matched pairs with Fisher's z interval over those clusters.
    """
    s = _scored(scores)
    if s.empty:
        return _empty("paired_comparisons")
    cells = essay_cells(s)
    lineage = _lineage(s)
    rows = []
    for factor, other in (EVALUATION_FACTORS, EVALUATION_FACTORS[::-1]):
        wide = cells.pivot_table(index=["essay_gen_id", other], columns=factor, values="score_norm", aggfunc="mean")
        levels = sorted(wide.columns)
        for i, a in enumerate(levels):
            for b in levels[i + 1:]:
                both = wide[[a, b]].dropna()
                essays = both.index.get_level_values("essay_gen_id")
                units = lineage.reindex(essays).reset_index()
                cl_level, clusters = stats.lineage_clusters(units)
                d = both[a] - both[b]
                ci = stats.t_cluster_mean(d.to_numpy(), clusters, cl_level)
                ci["ci_method"] = ci["ci_method"].replace("t over", "paired t over", 1)
                r, rlo, rhi, _, k_r = stats.cluster_pearson_ci(clusters, both[a], both[b])
                unit = stats.LEVEL_NAMES[cl_level]
                r_method = (f"Fisher z over {k_r} {unit}s" if np.isfinite(rlo) else
                            f"{stats.NOT_ESTIMABLE}: Fisher z needs 4 {unit}s, {k_r} here" if np.isfinite(r) else "")
                rows.append({"factor": factor, "level_a": a, "level_b": b, "matched_on": f"essay_gen_id × {other}",
                             "n_units": len(both), "n_essays": essays.nunique(), "mean_a": both[a].mean(),
                             "mean_b": both[b].mean(), "diff": ci["estimate"], "ci_low": ci["ci_low"],
                             "ci_high": ci["ci_high"], "ci_method": ci["ci_method"], "ci_note": ci["ci_note"],
                             "n_clusters": ci["n_clusters"],
                             "p_value": stats.t_p_value(ci["estimate"], ci["se"], ci["df"]),
                             "excludes_zero": _excludes_zero(ci["ci_low"], ci["ci_high"]),
                             "r": r, "r_ci_low": rlo, "r_ci_high": rhi,
                             "r_ci_method": r_method})
    return _holm(pd.DataFrame(rows, columns=COLUMNS["paired_comparisons"]))[COLUMNS["paired_comparisons"]]


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


def variance_components(scores: pd.DataFrame) -> pd.DataFrame:
    """Per rubric, the variance of score_norm split into combo, draft, essay, evaluator,
    essay × evaluator and replicate (``stats.variance_components``: a REML mixed model, one fit
    per rubric), each with its 95 % interval, sd and share of the total. A rubric whose model
    cannot be fitted gets one row, component ``(none)``, with the reason in ``method``."""
    s = _scored(scores)
    rows = []
    for rubric, sub in s.groupby("evaluation_template", sort=True):
        comps, method = stats.variance_components(sub)
        if not comps:
            rows.append({"evaluation_template": rubric, "component": "(none)", "ci_method": "", "ci_note": method,
                         "method": method})
            continue
        total = sum(c["variance"] for c in comps)
        for c in comps:
            rows.append({"evaluation_template": rubric, **c, "sd": float(np.sqrt(c["variance"])),
                         "share": c["variance"] / total if total > 0 else np.nan,
                         "ci_method": "Satterthwaite χ²" if np.isfinite(c["ci_low"]) else "", "method": method})
    return pd.DataFrame(rows, columns=COLUMNS["variance_components"])


ICC_METHOD = "analytic F interval (McGraw & Wong 1996)"
ALPHA_METHOD = f"percentile bootstrap over essays ({stats.N_ALPHA_BOOT} resamples)"


def _retest_matrix(sub: pd.DataFrame) -> pd.DataFrame:
    """(essay × model) rows × replicate columns of raw scores, every replicate scored."""
    return sub.pivot_table(index=["essay_gen_id", "evaluation_llm"], columns="evaluation_replicate",
                           values="score", aggfunc="mean").dropna()


def agreement(scores: pd.DataFrame) -> pd.DataFrame:
    """Per rubric, between evaluation models on the essays every model scored (replicate means):
    ICC(2,1) absolute agreement, ICC(3,1) consistency and ICC(2,k) (the mean of the k models),
    each with its analytic 95 % interval; Krippendorff's α (interval metric, essays scored by at
    least two models) with a bootstrap interval over essays; mean pairwise Pearson r with Fisher's z
    interval over essays. A class (Koo & Li) only when determined: ``uncertain`` with fewer than
    five essays or an interval spanning classes. Retest: ICC(2,1) with replicates as raters of each
    (essay, model), each model's mean removed first so one model's bias does not pass for
    reliability (per model in ``agreement_retest``)."""
    rows = []
    s = _scored(scores)
    nan3 = (float("nan"),) * 3
    for rubric in sorted(scores["evaluation_template"].unique()):
        sub = s[s["evaluation_template"] == rubric]
        sc = scores.loc[scores["evaluation_template"] == rubric, ["scale_min", "scale_max"]].iloc[0]
        matrix = sub.pivot_table(index="essay_gen_id", columns="evaluation_llm", values="score", aggfunc="mean")
        complete = matrix.dropna()
        _, pairs = stats.mean_pairwise_pearson(matrix)
        r, rlo, rhi, rn = stats.mean_pairwise_pearson_ci(matrix)
        forms = stats.icc_forms(complete.to_numpy()) if matrix.shape[1] >= 2 else {
            "icc2_1": nan3, "icc3_1": nan3, "icc2_k": nan3}
        alpha = stats.krippendorff_alpha(matrix.to_numpy()) if matrix.shape[1] >= 2 else nan3
        n_alpha = int(((~matrix.isna()).sum(axis=1) >= 2).sum()) if matrix.shape[1] >= 2 else 0
        retest = _retest_matrix(sub)
        if retest.shape[1] >= 2 and len(retest):
            model_mean = retest.mean(axis=1).groupby(level="evaluation_llm").transform("mean")
            ricc = stats.icc2_1_ci(retest.sub(model_mean, axis=0).to_numpy())
        else:
            ricc = nan3
        n = len(complete)
        rows.append({
            "evaluation_template": rubric, "scale_min": sc["scale_min"], "scale_max": sc["scale_max"],
            "n_raters": matrix.shape[1], "n_essays": n,
            "icc2_1": forms["icc2_1"][0], "icc2_1_ci_low": forms["icc2_1"][1], "icc2_1_ci_high": forms["icc2_1"][2],
            "icc_class": stats.icc_class_of(*forms["icc2_1"], n),
            "icc3_1": forms["icc3_1"][0], "icc3_1_ci_low": forms["icc3_1"][1], "icc3_1_ci_high": forms["icc3_1"][2],
            "icc3_class": stats.icc_class_of(*forms["icc3_1"], n),
            "icc2_k": forms["icc2_k"][0], "icc2_k_ci_low": forms["icc2_k"][1], "icc2_k_ci_high": forms["icc2_k"][2],
            "icc_ci_method": ICC_METHOD, "alpha": alpha[0], "alpha_ci_low": alpha[1], "alpha_ci_high": alpha[2],
            "n_alpha_essays": n_alpha, "alpha_ci_method": ALPHA_METHOD if np.isfinite(alpha[1]) else "",
            "mean_pearson": r, "mean_pearson_ci_low": rlo, "mean_pearson_ci_high": rhi,
            "r_ci_method": "Fisher z over essays" if np.isfinite(rlo) else "",
            "n_pearson_essays": rn if pairs else 0, "n_rater_pairs": pairs, "retest_icc2_1": ricc[0],
            "retest_icc2_1_ci_low": ricc[1], "retest_icc2_1_ci_high": ricc[2],
            "retest_class": stats.icc_class_of(*ricc, retest.index.get_level_values(0).nunique() if len(retest) else 0),
            "n_retest_units": len(retest),
        })
    return pd.DataFrame(rows, columns=COLUMNS["agreement"])


def agreement_retest(scores: pd.DataFrame) -> pd.DataFrame:
    """Test-retest per rubric × evaluation model: ICC(2,1) with the model's replicates as raters
    of the essays it scored every time (raw score), with its analytic interval and a class only
    when determined. Models are never pooled: one model's bias would pass for reliability."""
    s = _scored(scores)
    rows = []
    for (rubric, model), sub in s.groupby(["evaluation_template", "evaluation_llm"], sort=True):
        m = _retest_matrix(sub)
        icc = stats.icc2_1_ci(m.to_numpy()) if m.shape[1] >= 2 and len(m) else (float("nan"),) * 3
        rows.append({"evaluation_template": rubric, "evaluation_llm": model, "scale_min": sub["scale_min"].iloc[0],
                     "scale_max": sub["scale_max"].iloc[0], "n_replicates": m.shape[1], "n_essays": len(m),
                     "retest_icc2_1": icc[0], "retest_icc2_1_ci_low": icc[1], "retest_icc2_1_ci_high": icc[2],
                     "retest_class": stats.icc_class_of(*icc, len(m)),
                     "icc_ci_method": ICC_METHOD if np.isfinite(icc[1]) else ""})
    return pd.DataFrame(rows, columns=COLUMNS["agreement_retest"])


def essay_cells(scores: pd.DataFrame) -> pd.DataFrame:
    """Per essay × rubric × evaluator: mean score_norm over replicates (the unit essays are ranked on)."""
    keys = ["essay_gen_id", "evaluation_template", "evaluation_llm"]
    return scores[scores["score_norm"].notna()].groupby(keys, sort=True)["score_norm"].mean().reset_index()


N_RANK_DRAWS = 1000  # simulated leaderboards for the rank intervals
MISSING_LISTED = 4  # missing cells named in a leaderboard note


def _essay_stats(scores: pd.DataFrame) -> pd.DataFrame:
    """Per essay, over its cells (rubric × evaluator, replicates averaged, so each weighs the same
    whatever its replicate count): ``mean`` adjusted for which evaluators (and rubrics) scored it,
    ``mean_raw``, std/min/max, n_cells, n scored evaluations, expected evaluations, and the 95 %
    interval of the adjusted mean.

    The adjustment: each cell minus its evaluator × rubric effect from an additive fit over every
    essay's cells (cell ~ essay + evaluator × rubric, ``stats.backfit``), so an essay that lacks
    the harsh evaluator does not rank first for that alone (with every essay scored by every cell
    the adjusted mean is the raw mean). The interval is a t interval over the essay's cells with
    the wider of its own cells' sd and the sd pooled over every essay's residual cells (so two
    agreeing cells do not give a zero-width interval); ``ci_method`` says which was used.
    """
    cells = essay_cells(scores)
    cells["cell"] = cells["evaluation_llm"].astype(str) + " × " + cells["evaluation_template"].astype(str)
    eff = stats.backfit(cells, "score_norm", ["essay_gen_id", "cell"]) if len(cells) else {}
    cell_eff = cells["cell"].map(eff["cell"]).to_numpy(dtype=float) if len(cells) else np.zeros(0)
    cells["adj"] = cells["score_norm"] - cell_eff
    g = cells.groupby("essay_gen_id")
    out = g["score_norm"].agg(mean_raw="mean", std="std", min="min", max="max", n_cells="count")
    out["mean"] = g["adj"].mean()
    own_sd = g["adj"].std()
    n_essays, n_levels = len(out), cells["cell"].nunique()
    resid = cells["adj"] - cells["essay_gen_id"].map(out["mean"])
    df_pooled = len(cells) - n_essays - max(n_levels - 1, 0)
    sd_pooled = float(np.sqrt((resid ** 2).sum() / df_pooled)) if df_pooled > 0 else float("nan")
    n = out["n_cells"].to_numpy(dtype=float)
    own_half = np.where(n >= 2, stats.t_interval(np.zeros(len(n)), own_sd, n)[1], np.nan)
    pooled_half = (stats.t_quantile(df_pooled) * sd_pooled / np.sqrt(n)) if df_pooled > 0 else np.full(len(n), np.nan)
    use_own = np.nan_to_num(own_half, nan=-1) >= np.nan_to_num(pooled_half, nan=-1)
    half = np.where(use_own, own_half, pooled_half)
    ok = np.isfinite(half) & (half > 1e-12)
    # score_norm lives in [0, 1]; a symmetric t interval can overshoot it with few cells
    out["ci_low"] = np.where(ok, np.clip(out["mean"] - half, 0, 1), np.nan)
    out["ci_high"] = np.where(ok, np.clip(out["mean"] + half, 0, 1), np.nan)
    out["_df"] = np.where(use_own, np.maximum(n - 1, 1), max(df_pooled, 1))
    out["_se"] = np.where(ok, half / stats.t_quantile(out["_df"].to_numpy(dtype=float)), np.nan)
    out["ci_method"] = np.where(~ok, "", np.where(use_own, "t over the essay's cells",
                                                  f"t over cells, sd pooled over essays (df {max(df_pooled, 0)})"))
    out["ci_note"] = np.where(ok, "", f"{stats.NOT_ESTIMABLE}: one cell and no other essay's spread to borrow")
    design = sorted(cells["cell"].unique())
    have = g["cell"].agg(set)
    out["n_cells_missing"] = [len(design) - len(have[e]) for e in out.index]
    out["_missing"] = [", ".join([c for c in design if c not in have[e]][:MISSING_LISTED])
                       + (" …" if len(design) - len(have[e]) > MISSING_LISTED else "") for e in out.index]
    g2 = scores.groupby("essay_gen_id", sort=True)
    return out.join(g2["score_norm"].count().rename("n"), how="outer").join(g2.size().rename("expected"), how="outer")


def rank_intervals(mean: np.ndarray, se: np.ndarray, df=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """95 % intervals of each essay's rank (1 = best) from simulated leaderboards (each mean drawn
    from its t distribution: mean + se·T(df), normal without ``df``; fixed seed), and tiers: essays whose rank intervals
    overlap the tier's first essay's cannot be told apart from it. NaN means are left unranked;
    an essay without a standard error is drawn at its mean (its own rank interval then reflects
    only the others' uncertainty)."""
    m = np.asarray(mean, dtype=float)
    ok = np.isfinite(m)
    k = int(ok.sum())
    lo = np.full(len(m), np.nan)
    hi = np.full(len(m), np.nan)
    tier = np.full(len(m), np.nan)
    if not k:
        return lo, hi, tier
    sd = np.nan_to_num(np.asarray(se, dtype=float)[ok], nan=0.0)
    dfs = np.full(k, np.inf) if df is None else np.nan_to_num(np.asarray(df, dtype=float)[ok], nan=np.inf)
    rng = stats._rng()
    ranks = np.empty((N_RANK_DRAWS, k))
    for start in range(0, N_RANK_DRAWS, 100):
        size = (min(100, N_RANK_DRAWS - start), k)
        noise = np.where(np.isfinite(dfs), rng.standard_t(np.where(np.isfinite(dfs), dfs, 1.0), size=size),
                         rng.standard_normal(size))
        draws = m[ok] + sd * noise
        ranks[start:start + len(draws)] = (-draws).argsort(axis=1).argsort(axis=1) + 1
    lo[ok], hi[ok] = np.floor(np.percentile(ranks, 2.5, axis=0)), np.ceil(np.percentile(ranks, 97.5, axis=0))
    order = np.argsort(-m[ok], kind="stable")
    t_ok = np.full(k, np.nan)
    current, bound = 0, -np.inf
    for i in order:
        if lo[ok][i] > bound:  # no overlap with the current tier's first essay: a new tier
            current += 1
            bound = hi[ok][i]
        t_ok[i] = current
    tier[ok] = t_ok
    return lo, hi, tier


def leaderboard(scores: pd.DataFrame, essays: pd.DataFrame) -> pd.DataFrame:
    """Every essay of the cohort ranked by its evaluator-adjusted mean score_norm (unscored essays
    last, rank blank), with rank intervals and tiers of essays that cannot be told apart."""
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
    lo, hi, tier = rank_intervals(out["mean"].to_numpy(dtype=float), out["_se"].to_numpy(dtype=float),
                                  out["_df"].to_numpy(dtype=float))
    for col, v in (("rank_ci_low", lo), ("rank_ci_high", hi), ("tier", tier)):
        out[col] = pd.array(v, dtype="Float64").astype("Int64")
    out["n_cells_missing"] = out["n_cells_missing"].fillna(0).astype("int64")
    out["ci_method"] = out["ci_method"].fillna("")
    out["ci_note"] = out["ci_note"].where(out["mean"].notna(), "no scored evaluations").fillna("")
    out["note"] = [f"missing cells: {m}" if isinstance(m, str) and m else "" for m in out["_missing"]]
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
    if n.min() < 2 or not np.isfinite(var).all() or not (var > 0).all():  # zero width: no spread to estimate
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
        # cohorts are compared on what their own evaluators gave, so the raw mean over cells, with
        # a t interval over them (blank, not zero-width, when the cells agree exactly)
        out["mean"] = out["mean_raw"]
        lo, hi = stats.t_interval(out["mean"], out["std"], out["n_cells"])
        ok = np.isfinite(lo) & (out["std"].to_numpy(dtype=float) > 0)
        out["ci_low"], out["ci_high"] = np.where(ok, np.clip(lo, 0, 1), np.nan), np.where(ok, np.clip(hi, 0, 1), np.nan)
        out["ci_method"] = np.where(ok, "t over the essay's cells", "")
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
