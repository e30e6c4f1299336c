"""Search calibration: how often an adaptive search claims a target, on simulated scores.

The whole search runs through ``pipeline.design.search.replay`` (the function the runner calls with the
store's scores) with each draft's mean score drawn from a normal distribution around its combo's
true mean and rounded to the 0-10 scale's half points (0.05 normalised), as a rubric scores. Two
worlds, each over the demo-search design (10 concepts, round 0 every pair, top 3 kept, up to k = 4,
3 drafts per combo, ``confirm`` fresh drafts per confirmation):

- ``null``: no real differences, every combo's true mean exactly at the target (the case where a
  claim is hardest to avoid): any claim is false. The rate must stay at or below 5 %.
- ``null_selection_only``: the null world judged as before confirmations, on the selection data
  alone (the best kept combo's statistic at or above the target): the winner's curse.
- ``planted``: the offline simulator's planted target (``pipeline.llm.offline.target_shift``) over
  a base mean, a different 3-concept target per run: a claim is right when the confirmed combo
  holds the whole target. The rate of right claims must reach 90 %.

Prints one JSON object: per world and selection statistic, runs, claims, the rate and its 95 %
Wilson interval. ``tests/test_search.py`` runs the same functions with fewer runs.

    .venv/bin/python bench/search_calibration.py --runs 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "bench"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from pipeline.llm.offline import target_shift  # noqa: E402
from pipeline.design.search import Combo, ComboResult, SearchDef, SearchState, replay  # noqa: E402

POOL = ("combinatorial-innovation", "creative-constraints", "creativity", "default-mode-network",
        "deliberate-practice", "economic-innovation-models", "explore-exploit-tradeoff", "feedback-loops",
        "generator-verifier-gap", "serendipity")
SD = 0.11  # sd of a draft's score around its combo's mean (demo-search's drafts: about 0.106)
BASE = 0.58  # a combo's mean before the planted target's shift
STEP = 0.05  # a 0-10 rubric in half points, normalised
DRAFTS = 3
TARGET = 0.6


def demo_defn(**kw) -> SearchDef:
    base = dict(pool=POOL, level="paragraph", k0=2, top=3, statistic="ci_low", max_k=4, target=TARGET)
    return SearchDef(**{**base, **kw})


def _draw(rng: random.Random, mean: float, sd: float, n: int, step: float | None) -> tuple[float, ...]:
    out = []
    for _ in range(n):
        x = rng.gauss(mean, sd)
        if step:
            x = min(1.0, max(0.0, round(x / step) * step))
        out.append(x)
    return tuple(out)


def simulate(defn: SearchDef, true_mean: Callable[[Combo], float], seed: int, sd: float = SD,
             drafts: int = DRAFTS, step: float | None = STEP) -> SearchState:
    """One search over simulated scores: each combo's drafts (and each confirmation's fresh ones)
    drawn once, from their own seed, so a confirmation never reuses the scores that selected it."""

    def result(combo: Combo, units: tuple[float, ...]) -> ComboResult:
        return ComboResult(combo, defn.combo_id(combo), len(units), len(units), units, 2 * len(units))

    def evaluate(index: int, combos: list[Combo]) -> list[ComboResult]:
        return [result(c, _draw(random.Random(f"{seed}|{c}"), true_mean(c), sd, drafts, step)) for c in combos]

    def confirm(index: int, combo: Combo) -> ComboResult:
        return result(combo, _draw(random.Random(f"{seed}|confirm|{combo}"), true_mean(combo), sd, defn.confirm, step))

    return replay(defn, evaluate, lambda combos: 2 * drafts * len(combos), confirm=confirm,
                  confirm_cost=lambda combo: 2 * defn.confirm)


def null_claims(runs: int, statistic: str = "ci_low", **kw) -> int:
    """Searches (of ``runs``) that claim the target when every combo's true mean is the target."""
    d = demo_defn(statistic=statistic, **kw)
    return sum(simulate(dataclasses.replace(d, seed=s), lambda c: d.target, s).stop_code == "target"
               for s in range(runs))


def null_selection_claims(runs: int, statistic: str = "ci_low", **kw) -> int:
    """What a stop on the selection data alone would have claimed in the null world: searches in
    which some round's best kept combo has its statistic at or above the target (the rule before
    confirmations)."""
    d = demo_defn(statistic=statistic, **kw)
    target, d = d.target, dataclasses.replace(d, target=None)
    claims = 0
    for s in range(runs):
        state = simulate(dataclasses.replace(d, seed=s), lambda c: target, s)
        claims += any(r.results and r.kept and next(x for x in r.results if x.combo_id == r.kept[0]).value(statistic)
                      >= target for r in state.rounds)
    return claims


def planted_claims(runs: int, statistic: str = "ci_low", **kw) -> int:
    """Searches (of ``runs``) that claim the target on a combo holding the whole planted target."""
    d = demo_defn(statistic=statistic, **kw)
    right = 0
    for s in range(runs):
        target = frozenset(random.Random(f"target|{s}").sample(POOL, 3))
        state = simulate(dataclasses.replace(d, seed=s), lambda c: BASE + target_shift(target, c), s)
        claim = state.claimed()
        right += claim is not None and target <= set(claim.combo)
    return right


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2000, help="searches per world and statistic")
    ap.add_argument("--confirm", type=int, default=None, help="fresh drafts per confirmation (default: the spec default)")
    args = ap.parse_args(argv)
    kw = {} if args.confirm is None else {"confirm": args.confirm}
    t0 = time.monotonic()
    rows = []
    for world, fn in (("null", null_claims), ("planted", planted_claims),
                      ("null_selection_only", null_selection_claims)):
        for statistic in ("ci_low", "mean"):
            k = fn(args.runs, statistic, **kw)
            lo, hi = wilson(k, args.runs)
            rows.append({"world": world, "statistic": statistic, "runs": args.runs, "claims": k,
                         "rate": k / args.runs, "rate_ci95": [round(lo, 4), round(hi, 4)]})
            print(f"{world} {statistic}: {k}/{args.runs}", file=sys.stderr)
    from common import machine

    out = {"benchmark": "search_calibration", "machine": machine(), "design": {"pool": len(POOL), "k0": 2, "top": 3, "max_k": 4,
                                                           "drafts": DRAFTS, "sd": SD, "step": STEP,
                                                           "target": TARGET, "confirm": demo_defn(**kw).confirm},
           "results": rows, "seconds": round(time.monotonic() - t0, 1)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
