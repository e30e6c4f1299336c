"""A search cohort's rounds, derived from the gens store (the I/O around ``pipeline.design.search``).

``derive`` replays the search over the scores stored so far: a round counts as scored only when
every generation of it is done, so the rounds never depend on what a crash interrupted or on a
failure that the next run retries. ``sync`` records the result in the cohort's search.json and
compiles the cohort over the rounds it reached (the new round's generations join membership.csv);
only the runner's tasks (``RunCohort``, ``SearchRound``) call it. Status and reports call ``derive``, which writes nothing.
"""

from __future__ import annotations

import os

from pipeline.design.catalog import Catalog
from pipeline.errors import DaydreamError
from pipeline.design.cohort import (
    CohortPlan, combo_costs, compile_cohort, confirm_replicates, confirmation_spec, is_compiled, plan_cohort,
    recorded_confirmations, require_known_cohort, search_record, search_record_path, spec_fingerprint,
)
from pipeline.run.estimate import remaining_calls
from pipeline.run.generation import is_done, runtime
from pipeline.run.run_plan import call_records, lineage_chunks, membership
from pipeline.design.search import CI_METHOD, Combo, ComboResult, Confirmation, SearchState, confirm_key, replay, score_combo
from pipeline.design.spec import ComboDef, Spec, compile_design, load_spec
from pipeline.store import DataPaths, atomic_write_json, read_json

_SCORED: dict[tuple, ComboResult] = {}  # a combo's result, by its scores


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
    """Plans and scores of a search's rounds and confirmations, for one replay."""

    def __init__(self, paths: DataPaths, cohort_id: str, spec: Spec, catalog: Catalog):
        self.paths, self.cohort_id, self.spec, self.catalog = paths, cohort_id, spec, catalog
        self.defn = spec.search
        self.plans: dict[tuple, CohortPlan] = {}
        self.costs: dict[tuple, float] = {}
        self.rt, self.memo = runtime(), {}

    def plan(self, combos: list[Combo], confirm: bool = False) -> CohortPlan:
        """The generations of a round's ``combos``, or (``confirm``) of their confirmation."""
        key = (tuple(combos), confirm)
        if key not in self.plans:
            spec = (confirmation_spec(self.spec, combos) if confirm else
                    self.spec.with_combos({self.defn.combo_id(c): ComboDef(c, self.defn.level, len(c)) for c in combos}))
            self.plans[key] = plan_cohort(self.cohort_id, spec, compile_design(spec), self.catalog, lambda s, g: None)
        return self.plans[key]

    def cost(self, combos: list[Combo], confirm: bool = False) -> float:
        """What running ``combos`` (or confirming them) takes, in the budget's unit (calls without a budget)."""
        key = (tuple(combos), confirm)
        if key not in self.costs:
            usd = self.defn.budget is not None and self.defn.budget.unit == "usd"
            self.costs[key] = self.usd(combos, confirm) if usd else self.calls(combos, confirm)
        return self.costs[key]

    def confirm_cost(self, combo: Combo) -> float:
        return self.cost([combo], confirm=True)

    def calls(self, combos: list[Combo], confirm: bool = False) -> int:
        return sum(calls for calls, _ in combo_costs(self.plan(combos, confirm)).values())

    def usd(self, combos: list[Combo], confirm: bool = False) -> float:
        """What the combos' generations recorded as their cost (those done: the provider's figure,
        else tokens × prices), plus the estimate of the calls still to make (``daydream
        estimate``'s). An unknown cost is an error, never $0."""
        gens = self.plan(combos, confirm).all()
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

    def _scores(self, combos: list[Combo], confirm: bool) -> list[ComboResult] | None:
        """The combos' results once every generation of the plan is done (None before, also while
        not compiled yet: the step has just been reached). A draft is the interval's unit: its
        evaluations' scores, through its essays, are averaged into one value."""
        plan = self.plan(combos, confirm)
        if not all(is_done(self.rt, g.stage, g.gen_id, self.memo) for g in plan.all()):
            return None
        costs = combo_costs(plan)
        essays = plan.generations["essay"]
        units: dict[str, tuple[list[str], list[str], list[float]]] = {self.defn.combo_id(c): ([], [], []) for c in combos}
        for g in plan.generations["evaluation"].values():
            pm = read_json(self.paths.gen_file("evaluation", g.gen_id, "parsed_metadata.json")) or {}
            lo, hi, score = pm.get("scale_min"), pm.get("scale_max"), pm.get("score")
            if None not in (lo, hi, score) and hi > lo:
                essay = essays.get(g.parent_gen_id)
                u = units[g.combo_id]
                u[0].append(essay.parent_gen_id if essay is not None else g.parent_gen_id)
                u[1].append(g.parent_gen_id)
                u[2].append((float(score) - lo) / (hi - lo))
        out = []
        for c in combos:
            cid = self.defn.combo_id(c)
            key = (c, cid, *(tuple(x) for x in units[cid]), costs.get(cid, (0, 0))[0])
            if key not in _SCORED:
                _SCORED[key] = score_combo(c, cid, *units[cid], calls=key[-1])
            out.append(_SCORED[key])
        return out

    def evaluate(self, index: int, combos: list[Combo]) -> list[ComboResult] | None:
        return self._scores(combos, False)

    def confirm(self, index: int, combo: Combo) -> ComboResult | None:
        scored = self._scores([combo], True)
        return None if scored is None else scored[0]

    def generations(self, combos: list[Combo], confirm: bool = False) -> int:
        return len(self.plan(combos, confirm).all())


def _estimate(r: ComboResult | None, level: float = 0.95) -> dict:
    """A result's numbers for search.json (None where there is none)."""
    from pipeline.reports.stats import finite  # here: the reports package loads pandas, which a status need not

    mean, lo, hi, why = r.interval(level) if r is not None else (None, None, None, "")
    return {"n": r.n if r else 0, "n_essays": r.n_essays if r else 0, "n_drafts": r.n_units if r else 0,
            "mean": finite(mean), "ci_low": finite(lo), "ci_high": finite(hi), "ci_level": level,
            "ci_method": CI_METHOD, "not_estimable": why}


def _confirm_record(c: Confirmation | None, rounds: _Rounds, target: float | None) -> dict | None:
    if c is None:
        return None
    confirmed, verdict = c.verdict(target)
    return {"combo_id": c.combo_id, "concepts": list(c.combo), "number": c.number,
            "replicates": confirm_replicates(rounds.spec), "status": "running" if c.result is None else "scored",
            "calls": rounds.calls([c.combo], True), "cost": c.cost, "confirmed": confirmed, "verdict": verdict,
            "selection": _estimate(c.selection), "confirmation": _estimate(c.result, c.level)}


def derive(paths: DataPaths, cohort_id: str) -> tuple[SearchState, dict]:
    """The search as the gens store has it now, and the record of it (``search.json``'s content)."""
    from pipeline.design.catalog import load_catalog

    spec_path = require_known_cohort(paths, cohort_id)
    spec = load_spec(spec_path)
    if spec.search is None:
        raise ValueError(f"cohort {cohort_id} has no search: section")
    catalog = load_catalog(paths)
    fingerprints = {"spec": spec_fingerprint(spec_path.parent), "catalog": catalog.fingerprint}
    recorded = search_record(paths, cohort_id, fingerprints["spec"], fingerprints["catalog"]) or {}
    reached: set[tuple] = {tuple(tuple(c) for c in r["combos"]) for r in recorded.get("rounds", [])}
    reached |= {confirm_key(c) for c in recorded_confirmations(recorded)}
    rounds = _Rounds(paths, cohort_id, spec, catalog)
    state = replay(spec.search, rounds.evaluate, rounds.cost, reached, rounds.confirm, rounds.confirm_cost)
    budget, first = spec.search.budget, state.rounds[0]
    error = None if budget is None or tuple(first.combos) in reached else budget.first_round_error(
        first.cost, len(first.combos))
    if error:
        raise DaydreamError("spec", error, path=spec.path)
    per_combo = rounds.generations(state.rounds[0].combos) / max(1, len(state.rounds[0].combos))
    tried = len(state.combos())
    confirmations = state.confirmations()
    claimed = state.claimed()
    record = {
        "fingerprints": fingerprints,
        "status": "stopped" if state.stopped else "running",
        "running_round": None if state.stopped else state.rounds[-1].index,
        "stop_code": state.stop_code,
        "stop_reason": state.stop_reason,
        "line": state.line(),
        "statistic": spec.search.statistic,
        "ci_method": CI_METHOD,
        "target": spec.search.target,
        "confirm_replicates": spec.search.confirm,
        "claimed": None if claimed is None else claimed.combo_id,
        "budget": None if spec.search.budget is None else {"unit": spec.search.budget.unit,
                                                          "limit": spec.search.budget.limit},
        "spent": state.spent,
        "combos_tried": tried,
        "combos_full_factorial": spec.search.space(),
        "confirmations": len(confirmations),
        "generations": sum(rounds.generations(r.combos) for r in state.rounds)
        + sum(rounds.generations([c.combo], True) for c in confirmations),
        "generations_full_factorial": round(spec.search.space() * per_combo),
        "rounds": [{"index": r.index, "k": r.k, "status": "running" if r.results is None else "scored",
                    "calls": rounds.calls(r.combos), "cost": r.cost, "kept": r.kept,
                    "combos": [list(c) for c in r.combos],
                    "confirm": _confirm_record(r.confirm, rounds, spec.search.target)} for r in state.rounds],
        "best": [{"combo_id": b.combo_id, "concepts": list(b.combo), **_estimate(b)} for b in state.best()],
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


def step_rows(rows: list[dict], combo_ids: set[str], replicates: set[str], confirm: bool) -> list[dict]:
    """Membership ``rows`` of a round's ``combo_ids`` (drafts whose replicate is not among the
    confirmation's ``replicates``) or of a confirmation (drafts whose replicate is), with the
    drafts' essays and evaluations, in membership order."""
    drafts = {r["gen_id"] for r in rows if r["stage"] == "draft" and r["combo_id"] in combo_ids
              and (str(r["replicate"]) in replicates) == confirm}
    essays = {r["gen_id"] for r in rows if r["stage"] == "essay" and r["parent_gen_id"] in drafts}
    return [r for r in rows if r["gen_id"] in drafts or r["gen_id"] in essays
            or (r["stage"] == "evaluation" and r["parent_gen_id"] in essays)]


def round_chunks(paths: DataPaths, cohort_id: str, index: int, size: int, confirm: bool = False) -> list[list[dict]]:
    """Lineage chunks (``run_plan.lineage_chunks``) of the recorded round ``index``'s generations,
    or (``confirm``) of its confirmation's (none while it has none)."""
    path = search_record_path(paths, cohort_id)
    rows = membership(paths, cohort_id)
    st = os.stat(path)
    key = (str(path), index, size, confirm)
    token = (id(rows), st.st_mtime_ns, st.st_size, st.st_ino)
    cached = _ROUND_CHUNKS.get(key)
    if cached is None or cached[0] != token:
        rounds = (read_json(path) or {}).get("rounds") or []
        spec = load_spec(require_known_cohort(paths, cohort_id))
        defn = spec.search
        rnd = rounds[index] if index < len(rounds) else {}
        combos = ([rnd["confirm"]["concepts"]] if rnd.get("confirm") else []) if confirm else rnd.get("combos", [])
        ids = {defn.combo_id(tuple(c)) for c in combos}
        replicates = {str(r) for r in confirm_replicates(spec)} if defn.target is not None else set()
        cached = _ROUND_CHUNKS[key] = (token, lineage_chunks(step_rows(rows, ids, replicates, confirm), size))
    return cached[1]
