"""Report tables of a cohort, built only from its membership.csv and the gens store (contract §7).

``build_reports(paths, cohort_id, high=0.8, low=0.3)`` returns ``{name: DataFrame}`` and writes
each as ``data/cohorts/<cohort_id>/reports/<name>.csv`` (every table, every time, with its header
even when empty, so no stale file survives a re-run). ``build_cross_cohort(paths, scores=None)``
writes ``data/reports/cross_cohort.csv``. CSV conventions: UTF-8, LF, header row, empty cell = NaN/none,
booleans ``True``/``False``, floats with 6 significant digits.

Shared vocabulary
- Keys are never blank: a missing key is the literal ``unknown``; a copy-mode essay's model is
  ``copy``. Replicates are strings as in membership (``1``, ``2``; ``unknown`` if blank).
- ``status``: ``done`` | ``stale`` | ``failed`` | ``pending``, the state the one classifier
  (``generation.state_of``, as ``daydream status`` and ``check`` have it) gives the generation;
  its ``blocked`` (an ancestor failed) is ``pending`` with the error ``upstream_failure``.
  ``error`` (blank when done): ``stale`` (made from inputs that changed since: a template edited,
  a parent regenerated; ``error_detail`` says which), ``parse_failure``, ``truncated``,
  ``invalid_output`` (empty / too short), ``failed`` (another recorded failure, such as a
  provider error), ``score_out_of_scale``, ``missing`` (not generated yet, or parsed.txt absent),
  ``upstream_failure`` (an ancestor failed), ``corrupt_metadata``. ``error_detail`` is the
  recorded reason in words.
- A stale evaluation's score is not current: like a failed or pending one it is unscored (blank
  score and score_norm, counted in ``n_unscored``), so no mean, interval or ranking mixes in
  scores of superseded inputs; the next run of the cohort regenerates it.
- ``score`` is on the rubric's own scale [``scale_min``, ``scale_max``]; ``score_norm`` =
  (score − scale_min) / (scale_max − scale_min) ∈ [0, 1]. Across rubrics only ``score_norm`` is
  ever averaged. Unscored evaluations have blank score/score_norm and are never counted as 0.
- Scale source (``scale_source``): ``catalog`` (evaluation template), else ``parsed_metadata``
  (template missing from the catalog), else ``default`` (0–9); the latter two also raise an
  ``unknown_template`` issue.
- std is the sample std (ddof=1; blank for n = 1); cv = std / |mean| (blank when mean is 0).
- Agreement class (column ``agreement`` of the variance tables), by ``range_norm`` = range /
  scale width: ≤ 0.10 ``high``, ≤ 0.25 ``moderate``, else ``low``; ``n/a`` when n < 2.
- Intervals: every ``ci_low``/``ci_high`` pair (and ``*_ci_low``/``*_ci_high``) is a 95 % interval;
  ``ci_method`` (``icc_ci_method``, ``alpha_ci_method``, ``r_ci_method``) names how it was made and
  its df, ``ci_note`` why it is blank. An interval is blank ("not estimable: …", never [x, x]) when
  it would have zero width (every unit agrees) or there is one unit only. In ``factors`` and
  ``factor_effects`` a generation factor's level mean and a difference from the reference level
  are, where the model can be fitted, the estimated marginal mean and contrast of a REML mixed
  model (statsmodels MixedLM) of score_norm ~ factor + the evaluation factors (fixed) with random intercepts
  along the lineage (the top shared cluster, then each finer level that splits it), the evaluation
  factors at the table's own mix; interval: Student t with Satterthwaite's df from the REML
  information (``ci_method`` ``mixed-model EMM, Satterthwaite t (df …)`` / ``mixed-model contrast,
  …``). It is not fitted, and ``ci_note`` starts ``mixed model not fitted:`` with the reason, above
  1,500 scored evaluations in the table's rows, for ``combo_id`` (the top random level), when the
  fit fails or does not converge, when the top cluster's variance is not identified (too few
  clusters beside the fixed effects) or, for a factor between the top clusters, is estimated at 0
  (there the model's intervals are conservative), and when the factor varies within fewer than 6
  top clusters (there they are too narrow); those rows, the evaluation factors' level means (evaluators and rubrics are
  compared on matched units in ``paired_comparisons``) and every other mean and difference of
  score_norm use a Student-t interval on the means of the highest lineage cluster the rows share
  (combo → draft → essay: essays that share a draft or combo are not independent; a level held by
  one combo uses the drafts below it; ``unknown`` lineage counts as no sharing), so its n is
  ``n_clusters`` (with unequal cluster sizes: the ratio estimator's variance, the t interval on the
  cluster means when sizes are equal). A difference whose levels share clusters (the factor varies
  within combos or drafts) is a paired t over the clusters that hold both; otherwise Welch's t over
  the two levels' cluster means. ICCs get the analytic F intervals of McGraw & Wong (1996), as
  pingouin and psych::ICC report them; correlations Fisher's z over their essays (or clusters);
  variance components Satterthwaite's χ² from the mixed model. ``excludes_zero`` is True when a
  difference's interval excludes 0 (unadjusted, per row); ``p_value`` is the row's two-sided t test,
  ``p_holm`` Holm's step-down correction over the ``n_family`` rows of the table that have one (the
  table is the family) and ``excludes_zero_holm`` = ``p_holm`` < 0.05: the flag to read; blank
  when there is no interval.
- Adjusted means: evaluation effects (evaluator, rubric) come from an additive least-squares fit of
  score_norm on essay + evaluation_llm + evaluation_template (backfitting), so an evaluator's effect
  is judged on the essays it scored; a level's ``mean`` is its evaluations' score_norm less the
  effects of the evaluation factors other than the one compared, so a rubric's mean is not raised
  by having been scored by a lenient evaluator (where the mixed model is fitted, the same
  adjustment is made inside it: the EMM). In a crossed, balanced design adjusted = raw.
  ``note`` says ``partially confounded`` when adjusted and raw differ by more than 0.005 and
  ``unbalanced`` when a level's share of an evaluator or rubric differs from the table's by more
  than 0.05.
- Aliased factors: generation and evaluation factors whose levels pair one-to-one across the
  cohort's evaluations cannot be separated; they appear once, as a joint factor named
  ``draft_template × draft_llm`` with levels ``a × m``, and ``note`` says so.
- ``simulated``: True when the row's output (or, for scores, any ancestor's) came from the offline
  simulator; pages showing such rows must carry the simulator banner.

Tables (file name = key)
- ``generations``: one row per membership row. stage, gen_id, parent_gen_id (blank for drafts),
  combo_id, template_id, llm_model_id, replicate, mode, status, error, error_detail,
  finish_reason, prompt_tokens, completion_tokens, cost_usd, cost_source (``reported`` by the
  provider, ``estimated`` from the catalog prices, ``unknown``; blank when no model was called),
  duration_s, attempts, simulated, started_at, finished_at.
- ``scores``: one row per evaluation in membership (none dropped). evaluation_gen_id,
  essay_gen_id, draft_gen_id, combo_id, draft_template, draft_llm, essay_template, essay_llm,
  essay_mode, evaluation_template, evaluation_llm, draft_replicate, essay_replicate,
  evaluation_replicate, status, score, scale_min, scale_max, scale_source, score_norm, error,
  error_detail, simulated, evaluation_raw_path, essay_parsed_path (paths relative to the data
  root, blank when the file does not exist).
- ``pivot_essay_evaluator``: one row per essay × evaluation model × rubric: essay_gen_id,
  evaluation_llm, evaluation_template, scale_min, scale_max, n (scored), n_unscored, mean, std,
  min, max (raw score; one rubric, one scale), mean_norm.
- ``pivot_generation``: stage (``draft``|``essay``), template, llm, n, n_unscored, n_essays,
  mean, std, min, max (score_norm).
- ``pivot_draft_essay_template``: draft_template, essay_template, n, n_unscored, n_essays, mean,
  std, min, max (score_norm).
- ``factors``: factor (draft_template, draft_llm, essay_template, essay_llm, essay_mode,
  evaluation_template, evaluation_llm, combo_id; aliased ones joined, see above), level, rubric
  (``(all)`` = pooled on score_norm, else one evaluation template), n (scored evaluations),
  n_unscored, n_essays, mean (adjusted, see above), ci_low, ci_high, ci_method, ci_note, n_clusters
  (t over the lineage clusters of the level's essays), mean_marginal (raw mean over evaluations),
  std, min, max (over evaluations), share_high (score_norm ≥ high), share_low (score_norm ≤ low),
  share_max (at the rubric's own maximum), note (aliasing, a single level, partial confounding,
  an unbalanced design).
- ``factor_effects`` (generation factors, joint when aliased; not combo_id): factor, rubric
  (``(all)`` or one), level, reference (the first level in sort order), n_essays,
  n_essays_reference, mean, mean_reference (raw), diff (adjusted for evaluators and rubrics:
  level − reference, score_norm), ci_low, ci_high, ci_method, ci_note, n_clusters (paired t within
  shared clusters or Welch t, see above), diff_marginal (mean − mean_reference, raw), p_value,
  p_holm, n_family, excludes_zero, excludes_zero_holm, note (as in factors).
- ``paired_comparisons`` (matched units only): factor (``evaluation_template``: rubrics matched on
  the same essay and evaluation model; ``evaluation_llm``: models matched on the same essay and
  rubric), level_a, level_b, matched_on, n_units (matched units, replicates averaged), n_essays,
  mean_a, mean_b (score_norm over the matched units), diff (mean of a − b), ci_low, ci_high,
  ci_method, ci_note, n_clusters (paired t over the lineage clusters of the units' essays), p_value,
  p_holm, n_family, excludes_zero, excludes_zero_holm, r (Pearson r of the matched pairs), r_ci_low,
  r_ci_high, r_ci_method (Fisher's z over the clusters).
- ``variance_replicates`` (test-retest; per essay × rubric × model, raw score): essay_gen_id,
  evaluation_template, evaluation_llm, scale_min, scale_max, n, mean, std, min, max, range,
  range_norm, cv, agreement.
- ``variance_models`` (per essay × rubric across evaluation models, each model's replicates
  averaged first, raw score): essay_gen_id, evaluation_template, scale_min, scale_max, n, mean,
  std, min, max, range, range_norm, cv, agreement.
- ``variance_rubrics`` (per essay × evaluation model across rubrics, replicates averaged first, on
  score_norm): essay_gen_id, evaluation_llm, n, mean, std, min, max, range, range_norm, cv,
  agreement. Variance tables hold essays with ≥ 1 scored evaluation; different essays are never
  pooled.
- ``variance_components`` (per rubric, on score_norm; a linear mixed model, REML, statsmodels
  MixedLM, one fit per rubric): evaluation_template, component (``combo``, ``draft``, ``essay``:
  the lineage, nested; ``evaluator`` (fixed effects in the fit, their variance by moments);
  ``essay × evaluator``; ``replicate``, or ``residual`` when no cell has two replicates; a level
  the design does not vary apart from the one below is left out, and ``method`` says so), variance,
  ci_low, ci_high (Satterthwaite χ²; the evaluator's with evaluators − 1 df), sd, share (of the
  summed components), n_levels, ci_method, ci_note, method (the fit, what was left out, and the
  subsample of whole combos when the rubric has more than 400 evaluations). Component ``(none)``
  with the reason when the model cannot be fitted. The per-essay spread tables above are
  descriptive; this is the decomposition.
- ``agreement`` (per rubric, between evaluation models on replicate means of raw scores):
  evaluation_template, scale_min, scale_max, n_raters (evaluation models), n_essays (scored by
  every model), icc2_1 (two-way random, absolute agreement, single rater), icc2_1_ci_low,
  icc2_1_ci_high, icc_class (Koo & Li: poor < 0.5 ≤ moderate < 0.75 ≤ good < 0.9 ≤ excellent, only
  when determined: ``uncertain`` with fewer than 5 essays, no interval, or an interval spanning
  classes; ``n/a`` when undefined), icc3_1 (two-way mixed, consistency: a constant offset between
  models does not count), icc3_1_ci_low, icc3_1_ci_high, icc3_class, icc2_k (absolute agreement
  of the mean of the n_raters models), icc2_k_ci_low, icc2_k_ci_high, icc_ci_method, alpha
  (Krippendorff's α, interval metric, ``krippendorff`` package, essays scored by ≥ 2 models),
  alpha_ci_low, alpha_ci_high (percentile bootstrap over essays, fixed seed; blank under 5 essays),
  n_alpha_essays, alpha_ci_method, mean_pearson (mean pairwise r between models,
  pairwise-complete, ≥ 3 essays), mean_pearson_ci_low, mean_pearson_ci_high, r_ci_method (Fisher's
  z over the essays), n_pearson_essays (essays scored by ≥ 2 models), n_rater_pairs,
  retest_icc2_1 (replicates as raters of each essay × model, each model's mean removed first so a
  model's bias does not pass for reliability), retest_icc2_1_ci_low, retest_icc2_1_ci_high,
  retest_class, n_retest_units (essay × model units with every replicate scored).
- ``agreement_retest`` (test-retest per rubric × evaluation model, never pooled): evaluation_template,
  evaluation_llm, scale_min, scale_max, n_replicates, n_essays (scored every replicate),
  retest_icc2_1, retest_icc2_1_ci_low, retest_icc2_1_ci_high, retest_class, icc_ci_method.
- ``leaderboard``: every essay of the cohort (member essays + essays its evaluations score),
  best first: rank (1 = best by ``mean``, ties share the lowest rank, blank when unscored),
  essay_gen_id, draft_gen_id, combo_id, draft_template, draft_llm, essay_template, essay_llm,
  essay_mode, essay_status (``not_found`` if the essay is nowhere), in_cohort, mean (over the
  essay's cells, each cell less its evaluator × rubric effect from an additive fit over every
  essay's cells: adjusted for which evaluators scored it; equal to mean_raw when every essay has
  every cell), ci_low, ci_high (t over the essay's cells with the wider of its own cells' sd and
  the sd pooled over all essays' residual cells, clipped to [0, 1]), ci_method, ci_note,
  rank_ci_low, rank_ci_high (95 % interval of the rank from 1,000 simulated leaderboards, fixed
  seed), tier (essays whose rank intervals overlap the tier's first essay's cannot be told apart
  from it: tier 1 holds the essays that may be best), mean_raw (unadjusted mean over cells), std,
  min, max (all over the essay's n_cells cells: a cell is one rubric × evaluation model,
  replicates averaged first, on score_norm, so extra replicates never weigh more; a single
  evaluation can lie outside min–max), n_cells, n_cells_missing (cells of the cohort's design this
  essay has no score in), n (scored evaluations), expected (evaluations in membership), coverage
  (n / expected), simulated, note (the missing cells, named).
- ``coverage``: per stage (draft, essay, evaluation, always three rows): expected, done, stale,
  failed, pending, coverage (done / expected), prompt_tokens, completion_tokens, cost_usd (blank =
  unknown when any model call of the stage recorded no cost; never 0 for unknown),
  n_cost_unknown (calls without a recorded cost), n_simulated.
- ``spend``: the recorded model calls (each generation's last call; copy mode calls none) per
  stage × model, then per stage (llm_model_id ``(all)``), then the cohort (stage and
  llm_model_id ``(all)``): stage, llm_model_id, calls, prompt_tokens, completion_tokens, cost_usd
  (blank = unknown when any of the calls' cost is unknown; never 0 for unknown),
  cost_reported_usd (the part the provider reported), cost_estimated_usd (the part computed from
  the catalog prices), n_cost_reported, n_cost_estimated, n_cost_unknown, simulated.
- ``issues``: stage, gen_id (blank for catalog-level issues), issue, detail. issue ∈
  ``failed``, ``missing_file`` (detail lists the absent files), ``corrupt_metadata``,
  ``broken_lineage`` (blank/unknown parent, metadata.json disagreeing with membership, duplicate
  rows), ``unknown_template``, ``unknown_model``, ``scale_mismatch``, ``catalog_error``.
- ``cross_cohort`` (data/reports/cross_cohort.csv): essays scored in ≥ 2 cohorts, one row per
  essay × cohort: essay_gen_id, cohort_id, n_cohorts, draft_template, draft_llm, essay_template,
  essay_llm, n_cells, n, mean (the raw mean over cells: cohorts are compared on what their own
  evaluators gave), ci_low, ci_high, ci_method (t over the essay's cells; blank when the cells
  agree exactly), std, min, max (as in the leaderboard), rubrics,
  evaluators (``;``-joined), mean_across_cohorts (mean of the cohorts' means), delta (mean −
  mean_across_cohorts), delta_ci_low, delta_ci_high (t interval from the cohorts' cell stds,
  treated as independent: conservative, as shared cells are the same files). Shared evaluations
  are the same files, so differences come from the rubrics and evaluators each cohort used.

A search cohort (a spec with ``search:``) also gets ``search_rounds``, ``search_summary`` and
``search.json``: see ``pipeline/reports/search.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import DaydreamError
from pipeline.store import DataPaths, atomic_write_text, remove_dead_temporaries
from pipeline.reports import tables
from pipeline.reports.collect import ISSUE_COLUMNS, collect

TABLES = ("generations", "scores", "pivot_essay_evaluator", "pivot_generation", "pivot_draft_essay_template",
          "factors", "factor_effects", "paired_comparisons", "variance_models", "variance_rubrics", "variance_replicates", "variance_components", "agreement", "agreement_retest", "leaderboard",
          "coverage", "spend", "issues")

__all__ = ["TABLES", "build_reports", "build_cross_cohort", "write_table"]


def write_table(path: Path, df: pd.DataFrame) -> bool:
    """One CSV, atomically, header always; unchanged content leaves the file untouched."""
    text = df.to_csv(index=False, lineterminator="\n", float_format="%.6g")
    return atomic_write_text(path, text)


def _catalog(paths: DataPaths):
    """The catalog, or (None, issue) when it cannot be read: reports must still be built."""
    from pipeline.design.catalog import load_catalog

    try:
        return load_catalog(paths), None
    except DaydreamError as exc:
        return None, {"stage": "", "gen_id": "", "issue": "catalog_error", "detail": exc.message}


def _compute(paths: DataPaths, cohort_id: str, high: float, low: float) -> dict[str, pd.DataFrame]:
    if not 0 <= low <= high <= 1:
        raise DaydreamError("report", f"thresholds must satisfy 0 ≤ low ≤ high ≤ 1 (got low={low}, high={high})")
    catalog, problem = _catalog(paths)
    c = collect(paths, cohort_id, catalog)
    issues = c.issues if problem is None else pd.concat([pd.DataFrame([problem], columns=ISSUE_COLUMNS), c.issues])
    s = c.scores
    fits: dict = {}  # the mixed models, fitted once for both factor tables
    out = {
        "generations": c.generations,
        "scores": s,
        "pivot_essay_evaluator": tables.pivot_essay_evaluator(s),
        "pivot_generation": tables.pivot_generation(s),
        "pivot_draft_essay_template": tables.pivot_draft_essay_template(s),
        "factors": tables.factors(s, high, low, fits),
        "factor_effects": tables.factor_effects(s, fits),
        "paired_comparisons": tables.paired_comparisons(s),
        "variance_models": tables.variance_models(s),
        "variance_rubrics": tables.variance_rubrics(s),
        "variance_replicates": tables.variance_replicates(s),
        "variance_components": tables.variance_components(s),
        "agreement": tables.agreement(s),
        "agreement_retest": tables.agreement_retest(s),
        "leaderboard": tables.leaderboard(s, c.essays),
        "coverage": tables.coverage(c.generations),
        "spend": tables.spend(c.generations),
        "issues": issues.sort_values(["issue", "stage", "gen_id"], kind="stable").reset_index(drop=True),
    }
    assert tuple(out) == TABLES
    return out


def build_reports(paths: DataPaths, cohort_id: str, *, high: float = 0.8, low: float = 0.3) -> dict[str, pd.DataFrame]:
    """Build every table of ``cohort_id`` and write it under ``paths.reports_dir(cohort_id)``."""
    out = _compute(paths, cohort_id, high, low)
    for directory in (paths.cohort_dir(cohort_id), paths.reports_dir(cohort_id)):
        remove_dead_temporaries(directory)  # what a killed compile or report build left half-written
    for name, df in out.items():
        write_table(paths.reports_dir(cohort_id) / f"{name}.csv", df)
    return out


def build_cross_cohort(paths: DataPaths, scores: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Essays scored in several cohorts and how their scores compare.

    Every cohort with a membership.csv is read from the gens store (never from old CSVs), except
    those whose ``scores`` frame the caller already holds (``build_reports(...)["scores"]``).
    """
    catalog, _ = _catalog(paths)
    scores = scores or {}
    per_cohort = {cid: scores[cid] if cid in scores else collect(paths, cid, catalog).scores
                  for cid in paths.compiled_cohorts()}
    df = tables.cross_cohort(per_cohort)
    write_table(paths.cross_cohort_dir() / "cross_cohort.csv", df)
    return df
