"""What running a cohort consists of, read from its membership: chunks, provider checks, counts.

No Luigi here: the tasks, the CLI and ``status`` share these so they count the same things.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

from . import config
from .cohort import read_membership
from .generation import runtime, state_of
from .state import BLOCKED, DONE, FAILED, KINDS
from .store import DataPaths

_MEMBERSHIP: dict[str, tuple[tuple, list[dict]]] = {}  # path -> (stat key, rows): read once per change


def membership(paths: DataPaths, cohort_id: str) -> list[dict[str, str]]:
    """The cohort's membership rows (drafts, essays, evaluations), re-read only when the file changes."""
    path = paths.membership_csv(cohort_id)
    try:
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
    except FileNotFoundError:
        key = None
    cached = _MEMBERSHIP.get(str(path))
    if key is not None and cached and cached[0] == key:
        return cached[1]
    rows = read_membership(paths, cohort_id)  # raises a clear error when not compiled
    _MEMBERSHIP[str(path)] = (key, rows)
    return rows


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
    by_stage: dict[str, Counter] = field(default_factory=dict)  # stage -> state -> n (every state listed)
    reasons: Counter = field(default_factory=Counter)  # (stage, first line of the reason) -> n

    @property
    def remaining(self) -> int:
        return self.total - self.done - self.failed - self.blocked

    def line(self) -> str:
        return (f"done {self.done}, failed {self.failed}, not run {self.blocked}, "
                f"remaining {self.remaining} of {self.total}")

    def summary(self) -> str:
        text = (f"{self.total} generations: {self.done} done, {self.failed} failed, "
                f"{self.blocked} not run because an ancestor failed, {self.remaining} remaining")
        if self.reasons:
            text += "; failures: " + "; ".join(f"{n} × {stage}: {r}" for (stage, r), n in self.reasons.most_common(5))
        return text


def cohort_counts(paths: DataPaths, rows: list[dict], since: str = "") -> Counts:
    """Count ``rows`` by state; with ``since``, failures recorded before it count as remaining
    (the run will retry them)."""
    rt, memo = runtime(), {}
    c = Counts(total=len(rows))
    for r in rows:
        st = state_of(rt, r["stage"], r["gen_id"], memo)
        c.by_stage.setdefault(r["stage"], Counter({k: 0 for k in KINDS}))[st.kind] += 1
        if st.kind == DONE:
            c.done += 1
        elif st.kind in (FAILED, BLOCKED) and (not since or st.settled(since)):
            if st.kind == FAILED:
                c.failed += 1
                c.reasons[(r["stage"], str(st.reason).split("\n")[0][:160])] += 1
            else:
                c.blocked += 1
    return c


def prepare_providers(paths: DataPaths, cohort_id: str) -> None:
    """Before any generation runs: validate the settings, bound each provider through its Luigi
    resource, and fail with one clear error if a provider with work left has no API key."""
    rt, memo = runtime(), {}
    used, todo = set(), set()
    for r in membership(paths, cohort_id):
        if r["llm_model_id"]:
            provider = rt.endpoint(r["llm_model_id"])
            used.add(provider)
            if provider not in todo and state_of(rt, r["stage"], r["gen_id"], memo).kind != DONE:
                todo.add(provider)
    config.validate(used)
    config.sync_resources(used)
    rt.require_keys(todo)
