"""Day-two operations on the gens store: ``invalidate``, ``check`` and ``purge``.

Invalidation removes only the phase files (prompt, raw, parsed and their metadata);
``metadata.json`` stays, so the generations remain part of their cohorts and the next run
regenerates them. Descendants are found from the gens store itself (``parent_gen_id``), so
children of a regenerated parent can never survive stale, whichever cohort they belong to.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from pipeline.store.claims import CLAIM, stale_claims
from pipeline.design.cohort import SEARCH_RECORD, read_membership, recorded_generations
from pipeline.ops.ratings import rated_rows
from pipeline.errors import DaydreamError
from pipeline.store.state import BLOCKED, DONE, PENDING
from pipeline.store import PARENT_STAGE, STAGES, TMP_GLOB, DataPaths, cohort_lists_lock, leave_cohort, read_json, read_text

PHASE_FILES = ("parsed_metadata.json", "parsed.txt", "raw_metadata.json", "raw.txt", "prompt.txt")


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
        for st in STAGES:
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
        roots += [(st, g) for g in wanted - known for st in STAGES
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
    result = sorted(seen, key=lambda n: (STAGES.index(n[0]), n[1]))
    if not dry_run:
        # Children first, so an interrupted invalidation never leaves a child newer than its parent.
        for st, gid in reversed(result):
            for name in PHASE_FILES:
                try:
                    os.unlink(paths.gen_file(st, gid, name))
                except FileNotFoundError:
                    pass
    return result


def cohorts_touched(paths: DataPaths, generations: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    """Per compiled cohort, how many of ``generations`` (stage, gen_id) its membership holds, per
    stage: what an invalidation reaches beyond the cohort it was asked for (a descendant may
    belong to another cohort only, such as an evaluation that re-scores a shared essay)."""
    wanted = set(generations)
    touched: dict[str, dict[str, int]] = {}
    for cohort in paths.compiled_cohorts():
        for r in read_membership(paths, cohort):
            if (r["stage"], r["gen_id"]) in wanted:
                per_stage = touched.setdefault(cohort, dict.fromkeys(STAGES, 0))
                per_stage[r["stage"]] += 1
    return {c: {s: n for s, n in stages.items() if n} for c, stages in touched.items()}


# ---------------------------------------------------------------------------------------------
# check


@dataclass(frozen=True)
class Problem:
    kind: str      # missing_metadata | corrupt_file | missing_file | broken_lineage | orphan | stale | failed | temporary_file | stale_claim
    stage: str
    gen_id: str
    detail: str


def check_store(paths: DataPaths, cohort_id: str | None = None) -> tuple[list[Problem], dict[str, int]]:
    """Health of the gens store (or of one cohort's generations): every problem, precisely.

    Pending generations (never run) are counted, not reported as problems.
    """
    from pipeline.run.generation import runtime, sha256, state_of

    rt, memo = runtime(), {}
    timeout = rt.claim_timeout()
    cohorts = [cohort_id] if cohort_id else paths.compiled_cohorts()
    members: dict[tuple[str, str], None] = {}
    for c in cohorts:
        for r in read_membership(paths, c) + rated_rows(paths, c):   # human ratings are members too
            members[(r["stage"], r["gen_id"])] = None
    if cohort_id:
        targets = list(members)
    else:
        targets = [(st, d.name) for st in STAGES if (paths.gens / st).is_dir() for d in sorted((paths.gens / st).iterdir())]
    problems: list[Problem] = []
    counts = {"checked": len(targets), "done": 0, "pending": 0}
    orphans: set[tuple[str, str]] = set()
    if not cohort_id:
        try:
            orphans = set(find_orphans(paths))
        except DaydreamError:  # a store parent's metadata is corrupt (reported below): members only
            orphans = {t for t in targets if t not in members}

    def add(kind, stage, gid, detail):
        problems.append(Problem(kind, stage, gid, detail))

    for stage, gid in targets:
        d = paths.gen_dir(stage, gid)
        for tmp in d.glob(TMP_GLOB):
            add("temporary_file", stage, gid, f"{tmp.name} left by an interrupted write")
        for _, why in stale_claims([d], timeout):
            add("stale_claim", stage, gid, f"{CLAIM} left by a run that stopped ({why}); the next run that "
                                           "needs it takes it over, and a run of its cohort removes it")
        if (stage, gid) in orphans:
            add("orphan", stage, gid, "in no compiled cohort, and no cohort's generation descends from it")
        try:
            md = read_json(d / "metadata.json")
            pm = read_json(d / "parsed_metadata.json")
            read_json(d / "raw_metadata.json")
        except DaydreamError as exc:
            add("corrupt_file", stage, gid, exc.message)
            continue
        if md is None:
            add("missing_metadata", stage, gid, "metadata.json is missing (recompile the cohort)")
            continue
        parent = md.get("parent_gen_id")
        if parent:
            pstage = PARENT_STAGE[stage]
            if not (paths.gen_dir(pstage, parent) / "metadata.json").exists():
                add("broken_lineage", stage, gid, f"parent {pstage} {parent} is not in the gens store")
                continue
        if pm and pm.get("success"):
            text = read_text(d / "parsed.txt")
            if text is None:
                add("missing_file", stage, gid, "parsed.txt is missing although parsed_metadata.json records success")
                continue
            if sha256(text) != pm.get("parsed_sha256"):
                add("corrupt_file", stage, gid, "parsed.txt does not match the hash in parsed_metadata.json")
                continue
        try:
            st = state_of(rt, stage, gid, memo)
        except DaydreamError as exc:
            add("stale", stage, gid, f"cannot be re-rendered: {exc.message}")
            continue
        if st.kind == DONE:
            counts["done"] += 1
        elif st.kind in (PENDING, BLOCKED):
            counts["pending"] += 1
        else:  # stale or failed: a problem with its reason
            add(st.kind, stage, gid, str(st.reason))
    return problems, counts


# ---------------------------------------------------------------------------------------------
# purge


def purge(paths: DataPaths, cohort_id: str, *, dry_run: bool = True) -> dict[str, list]:
    """Remove a cohort's generated files and the generations no other cohort uses.

    Shared generations stay; only this cohort is removed from their ``cohorts`` list. The spec
    is kept, so the cohort can be compiled and run again.
    """
    rows = read_membership(paths, cohort_id)
    used_elsewhere = set()
    for other in paths.compiled_cohorts():
        if other != cohort_id:
            used_elsewhere.update(named_by(paths, other))
    remove, keep = [], []
    for r in rows:
        (keep if (r["stage"], r["gen_id"]) in used_elsewhere else remove).append((r["stage"], r["gen_id"]))
    if not dry_run:
        with cohort_lists_lock(paths):  # a compile merging into the same lists waits
            for stage, gid in remove:
                shutil.rmtree(paths.gen_dir(stage, gid), ignore_errors=True)
            for stage, gid in keep:
                leave_cohort(paths.gen_file(stage, gid, "metadata.json"), cohort_id)
        cdir = paths.cohort_dir(cohort_id)
        for name in ("membership.csv", "manifest.json", SEARCH_RECORD):  # a search's rounds go too
            (cdir / name).unlink(missing_ok=True)
        shutil.rmtree(paths.reports_dir(cohort_id), ignore_errors=True)
    return {"removed": remove, "kept_shared": keep}


def named_by(paths: DataPaths, cohort_id: str) -> dict[tuple[str, str], str]:
    """The generations a cohort's own state names, (stage, gen_id) → parent_gen_id: its
    membership, its human ratings (``ratings.csv``) and, for a search cohort, the generations of
    every combo its search.json records (``cohort.recorded_generations``)."""
    named = recorded_generations(paths, cohort_id)
    named.update(((r["stage"], r["gen_id"]), r.get("parent_gen_id") or "")
                 for r in read_membership(paths, cohort_id) + rated_rows(paths, cohort_id))
    return named


def find_orphans(paths: DataPaths) -> list[tuple[str, str]]:
    """Generations that no compiled cohort's state names (``named_by``) and no such generation
    descends from (what an interrupted compile, or a spec narrowed since, leaves behind). A
    parent taken from the store by a cohort that re-scores existing essays, and its own
    ancestors, are not orphans."""
    named: dict[tuple[str, str], str] = {}
    for c in paths.compiled_cohorts():
        named.update(named_by(paths, c))
    keep = set(named)
    stack = [(PARENT_STAGE[st], parent) for (st, _), parent in named.items() if parent]
    while stack:
        node = stack.pop()
        if node in keep:
            continue
        keep.add(node)
        stage, gid = node
        if stage in PARENT_STAGE:
            md = read_json(paths.gen_file(stage, gid, "metadata.json")) or {}  # corrupt: a store error
            if md.get("parent_gen_id"):
                stack.append((PARENT_STAGE[stage], md["parent_gen_id"]))
    return [(st, d.name) for st in STAGES if (paths.gens / st).is_dir()
            for d in sorted((paths.gens / st).iterdir()) if (st, d.name) not in keep]


def purge_orphans(paths: DataPaths, *, dry_run: bool = True) -> list[tuple[str, str]]:
    """Remove the generations ``find_orphans`` lists."""
    orphans = find_orphans(paths)
    if not dry_run:
        for stage, gid in orphans:
            shutil.rmtree(paths.gen_dir(stage, gid), ignore_errors=True)
    return orphans
