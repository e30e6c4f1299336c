"""What running a cohort consists of, read from its membership: chunks, provider checks, counts.

No Luigi here: the tasks, the CLI and ``status`` share these so they count the same things.
"""

from __future__ import annotations

from pathlib import Path
from collections import Counter
from dataclasses import dataclass, field

from pipeline import config
from pipeline.store import ledger, spend
from pipeline.run.batch_jobs import check_providers
from pipeline.design.cohort import read_membership
from pipeline.errors import DaydreamError
from pipeline.run.generation import run_state, runtime, state_of
from pipeline.store.state import BLOCKED, DONE, FAILED, KINDS
from pipeline.store import DataPaths, file_token, read_json

membership = read_membership  # the runner's name for it (parsed once per change of the file)


def lineage_chunks(rows: list[dict], size: int) -> list[list[dict]]:
    """Split membership rows into chunks of whole lineages (a root with all its descendants in
    the cohort), each of at least ``size`` rows but the last, in membership order.

    A root is a generation whose parent is not in the cohort (a draft, or an essay scored again
    by a cohort that starts from existing essays). Keeping lineages whole means a chunk never
    waits on another chunk.
    """
    ids = {r["gen_id"] for r in rows}
    children: dict[str, list[dict]] = {}
    roots = []
    for r in rows:
        parent = r.get("parent_gen_id") or ""
        if parent in ids:
            children.setdefault(parent, []).append(r)
        else:
            roots.append(r)
    chunks: list[list[dict]] = []
    current: list[dict] = []
    for root in roots:
        stack = [root]
        while stack:
            r = stack.pop()
            current.append(r)
            stack.extend(reversed(children.get(r["gen_id"], [])))
        if len(current) >= size:
            chunks.append(current)
            current = []
    if current:
        chunks.append(current)
    return chunks


def lineage_ends(rows: list[dict]) -> list[dict]:
    """The rows no other row names as its parent: the tasks a chunk yields. Each one's
    ``requires`` reaches the rest, and Luigi adds a task once per path it is reached by, each
    time with a completeness check and, against luigid, an RPC: a draft with one essay and two
    evaluations is six adds from its two evaluations, nine when every row is yielded."""
    parents = {r.get("parent_gen_id") for r in rows}
    return [r for r in rows if r["gen_id"] not in parents]


_CHUNKS: dict[tuple[str, int], tuple[list[dict], list[list[dict]]]] = {}  # (path, size) -> (rows, chunks)


def chunk_members(paths: DataPaths, cohort_id: str, size: int) -> list[list[dict]]:
    """The cohort's chunks (``lineage_chunks``), recomputed only when its membership changes."""
    rows = membership(paths, cohort_id)
    key = (str(paths.membership_csv(cohort_id)), size)
    cached = _CHUNKS.get(key)
    if cached is None or cached[0] is not rows:
        cached = _CHUNKS[key] = (rows, lineage_chunks(rows, size))
    return cached[1]


@dataclass
class Counts:
    """Generations of a run by outcome. ``remaining`` is everything not settled for the run."""

    total: int = 0
    done: int = 0
    failed: int = 0
    blocked: int = 0
    not_run_budget: int = 0  # the run stopped at its spend cap before these
    by_stage: dict[str, Counter] = field(default_factory=dict)  # stage -> state -> n (every state listed)
    reasons: Counter = field(default_factory=Counter)  # (stage, first line of the reason) -> n

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed - self.blocked - self.not_run_budget

    def line(self) -> str:
        budget = f", budget reached {self.not_run_budget}" if self.not_run_budget else ""
        return (f"done {self.done}, failed {self.failed}, not run {self.blocked}{budget}, "
                f"remaining {self.remaining} of {self.total}")

    def summary(self, spend_ledger: dict | None = None) -> str:
        text = (f"{self.total} generations: {self.done} done, {self.failed} failed, "
                f"{self.blocked} not run because an ancestor failed, {self.remaining} remaining")
        if self.not_run_budget:
            text += f"; {self.not_run_budget} {spend.BUDGET_REACHED}"
            if spend_ledger:
                text += f" ({budget_line(spend_ledger)})"
        if self.reasons:
            text += "; failures: " + "; ".join(f"{n} × {stage}: {r}" for (stage, r), n in self.reasons.most_common(5))
        return text


def budget_line(spend_ledger: dict) -> str:
    """What the ledger says about the cap, in words (the run summary and ``status``)."""
    text = f"spent {spend.usd(spend_ledger['spent_usd'])}"
    if spend_ledger.get("reserved"):
        text += f", {spend.usd(spend.reserved_usd(spend_ledger))} reserved by calls in flight"
    last = max(spend_ledger.get("prepared") or [""])  # the latest capped run
    if last in (spend_ledger.get("reached") or {}):
        r = spend_ledger["reached"][last]
        text += (f"; the last run stopped at its cap of {spend.usd(r['cap_usd'])}: the next call "
                 f"({r['next_call']}) could cost up to {spend.usd(r['next_call_usd'])}")
    if spend_ledger.get("unknown_cost_calls"):
        text += f"; {spend_ledger['unknown_cost_calls']} calls of unknown cost counted at their upper bound"
    return text


def cohort_counts(paths: DataPaths, rows: list[dict], since: str = "", *, budget_reached: bool = False) -> Counts:
    """Count ``rows`` by state; with ``since``, failures recorded before it count as remaining
    (the run will retry them). ``budget_reached``: the run stopped at its spend cap, so what it
    did not settle is "not run: budget reached" rather than remaining."""
    rt, memo = runtime(), {}
    c = Counts(total=len(rows))
    for r in rows:
        st = run_state(rt, r["stage"], r["gen_id"], since, memo)
        c.by_stage.setdefault(r["stage"], Counter({k: 0 for k in KINDS}))[st.kind] += 1
        if st.kind == DONE:
            c.done += 1
        elif st.kind in (FAILED, BLOCKED) and (not since or st.settled(since)):
            if st.kind == FAILED:
                c.failed += 1
                c.reasons[(r["stage"], str(st.reason).split("\n")[0][:160])] += 1
            else:
                c.blocked += 1
        elif budget_reached:
            c.not_run_budget += 1
    return c


def check_max_cost(max_cost: float | None) -> float | None:
    """``--max-cost`` as given (``daydream run``, the ``RunCohort`` parameter), or one error."""
    try:
        return spend.check_cap(max_cost, f"--max-cost {max_cost:g}" if max_cost is not None else "--max-cost")
    except ValueError as exc:
        raise DaydreamError("config", str(exc)) from None


def spend_cap(paths: DataPaths, cohort_id: str, max_cost: float | None) -> float | None:
    """The run's cap: ``--max-cost`` (the ``RunCohort`` parameter), else the spec's ``budget_usd``."""
    from pipeline.design.spec import load_spec

    if max_cost is not None:
        return check_max_cost(max_cost)
    return load_spec(paths.spec_file(cohort_id)).budget_usd


def call_records(paths: DataPaths, rows: list[dict], prices: dict | None = None,
                 memo: dict | None = None) -> list[dict]:
    """The recorded model call of each generation in ``rows`` (``spend.call_record``).

    ``memo``, for a view polled during a run (the live view): what earlier calls read, each
    record read again only when its ``raw_metadata.json`` was replaced (its atomic writes give
    it a new inode) since."""
    prices = spend.catalog_prices(runtime().catalog) if prices is None else prices
    out = []
    for r in rows:
        if not r["llm_model_id"]:
            continue
        if memo is None:
            rec = spend.call_record(read_json(paths.gen_file(r["stage"], r["gen_id"], "raw_metadata.json")) or {},
                                    prices.get(r["llm_model_id"]))
        else:
            rec = _remembered_record(paths, r, prices, memo)
        if rec is not None:
            out.append(rec)
    return out


def _remembered_record(paths: DataPaths, r: dict, prices: dict, memo: dict) -> dict | None:
    key = (r["stage"], r["gen_id"])
    seen = memo.get(key)
    path = seen[0] if seen else str(paths.gen_file(r["stage"], r["gen_id"], "raw_metadata.json"))
    stamp = file_token(path)
    if stamp is None:
        memo[key] = (path, None, None)
        return None
    if seen is None or seen[1] != stamp:
        seen = memo[key] = (path, stamp, spend.call_record(read_json(Path(path)) or {}, prices.get(r["llm_model_id"])))
    return seen[2]


def prepare_budget(paths: DataPaths, cohort_id: str, cap: float | None, since: str) -> dict | None:
    """Before a capped run: refuse models with work left and no prices (the cap could not be
    enforced), then let the ledger count what runs without a cap recorded in the store and make
    the run its current one. Before a run without a cap: no capped run is current any more."""
    if cap is None:
        ledger.uncapped(paths, cohort_id)
        return None
    rt, memo = runtime(), {}
    rows = membership(paths, cohort_id)
    unpriced = {}
    for r in rows:
        model_id = r["llm_model_id"]
        if model_id and model_id not in unpriced and not spend.Prices.of(rt.catalog.model(model_id)).known \
                and state_of(rt, r["stage"], r["gen_id"], memo).kind != DONE:
            unpriced[model_id] = r["stage"]
    ledger.require_priced(unpriced, cap, paths.catalog_csv("llm_models.csv"))
    recorded = sum(rec["cost_usd"] for rec in call_records(paths, rows) if rec["cost_usd"] is not None)
    return ledger.reconcile(paths, cohort_id, recorded, since, cap)


def prepare_providers(paths: DataPaths, cohort_id: str, since: str = "") -> None:
    """Before any generation runs: validate the settings, bound each provider through its Luigi
    resource, and fail with one clear error if a provider with work left has no API key.

    ``since``: the run's stamp, when the run may already have settled generations (a compiled
    cohort's chunks run before ``RunCohort.run``): those are not looked at again."""
    rt, memo = runtime(), {}
    used, todo = set(), set()
    for r in membership(paths, cohort_id):
        if r["llm_model_id"]:
            provider = rt.endpoint(r["llm_model_id"])
            used.add(provider)
            if provider not in todo and run_state(rt, r["stage"], r["gen_id"], since, memo).kind != DONE:
                todo.add(provider)
    config.validate(used)
    config.sync_resources(used)
    rt.require_keys(todo)
    check_providers(todo)  # a provider in batch mode without a batch API: one error now
