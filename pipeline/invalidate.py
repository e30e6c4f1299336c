"""Forced regeneration: remove the outputs of selected generations and of everything downstream.

Only the phase files are removed (prompt, raw, parsed and their metadata); ``metadata.json``
stays, so the generations remain part of their cohorts and the next run regenerates them.
Descendants are found from the gens store itself (``parent_gen_id``), so children of a
regenerated parent can never survive stale, whichever cohort they belong to.
"""

from __future__ import annotations

import os

from .cohort import read_membership
from .store import DataPaths, read_json

PHASE_FILES = ("parsed_metadata.json", "parsed.txt", "raw_metadata.json", "raw.txt", "prompt.txt")
CHILD_STAGE = {"draft": "essay", "essay": "evaluation"}


def _children_index(paths: DataPaths) -> dict[str, list[tuple[str, str]]]:
    index: dict[str, list[tuple[str, str]]] = {}
    for stage in ("essay", "evaluation"):
        base = paths.gens / stage
        if not base.is_dir():
            continue
        for d in base.iterdir():
            md = read_json(d / "metadata.json")
            if md and md.get("parent_gen_id"):
                index.setdefault(md["parent_gen_id"], []).append((stage, d.name))
    return index


def invalidate(paths: DataPaths, *, cohort_id: str | None = None, stage: str | None = None,
               template_id: str | None = None, model_id: str | None = None,
               gen_ids: list[str] = (), dry_run: bool = False) -> list[tuple[str, str]]:
    """Invalidate matching generations and their descendants; returns (stage, gen_id) pairs."""
    if cohort_id:
        rows = read_membership(paths, cohort_id)
        candidates = [(r["stage"], r["gen_id"], r["template_id"], r["llm_model_id"]) for r in rows]
    else:
        candidates = []
        for st in ("draft", "essay", "evaluation"):
            base = paths.gens / st
            for d in (base.iterdir() if base.is_dir() else []):
                md = read_json(d / "metadata.json") or {}
                candidates.append((st, d.name, md.get("template_id"), md.get("llm_model_id") or ""))
    wanted = set(gen_ids)
    roots = [
        (st, gid) for st, gid, tid, mid in candidates
        if (not stage or st == stage) and (not template_id or tid == template_id)
        and (not model_id or mid == model_id) and (not wanted or gid in wanted)
    ]
    if wanted:
        known = {gid for _, gid, _, _ in candidates}
        roots += [(st, g) for g in wanted - known for st in ("draft", "essay", "evaluation")
                  if paths.gen_dir(st, g).is_dir()]
    children = _children_index(paths)
    seen: dict[tuple[str, str], None] = {}
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen[node] = None
        stack.extend(children.get(node[1], []))
    order = {"draft": 0, "essay": 1, "evaluation": 2}
    result = sorted(seen, key=lambda n: (order[n[0]], n[1]))
    if not dry_run:
        # Children first, so an interrupted invalidation never leaves a child newer than its parent.
        for st, gid in reversed(result):
            for name in PHASE_FILES:
                try:
                    os.unlink(paths.gen_file(st, gid, name))
                except FileNotFoundError:
                    pass
    return result
