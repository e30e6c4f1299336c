"""A search cohort's rounds, derived from the gens store (the I/O around ``pipeline.search``).

``derive`` replays the search over the scores stored so far: a round counts as scored only when
every generation of it is done, so the rounds never depend on what a crash interrupted or on a
failure that the next run retries. ``sync`` records the result in the cohort's search.json and
compiles the cohort over the rounds it reached (the new round's generations join membership.csv);
only the runner's tasks (``RunCohort``, ``SearchRound``) call it. Status and reports call ``derive``, which writes nothing.
"""

from __future__ import annotations

import os

from .catalog import Catalog
from .errors import DaydreamError
from .cohort import (
    CohortPlan, combo_costs, compile_cohort, is_compiled, plan_cohort, require_known_cohort, search_record,
    search_record_path, spec_fingerprint,
)
from .estimate import remaining_calls
from .generation import is_done, runtime
from .run_plan import call_records, lineage_chunks, membership
from .search import Combo, ComboResult, SearchState, replay, score_combo
from .spec import ComboDef, Spec, compile_design, load_spec
from .reports.stats import finite
from .store import DataPaths, atomic_write_json, read_json

_SCORED: dict[tuple, ComboResult] = {}  # a combo's statistics, by its scores: each bootstrap runs once


def is_search_cohort(paths: DataPaths, cohort_id: str) -> bool:
    """Whether the cohort's spec has a ``search:`` section: from its manifest when that was compiled
    from the current spec (parsing a big spec would enumerate its combos), else from the spec."""
    spec_path = require_known_cohort(paths, cohort_id)
    try:
        m = read_json(paths.manifest_json(cohort_id)) or {}
    except DaydreamError:
        m = {}
    if m.get("fingerprints", {}).get("spec") == spec_fingerprint(spec_path.parent):
        return "search" in m
    return load_spec(spec_path).search is not None


class _Rounds:
    """Plans and scores of a search's rounds, for one replay."""

    def __init__(self, paths: DataPaths, cohort_id: str, spec: Spec, catalog: Catalog):
        self.paths, self.cohort_id, self.spec, self.catalog = paths, cohort_id, spec, catalog
        self.defn = spec.search
        self.plans: dict[tuple[Combo, ...], CohortPlan] = {}
        self.costs: dict[tuple[Combo, ...], float] = {}
        self.rt, self.memo = runtime(), {}

    def plan(self, combos: list[Combo]) -> CohortPlan:
        key = tuple(combos)
        if key not in self.plans:
            spec = self.spec.with_combos({self.defn.combo_id(c): ComboDef(c, self.defn.level, len(c)) for c in combos})
            self.plans[key] = plan_cohort(self.cohort_id, spec, compile_design(spec), self.catalog, lambda s, g: None)
        return self.plans[key]

    def cost(self, combos: list[Combo]) -> float:
        """What running ``combos`` takes, in the budget's unit (calls without a budget)."""
        key = tuple(combos)
        if key not in self.costs:
            usd = self.defn.budget is not None and self.defn.budget.unit == "usd"
            self.costs[key] = self.usd(combos) if usd else self.calls(combos)
        return self.costs[key]

    def calls(self, combos: list[Combo]) -> int:
        return sum(calls for calls, _ in combo_costs(self.plan(combos)).values())

    def usd(self, combos: list[Combo]) -> float:
        """What the combos' generations recorded as their cost (those done: the provider's figure,
        else tokens × prices), plus the estimate of the calls still to make (``daydream
        estimate``'s). An unknown cost is an error, never $0."""
        gens = self.plan(combos).all()
        made = [r["cost_usd"] for r in call_records(self.paths, [g.membership_row() for g in gens
                                                                 if is_done(self.rt, g.stage, g.gen_id, self.memo)])]
        todo = remaining_calls(self.paths, self.cohort_id, gens)
        unpriced = sorted({c.model_id for c in todo if c.cost is None})
        if unpriced or None in made:
            why = (f"no input/output prices in llm_models.csv for {', '.join(unpriced)}" if unpriced
                   else f"{made.count(None)} of their model calls recorded no cost")
            raise DaydreamError("spec", f"search.stop.budget_usd: the cost of {len(combos)} combos cannot be "
                                        f"judged: {why}; add the prices, or use budget_calls", path=self.spec.path)
        return sum(made) + sum(c.cost for c in todo)

    def evaluate(self, index: int, combos: list[Combo]) -> list[ComboResult] | None:
        """The round's scores once every generation of it is done (None before, also while not
        compiled yet: the round has just been reached)."""
        plan = self.plan(combos)
        if not all(is_done(self.rt, g.stage, g.gen_id, self.memo) for g in plan.all()):
            return None
        costs = combo_costs(plan)
        units: dict[str, tuple[list[str], list[float]]] = {self.defn.combo_id(c): ([], []) for c in combos}
        for g in plan.generations["evaluation"].values():
            pm = read_json(self.paths.gen_file("evaluation", g.gen_id, "parsed_metadata.json")) or {}
            lo, hi, score = pm.get("scale_min"), pm.get("scale_max"), pm.get("score")
            if None not in (lo, hi, score) and hi > lo:
                units[g.combo_id][0].append(g.parent_gen_id)
                units[g.combo_id][1].append((float(score) - lo) / (hi - lo))
        out = []
        for c in combos:
            cid = self.defn.combo_id(c)
            key = (c, cid, tuple(units[cid][0]), tuple(units[cid][1]), costs.get(cid, (0, 0))[0])
            if key not in _SCORED:
                _SCORED[key] = score_combo(c, cid, *units[cid], calls=key[-1])
            out.append(_SCORED[key])
        return out

    def generations_per_combo(self, combos: list[Combo]) -> float:
        return len(self.plan(combos).all()) / max(1, len(combos))


def derive(paths: DataPaths, cohort_id: str) -> tuple[SearchState, dict]:
    """The search as the gens store has it now, and the record of it (``search.json``'s content)."""
    from .catalog import load_catalog

    spec_path = require_known_cohort(paths, cohort_id)
    spec = load_spec(spec_path)
    if spec.search is None:
        raise ValueError(f"cohort {cohort_id} has no search: section")
    catalog = load_catalog(paths)
    fingerprints = {"spec": spec_fingerprint(spec_path.parent), "catalog": catalog.fingerprint}
    recorded = search_record(paths, cohort_id, fingerprints["spec"], fingerprints["catalog"]) or {}
    reached = {tuple(tuple(c) for c in r["combos"]) for r in recorded.get("rounds", [])}
    rounds = _Rounds(paths, cohort_id, spec, catalog)
    state = replay(spec.search, rounds.evaluate, rounds.cost, reached)
    budget, first = spec.search.budget, state.rounds[0]
    error = None if budget is None or tuple(first.combos) in reached else budget.first_round_error(
        first.cost, len(first.combos))
    if error:
        raise DaydreamError("spec", error, path=spec.path)
    per_combo = rounds.generations_per_combo(state.rounds[0].combos)
    tried = len(state.combos())
    record = {
        "fingerprints": fingerprints,
        "status": "stopped" if state.stopped else "running",
        "running_round": None if state.stopped else state.rounds[-1].index,
        "stop_code": state.stop_code,
        "stop_reason": state.stop_reason,
        "line": state.line(),
        "statistic": spec.search.statistic,
        "budget": None if spec.search.budget is None else {"unit": spec.search.budget.unit,
                                                          "limit": spec.search.budget.limit},
        "spent": state.spent,
        "combos_tried": tried,
        "combos_full_factorial": spec.search.space(),
        "generations": round(tried * per_combo),
        "generations_full_factorial": round(spec.search.space() * per_combo),
        "rounds": [{"index": r.index, "k": r.k, "status": "running" if r.results is None else "scored",
                    "calls": rounds.calls(r.combos), "cost": r.cost, "kept": r.kept,
                    "combos": [list(c) for c in r.combos]} for r in state.rounds],
        "best": [{"combo_id": b.combo_id, "concepts": list(b.combo), "mean": finite(b.mean),
                  "ci_low": finite(b.ci_low), "ci_high": finite(b.ci_high), "n": b.n, "n_essays": b.n_essays}
                 for b in state.best()],
    }
    return state, record


def is_current(paths: DataPaths, cohort_id: str) -> bool:
    """The search has stopped and search.json records it as the store has it now."""
    try:
        state, record = derive(paths, cohort_id)
        return state.stopped and read_json(search_record_path(paths, cohort_id)) == record
    except DaydreamError:  # a corrupt record (the next run rewrites it), or a search that cannot run (its run says why)
        return False


def sync(paths: DataPaths, cohort_id: str) -> SearchState:
    """Derive the search, record it, and compile the cohort over the rounds it reached."""
    state, record = derive(paths, cohort_id)
    atomic_write_json(search_record_path(paths, cohort_id), record)  # unchanged content: not rewritten
    if not is_compiled(paths, cohort_id):
        compile_cohort(paths, cohort_id)
    return state


_ROUND_CHUNKS: dict[tuple, tuple[tuple, list[list[dict]]]] = {}


def round_chunks(paths: DataPaths, cohort_id: str, index: int, size: int) -> list[list[dict]]:
    """Lineage chunks (``run_plan.lineage_chunks``) of the recorded round ``index``'s generations."""
    path = search_record_path(paths, cohort_id)
    rows = membership(paths, cohort_id)
    st = os.stat(path)
    key = (str(path), index, size)
    token = (id(rows), st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _ROUND_CHUNKS.get(key)
    if cached is None or cached[0] != token:
        rounds = (read_json(path) or {}).get("rounds") or []
        defn = load_spec(require_known_cohort(paths, cohort_id)).search
        combos = {defn.combo_id(tuple(c)) for c in rounds[index]["combos"]} if index < len(rounds) else set()
        cached = _ROUND_CHUNKS[key] = (token, lineage_chunks([r for r in rows if r["combo_id"] in combos], size))
    return cached[1]

