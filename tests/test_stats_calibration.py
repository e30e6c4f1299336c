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

SEEDS = range(50)
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


def _template_effect(df: pd.DataFrame, factor: str = "essay_template") -> pd.Series:
    fe = tables.factor_effects(df)
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
