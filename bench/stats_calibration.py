"""Benchmark: calibration of the report statistics at the sizes real cohorts have.

    .venv/bin/python bench/stats_calibration.py [--fast-seeds 20000] [--table-seeds 400]

Prints one JSON object: the coverage of the 95 % intervals (a level's mean, the difference of two
levels, a paired evaluator difference) at 3, 4, 6 and 12 essays per level, on the statistics
layer with ``--fast-seeds`` simulated tables per size and through the report tables (evaluator
adjustment, lineage clusters) with ``--table-seeds``; the template interval's coverage when drafts
carry an effect (3 essays per draft) and the template none; and the share of tables with a false
flag after Holm's correction when nothing is planted. Uses the generators of
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
                                    lineage_scores)


def table_coverage(n: int, seeds: int) -> dict[str, float]:
    hit = {"mean": 0, "diff": 0, "paired": 0}
    for seed in range(seeds):
        df = lineage_scores(10_000 + seed, per_level=n, effect=0.1, judge_b_bias=0.05)
        f = tables.factors(df, 0.8, 0.3)
        row = f[(f["factor"] == "essay_template") & (f["level"] == "tB") & (f["rubric"] == tables.ALL)].iloc[0]
        hit["mean"] += row["ci_low"] <= 0.525 <= row["ci_high"]
        e = _template_effect(df)
        hit["diff"] += e["ci_low"] <= -0.1 <= e["ci_high"]
        p = _judge_diff(df)
        hit["paired"] += p["ci_low"] <= -0.05 <= p["ci_high"]
    return {k: round(v / seeds, 4) for k, v in hit.items()}


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
    args = ap.parse_args(argv)
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
        "seconds": {"statistics_layer": round(t1 - t0, 1), "tables": round(t2 - t1, 1),
                    "total": round(time.perf_counter() - t0, 1)},
        "machine": c.machine(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
