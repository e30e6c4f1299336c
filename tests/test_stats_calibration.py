"""Calibration of the report statistics: planted effects in simulated score tables, many seeds.

Each seed simulates a scores-shaped frame (numpy, seeded) with a known truth and runs the same
pure table functions the reports use. A 95 % interval must cover the planted value in ≥ 90 % of
seeds, and a zero effect must be flagged (interval excludes 0) in ≤ 10 % of seeds.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from pipeline.llm.base import CompletionRequest, GenerationContext
from pipeline.llm.offline import Effects, OfflineAPI
from pipeline.reports import tables

SEEDS = range(30)  # each seed fits ~6 mixed models (bench/stats_calibration.py runs many more)
JUDGES = ("judge-a", "judge-b")
RUBRICS = (("novelty", 0, 9), ("rigor", 0, 10))


def simulate(seed: int, *, template_effect: float = 0.0, judge_b_bias: float = 0.0, n_essays: int = 24,
             essay_sd: float = 0.10, noise: float = 0.07, replicates: int = 2, aliased: bool = False) -> pd.DataFrame:
    """A scores table: essays split between essay templates tA/tB (tA better by ``template_effect``
    on score_norm), each scored by two judges (judge-b more generous by ``judge_b_bias``) on two
    rubrics, ``replicates`` times. ``aliased``: each template always uses its own essay model."""
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n_essays):
        tpl = "tA" if e % 2 == 0 else "tB"
        quality = rng.normal(0, essay_sd) + (template_effect if tpl == "tA" else 0.0)
        for judge in JUDGES:
            for rubric, lo, hi in RUBRICS:
                for rep in range(1, replicates + 1):
                    p = 0.5 + quality + (judge_b_bias if judge == "judge-b" else 0.0) + rng.normal(0, noise)
                    rows.append({
                        "evaluation_gen_id": f"v{e}-{judge}-{rubric}-{rep}", "essay_gen_id": f"e{e}",
                        "draft_gen_id": f"d{e}", "combo_id": f"c{e // 2}", "draft_template": "d1", "draft_llm": "m0",
                        "essay_template": tpl,
                        "essay_llm": ("m-" + tpl) if aliased else ("m1" if e % 4 < 2 else "m2"),
                        "essay_mode": "llm", "evaluation_template": rubric, "evaluation_llm": judge,
                        "evaluation_replicate": str(rep), "score_norm": p, "score": lo + p * (hi - lo),
                        "scale_min": lo, "scale_max": hi, "simulated": True,
                    })
    return pd.DataFrame(rows)


def _template_effect(df: pd.DataFrame, fits: dict | None = None, factor: str = "essay_template") -> pd.Series:
    fe = tables.factor_effects(df, fits)
    row = fe[(fe["factor"] == factor) & (fe["rubric"] == tables.ALL)]
    assert len(row) == 1
    return row.iloc[0]


def _judge_diff(df: pd.DataFrame) -> pd.Series:
    pc = tables.paired_comparisons(df)
    return pc[pc["factor"] == "evaluation_llm"].iloc[0]


def test_planted_template_effect_is_covered():
    # tB − tA = −0.10 (reference tA is the first level)
    hits = 0
    for seed in SEEDS:
        row = _template_effect(simulate(seed, template_effect=0.10))
        assert row["level"] == "tB" and row["reference"] == "tA" and row["n_essays"] == 12
        hits += row["ci_low"] <= -0.10 <= row["ci_high"]
    assert hits >= 0.9 * len(SEEDS), f"coverage {hits}/{len(SEEDS)}"


def test_zero_template_effect_is_rarely_significant():
    flagged = sum(bool(_template_effect(simulate(seed))["excludes_zero"]) for seed in SEEDS)
    assert flagged <= 0.1 * len(SEEDS), f"false positives {flagged}/{len(SEEDS)}"


def test_planted_evaluator_bias_is_covered_on_matched_units():
    # judge-a − judge-b = −0.05 on the same essays and rubrics
    hits = flagged = 0
    for seed in SEEDS:
        row = _judge_diff(simulate(seed, judge_b_bias=0.05, n_essays=16))
        assert (row["level_a"], row["level_b"], row["n_units"], row["n_essays"]) == ("judge-a", "judge-b", 32, 16)
        hits += row["ci_low"] <= -0.05 <= row["ci_high"]
        flagged += bool(_judge_diff(simulate(seed + 1000, n_essays=16))["excludes_zero"])
    assert hits >= 0.9 * len(SEEDS), f"coverage {hits}/{len(SEEDS)}"
    assert flagged <= 0.1 * len(SEEDS), f"false positives {flagged}/{len(SEEDS)}"


def test_factor_mean_intervals_cover_the_level_mean():
    # the level mean of tB is 0.5 + mean judge bias (0) → 0.5, interval over essays
    hits = 0
    for seed in SEEDS:
        f = tables.factors(simulate(seed, n_essays=16), 0.8, 0.3)
        row = f[(f["factor"] == "essay_template") & (f["level"] == "tB") & (f["rubric"] == tables.ALL)].iloc[0]
        assert row["n_essays"] == 8 and row["n"] == 64
        hits += row["ci_low"] <= 0.5 <= row["ci_high"]
    assert hits >= 0.9 * len(SEEDS), f"coverage {hits}/{len(SEEDS)}"


def test_aliased_design_is_shown_once_as_a_joint_factor():
    df = simulate(0, template_effect=0.1, aliased=True)
    f = tables.factors(df, 0.8, 0.3)
    joint = "essay_template × essay_llm"
    assert joint in set(f["factor"]) and not {"essay_template", "essay_llm"} & set(f["factor"])
    assert set(f.loc[f["factor"] == joint, "level"]) == {"tA × m-tA", "tB × m-tB"}
    note = f.loc[f["factor"] == joint, "note"].iloc[0]
    assert "aliased" in note and "cannot be separated" in note
    # single-level factors say so; crossed factors carry no note
    assert f.loc[f["factor"] == "draft_template", "note"].iloc[0].startswith("one level only")
    assert (f.loc[f["factor"] == "evaluation_llm", "note"] == "").all()
    fe = tables.factor_effects(df)
    assert set(fe["factor"]) == {joint} and (fe["note"] == note).all()
    # crossed essay models (the default) are kept apart
    assert {"essay_template", "essay_llm"} <= set(tables.factors(simulate(0), 0.8, 0.3)["factor"])


def test_agreement_reports_icc_interval_and_ns():
    df = simulate(3, n_essays=12)
    ag = tables.agreement(df).set_index("evaluation_template")
    row = ag.loc["novelty"]
    assert row["n_essays"] == 12 and row["n_pearson_essays"] == 12 and row["n_retest_units"] == 24
    assert row["icc2_1_ci_low"] <= row["icc2_1"] <= row["icc2_1_ci_high"]
    assert row["mean_pearson_ci_low"] <= row["mean_pearson"] <= row["mean_pearson_ci_high"]
    assert row["retest_icc2_1_ci_low"] <= row["retest_icc2_1"] <= row["retest_icc2_1_ci_high"]


def test_reports_are_reproducible():
    df = simulate(7, template_effect=0.1)
    pd.testing.assert_frame_equal(tables.factor_effects(df), tables.factor_effects(df))


def test_offline_simulator_plants_effects():
    """The simulator's planted essay-template effect reaches the evaluators through the text, and
    a planted evaluator bias moves its scores (mean over many essays, on the normalised scale)."""
    plain, planted = OfflineAPI(effects=Effects(noise=0.0)), OfflineAPI(
        effects=Effects.parse("essay_template:tA = 0.10, evaluation_llm:judge-b = 0.05", noise=0.0))
    diffs, bias = [], []
    for i in range(30):
        prompt = (f"Write an essay connecting these concepts:\n1. Tides {i}\n2. Ledgers\n<<<\n"
                  + " ".join(f"ledger{j} tide{i} drifts slowly" for j in range(12)) + "\n>>>")
        req = CompletionRequest(prompt=prompt, model_slug="offline/writer",
                                context=GenerationContext(stage="essay", template_id="tA", parser="identity"))
        for prov, out in ((plain, []), (planted, [])):
            essay = asyncio.run(prov.generate(req)).text
            for judge in ("judge-a", "judge-b"):
                ev = CompletionRequest(prompt=f"Score this essay from 0 to 100.\n<<<\n{essay}\n>>>\nSCORE: X",
                                       model_slug=f"offline/{judge}",
                                       context=GenerationContext(stage="evaluation", template_id="r", parser="score",
                                                                 scale_min=0, scale_max=100))
                out.append(float(asyncio.run(prov.generate(ev)).text.strip().split()[-1].strip("*")) / 100)
            if prov is plain:
                base = out
            else:  # same judges without noise: what remains is what was planted
                diffs.append(out[0] - base[0])
                bias.append((out[1] - base[1]) - (out[0] - base[0]))
    assert np.mean(diffs) == pytest.approx(0.10, abs=0.03)
    assert np.mean(bias) == pytest.approx(0.05, abs=0.01)


def test_effects_config_is_validated():
    assert Effects.parse("essay_llm:m1=-0.2\nevaluation_template:r=0.1").shifts == {
        ("essay_llm", "m1"): -0.2, ("evaluation_template", "r"): 0.1}
    for bad in ("draft_template:x=0.1", "essay_template:x", "essay_template:x=abc"):
        with pytest.raises(ValueError):
            Effects.parse(bad)


# ---------------------------------------------------------------------------------------------
# Small-sample calibration on the lineage. ``lineage_scores`` builds a scores frame whose essays
# hang off drafts and combos with their own random effects, so an interval that ignores the
# lineage (or a bootstrap over 3 essays) shows up as under-coverage. The statistics layer is
# checked with 2,000 seeds per size (the t interval is exact under normality: 93–97 % is ±4
# standard errors of a coverage estimate); the tables, which add the evaluator adjustment and the
# choice of cluster, with fewer seeds. bench/stats_calibration.py runs the long version.

SIZES = (3, 4, 6, 12)
MANY = 2000


def lineage_scores(seed: int, *, per_level: int, effect: float = 0.0, factor: str = "essay_template",
                   essays_per_draft: int = 1, drafts_per_combo: int = 1, combo_sd: float = 0.0,
                   draft_sd: float = 0.0, essay_sd: float = 0.10, judge_b_bias: float = 0.0,
                   interaction_sd: float = 0.03, noise: float = 0.07, replicates: int = 1,
                   rubrics=RUBRICS) -> pd.DataFrame:
    """Two levels (tA, tB) of ``factor`` (``essay_template`` or ``draft_template``), each with
    ``per_level`` drafts' worth of essays; tA is better by ``effect``. Each combo holds
    ``drafts_per_combo`` drafts of one level, each draft ``essays_per_draft`` essays; every essay is
    scored by judge-a and judge-b (judge-b more generous by ``judge_b_bias``) on every rubric,
    ``replicates`` times. Random effects: combo, draft, essay, essay × judge, evaluation noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for li, level in enumerate(("tA", "tB")):
        n_drafts = per_level if factor == "draft_template" else max(per_level // essays_per_draft, 1)
        n_essays_left = per_level
        for di in range(n_drafts):
            ci = di // drafts_per_combo
            combo = f"c{li}-{ci}"
            if di % drafts_per_combo == 0:
                c_eff = rng.normal(0, combo_sd) if combo_sd else 0.0
            d_eff = rng.normal(0, draft_sd) if draft_sd else 0.0
            k = essays_per_draft if factor == "draft_template" else min(essays_per_draft, n_essays_left)
            n_essays_left -= k
            for ei in range(k):
                essay = f"e{li}-{di}-{ei}"
                q = 0.5 + c_eff + d_eff + rng.normal(0, essay_sd) + (effect if level == "tA" else 0.0)
                for judge in JUDGES:
                    j = (judge_b_bias if judge == "judge-b" else 0.0) + rng.normal(0, interaction_sd)
                    for rubric, lo, hi in rubrics:
                        for rep in range(1, replicates + 1):
                            p = q + j + rng.normal(0, noise)
                            rows.append({
                                "evaluation_gen_id": f"v-{essay}-{judge}-{rubric}-{rep}", "essay_gen_id": essay,
                                "draft_gen_id": f"d{li}-{di}", "combo_id": combo,
                                "draft_template": level if factor == "draft_template" else "d1", "draft_llm": "m0",
                                "essay_template": level if factor == "essay_template" else "t1",
                                "essay_llm": "m1", "essay_mode": "llm", "evaluation_template": rubric,
                                "evaluation_llm": judge, "evaluation_replicate": str(rep), "score_norm": p,
                                "score": lo + p * (hi - lo), "scale_min": lo, "scale_max": hi, "simulated": True})
    return pd.DataFrame(rows)


def _fast_frame(rng, n: int, essays: np.ndarray, *, effect: float = 0.0, judge_b_bias: float = 0.0):
    """The statistics layer's input without pandas: two levels of n essays, two judges, one rubric;
    returns (values, is-level-a, judge-a − judge-b per essay)."""
    q = rng.normal(0, 0.10, (2, n)) + np.array([[effect], [0.0]])
    inter = rng.normal(0, 0.03, (2, n, 2))
    v = 0.5 + q[:, :, None] + inter + np.array([0.0, judge_b_bias]) + rng.normal(0, 0.07, (2, n, 2))
    is_a = np.zeros((2, n, 2), dtype=bool)
    is_a[0] = True
    return v, is_a, v[:, :, 0] - v[:, :, 1]


def coverage_at(n: int, seeds: int, seed0: int = 0) -> dict[str, float]:
    """Coverage of the statistics layer's 95 % intervals at n essays per level over ``seeds``
    simulated tables: a level's mean, the difference of two levels, a paired judge difference."""
    from pipeline.reports import stats

    rng = np.random.default_rng(seed0 + n)
    essays = np.array([[f"{lv}-{i}"] * 2 for lv in "ab" for i in range(n)]).reshape(2, n, 2)
    hit = {"mean": 0, "diff": 0, "paired": 0}
    flat_essays, a_essays, p_essays = essays.ravel(), essays[1].ravel(), essays[1, :, 0]
    for _ in range(seeds):
        v, is_a, d = _fast_frame(rng, n, essays, effect=0.1, judge_b_bias=0.05)
        m = stats.t_cluster_mean(v[1].ravel(), a_essays)
        hit["mean"] += m["ci_low"] <= 0.525 <= m["ci_high"]
        df = stats.t_cluster_diff(v.ravel(), flat_essays, is_a.ravel())
        hit["diff"] += df["ci_low"] <= 0.1 <= df["ci_high"]
        p = stats.t_cluster_mean(d[1], p_essays)
        hit["paired"] += p["ci_low"] <= -0.05 <= p["ci_high"]
    return {k: h / seeds for k, h in hit.items()}


@pytest.mark.parametrize("n", SIZES)
def test_t_intervals_cover_95_at_small_n(n):
    """Mean of a level, difference of two levels and a paired evaluator difference, n essays per
    level: 95 % intervals cover in 93–97 % of the seeds (a bootstrap over 3 essays: ~75 %).
    Welch's t is slightly conservative at n = 3 (96.5 % in 200,000 seeds), hence 2,000 seeds."""
    for kind, cov in coverage_at(n, MANY).items():
        assert 0.93 <= cov <= 0.97, f"{kind} coverage {cov:.3f} at n={n}"


def test_tables_cover_at_three_essays_per_level():
    """Through the tables (evaluator adjustment, lineage choice, paired comparisons): the level
    mean, the template difference and the judge difference at 3 essays per level."""
    seeds = range(60)  # each seed fits the mixed model 3 times: the bench runs the long version
    hit = {"mean": 0, "diff": 0, "paired": 0}
    mixed = 0
    for seed in seeds:
        df = lineage_scores(seed, per_level=3, effect=0.1, judge_b_bias=0.05)
        fits: dict = {}
        f = tables.factors(df, 0.8, 0.3, fits)
        row = f[(f["factor"] == "essay_template") & (f["level"] == "tB") & (f["rubric"] == tables.ALL)].iloc[0]
        # the mixed model's EMM pools the essay variance of both levels (df 6 − 2), unless REML
        # puts it at 0: then the t over the level's own essay means, and the note says why
        assert row["n_clusters"] == 3 and (row["ci_method"] == "mixed-model EMM, Satterthwaite t (df 4.0)" or (
            row["ci_method"] == "t over essay means (df 2)" and "mixed model not fitted" in row["ci_note"]))
        mixed += row["ci_method"].startswith("mixed")
        hit["mean"] += row["ci_low"] <= 0.525 <= row["ci_high"]
        e = _template_effect(df, fits)
        hit["diff"] += e["ci_low"] <= -0.1 <= e["ci_high"]
        p = _judge_diff(df)
        hit["paired"] += p["ci_low"] <= -0.05 <= p["ci_high"]
    for kind, h in hit.items():
        assert h >= 0.92 * len(seeds), f"{kind} coverage {h}/{len(seeds)}"
    assert mixed >= 0.9 * len(seeds), f"mixed model fitted in {mixed}/{len(seeds)}"


def test_effect_carried_by_drafts_does_not_narrow_the_template_interval():
    """Drafts carry a large random effect and each holds 3 essays; the draft template has none.
    Essays of one draft are not independent: the interval's unit is the draft, so it covers 0."""
    seeds = range(100)
    hit = 0
    for seed in seeds:
        df = lineage_scores(seed, per_level=4, factor="draft_template", essays_per_draft=3, draft_sd=0.12,
                            essay_sd=0.03, rubrics=RUBRICS[:1])
        fe = tables.factor_effects(df)
        row = fe[(fe["factor"] == "draft_template") & (fe["rubric"] == tables.ALL)].iloc[0]
        # one draft per combo here, so the combo is the draft: either way, 8 clusters, not 24 essays;
        # the mixed model's contrast has df 8 − 2 (between combos), never the essays' 22
        assert row["n_clusters"] == 8 and (row["ci_method"] == "mixed-model contrast, Satterthwaite t (df 6.0)"
                                           or row["ci_method"].startswith("Welch t over combo means"))
        hit += row["ci_low"] <= 0 <= row["ci_high"]
    assert hit >= 0.93 * len(seeds), f"coverage {hit}/{len(seeds)}"


def test_no_effect_flags_at_most_5_percent_of_tables_after_holm():
    """No planted effect anywhere: a table with any row flagged after Holm's correction counts as
    one false claim; at most 5 % of seeds may make one (per table: factor_effects, paired)."""
    seeds = range(100)
    flagged = {"factor_effects": 0, "paired_comparisons": 0}
    for seed in seeds:
        df = lineage_scores(seed, per_level=4)
        df["essay_llm"] = np.where(df["essay_gen_id"].str[-1].astype(int) % 2 == 0, "m1", "m2")
        fe = tables.factor_effects(df)
        assert (fe["n_family"] == len(fe)).all()
        flagged["factor_effects"] += bool(fe["excludes_zero_holm"].fillna(False).any())
        pc = tables.paired_comparisons(df)
        flagged["paired_comparisons"] += bool(pc["excludes_zero_holm"].fillna(False).any())
    for name, k in flagged.items():
        assert k <= 0.05 * len(seeds), f"{name}: {k}/{len(seeds)} tables with a false flag"
