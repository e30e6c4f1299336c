"""Re-read stored raw responses with today's parsers and scales (``daydream reparse``): no model call.

A parse failure is not a lost call: the raw response is kept (``raw.txt``, valid), so after a
parser fix, a scale or label change in the catalog, or a template's parser switched, every kept
response can be read again. This module walks a cohort's generations (or the whole gens store),
parents first, and for each one whose valid raw response belongs to the prompt it would be
rendered from now, parses it again and, when the outcome differs from the recorded one, commits
it with ``generation.write_parsed`` (the same files and records a run writes). A copy-mode essay
whose parent changed is re-copied (``generation.generate``, which calls no model in copy mode).
Generations whose prompt changed (a template edit, a parent whose text changed) need a model
call: they are counted, never called; ``daydream run`` regenerates them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pipeline.run import generation
from pipeline.design.cohort import read_membership
from pipeline.errors import DaydreamError
from pipeline.run.generation import phase_json, resolve_inputs, sha256, state_of
from pipeline.design.parsers import try_parse
from pipeline.store.state import DONE
from pipeline.store import PARENT_STAGE, STAGES, DataPaths


@dataclass
class ReparseResult:
    """What a reparse did, per outcome; ``still_failing`` lists (stage, gen_id) of parse failures."""

    reread: int = 0  # raw responses parsed again
    changed: int = 0  # of those, outcomes written because they differ from the recorded one
    fixed: int = 0  # of those, now done after a recorded failure
    broken: int = 0  # of those, now failing after a recorded success (a stricter parser or scale)
    copied: int = 0  # copy-mode essays re-copied from a changed parent
    needs_call: list[tuple[str, str]] = field(default_factory=list)  # prompt changed or no valid raw
    waiting: int = 0  # parent not done: nothing to read against
    still_failing: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a generation could not be read (e.g. its template left the catalog)

    def line(self, scope: str) -> str:
        parts = [f"{self.reread} raw responses re-read with today's parsers and scales (0 model calls)",
                 f"{self.changed} outcomes changed ({self.fixed} now done, {self.broken} now failing)"]
        if self.copied:
            parts.append(f"{self.copied} copy-mode essays re-copied")
        parts.append(f"{len(self.still_failing)} parse failures remain")
        if self.needs_call:
            parts.append(f"{len(self.needs_call)} need a model call (no valid raw for their current prompt: "
                         "`daydream run` makes it)")
        if self.waiting:
            parts.append(f"{self.waiting} wait for a parent that is not done")
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (first: {self.skipped[0]})")
        return f"reparse {scope}: " + "; ".join(parts)


def _generations(paths: DataPaths, cohort_id: str | None, stage: str | None) -> list[tuple[str, str]]:
    """(stage, gen_id) of the cohort (or of the whole store), parents' stages first."""
    if cohort_id:
        rows = read_membership(paths, cohort_id)
        found = [(r["stage"], r["gen_id"]) for r in rows]
    else:
        found = []
        for st in STAGES:
            base = paths.gens / st
            found += [(st, d.name) for d in (sorted(base.iterdir()) if base.is_dir() else [])
                      if (d / "metadata.json").is_file()]
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted((g for g in found if not stage or g[0] == stage), key=lambda g: order[g[0]])


def reparse(paths: DataPaths, cohort_id: str | None = None, stage: str | None = None) -> ReparseResult:
    """Parse every stored valid raw response again with the catalog's current parser and scale."""
    rt = generation.runtime()
    result = ReparseResult()
    memo: dict = {}
    for st, gen_id in _generations(paths, cohort_id, stage):
        try:
            if _reparse_one(rt, st, gen_id, memo, result):
                memo.pop((st, gen_id), None)  # its children are judged against what was just written
        except DaydreamError as exc:
            if exc.code not in ("catalog", "store"):
                raise
            # a generation of another cohort whose template left the catalog, or with corrupt
            # metadata (`daydream check` lists those): the others are still read
            result.skipped.append(f"{st} {gen_id}: {exc.message}")
    return result


def _reparse_one(rt: generation.Runtime, stage: str, gen_id: str, memo: dict, result: ReparseResult) -> bool:
    """Re-read one generation's raw response; True when its recorded outcome was rewritten."""
    md = generation.metadata(rt, stage, gen_id)
    if stage != "draft" and state_of(rt, PARENT_STAGE[stage], md["parent_gen_id"], memo).kind != DONE:
        result.waiting += 1
        return False
    if md["mode"] == "copy":
        if state_of(rt, stage, gen_id, memo).kind == DONE:
            return False
        asyncio.run(generation.generate(rt, stage, gen_id))  # copies the parent's text: no model call
        result.copied += 1
        return True
    inputs = resolve_inputs(rt, stage, gen_id, md)
    kept = None if inputs is None else generation.reusable_raw(rt, stage, gen_id, inputs)
    if kept is None:
        if state_of(rt, stage, gen_id, memo).kind != DONE:
            result.needs_call.append((stage, gen_id))
        return False
    raw, raw_md = kept
    result.reread += 1
    lo, hi = inputs.scale
    parsed = try_parse(inputs.parser, raw, scale_min=lo, scale_max=hi, label=inputs.score_label)
    recorded = phase_json(rt.gen_file(stage, gen_id, "parsed_metadata.json")) or {}
    was_done = state_of(rt, stage, gen_id, memo).kind == DONE
    same_inputs = recorded.get("input_fingerprint") == inputs.fingerprint
    if parsed.success:
        unchanged = was_done and same_inputs and recorded.get("parsed_sha256") == sha256(parsed.text)
    else:
        unchanged = same_inputs and recorded.get("success") is False \
            and str(recorded.get("error") or "").endswith(parsed.error or "")
    if not unchanged:
        generation.write_parsed(rt, stage, gen_id, inputs, raw, simulated=bool(raw_md.get("simulated")))
        result.changed += 1
        result.fixed += parsed.success and not was_done
        result.broken += (not parsed.success) and was_done
    if not parsed.success:
        result.still_failing.append((stage, gen_id))
    return not unchanged

