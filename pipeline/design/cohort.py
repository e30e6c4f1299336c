"""Compiling a cohort (contract §4): design rows → a plan of unique generations → files.

``plan_cohort`` is pure given the catalog and a lookup of existing generations; ``write_cohort``
is the only part that writes. Everything is validated before anything is written, and writing is
idempotent: recompiling an unchanged spec changes no byte.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import sys
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Callable

from pipeline import ids
from pipeline.design.catalog import Catalog, ComboDef
from pipeline.errors import DaydreamError
from pipeline.ids import is_safe_id
from pipeline.design.parsers import known_parser
from pipeline.design.render import draft_context, essay_context, evaluation_context, render
from pipeline.design.spec import Design, Spec
from pipeline.store import (
    GEN_FILES, STAGES, DataPaths, atomic_write_csv, atomic_write_json, check_id,
    atomic_write_many, cohort_lists_lock, dumps_json, file_token, generation_metadata, leave_cohort, read_csv_rows, read_json,
)

# Rendering every template once with a stand-in context catches syntax errors and undefined
# variables at compile time, before any generation is attempted.
SAMPLE_CONTEXT = {
    "draft": draft_context([("Concept", "A description.")]),
    "essay": essay_context("A draft."),
    "evaluation": evaluation_context("An essay."),
}

MEMBERSHIP_COLUMNS = [
    "stage", "gen_id", "parent_gen_id", "combo_id", "template_id", "llm_model_id", "replicate", "mode",
]
REQUIRED = ("draft_template", "draft_llm", "essay_template", "evaluation_template", "evaluation_llm")
NONE_VALUES = ("", "none", "null", "copy")
PROGRESS_MIN_GENERATIONS = 5000  # below this a compile takes about a second: no bar
PROGRESS_EVERY = 500  # metadata files between two progress calls
SEED_GROUP = 256  # seeded metadata files written, then made durable, as one group
RUN_FILES_PER_GENERATION = len(GEN_FILES) - 1  # what a run adds next to metadata.json

# (metadata files handled so far, total): called every PROGRESS_EVERY files and at the end
Progress = Callable[[int, int], None]
Seeded = Callable[[list[tuple[str, str, dict]]], None]  # every (stage, gen_id, its metadata as stored)


@dataclass(frozen=True)
class Generation:
    stage: str
    gen_id: str
    template_id: str
    llm_model_id: str | None
    replicate: int
    mode: str
    combo_id: str
    parent_gen_id: str | None = None
    combo: ComboDef | None = None  # drafts only: what the prompt is rendered from

    @cached_property  # the collision check and metadata() both need it, 100k times in a big cohort
    def signature(self) -> list[str]:
        parent = self.combo_id if self.stage == "draft" else self.parent_gen_id
        return ids.signature(self.stage, parent=parent, template_id=self.template_id,
                             model_id=self.llm_model_id, replicate=self.replicate)

    def metadata(self, cohorts: list[str]) -> dict:
        combo = self.combo
        return generation_metadata(
            stage=self.stage, gen_id=self.gen_id, template_id=self.template_id, llm_model_id=self.llm_model_id,
            replicate=self.replicate, mode=self.mode, combo_id=self.combo_id, signature=self.signature,
            cohorts=cohorts, parent_gen_id=self.parent_gen_id,
            combo=None if combo is None else {"concept_ids": list(combo.concept_ids), "level": combo.level, "k": combo.k})

    def membership_row(self) -> dict:
        return {
            "stage": self.stage, "gen_id": self.gen_id, "parent_gen_id": self.parent_gen_id or "",
            "combo_id": self.combo_id, "template_id": self.template_id,
            "llm_model_id": self.llm_model_id or "", "replicate": self.replicate, "mode": self.mode,
        }


@dataclass
class CohortPlan:
    cohort_id: str
    generations: dict[str, dict[str, Generation]] = field(
        default_factory=lambda: {s: {} for s in STAGES}
    )
    combos: dict[str, ComboDef] = field(default_factory=dict)
    external_essays: set[str] = field(default_factory=set)  # parents already in the store, not in this cohort

    def all(self) -> list[Generation]:
        return [g for stage in STAGES for g in self.generations[stage].values()]


_LINEAGE_AXES = ("combo_id", "draft_template", "draft_llm", "draft_replicate",
                 "essay_template", "essay_llm", "essay_replicate")
_EVALUATION_AXES = ("evaluation_template", "evaluation_llm", "evaluation_replicate")


def _replicate(row: dict, axis: str, where: Path) -> int:
    value = row.get(axis)
    if value is None or str(value).strip() == "":
        return 1
    try:
        n = int(str(value))
    except ValueError:
        n = 0
    if n < 1:
        raise DaydreamError("spec", f"axis {axis}: replicate {value!r} must be an integer ≥ 1", path=where)
    return n


def plan_cohort(
    cohort_id: str, spec: Spec, design: Design, catalog: Catalog,
    existing: Callable[[str, str], dict | None],
) -> CohortPlan:
    """Fold design rows into unique generations, validating every reference against the catalog.

    ``existing(stage, gen_id)`` returns a stored generation's metadata (or None): it resolves
    essays named by an ``essay_gen_id`` axis and detects id collisions.
    """
    where = spec.path
    plan = CohortPlan(check_id(cohort_id, "cohort id"))
    combos = dict(catalog.combos)
    combos.update(spec.combos)
    has_essay_axis = "essay_gen_id" in design.columns

    def need(row: dict, col: str) -> str:
        v = row.get(col)
        if v is None or str(v).strip() == "":
            raise DaydreamError("spec", f"design rows need a {col!r} value (axis missing or blank)", path=where)
        return str(v)

    def template(stage: str, tid: str):
        t = catalog.templates[stage].get(tid)
        if t is None:
            raise DaydreamError("spec", f"{stage}_template {tid!r} is not in {stage}_templates.csv", path=where)
        if not t.active:
            csv = catalog.paths.catalog_csv(f"{stage}_templates.csv")
            raise DaydreamError(
                "spec",
                f"{stage}_template {tid!r} is inactive (active=false in {csv}); "
                "set it active there or remove it from the spec",
                path=where,
            )
        return t

    def model(col: str, mid: str):
        if mid not in catalog.models:
            raise DaydreamError("spec", f"{col} {mid!r} is not in llm_models.csv", path=where)
        return mid

    def add(g: Generation) -> Generation:
        bucket = plan.generations[g.stage]
        if g.gen_id not in bucket:
            bucket[g.gen_id] = g
        return bucket[g.gen_id]

    # Design rows repeat their draft and essay axes many times over (every evaluation of an essay
    # is a row): validate and derive ids once per distinct value, not once per row. The work is
    # deterministic in those values, so the plan (and any error) is the same.
    lineages: dict[tuple, tuple[str, str]] = {}
    evaluations: dict[tuple, tuple[str, str, int]] = {}

    for row in design.rows:
        if has_essay_axis and row.get("essay_gen_id"):
            essay_id = check_id(row["essay_gen_id"], "essay_gen_id", path=where)
            md = existing("essay", essay_id)
            if md is None:
                raise DaydreamError("spec", f"essay_gen_id {essay_id!r} is not in the gens store", path=where)
            plan.external_essays.add(essay_id)
            essay_combo = str(md.get("combo_id") or "unknown")
        elif (key := tuple(row.get(c) for c in _LINEAGE_AXES)) in lineages:
            essay_id, essay_combo = lineages[key]
        else:
            combo_id = need(row, "combo_id")
            combo = combos.get(combo_id)
            if combo is None:
                raise DaydreamError("spec", f"combo_id {combo_id!r} is neither enumerated by the spec nor in combo_mappings.csv", path=where)
            for cid in combo.concept_ids:
                if cid not in catalog.concepts:
                    raise DaydreamError("spec", f"combo {combo_id!r} names concept {cid!r}, which is not in concepts_metadata.csv", path=where)
            plan.combos[combo_id] = combo
            dt = template("draft", need(row, "draft_template"))
            dm = model("draft_llm", need(row, "draft_llm"))
            rep = _replicate(row, "draft_replicate", where)
            draft = add(Generation("draft", ids.draft_gen_id(combo_id, dt.id, dm, rep),
                                   dt.id, dm, rep, "llm", combo_id, combo=combo))
            et = template("essay", need(row, "essay_template"))
            rep = _replicate(row, "essay_replicate", where)
            essay_llm = row.get("essay_llm")
            if et.generator == "copy":
                if essay_llm is not None and str(essay_llm).strip().lower() not in NONE_VALUES:
                    raise DaydreamError("spec", f"essay_template {et.id!r} copies its draft; essay_llm must be absent or None, got {essay_llm!r}", path=where)
                essay_llm, mode = None, "copy"
            else:
                if essay_llm is None or str(essay_llm).strip().lower() in NONE_VALUES:
                    raise DaydreamError("spec", f"essay_template {et.id!r} needs an essay_llm", path=where)
                essay_llm, mode = model("essay_llm", str(essay_llm)), "llm"
            essay = add(Generation(
                "essay", ids.essay_gen_id(draft.gen_id, et.id, essay_llm, rep),
                et.id, essay_llm, rep, mode, combo_id, draft.gen_id,
            ))
            essay_id, essay_combo = lineages[key] = essay.gen_id, combo_id
        ekey = tuple(row.get(c) for c in _EVALUATION_AXES)
        if ekey not in evaluations:
            vt = template("evaluation", need(row, "evaluation_template"))
            vm = model("evaluation_llm", need(row, "evaluation_llm"))
            evaluations[ekey] = vt.id, vm, _replicate(row, "evaluation_replicate", where)
        vt_id, vm, rep = evaluations[ekey]
        add(Generation("evaluation", ids.evaluation_gen_id(essay_id, vt_id, vm, rep),
                       vt_id, vm, rep, "llm", essay_combo, essay_id))

    _validate_references(plan, catalog, where)
    for g in plan.all():
        md = existing(g.stage, g.gen_id)
        if md is not None and md.get("signature") not in (None, g.signature):
            raise DaydreamError(
                "id_collision",
                f"{g.stage} {g.gen_id}: stored signature {md.get('signature')} differs from {g.signature}",
                path=where,
            )
    return plan


def _validate_references(plan: CohortPlan, catalog: Catalog, where: Path) -> None:
    """Every template used has its file, a known parser and renders syntactically."""
    used = {(g.stage, g.template_id) for g in plan.all()}
    for stage, tid in sorted(used):
        t = catalog.templates[stage][tid]
        if not known_parser(t.parser):
            raise DaydreamError("catalog", f"{stage} template {tid!r} names unknown parser {t.parser!r}",
                                path=catalog.paths.catalog_csv(f"{stage}_templates.csv"))
        if t.generator == "copy":
            continue
        text = t.text
        if text is None:
            raise DaydreamError("catalog", f"{stage} template {tid!r} has no template file", path=t.path)
        try:
            render(text, SAMPLE_CONTEXT[stage], stage=stage, template_id=tid)
        except DaydreamError as exc:
            raise DaydreamError("template", exc.message, path=t.path) from None


def manifest(plan: CohortPlan, catalog: Catalog, spec_fingerprint: str, search: dict | None = None) -> dict:
    """``search`` (search cohorts): which recorded rounds the plan includes (see ``is_compiled``)."""
    gens = plan.generations

    def per_stage(attr: str) -> dict:
        return {s: sorted({str(getattr(g, attr)) for g in gens[s].values() if getattr(g, attr) is not None})
                for s in gens}

    return {
        "cohort_id": plan.cohort_id,
        "combos": {cid: {"concept_ids": list(c.concept_ids), "level": c.level, "k": c.k}
                   for cid, c in sorted(plan.combos.items())},
        "templates": per_stage("template_id"),
        "llm_models": per_stage("llm_model_id"),
        "replicates": {s: max((g.replicate for g in gens[s].values()), default=0) for s in gens},
        "counts": {s: len(gens[s]) for s in gens},
        "external_essays": sorted(plan.external_essays),
        "fingerprints": {"catalog": catalog.fingerprint, "spec": spec_fingerprint},
        **({"search": search} if search is not None else {}),
    }


def spec_fingerprint(spec_dir: Path) -> str:
    """SHA-256 over every file of the spec directory (the spec and its @file helpers)."""
    h = hashlib.sha256()
    for p in sorted(q for q in spec_dir.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(spec_dir)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def _stored_metadata(paths: DataPaths, stage: str, gen_id: str, raw: dict | None = None) -> dict | None:
    """A generation's stored metadata; a corrupt file counts as absent, since compiling
    rewrites it from the spec (metadata is derived data). ``raw`` collects the bytes read, by
    (stage, gen_id), so an unchanged file need not be read a second time before writing."""
    try:
        with open(_metadata_path(str(paths.gens), stage, gen_id), "rb") as fh:
            data = fh.read()
    except (OSError, DaydreamError):
        return None
    if raw is not None:
        raw[stage, gen_id] = data
    try:
        obj = json.loads(data.decode("utf-8"))
    except ValueError:  # bad UTF-8 or bad JSON, as read_json would have reported it
        return None
    return obj if isinstance(obj, dict) else None


def _metadata_path(gens: str, stage: str, gen_id: str) -> str:
    """``paths.gen_file(stage, gen_id, "metadata.json")`` with the same checks, as a string: a
    big compile builds 100k of these, and pathlib's parsing was a sixth of its time."""
    if stage in STAGES and is_safe_id(gen_id):
        return f"{gens}/{stage}/{gen_id}/metadata.json"
    return str(DataPaths(Path(gens).parent).gen_file(stage, gen_id, "metadata.json"))  # raises


class StoredMetadata:
    """``existing`` for plan_cohort and write_cohort: each stored metadata.json read at most once
    per compile. A stage's directory is listed once, so a generation not yet in the store
    (all of them, on a first compile) costs a set lookup instead of a failed open."""

    def __init__(self, paths: DataPaths):
        self.paths = paths
        self.raw: dict[tuple[str, str], bytes] = {}
        self._parsed: dict[tuple[str, str], dict | None] = {}
        self._present: dict[str, set[str]] = {}

    def _listed(self, stage: str) -> set[str]:
        if stage not in self._present:
            try:
                self._present[stage] = set(os.listdir(f"{self.paths.gens}/{stage}")) if stage in STAGES else set()
            except OSError:
                self._present[stage] = set()
        return self._present[stage]

    def __call__(self, stage: str, gen_id: str) -> dict | None:
        key = (stage, gen_id)
        if key not in self._parsed:
            self._parsed[key] = (_stored_metadata(self.paths, stage, gen_id, self.raw)
                                 if gen_id in self._listed(stage) else None)
        return self._parsed[key]

    def unchanged(self, stage: str, gen_id: str, data: bytes) -> bool:
        """The file as read holds exactly ``data`` (the atomic writer would skip it too)."""
        return self.raw.get((stage, gen_id)) == data


def write_cohort(paths: DataPaths, plan: CohortPlan, catalog: Catalog, spec: Spec,
                 existing: Callable[[str, str], dict | None] | None = None,
                 progress: Progress | None = None, search: dict | None = None,
                 seeded: Seeded | None = None) -> dict[str, int]:
    """Seed metadata, then membership and manifest. Returns counts of files written per kind.

    ``existing`` reads stored metadata (default: from disk); ``compile_cohort`` passes the reads
    planning already made, so each metadata.json is read once per compile. ``progress`` is told
    how many of the metadata files are done, every ``PROGRESS_EVERY`` and at the end.
    ``seeded`` hears every generation's metadata as stored, once all are (the runner keeps them:
    the run that compiled reads none of them back).

    A generation's ``cohorts`` list is merged, never overwritten: the files are written under
    ``store.cohort_lists_lock``, and a file about to be rewritten is read again under it, so the
    id another cohort compiled meanwhile added stays (a file left as it is needs no second read:
    whoever changed it since merged this cohort's id in already).
    """
    existing = existing or StoredMetadata(paths)
    unchanged = getattr(existing, "unchanged", None)
    cohort = plan.cohort_id
    written = {"metadata": 0, "membership": 0, "manifest": 0}
    previous: set[tuple[str, str]] = set()
    mpath = paths.membership_csv(cohort)
    if mpath.exists():
        previous = {(r["stage"], r["gen_id"]) for r in read_csv_rows(mpath)}
    generations = plan.all()
    current = {(g.stage, g.gen_id) for g in generations}

    def merged(g: Generation, old: dict) -> dict:
        md = g.metadata(sorted(set(old.get("cohorts", [])) | {cohort}))
        kept = (old.get("combo") or {}).get("concept_ids")
        if "combo" in md and kept and sorted(kept) == sorted(md["combo"]["concept_ids"]):
            # A combo is a set (its id sorts the concepts), but its draft's prompt lists them in
            # the order of the spec that first compiled it: a cohort listing them in another
            # order shares the draft and must not rewrite it, or each cohort's run would
            # regenerate the draft, its essays and their evaluations for the other.
            md["combo"]["concept_ids"] = list(kept)
        return md

    gens, total = str(paths.gens), len(generations)
    with contextlib.ExitStack() as lock:
        now: StoredMetadata | None = None  # what is stored once the lock is held

        def locked() -> StoredMetadata:
            # taken at the first file to write: an unchanged recompile takes no lock (and so
            # works on a data root it cannot write)
            nonlocal now
            if now is None:
                lock.enter_context(cohort_lists_lock(paths))
                now = StoredMetadata(paths)
            return now

        pending: list[tuple[str, bytes]] = []  # written a group at a time, made durable together
        stored: list[tuple[str, str, dict]] = []  # for ``seeded``, once all are written
        for n, g in enumerate(generations, 1):
            old = existing(g.stage, g.gen_id) or {}
            md = merged(g, old)
            data = dumps_json(md).encode("utf-8")
            if unchanged is None or not unchanged(g.stage, g.gen_id, data):
                current_md = locked()(g.stage, g.gen_id) or {}
                if current_md != old:
                    md = merged(g, current_md)
                    data = dumps_json(md).encode("utf-8")
                pending.append((_metadata_path(gens, g.stage, g.gen_id), data))
            if seeded is not None:
                stored.append((g.stage, g.gen_id, md))
            if pending and (len(pending) >= SEED_GROUP or n == total or n % PROGRESS_EVERY == 0):
                written["metadata"] += atomic_write_many(pending)
                pending.clear()
            if progress is not None and (n % PROGRESS_EVERY == 0 or n == total):
                progress(n, total)
        for stage, gen_id in sorted(previous - current):
            if cohort not in (existing(stage, gen_id) or {}).get("cohorts", []):
                continue
            locked()
            written["metadata"] += leave_cohort(paths.gen_file(stage, gen_id, "metadata.json"), cohort)

    written["membership"] += atomic_write_csv(mpath, MEMBERSHIP_COLUMNS, (g.membership_row() for g in generations))
    written["manifest"] += atomic_write_json(
        paths.manifest_json(cohort), manifest(plan, catalog, spec_fingerprint(spec.path.parent), search)
    )
    if seeded is not None:
        seeded(stored)
    return written


_MEMBERSHIP: dict[str, tuple[tuple, list[dict]]] = {}  # path -> (its token, rows): parsed once per change


def read_membership(paths: DataPaths, cohort_id: str) -> list[dict[str, str]]:
    """The cohort's membership rows (drafts, essays, evaluations), parsed again only when the
    file changes (a run asks often: checking that the cohort is compiled, planning, sweeping);
    callers read the rows and never change them."""
    path = paths.membership_csv(cohort_id)
    token = file_token(path)
    if token is None:
        raise DaydreamError("cohort", f"cohort {cohort_id!r} is not compiled (run `daydream compile {cohort_id}`)", path=path)
    cached = _MEMBERSHIP.get(str(path))
    if cached is not None and cached[0] == token:
        return cached[1]
    rows = read_csv_rows(path)  # read after the stat: a change in between shows at the next one
    _MEMBERSHIP[str(path)] = (token, rows)
    return rows


def require_known_cohort(paths: DataPaths, cohort_id: str) -> Path:
    """The cohort's spec file, or one error naming the known cohorts."""
    check_id(cohort_id, "cohort id")
    spec_path = paths.spec_file(cohort_id)
    if not spec_path.exists():
        known = sorted(p.name for p in paths.cohorts.iterdir() if (p / "spec").is_dir()) if paths.cohorts.is_dir() else []
        raise DaydreamError(
            "cohort", f"unknown cohort {cohort_id!r} (no spec at {spec_path}); known: {', '.join(known) or 'none'}"
        )
    return spec_path


def compile_cohort(paths: DataPaths, cohort_id: str, *, confirm_above: int | None = None,
                   progress: Progress | None = None, seeded: Seeded | None = None) -> tuple[CohortPlan, dict[str, int]]:
    """Load catalog and spec, plan, validate, then write. Nothing is written on any error.

    ``confirm_above``: refuse (a ``cohort`` error) a plan of more generations than this, unless
    the cohort is already compiled at least that large; callers pass None once the user said
    ``--yes``. ``progress``, ``seeded``: see ``write_cohort``; None (the default) keeps the library quiet.
    """
    from pipeline.design.catalog import load_catalog
    from pipeline.design.spec import load_spec, stream_design

    spec_path = require_known_cohort(paths, cohort_id)
    catalog = load_catalog(paths)
    spec = load_spec(spec_path)
    search = record = None
    if spec.search is not None:
        record = search_record(paths, cohort_id, spec_fingerprint(spec_path.parent), catalog.fingerprint)
        spec = search_spec(spec, catalog, record)
        search = {"recorded": _recorded_key(record)}
    if confirm_above is not None:
        check_design_size(paths, cohort_id, spec, confirm_above)
    # rows made as planning reads them
    design = stream_design(spec) if spec.search is None else search_design(spec, record)
    existing = StoredMetadata(paths)
    plan = plan_cohort(cohort_id, spec, design, catalog, existing)
    if spec.search is not None:
        check_search_plan(spec, plan)
    if confirm_above is not None:
        check_size(paths, plan, confirm_above)
    return plan, write_cohort(paths, plan, catalog, spec, existing, progress, search, seeded)


# -- search cohorts --------------------------------------------------------------------------------
# A search cohort's combos are its rounds so far. The runner (pipeline.run.search_store) derives the
# rounds from the scores in the gens store and records them in the cohort's search.json; compiling
# includes the recorded rounds, as long as the record was made from the current spec and
# catalogs (otherwise round 0 only, and the next run derives the rest again, reusing every
# generation).

SEARCH_RECORD = "search.json"


def search_record_path(paths: DataPaths, cohort_id: str) -> Path:
    return paths.cohort_dir(cohort_id) / SEARCH_RECORD


def search_record(paths: DataPaths, cohort_id: str, spec_fp: str, catalog_fp: str) -> dict | None:
    """The search state recorded for this spec and these catalogs, or None (absent, corrupt,
    or made from other ones)."""
    try:
        rec = read_json(search_record_path(paths, cohort_id))
    except DaydreamError:
        return None
    if not rec or rec.get("fingerprints") != {"spec": spec_fp, "catalog": catalog_fp}:
        return None
    return rec if _well_formed(rec) else None


def _well_formed(rec: dict) -> bool:
    rounds = rec.get("rounds")

    def concepts(c) -> bool:
        return isinstance(c, list) and bool(c) and all(isinstance(x, str) for x in c)

    return isinstance(rounds, list) and all(
        isinstance(r, dict) and isinstance(r.get("combos"), list) and all(concepts(c) for c in r["combos"])
        and (r.get("confirm") is None or isinstance(r["confirm"], dict) and concepts(r["confirm"].get("concepts")))
        for r in rounds)


def recorded_generations(paths: DataPaths, cohort_id: str) -> dict[tuple[str, str], str]:
    """(stage, gen_id) → parent_gen_id ("" for a draft) of every generation of the combos a
    search cohort's search.json names,
    whatever spec and catalogs it was recorded from: the search's own state, which purging
    never removes (a catalog edit makes its compile fall back to round 0 until its next run
    derives the rounds again, reusing these generations). Empty for a cohort without a record
    or without a ``search:`` section; an unreadable record or spec is an error (nothing is
    purged on a guess)."""
    from pipeline.design.catalog import load_catalog
    from pipeline.design.spec import load_spec

    path = search_record_path(paths, cohort_id)
    if not path.exists():
        return {}
    rec = read_json(path)
    if not rec or not _well_formed(rec):
        raise DaydreamError("store", "not a search record (rounds of combos)", path=path)
    spec = load_spec(require_known_cohort(paths, cohort_id))
    if spec.search is None:
        return {}
    catalog = load_catalog(paths)
    spec = search_spec(spec, catalog, rec)
    plan = plan_cohort(cohort_id, spec, search_design(spec, rec), catalog, lambda stage, gen_id: None)
    return {(g.stage, g.gen_id): g.parent_gen_id or "" for g in plan.all()}


def recorded_combos(record: dict | None) -> list[tuple[str, ...]]:
    return [tuple(c) for r in (record or {}).get("rounds", []) for c in r["combos"]]


def recorded_confirmations(record: dict | None) -> list[tuple[str, ...]]:
    """The combos the recorded rounds confirm on fresh draft replicates."""
    return [tuple(r["confirm"]["concepts"]) for r in (record or {}).get("rounds", []) if r.get("confirm")]


def _recorded_key(record: dict | None) -> str:
    confirmed = recorded_confirmations(record)
    key = [recorded_combos(record), confirmed] if confirmed else recorded_combos(record)
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def confirm_replicates(spec: Spec) -> list[int]:
    """The draft replicates a confirmation generates: the next ``search.confirm`` after the
    spec's own, so they are fresh drafts with gen_ids of their own, the same on every run."""
    base = max((int(r) for r in spec.axes.get("draft_replicate") or [] if r is not None), default=1)
    return list(range(base + 1, base + 1 + spec.search.confirm))


def confirmation_spec(spec: Spec, combos: list[tuple[str, ...]]) -> Spec:
    """``spec`` over ``combos`` with the confirmation's draft replicates in place of its own."""
    defn = spec.search
    out = spec.with_combos({defn.combo_id(c): ComboDef(c, defn.level, len(c)) for c in combos})
    return replace(out, axes={**out.axes, "draft_replicate": [str(r) for r in confirm_replicates(spec)]})


def search_design(spec: Spec, record: dict | None) -> Design:
    """The rows of a search spec over its recorded rounds (``search_spec``), followed by those of
    the combos the rounds confirm on fresh draft replicates."""
    from pipeline.design.spec import stream_design

    design = stream_design(spec)
    confirmed = [c for c in recorded_confirmations(record) if set(c) <= set(spec.search.pool)]
    return _joined(design, stream_design(confirmation_spec(spec, confirmed))) if confirmed else design


def _joined(design: Design, more: Design) -> Design:
    """The rows of both designs (a search's rounds and its confirmations)."""
    return Design(design.columns + [c for c in more.columns if c not in design.columns],
                  itertools.chain(design.rows, more.rows))


def search_spec(spec: Spec, catalog: Catalog, record: dict | None) -> Spec:
    """``spec`` over round 0 plus the recorded rounds' combos, its pool checked against the catalog."""
    defn = spec.search
    for c in defn.pool:
        if c not in catalog.concepts:
            raise DaydreamError("spec", f"search.pool: unknown concept {c!r} (not in concepts_metadata.csv)",
                                path=spec.path)
    combos = dict(spec.combos)
    for combo in recorded_combos(record):
        if set(combo) <= set(defn.pool):
            combos.setdefault(defn.combo_id(combo), ComboDef(combo, defn.level, len(combo)))
    return spec.with_combos(combos)


def combo_costs(plan: CohortPlan) -> dict[str, tuple[int, int]]:
    """Per combo: (model calls, essays) of its generations in ``plan``."""
    calls: dict[str, int] = {}
    essays: dict[str, int] = {}
    for g in plan.all():
        calls[g.combo_id] = calls.get(g.combo_id, 0) + (g.mode == "llm")
        essays[g.combo_id] = essays.get(g.combo_id, 0) + (g.stage == "essay")
    return {c: (calls[c], essays.get(c, 0)) for c in calls}


def check_search_plan(spec: Spec, plan: CohortPlan) -> None:
    """A search that could not rank its combos, or run its first round, is a spec error."""
    from pipeline.design.search import MIN_UNITS, start_combos

    defn = spec.search
    costs = combo_costs(plan)
    first = set(defn.combo_id(c) for c in start_combos(defn))
    drafts = min((sum(1 for g in plan.generations["draft"].values() if g.combo_id == cid) for cid in first), default=0)
    if defn.statistic == "ci_low" and drafts < MIN_UNITS:
        raise DaydreamError("spec", f"search.select.statistic: ci_low needs at least {MIN_UNITS} drafts per combo "
                                    f"for an interval (essays of one draft share it); the design gives {drafts} "
                                    "(add draft replicates, or use mean)", path=spec.path)
    replicates = len(spec.axes.get("draft_replicate") or ["1"])
    confirming = drafts // replicates * defn.confirm
    if defn.target is not None and confirming < MIN_UNITS:
        raise DaydreamError("spec", f"search.confirm.replicates: a confirmation of {defn.confirm} draft replicates "
                                    f"gives {confirming} drafts per combo; a target needs at least {MIN_UNITS}",
                            path=spec.path)
    if defn.budget is not None and defn.budget.unit == "calls":  # a USD budget needs the store: see search_store
        error = defn.budget.first_round_error(sum(costs[c][0] for c in first), len(first))
        if error:
            raise DaydreamError("spec", error, path=spec.path)


def _compiled_size(paths: DataPaths, cohort_id: str) -> int:
    """Generations the cohort's manifest counts (0 when not compiled or unreadable)."""
    try:
        counts = (read_json(paths.manifest_json(cohort_id)) or {}).get("counts") or {}
        return sum(int(n) for n in counts.values())
    except (DaydreamError, AttributeError, TypeError, ValueError):
        return 0


def check_design_size(paths: DataPaths, cohort_id: str, spec: Spec, confirm_above: int) -> None:
    """The size guard before any work: a design of more rows than ``confirm_above`` needs the
    user's ``--yes``, counted without making the rows (``count_design``), so a design of
    millions of rows is refused at once instead of after filling the memory. Each row is an
    evaluation, so the cohort has at least about that many generations; a design within the
    limit is planned, and ``check_size`` then counts its generations exactly."""
    from pipeline.design.spec import count_design

    rows = count_design(spec)
    if rows <= confirm_above or _compiled_size(paths, cohort_id) >= rows:
        return
    raise DaydreamError(
        "cohort",
        f"cohort {cohort_id!r}: its design has {rows:,} rows, more than [daydream] confirm_above = "
        f"{confirm_above:,}; each row is an evaluation, so compiling writes at least {rows + 2:,} files "
        f"(a metadata.json per generation, membership.csv, manifest.json) and a run about "
        f"{RUN_FILES_PER_GENERATION * rows:,} more; add --yes to go ahead",
        path=spec.path,
    )


def check_size(paths: DataPaths, plan: CohortPlan, confirm_above: int) -> None:
    """A plan above ``confirm_above`` generations needs the user's ``--yes``, unless the cohort's
    manifest already counts at least as many (it was confirmed at that size before)."""
    total = sum(len(g) for g in plan.generations.values())
    if total <= confirm_above or _compiled_size(paths, plan.cohort_id) >= total:
        return
    raise DaydreamError(
        "cohort",
        f"cohort {plan.cohort_id!r} has {total:,} generations, more than [daydream] confirm_above = "
        f"{confirm_above:,}: compiling writes {total + 2:,} files (a metadata.json per generation, "
        f"membership.csv, manifest.json) and a run about {RUN_FILES_PER_GENERATION * total:,} more "
        f"({RUN_FILES_PER_GENERATION} per generation); add --yes to go ahead",
    )


def terminal_progress(*, force: bool = False, min_total: int = PROGRESS_MIN_GENERATIONS,
                      stream=None) -> Progress | None:
    """A ``progress`` callback drawing a tqdm bar on stderr while compile writes metadata, for
    commands (never used by the library itself). None unless stderr is a terminal or ``force``;
    the bar appears only for more than ``min_total`` generations."""
    stream = stream or sys.stderr
    if not force and not (hasattr(stream, "isatty") and stream.isatty()):
        return None
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if total <= min_total:
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="gen", desc="compiling metadata", file=stream, leave=False)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def is_compiled(paths: DataPaths, cohort_id: str) -> bool:
    """The cohort's manifest matches the current spec and catalogs."""
    from pipeline.design.catalog import load_catalog

    m = read_json(paths.manifest_json(cohort_id))
    if not m or not paths.membership_csv(cohort_id).exists():
        return False
    fp = m.get("fingerprints", {})
    if (fp.get("spec") != spec_fingerprint(paths.spec_file(cohort_id).parent)
            or fp.get("catalog") != load_catalog(paths).fingerprint):
        return False
    # a search cohort is compiled over the rounds recorded so far: a new round needs compiling
    if "search" in m and m["search"].get("recorded") != _recorded_key(
            search_record(paths, cohort_id, fp["spec"], fp["catalog"])):
        return False
    # a gens store edited by hand (metadata deleted) needs the metadata seeded again
    gens = str(paths.gens)  # ids in a membership we wrote are safe: plain joins, no Path objects
    return all(os.path.exists(f"{gens}/{r['stage']}/{r['gen_id']}/metadata.json")
               for r in read_membership(paths, cohort_id))
