"""Adaptive search over concept combinations (a cohort's ``search:`` section). Pure: no I/O.

A search runs in rounds. Round 0 holds every k0-subset of the pool (or a seeded sample of them);
once a round is scored, its top ``m`` combos by a named statistic are kept (ties broken by
combo_id, so the same scores always keep the same combos) and each kept combo grows by one pool
concept (all of them, or a seeded sample of ``s``) to make the next round. The stopping rules
are checked after each round: a target, a number of rounds, a maximum k, a budget (model calls
or USD), or nothing left to try.

A combo's estimates are Student-t intervals over its drafts' mean scores: essays and evaluations
of one draft share it, so the draft is the unit that replicates the combo (with one essay per
draft that is the essay). A combo whose drafts all score the same has no interval: "not
estimable", never ranked by ``ci_low`` as if it were certain.

A target is never reached on the scores that selected a combo: the best of many noisy combos
looks better than it is (the winner's curse). When a kept combo's mean reaches the target, the
combo is confirmed on fresh generations (``confirm`` new draft replicates, the round's
confirmation step), and the search stops only when the lower bound of the t interval over the
confirming drafts alone reaches the target. At most one confirmation per round; the i-th of a
search uses a one-sided error of 2.5 % / 2^(i-1) (95 %, 97.5 %, 98.75 % … intervals), so that
however many a search runs, one with no combo truly at the target claims it at most 5 % of the
time.

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
from functools import cached_property, lru_cache
from typing import Callable, Collection

from pipeline.ids import combo_id
from pipeline.store.spend import usd

STATISTICS = {
    "mean": "mean normalised score (0-1) of the combo: the mean over its drafts of each draft's mean",
    "ci_low": "lower bound of the 95 % Student-t interval of that mean, over the drafts' means",
}
MIN_UNITS = 3  # drafts per combo: below this ci_low ranks nothing useful, and no target is claimed
# Fresh draft replicates per confirmation unless the spec says (search.confirm): with 10 drafts a
# combo whose true mean is one draft-sd above the target is confirmed about 80 % of the time
# (t with 9 df); with 3 (t with 2 df) hardly ever.
CONFIRM_REPLICATES = 10
CLAIM_ERROR = 0.05  # the chance, at most, that a search claims a target no combo truly reaches
CI_METHOD = "t over draft means"
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
    confirm: int = CONFIRM_REPLICATES  # fresh draft replicates that confirm a combo reaching the target

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


@lru_cache(maxsize=None)
def _t_quantile(p: float, df: int) -> float:
    from scipy.stats import t  # only when a combo is summarised

    return float(t.ppf(p, df))


@lru_cache(maxsize=65536)
def t_interval(values: tuple[float, ...], level: float = 0.95) -> tuple[float, float, float, str]:
    """(mean, low, high, why not) of ``values``: a Student-t interval on their mean at ``level``.
    With fewer than two values or no spread the bounds are NaN and ``why not`` says why; a
    zero-width interval would claim certainty from too little data."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan, "no scores"
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan, math.nan, "one draft: no spread to judge its mean by"
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    if not sd > 1e-12:
        return mean, math.nan, math.nan, f"its {n} drafts score the same: no spread to judge its mean by"
    half = _t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, ""


@dataclass(frozen=True)
class ComboResult:
    """A scored combo: its drafts' mean scores (the interval's units), and what it took."""

    combo: Combo
    combo_id: str
    n: int  # scored evaluations
    n_essays: int
    units: tuple[float, ...]  # mean score_norm of each draft, in the drafts' id order
    calls: int = 0

    @property
    def n_units(self) -> int:
        return len(self.units)

    def interval(self, level: float = 0.95) -> tuple[float, float, float, str]:
        return self._interval_95 if level == 0.95 else t_interval(self.units, level)

    @cached_property
    def _interval_95(self) -> tuple[float, float, float, str]:
        # mean, ci_low, ci_high and not_estimable all read it: the t quantile once, not four times
        return t_interval(self.units, 0.95)

    @property
    def mean(self) -> float:
        return self._interval_95[0]

    @property
    def ci_low(self) -> float:
        return self._interval_95[1]

    @property
    def ci_high(self) -> float:
        return self._interval_95[2]

    @property
    def not_estimable(self) -> str:
        """Why the combo has no interval ("" when it has one)."""
        return self._interval_95[3]

    def value(self, statistic: str) -> float:
        return getattr(self, statistic)


def score_combo(combo: Combo, cid: str, drafts: list[str], essays: list[str], scores: list[float],
                calls: int = 0) -> ComboResult:
    """The combo's result from its evaluations' ``scores`` (score_norm), each with the ``drafts``
    and ``essays`` it descends from: a draft's unit is the mean of its evaluations (with several
    essays per draft, each essay weighs by its evaluations)."""
    by_draft: dict[str, list[float]] = {}
    for d, x in zip(drafts, scores):
        by_draft.setdefault(d, []).append(x)
    units = tuple(math.fsum(v) / len(v) for _, v in sorted(by_draft.items()))
    return ComboResult(combo, cid, len(scores), len(set(essays)), units, calls)


def confirm_level(number: int) -> float:
    """The two-sided level of the interval whose lower bound decides the ``number``-th confirmation
    of a search (1-based): one-sided errors 2.5 %, 1.25 %, … sum to less than ``CLAIM_ERROR``."""
    return 1 - CLAIM_ERROR / 2 ** (number - 1)


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
class Confirmation:
    """A kept combo whose mean reached the target, generated again on fresh draft replicates."""

    combo: Combo
    combo_id: str
    number: int  # 1 for the search's first confirmation: it sets the level (confirm_level)
    cost: float  # in the budget's unit
    selection: ComboResult  # the estimate that made it a candidate
    result: ComboResult | None = None  # the fresh drafts' scores; None while they are not all done

    @property
    def level(self) -> float:
        return confirm_level(self.number)

    @property
    def bounds(self) -> tuple[float, float, float, str]:
        """(mean, low, high, why not) over the confirming drafts, at ``level``."""
        return self.result.interval(self.level) if self.result else (math.nan, math.nan, math.nan, "running")

    def verdict(self, target: float) -> tuple[bool | None, str]:
        """(whether the target is reached, why): None while running."""
        if self.result is None:
            return None, "running"
        mean, lo, _, why = self.bounds
        if self.result.n_units < MIN_UNITS:
            return False, f"{self.result.n_units} confirming drafts scored, fewer than the {MIN_UNITS} a claim needs"
        if why:
            return False, f"not estimable: {why}"
        level = f"{self.level * 100:g} %"
        if lo >= target:
            return True, f"lower {level} bound {lo:.3f} ≥ {target:g}"
        return False, f"lower {level} bound {lo:.3f} < {target:g}"


@dataclass
class Round:
    index: int
    combos: list[Combo]
    cost: float  # in the budget's unit (calls when no budget is set)
    results: list[ComboResult] | None = None  # None while the round is not finished
    kept: list[str] = field(default_factory=list)  # combo_ids, best first
    confirm: Confirmation | None = None  # the round's confirmation step, when a kept combo reached the target

    @property
    def k(self) -> int:
        return len(self.combos[0]) if self.combos else 0

    @property
    def spent(self) -> float:
        return self.cost + (self.confirm.cost if self.confirm else 0)


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
        """The round being generated, or being confirmed (None once stopped)."""
        return None if self.stopped else self.rounds[-1]

    @property
    def spent(self) -> float:
        return sum(r.spent for r in self.rounds)

    def combos(self) -> list[Combo]:
        return [c for r in self.rounds for c in r.combos]

    def confirmations(self) -> list[Confirmation]:
        return [r.confirm for r in self.rounds if r.confirm is not None]

    def claimed(self) -> Confirmation | None:
        """The confirmation that reached the target (None unless the search stopped on it)."""
        return self.rounds[-1].confirm if self.stop_code == "target" else None

    def best(self, n: int = 5) -> list[ComboResult]:
        scored = [x for r in self.rounds if r.results for x in r.results]
        return select(scored, n, self.defn.statistic)

    def line(self) -> str:
        """One line for status messages."""
        last = self.rounds[-1]
        tried = sum(len(r.combos) for r in self.rounds)
        if not self.stopped:
            if last.confirm is not None:
                return (f"search round {last.index} confirming {last.confirm.combo_id} ({', '.join(last.confirm.combo)}) "
                        f"on {self.defn.confirm} fresh draft replicates ({tried} of {self.defn.space()} combos tried)")
            return (f"search round {last.index} running: {len(last.combos)} combos of {last.k} concepts "
                    f"({tried} of {self.defn.space()} combos tried)")
        best = self.best(1)
        top = (f"; best {best[0].combo_id} ({', '.join(best[0].combo)}) {self.defn.statistic} "
               f"{best[0].value(self.defn.statistic):.3f}") if best else ""
        if self.claimed() is not None:  # the reason names the confirmed combo and both estimates
            top = f"; confirmed combo: {', '.join(self.claimed().combo)}"
        return f"search stopped after round {last.index}: {self.stop_reason} ({tried} of {self.defn.space()} combos tried){top}"


Evaluate = Callable[[int, list[Combo]], "list[ComboResult] | None"]


def replay(defn: SearchDef, evaluate: Evaluate, cost: Callable[[list[Combo]], float],
           reached: Collection[tuple] = (), confirm: Callable[[int, Combo], ComboResult | None] | None = None,
           confirm_cost: Callable[[Combo], float] | None = None) -> SearchState:
    """Every round so far, from the scores ``evaluate`` gives (None: the round is unfinished).

    ``cost(combos)`` is what running those combos takes, in the budget's unit; a round runs only
    if it fits in what the budget has left (round 0 is checked before the search starts). A round
    in ``reached`` (its combos, as recorded when it was reached) was judged then and is not judged
    again: a USD cost is an estimate until the calls are made, and a round that cost more than
    expected must not be dropped after the fact. With a target, ``confirm(index, combo)`` scores
    round ``index``'s confirmation of ``combo`` on fresh draft replicates (None: unfinished) and
    ``confirm_cost(combo)`` says what it takes; a confirmation reached is in ``reached`` as
    ``confirm_key(combo)``.
    """
    if defn.target is not None and (confirm is None or confirm_cost is None):
        raise ValueError("a search with a target needs confirm and confirm_cost")
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
        if defn.target is not None:
            code, reason = _confirm(defn, state, kept, reached, confirm, confirm_cost)
            if code == "running":
                return state
            if code is not None:
                state.stop_code, state.stop_reason = code, reason
                return state
        code, reason, combos = _next(defn, state, kept, seen, cost, reached)
        if code is not None:
            state.stop_code, state.stop_reason = code, reason
            return state
        seen.update(combos)


def confirm_key(combo: Combo) -> tuple:
    """How a reached confirmation is named in ``replay``'s ``reached``."""
    return ("confirm", combo)


def _left(defn: SearchDef, state: SearchState) -> float:
    return defn.budget.limit - state.spent


def _confirm(defn: SearchDef, state: SearchState, kept: list[ComboResult], reached: Collection[tuple],
             confirm: Callable[[int, Combo], ComboResult | None], confirm_cost: Callable[[Combo], float]
             ) -> tuple[str | None, str]:
    """The round's confirmation step: ("running", "") while its generations are unfinished, a stop
    (code, reason) when it fits no budget or reaches the target, else (None, "")."""
    rnd = state.rounds[-1]
    candidate = next((r for r in kept if _usable(r.mean) and r.mean >= defn.target), None)
    if candidate is None:
        return None, ""
    c = Confirmation(candidate.combo, candidate.combo_id, len(state.confirmations()) + 1,
                     confirm_cost(candidate.combo), candidate)
    budget = defn.budget
    if budget is not None and confirm_key(c.combo) not in reached and c.cost > _left(defn, state):
        unit = "" if budget.unit == "usd" else f" {budget.unit}"
        return "budget", (f"budget: confirming {c.combo_id} (mean {candidate.mean:.3f} ≥ {defn.target:g} in round "
                          f"{rnd.index}) needs {budget.show(c.cost)}{unit}, {budget.show(_left(defn, state))} of "
                          f"{budget.show(budget.limit)} left")
    rnd.confirm = c
    c.result = confirm(rnd.index, c.combo)
    if c.result is None:
        return "running", ""
    reached_target, why = c.verdict(defn.target)
    if not reached_target:
        return None, ""
    mean, lo, hi, _ = c.bounds
    sel = candidate
    return "target", (f"target reached: {c.combo_id} confirmed on {c.result.n_units} fresh drafts, mean {mean:.3f}, "
                      f"{why} (selected on {sel.n_units} drafts, mean {sel.mean:.3f})")


def _next(defn: SearchDef, state: SearchState, kept: list[ComboResult], seen: set[Combo],
          cost: Callable[[list[Combo]], float], reached: Collection[tuple]
          ) -> tuple[str | None, str, list[Combo]]:
    """(stop code, reason, []) or (None, "", the next round's combos)."""
    rnd, stat = state.rounds[-1], defn.statistic
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
        need, left = cost(combos), _left(defn, state)
        if need > left:
            unit = "" if budget.unit == "usd" else f" {budget.unit}"  # "$" says it
            return "budget", (f"budget: round {rnd.index + 1} needs {budget.show(need)}{unit}, "
                              f"{budget.show(left)} of {budget.show(budget.limit)} left"), []
    return None, "", combos
