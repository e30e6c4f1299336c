"""Benchmark: calibration of the report statistics at the sizes real cohorts have.

    .venv/bin/python bench/stats_calibration.py [--fast-seeds 20000] [--table-seeds 400] [--mixed-seeds 1000]
    .venv/bin/python bench/stats_calibration.py --only-mixed [--mixed-seeds 1000]

Prints one JSON object: the coverage of the 95 % intervals (a level's mean, the difference of two
levels, a paired evaluator difference) at 3, 4, 6 and 12 essays per level, on the statistics
layer with ``--fast-seeds`` simulated tables per size and through the report tables (evaluator
adjustment, lineage clusters) with ``--table-seeds``; the template interval's coverage when drafts
carry an effect (3 essays per draft) and the template none; and the share of tables with a false
flag after Holm's correction when nothing is planted; and the mixed model's own intervals
(``stats.mixed_emm``) per design and size with ``--mixed-seeds`` frames each: the share it is
fitted on and the coverage there. Uses the generators of
``tests/test_stats_calibration.py``, whose fast subset runs in the suite. CPU only (~5 min at the
defaults on 2 shared cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

import numpy as np  # noqa: E402

from pipeline.reports import tables  # noqa: E402
from test_stats_calibration import (SIZES, _judge_diff, _template_effect, coverage_at,  # noqa: E402
                                    lineage_scores, simulate)
from test_stats_mixed import mixed_coverage  # noqa: E402


def table_coverage(n: int, seeds: int) -> dict[str, float]:
    hit = {"mean": 0, "diff": 0, "paired": 0, "mixed_model_share": 0}
    for seed in range(seeds):
        df = lineage_scores(10_000 + seed, per_level=n, effect=0.1, judge_b_bias=0.05)
        fits: dict = {}
        f = tables.factors(df, 0.8, 0.3, fits)
        row = f[(f["factor"] == "essay_template") & (f["level"] == "tB") & (f["rubric"] == tables.ALL)].iloc[0]
        hit["mean"] += row["ci_low"] <= 0.525 <= row["ci_high"]
        hit["mixed_model_share"] += row["ci_method"].startswith("mixed")
        e = _template_effect(df, fits)
        hit["diff"] += e["ci_low"] <= -0.1 <= e["ci_high"]
        p = _judge_diff(df)
        hit["paired"] += p["ci_low"] <= -0.05 <= p["ci_high"]
    return {k: round(v / seeds, 4) for k, v in hit.items()}


MIXED_DESIGNS = {
    # the essay is the top cluster (one essay a draft, a draft a combo): df = essays − 2
    "one essay a draft": (SIZES, lambda s, n: lineage_scores(s, per_level=n, effect=0.1, judge_b_bias=0.05), 0.525),
    # drafts of 2 essays with their own effect: the combo (= draft) is the top cluster
    "drafts of 2 essays, draft sd 0.08": ((4, 6, 12), lambda s, n: lineage_scores(
        s, per_level=n, effect=0.1, judge_b_bias=0.05, essays_per_draft=2, draft_sd=0.08,
        rubrics=(("novelty", 0, 9),)), 0.525),
    # the same with no draft effect: the top variance is often estimated at 0 (the fallback's case)
    "drafts of 2 essays, no draft effect": ((4, 6, 12), lambda s, n: lineage_scores(
        s, per_level=n, effect=0.1, judge_b_bias=0.05, essays_per_draft=2, draft_sd=0.0,
        rubrics=(("novelty", 0, 9),)), 0.525),
    # the template varies within combos (2 essays a combo, one of each): estimated within them
    "template within combos": (SIZES, lambda s, n: simulate(s, template_effect=0.1, n_essays=2 * n,
                                                             replicates=1), None),
}


def mixed_model_coverage(seeds: int) -> dict:
    """The mixed model's own intervals (``stats.mixed_emm``) per design and size: the share of
    frames it is fitted on and the coverage of its EMM (level tB) and contrast (tB − tA) there."""
    out = {}
    for name, (sizes, make, truth) in MIXED_DESIGNS.items():
        out[name] = {}
        for n in sizes:
            t0 = time.perf_counter()
            cov = mixed_coverage([make(40_000 + s, n) for s in range(seeds)], "essay_template", truth, -0.1)
            out[name][n] = {**{k: round(v, 4) for k, v in cov.items()},
                            "s_per_fit": round((time.perf_counter() - t0) / seeds, 3)}
            if truth is None:
                out[name][n].pop("mean")
    return out


def draft_effect(seeds: int) -> float:
    hit = 0
    for seed in range(seeds):
        df = lineage_scores(20_000 + seed, per_level=4, factor="draft_template", essays_per_draft=3, draft_sd=0.12,
                            essay_sd=0.03, rubrics=(("novelty", 0, 9),))
        fe = tables.factor_effects(df)
        row = fe[(fe["factor"] == "draft_template") & (fe["rubric"] == tables.ALL)].iloc[0]
        hit += row["ci_low"] <= 0 <= row["ci_high"]
    return round(hit / seeds, 4)


def false_flags(seeds: int) -> dict[str, float]:
    flagged = {"factor_effects": 0, "paired_comparisons": 0, "factor_effects_unadjusted": 0}
    for seed in range(seeds):
        df = lineage_scores(30_000 + seed, per_level=4)
        df["essay_llm"] = np.where(df["essay_gen_id"].str[-1].astype(int) % 2 == 0, "m1", "m2")
        fe = tables.factor_effects(df)
        flagged["factor_effects"] += bool(fe["excludes_zero_holm"].fillna(False).any())
        flagged["factor_effects_unadjusted"] += bool(fe["excludes_zero"].fillna(False).any())
        pc = tables.paired_comparisons(df)
        flagged["paired_comparisons"] += bool(pc["excludes_zero_holm"].fillna(False).any())
    return {k: round(v / seeds, 4) for k, v in flagged.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast-seeds", type=int, default=20_000)
    ap.add_argument("--table-seeds", type=int, default=400)
    ap.add_argument("--mixed-seeds", type=int, default=1000)
    ap.add_argument("--only-mixed", action="store_true", help="the mixed model's coverage alone")
    args = ap.parse_args(argv)
    if args.only_mixed:
        t0 = time.perf_counter()
        c.emit({"benchmark": "stats_calibration", "mixed_seeds": args.mixed_seeds,
                "mixed_model": mixed_model_coverage(args.mixed_seeds),
                "seconds": round(time.perf_counter() - t0, 1), "machine": c.machine()})
        return 0
    t0 = time.perf_counter()
    fast = {n: {k: round(v, 4) for k, v in coverage_at(n, args.fast_seeds, seed0=50_000).items()} for n in SIZES}
    t1 = time.perf_counter()
    tab = {n: table_coverage(n, args.table_seeds) for n in SIZES}
    t2 = time.perf_counter()
    c.emit({
        "benchmark": "stats_calibration", "fast_seeds": args.fast_seeds, "table_seeds": args.table_seeds,
        "coverage_statistics_layer": fast, "coverage_tables": tab,
        "template_coverage_with_draft_effect": draft_effect(args.table_seeds),
        "tables_with_a_false_flag": false_flags(args.table_seeds),
        "mixed_model": mixed_model_coverage(args.mixed_seeds),
        "seconds": {"statistics_layer": round(t1 - t0, 1), "tables": round(t2 - t1, 1),
                    "total": round(time.perf_counter() - t0, 1)},
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
