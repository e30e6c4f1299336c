"""Human ratings: a rater's CSV, exported by the site's blind rating mode, into the store as
evaluations by the evaluator ``human:<rater>``.

A rating becomes an ordinary evaluation generation (no model call): its gen_id is the
deterministic ``ids.evaluation_gen_id(essay, rubric, "human:<rater>", 1)``, its files are
written with the store's atomic writer and the same record functions the runner uses
(``store.raw_metadata`` / ``store.parsed_metadata``, parsed_metadata last as the commit marker),
and its input fingerprint is the rubric applied to the essay as the runner would render it, so
the one state classifier sees it done. The note is its reasoning.

The cohort lists its human evaluations in ``data/cohorts/<id>/ratings.csv`` (membership
columns): compiling the cohort rewrites membership.csv from its spec and must not drop them; the
reports read both. Importing the same rater's rating of the same essay and rubric again replaces
it (the latest rating wins).
"""

from __future__ import annotations

import csv
import io
import math
import re
from datetime import datetime, timezone
from pathlib import Path

from pipeline.errors import DaydreamError
from pipeline.ids import evaluation_gen_id, is_safe_id, signature
from pipeline.store import (DataPaths, atomic_write_csv, atomic_write_group, dumps_json, generation_metadata, join_cohort,
                            parsed_metadata, raw_metadata, read_csv_rows, read_text)

RATINGS_FILE = "ratings.csv"
HUMAN_PREFIX = "human:"
HUMAN_MODE = "human"
COLUMNS = ("cohort_id", "essay_gen_id", "rubric", "score", "note", "rated_at")
REQUIRED = ("cohort_id", "essay_gen_id", "rubric", "score")
MEMBERSHIP_COLUMNS = ("stage", "gen_id", "parent_gen_id", "combo_id", "template_id", "llm_model_id", "replicate", "mode")
_RATER = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def ratings_csv(paths: DataPaths, cohort_id: str) -> Path:
    return paths.cohort_dir(cohort_id) / RATINGS_FILE


def rated_rows(paths: DataPaths, cohort_id: str) -> list[dict[str, str]]:
    """The membership rows of a cohort's human evaluations (none when it has no ratings)."""
    path = ratings_csv(paths, cohort_id)
    return read_csv_rows(path) if path.is_file() else []


def human_model_id(rater: str) -> str:
    """``human:<rater>``; a rater name is letters, digits, ``.``, ``_`` or ``-``."""
    if not _RATER.match(str(rater or "")):
        raise DaydreamError("ratings", f"--rater {rater!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return HUMAN_PREFIX + rater


def is_human(model_id: object) -> bool:
    return str(model_id or "").startswith(HUMAN_PREFIX)


def parse_ratings(text: str, source: Path | str) -> list[dict]:
    """The rows of a ratings CSV (pure): every required column present, ids safe, scores
    finite numbers. A mistake is one error naming the file, the line and the value."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise DaydreamError("ratings", f"lacks column(s) {', '.join(missing)} (expected {', '.join(COLUMNS)})",
                            path=source)
    rows = []
    for line, r in enumerate(reader, start=2):
        row = {k: (r.get(k) or "").strip() for k in COLUMNS}
        for k in ("cohort_id", "essay_gen_id", "rubric"):
            if not is_safe_id(row[k]):
                raise DaydreamError("ratings", f"line {line}: {k} {row[k]!r} is not an id", path=source)
        try:
            value = float(row["score"])
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise DaydreamError("ratings", f"line {line}: score {row['score']!r} is not a number", path=source)
        rows.append(dict(row, score=value, line=line))
    if not rows:
        raise DaydreamError("ratings", "no ratings in the file", path=source)
    return rows


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _timestamp(value: str) -> str:
    """An ISO 8601 UTC time from the file, else now."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return _now()
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="seconds")


def _score_text(v: float) -> str:
    return f"{v:g}"


def import_ratings(paths: DataPaths, file: Path, rater: str, rt=None) -> dict:
    """Write each rating of ``file`` as an evaluation by ``human:<rater>``; returns counts
    (``ratings``, ``cohorts``: ids). Everything is checked before anything is written."""
    from pipeline.run import generation
    from pipeline.design.cohort import read_membership
    from pipeline.run.generation import sha256

    model = human_model_id(rater)
    text = read_text(Path(file))
    if text is None:
        raise DaydreamError("ratings", "no such file", path=file)
    rows = parse_ratings(text, file)
    rt = rt or generation.runtime()
    essays: dict[str, dict[str, dict]] = {}
    planned = []
    for r in rows:
        cid, eid, rubric = r["cohort_id"], r["essay_gen_id"], r["rubric"]
        if cid not in essays:
            essays[cid] = {m["gen_id"]: m for m in read_membership(paths, cid) if m.get("stage") == "essay"}
        essay = essays[cid].get(eid)
        if essay is None:
            raise DaydreamError("ratings", f"line {r['line']}: essay {eid!r} is not in cohort {cid!r}", path=file)
        tpl = rt.catalog.template("evaluation", rubric)
        if not tpl.score_min <= r["score"] <= tpl.score_max:
            raise DaydreamError("ratings", f"line {r['line']}: score {_score_text(r['score'])} is outside rubric "
                                f"{rubric!r}'s scale {tpl.score_min:g}–{tpl.score_max:g}", path=file)
        gid = evaluation_gen_id(eid, rubric, model, 1)
        md = generation_metadata(
            stage="evaluation", gen_id=gid, template_id=rubric, llm_model_id=model, replicate=1, mode=HUMAN_MODE,
            combo_id=essay.get("combo_id", ""), parent_gen_id=eid, cohorts=[cid],
            signature=signature("evaluation", parent=eid, template_id=rubric, model_id=model, replicate=1))
        inputs = generation.resolve_inputs(rt, "evaluation", gid, md)
        if inputs is None:
            raise DaydreamError("ratings", f"line {r['line']}: essay {eid!r} has no intact output to rate", path=file)
        planned.append((r, md, inputs))

    by_cohort: dict[str, dict[str, dict]] = {}
    for r, md, inputs in planned:
        gid, at = md["gen_id"], _timestamp(r["rated_at"])
        label = inputs.score_label or "SCORE"
        raw = (r["note"].strip() + "\n\n" if r["note"].strip() else "") + f"{label}: {_score_text(r['score'])}\n"
        parsed = _score_text(r["score"])
        join_cohort(paths, md)
        f = lambda name: rt.gen_file("evaluation", gid, name)  # noqa: E731
        # one group, as a run commits a generation: each record after its content
        atomic_write_group([
            (f("prompt.txt"), inputs.prompt.encode()),
            (f("raw.txt"), raw.encode()),
            (f("raw_metadata.json"), dumps_json(raw_metadata(
                gen_id=gid, stage="evaluation", mode=HUMAN_MODE, llm_model_id=md["llm_model_id"], model_slug=None,
                provider=None, simulated=False, finish_reason=None, truncated=False, prompt_tokens=0,
                completion_tokens=0, cost_usd=None, cost_source=None, duration_s=0.0, attempts=0, started_at=at,
                finished_at=at, prompt_sha256=sha256(inputs.prompt), raw_sha256=sha256(raw), valid=True,
                invalid_reason=None)).encode()),
            (f("parsed.txt"), parsed.encode()),
            (f("parsed_metadata.json"), dumps_json(parsed_metadata(
                gen_id=gid, stage="evaluation", parser=inputs.parser, success=True, error=None,
                raw_tail_preview=None, simulated=False, input_fingerprint=inputs.fingerprint,
                parsed_sha256=sha256(parsed), finished_at=at, template_sha256=inputs.template_sha256,
                parent_sha256=inputs.parent_sha256, score=r["score"], scale=inputs.scale)).encode()),
        ])
        by_cohort.setdefault(r["cohort_id"], {})[gid] = {
            "stage": "evaluation", "gen_id": gid, "parent_gen_id": md["parent_gen_id"], "combo_id": md["combo_id"],
            "template_id": md["template_id"], "llm_model_id": md["llm_model_id"], "replicate": "1", "mode": HUMAN_MODE}
    for cid, new in by_cohort.items():
        path = ratings_csv(paths, cid)
        rows_now = {m["gen_id"]: m for m in read_csv_rows(path)} if path.exists() else {}
        rows_now.update(new)
        atomic_write_csv(path, MEMBERSHIP_COLUMNS, sorted(rows_now.values(), key=lambda m: m["gen_id"]))
    return {"ratings": len(planned), "cohorts": sorted(by_cohort)}
