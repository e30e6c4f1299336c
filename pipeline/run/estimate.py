"""``daydream estimate``: what a cohort's remaining model calls will cost, before running them.

Gathers, for every generation still to make (finished ones excluded): its prompt size — the
rendered prompt where its parent exists, else the template's plus the size its parent is
expected to have — and what the same model produced on the same stage before (the cohort's own
calls first, then any in the gens store). ``spend.estimate_rows`` does the arithmetic.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache

from pipeline import config
from pipeline.store import spend
from pipeline.run.generation import is_done, resolve_inputs, reusable_raw, runtime
from pipeline.design.render import essay_context, evaluation_context, render
from pipeline.run.run_plan import membership
from pipeline.store import PARENT_STAGE, DataPaths

HISTORY_SCAN = 2000  # recorded calls read per stage beyond the cohort's own (a bounded sample)
_EMPTY_PARENT = {"essay": essay_context, "evaluation": evaluation_context}


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _json(path: str) -> dict | None:
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read())
    except (OSError, ValueError):
        return None  # absent or corrupt: simply not part of the history
    return obj if isinstance(obj, dict) else None


def history(paths: DataPaths, rows: list[dict], stages: set[str]) -> spend.History:
    """Recorded calls of the cohort's generations, then up to ``HISTORY_SCAN`` more per stage
    from the gens store (other cohorts' calls of the same models count too)."""
    h = spend.History()
    seen = set()

    def add(stage: str, gen_id: str, template_id: str | None) -> None:
        d = f"{paths.gens}/{stage}/{gen_id}"
        raw = _json(f"{d}/raw_metadata.json")
        if not raw or raw.get("mode") != "llm" or not raw.get("llm_model_id"):
            return
        if template_id is None:
            template_id = (_json(f"{d}/metadata.json") or {}).get("template_id") or ""
        parsed = _json(f"{d}/parsed_metadata.json") or {}
        h.add(stage, template_id, raw["llm_model_id"], prompt_bytes=_size(f"{d}/prompt.txt"),
              prompt_tokens=raw.get("prompt_tokens"), completion_tokens=raw.get("completion_tokens"),
              parsed_bytes=_size(f"{d}/parsed.txt") if parsed.get("success") else None)

    for r in rows:
        if r["llm_model_id"]:
            seen.add((r["stage"], r["gen_id"]))
            add(r["stage"], r["gen_id"], r["template_id"])
    for stage in sorted(stages):
        try:
            entries = os.scandir(paths.gens / stage)
        except FileNotFoundError:
            continue
        with entries:
            n = 0
            for entry in entries:
                if n >= HISTORY_SCAN:
                    break
                if (stage, entry.name) not in seen:
                    n += 1
                    add(stage, entry.name, None)
    return h


def remaining_calls(paths: DataPaths, cohort_id: str, planned: list | None = None) -> list[spend.CallEstimate]:
    """One ``CallEstimate`` per generation of the cohort that still needs a model call; or of
    ``planned`` (``cohort.Generation``s: a search round's, compiled or not yet)."""
    rt, memo = runtime(), {}
    rows = membership(paths, cohort_id) if planned is None else [g.membership_row() for g in planned]
    by_id = {r["gen_id"]: r for r in rows}
    todo = [r for r in rows if r["llm_model_id"] and not is_done(rt, r["stage"], r["gen_id"], memo)]
    if not todo:
        return []
    planned_md = {g.gen_id: g.metadata([cohort_id]) for g in planned or ()}  # what is not compiled renders from
    hist = history(paths, rows, {r["stage"] for r in todo} | {PARENT_STAGE.get(r["stage"], "draft") for r in todo})

    @lru_cache(maxsize=None)
    def template_bytes(stage: str, template_id: str) -> int:
        template = rt.catalog.template(stage, template_id)
        return len(render(template.text or "", _EMPTY_PARENT[stage](""), stage=stage,
                          template_id=template_id).encode())

    def max_tokens(stage: str, model) -> int | None:
        return model.max_tokens if model.max_tokens is not None else config.stage_settings(stage).max_tokens

    def completion(stage: str, template_id: str, model) -> tuple[float | None, bool]:
        mean = hist.completion_tokens(stage, template_id, model.id)
        return (mean, True) if mean is not None else (max_tokens(stage, model), False)

    @lru_cache(maxsize=None)
    def parsed_bytes(stage: str, gen_id: str) -> float:
        """The size the output of ``gen_id`` has, or is expected to have."""
        size = _size(f"{paths.gens}/{stage}/{gen_id}/parsed.txt")
        if size is not None and is_done(rt, stage, gen_id, memo):
            return size
        row = by_id.get(gen_id) or _row_from_store(paths, stage, gen_id)
        if row is None:
            return 0.0
        if not row["llm_model_id"]:  # copy mode: the parent's text
            return parsed_bytes(PARENT_STAGE[stage], row["parent_gen_id"])
        model = rt.catalog.model(row["llm_model_id"])
        known = hist.parsed_bytes(stage, row["template_id"], model.id)
        if known is not None:
            return known
        tokens, _ = completion(stage, row["template_id"], model)
        return (tokens or 0) * hist.bytes_per_token(model.id)

    @lru_cache(maxsize=None)
    def batch_endpoint(endpoint: str) -> bool:
        return config.batch_settings(endpoint) is not None

    def in_batch(model) -> bool:  # the run sends it in a batch job (``batch_jobs``)
        return batch_endpoint(rt.endpoint(model.id))

    calls = []
    for r in todo:
        stage, model = r["stage"], rt.catalog.model(r["llm_model_id"])
        parent_done = stage == "draft" or is_done(rt, PARENT_STAGE[stage], r["parent_gen_id"], memo)
        inputs = resolve_inputs(rt, stage, r["gen_id"], planned_md.get(r["gen_id"])) if parent_done else None
        if inputs is not None and reusable_raw(rt, stage, r["gen_id"], inputs):
            continue  # a kept response (a parse failure, a scale change) is parsed again, not paid again
        if inputs is not None:
            prompt_bytes = float(len(inputs.prompt.encode()))
        else:
            prompt_bytes = template_bytes(stage, r["template_id"]) + parsed_bytes(PARENT_STAGE[stage], r["parent_gen_id"])
        tokens, from_history = completion(stage, r["template_id"], model)
        sync, batch = spend.Prices.of(model), spend.batch_prices(model)
        calls.append(spend.CallEstimate(
            stage=stage, model_id=model.id, prices=batch if in_batch(model) else sync, prompt_bytes=prompt_bytes,
            bytes_per_token=hist.bytes_per_token(model.id), completion_tokens=tokens or 0.0,
            from_history=from_history, max_tokens=max_tokens(stage, model), sync_prices=sync, batch_prices=batch))
    return calls


def _row_from_store(paths: DataPaths, stage: str, gen_id: str) -> dict | None:
    """A parent outside the cohort (an essay scored anew), as a membership-like row."""
    md = _json(f"{paths.gens}/{stage}/{gen_id}/metadata.json")
    if not md:
        return None
    return {"stage": stage, "gen_id": gen_id, "template_id": md.get("template_id") or "",
            "llm_model_id": md.get("llm_model_id") or "", "parent_gen_id": md.get("parent_gen_id") or ""}


def estimate(paths: DataPaths, cohort_id: str) -> list[dict]:
    """The estimate table's rows (``spend.estimate_rows``)."""
    return spend.estimate_rows(remaining_calls(paths, cohort_id))


def left_to_do(paths: DataPaths, cohort_id: str) -> str:
    """What finishing the cohort would take, in words (said when a run stops at its cap)."""
    total = estimate(paths, cohort_id)[-1]
    return (f"{total['calls']} model calls left, estimated at {spend.usd(total['cost_usd'])} "
            f"(at most {spend.usd(total['cost_max_usd'])})")
