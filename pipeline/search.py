"""Adaptive search over concept combinations (a cohort's ``search:`` section). Pure: no I/O.

A search runs in rounds. Round 0 holds every k0-subset of the pool (or a seeded sample of them);
once a round is scored, its top ``m`` combos by a named statistic are kept (ties broken by
combo_id, so the same scores always keep the same combos) and each kept combo grows by one pool
concept (all of them, or a seeded sample of ``s``) to make the next round. The stopping rules
are checked after each round: a target value of the statistic, a number of rounds, a maximum k,
a budget (model calls or USD), or nothing left to try.

``replay`` is the whole search as a function of the scores: given a way to score a round (None
while it is unfinished) it returns every round so far and why the search stopped. The runner
calls it with scores read from the gens store, the tests with simulated ones; nothing else
decides a round, so a search re-derived after a crash is the one that was running.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Collection

from .ids import combo_id
from .spend import usd

STATISTICS = {
    "mean": "mean normalised score (0-1) over the combo's evaluations",
    "ci_low": "lower bound of the 95 % interval of that mean (cluster bootstrap over essays)",
}
MIN_ESSAYS = {"ci_low": 3}  # the bootstrap gives no interval below this many essays per combo
BUDGET_UNITS = ("calls", "usd")
ENUMERATE_LIMIT = 200_000  # above this many k0-subsets a sample is drawn without listing them all

Combo = tuple[str, ...]  # concept ids, sorted: one canonical order, so one prompt per combo_id


@dataclass(frozen=True)
class Budget:
    """A spending limit. ``unit`` says what the cost function passed to ``replay`` counts:
    ``calls`` (model calls the rounds' generations make) or ``usd``; the rule (a round runs only
    if it fits in what is left) is the same."""

    unit: str
    limit: float

    def show(self, amount: float) -> str:
        """An amount in this unit, for people."""
        return usd(amount) if self.unit == "usd" else f"{amount:g}"

    def first_round_error(self, cost: float, combos: int) -> str | None:
        """Why round 0, costing ``cost`` for ``combos`` start combos, cannot run (None: it fits).
        Checked when the cohort compiles (calls) and before the search starts (both units)."""
        if cost <= self.limit:
            return None
        unit = "" if self.unit == "usd" else " model calls"  # "$" says it
        return (f"search.stop.budget_{self.unit}: {self.show(self.limit)} is less than the {self.show(cost)}{unit} "
                f"round 0 needs ({combos} combos); raise it or sample fewer start combos")


@dataclass(frozen=True)
class SearchDef:
    """A parsed ``search:`` section (see docs/spec-dsl.md)."""

    pool: tuple[str, ...]  # sorted concept ids
    level: str
    k0: int
    top: int
    statistic: str
    start_sample: int | None = None
    expand_sample: int | None = None
    seed: int = 0
    max_k: int | None = None
    rounds: int | None = None
    target: float | None = None
    budget: Budget | None = None

    def combo_id(self, combo: Combo) -> str:
        return combo_id(combo, self.level, len(combo))

    @property
    def k_limit(self) -> int:
        """The largest k any round can reach."""
        k = len(self.pool) if self.max_k is None else min(self.max_k, len(self.pool))
        return k if self.rounds is None else min(k, self.k0 + self.rounds - 1)

    def space(self) -> int:
        """Combos in the full factorial the search explores (every k from k0 to ``k_limit``)."""
        return sum(math.comb(len(self.pool), k) for k in range(self.k0, self.k_limit + 1))


def start_combos(defn: SearchDef) -> list[Combo]:
    """Round 0: every k0-subset of the pool, or a seeded sample of ``start_sample`` of them."""
    total = math.comb(len(defn.pool), defn.k0)
    if defn.start_sample is None or defn.start_sample >= total:
        return list(itertools.combinations(defn.pool, defn.k0))
    rng = random.Random(f"{defn.seed}|start")
    if total <= ENUMERATE_LIMIT:
        return sorted(rng.sample(list(itertools.combinations(defn.pool, defn.k0)), defn.start_sample))
    chosen: set[Combo] = set()
    while len(chosen) < defn.start_sample:
        chosen.add(tuple(sorted(rng.sample(defn.pool, defn.k0))))
    return sorted(chosen)


def expand(defn: SearchDef, kept: list[Combo], seen: set[Combo]) -> list[Combo]:
    """Each kept combo plus one more pool concept (all, or a sample of ``expand_sample`` seeded by
    the combo's id, so it does not depend on what else was kept), minus combos already tried."""
    out: dict[Combo, None] = {}
    for combo in kept:
        if len(combo) >= defn.k_limit:
            continue
        extra = [c for c in defn.pool if c not in combo]
        if defn.expand_sample is not None and defn.expand_sample < len(extra):
            extra = sorted(random.Random(f"{defn.seed}|expand|{defn.combo_id(combo)}").sample(extra, defn.expand_sample))
        for c in extra:
            grown = tuple(sorted(combo + (c,)))
            if grown not in seen:
                out.setdefault(grown)
    return list(out)


@dataclass(frozen=True)
class ComboResult:
    """A scored combo: its statistics over score_norm, and the model calls its generations take."""

    combo: Combo
    combo_id: str
    n: int  # scored evaluations
    n_essays: int
    mean: float
    ci_low: float
    ci_high: float
    calls: int = 0

    def value(self, statistic: str) -> float:
        return getattr(self, statistic)


def score_combo(combo: Combo, cid: str, essays: list[str], scores: list[float], calls: int = 0) -> ComboResult:
    """Mean of ``scores`` (score_norm of each evaluation) with the reports' 95 % cluster-bootstrap
    interval over the evaluations' ``essays`` (pipeline.reports.stats.cluster_mean_ci)."""
    from .reports.stats import cluster_mean_ci  # numpy/scipy: only when scores are summarised

    mean, lo, hi, n_essays = cluster_mean_ci(essays, scores)
    return ComboResult(combo, cid, len(scores), n_essays, mean, lo, hi, calls)


def _usable(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def ranked(results: list[ComboResult], statistic: str) -> list[ComboResult]:
    """Best first by ``statistic``; ties by combo_id; combos without a value (no scores, or too
    few essays for an interval) last, and never kept."""
    def key(r: ComboResult):
        v = r.value(statistic)
        return (0, -v, r.combo_id) if _usable(v) else (1, 0.0, r.combo_id)

    return sorted(results, key=key)


def select(results: list[ComboResult], top: int, statistic: str) -> list[ComboResult]:
    """The top ``top`` combos that have a value of ``statistic``."""
    return [r for r in ranked(results, statistic) if _usable(r.value(statistic))][:top]


STOP_CODES = ("target", "rounds", "max_k", "budget", "exhausted", "no_scores")


@dataclass
class Round:
    index: int
    combos: list[Combo]
    cost: float  # in the budget's unit (calls when no budget is set)
    results: list[ComboResult] | None = None  # None while the round is not finished
    kept: list[str] = field(default_factory=list)  # combo_ids, best first

    @property
    def k(self) -> int:
        return len(self.combos[0]) if self.combos else 0


@dataclass
class SearchState:
    defn: SearchDef
    rounds: list[Round]
    stop_code: str | None = None  # one of STOP_CODES once stopped
    stop_reason: str = ""

    @property
    def stopped(self) -> bool:
        return self.stop_code is not None

    @property
    def running(self) -> Round | None:
        """The round being generated (None once stopped)."""
        return None if self.stopped else self.rounds[-1]

    @property
    def spent(self) -> float:
        return sum(r.cost for r in self.rounds)

    def combos(self) -> list[Combo]:
        return [c for r in self.rounds for c in r.combos]

    def best(self, n: int = 5) -> list[ComboResult]:
        scored = [x for r in self.rounds if r.results for x in r.results]
        return select(scored, n, self.defn.statistic)

    def line(self) -> str:
        """One line for status messages."""
        last = self.rounds[-1]
        tried = sum(len(r.combos) for r in self.rounds)
        if not self.stopped:
            return (f"search round {last.index} running: {len(last.combos)} combos of {last.k} concepts "
                    f"({tried} of {self.defn.space()} combos tried)")
        best = self.best(1)
        top = (f"; best {best[0].combo_id} ({', '.join(best[0].combo)}) {self.defn.statistic} "
               f"{best[0].value(self.defn.statistic):.3f}") if best else ""
        return f"search stopped after round {last.index}: {self.stop_reason} ({tried} of {self.defn.space()} combos tried){top}"


def replay(defn: SearchDef, evaluate: Callable[[int, list[Combo]], list[ComboResult] | None],
           cost: Callable[[list[Combo]], float], reached: Collection[tuple[Combo, ...]] = ()) -> SearchState:
    """Every round so far, from the scores ``evaluate`` gives (None: the round is unfinished).

    ``cost(combos)`` is what running those combos takes, in the budget's unit; a round runs only
    if it fits in what the budget has left (round 0 is checked before the search starts). A round
    in ``reached`` (its combos, as recorded when it was reached) was judged then and is not judged
    again: a USD cost is an estimate until the calls are made, and a round that cost more than
    expected must not be dropped after the fact.
    """
    combos = start_combos(defn)
    seen = set(combos)
    state = SearchState(defn, [])
    while True:
        rnd = Round(len(state.rounds), combos, cost(combos))
        state.rounds.append(rnd)
        results = evaluate(rnd.index, combos)
        if results is None:
            return state
        rnd.results = results
        kept = select(results, defn.top, defn.statistic)
        rnd.kept = [r.combo_id for r in kept]
        code, reason, combos = _next(defn, state, kept, seen, cost, reached)
        if code is not None:
            state.stop_code, state.stop_reason = code, reason
            return state
        seen.update(combos)


def _next(defn: SearchDef, state: SearchState, kept: list[ComboResult], seen: set[Combo],
          cost: Callable[[list[Combo]], float], reached: Collection[tuple[Combo, ...]]
          ) -> tuple[str | None, str, list[Combo]]:
    """(stop code, reason, []) or (None, "", the next round's combos)."""
    rnd, stat = state.rounds[-1], defn.statistic
    if defn.target is not None and kept and kept[0].value(stat) >= defn.target:
        return "target", (f"target reached: {kept[0].combo_id} has {stat} {kept[0].value(stat):.3f} "
                          f"≥ {defn.target:g}"), []
    if defn.rounds is not None and len(state.rounds) >= defn.rounds:
        return "rounds", f"{defn.rounds} rounds run", []
    if not kept:
        return "no_scores", f"no combo of round {rnd.index} has a {stat} to rank it by", []
    if all(len(r.combo) >= defn.k_limit for r in kept):
        return "max_k", f"the kept combos have k = {rnd.k}, the largest allowed", []
    combos = expand(defn, [r.combo for r in kept], seen)
    if not combos:
        return "exhausted", "every combo the kept ones grow into was already tried", []
    budget = defn.budget
    if budget is not None and tuple(combos) not in reached:
        need, left = cost(combos), budget.limit - state.spent
        if need > left:
            unit = "" if budget.unit == "usd" else f" {budget.unit}"  # "$" says it
            return "budget", (f"budget: round {rnd.index + 1} needs {budget.show(need)}{unit}, "
                              f"{budget.show(left)} of {budget.show(budget.limit)} left"), []
    return None, "", combos
