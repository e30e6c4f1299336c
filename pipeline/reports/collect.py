"""Read a cohort's membership and its gens-store files into tidy frames (the reports' only reads).

Nothing is dropped: every membership row becomes a ``generations`` row and every evaluation a
``scores`` row; a blank key is the literal ``unknown``, a copy-mode essay's model is ``copy``, and
every oddity found on the way (failed, missing or corrupt files, broken lineage, templates absent
from the catalog) becomes an ``issues`` row. Files are read with plain dict/JSON code (one
``listdir`` per generation, then only the files present), which keeps 10,000 evaluations at about
a second.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.design.catalog import DEFAULT_SCALE
from pipeline.design.cohort import MEMBERSHIP_COLUMNS
from pipeline.errors import DaydreamError
from pipeline.run.generation import runtime, state_of
from pipeline.ops.ratings import ratings_csv
from pipeline.ids import is_safe_id
from pipeline.store.spend import call_record, catalog_prices
from pipeline.store.state import BLOCKED, DONE, FAILED, STALE
from pipeline.store import GEN_FILES, PARENT_STAGE, STAGES, DataPaths, read_text
from pipeline.reports.stats import finite

UNKNOWN = "unknown"
COPY = "copy"

GENERATION_COLUMNS = MEMBERSHIP_COLUMNS + [
    "status", "error", "error_detail", "finish_reason", "prompt_tokens", "completion_tokens", "cost_usd",
    "cost_source", "duration_s", "attempts", "simulated", "started_at", "finished_at",
]
SCORE_COLUMNS = [
    "evaluation_gen_id", "essay_gen_id", "draft_gen_id", "combo_id", "draft_template", "draft_llm",
    "essay_template", "essay_llm", "essay_mode", "evaluation_template", "evaluation_llm", "draft_replicate",
    "essay_replicate", "evaluation_replicate", "status", "score", "scale_min", "scale_max", "scale_source",
    "score_norm", "error", "error_detail", "simulated", "evaluation_raw_path", "essay_parsed_path",
]
ISSUE_COLUMNS = ["stage", "gen_id", "issue", "detail"]
ESSAY_COLUMNS = ["essay_gen_id", "draft_gen_id", "combo_id", "draft_template", "draft_llm", "essay_template",
                 "essay_llm", "essay_mode", "essay_status", "in_cohort", "essay_simulated"]


@dataclass
class Collected:
    generations: pd.DataFrame  # GENERATION_COLUMNS, one row per membership row
    scores: pd.DataFrame  # SCORE_COLUMNS, one row per evaluation membership row
    essays: pd.DataFrame  # ESSAY_COLUMNS: member essays + essays the cohort's evaluations score
    issues: pd.DataFrame  # ISSUE_COLUMNS


def read_membership(paths: DataPaths, cohort_id: str) -> pd.DataFrame:
    """membership.csv as stripped strings (blank = ""); a missing file is a ``report`` error."""
    path = paths.membership_csv(cohort_id)
    text = read_text(path)
    if text is None:
        raise DaydreamError("report", "membership.csv not found: compile the cohort first", path=path)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DaydreamError("report", f"membership.csv is not valid CSV ({exc})", path=path) from None
    missing = [c for c in MEMBERSHIP_COLUMNS if c not in df.columns]
    if missing:
        raise DaydreamError("report", f"membership.csv lacks column(s) {', '.join(missing)}", path=path)
    df = df[MEMBERSHIP_COLUMNS]
    # human ratings (`daydream ratings import`) are listed apart: compiling rewrites membership.csv
    extra = read_text(ratings_csv(paths, cohort_id))
    if extra is not None:
        try:
            rated = pd.read_csv(io.StringIO(extra), dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DaydreamError("report", f"ratings.csv is not valid CSV ({exc})",
                                path=ratings_csv(paths, cohort_id)) from None
        if all(c in rated.columns for c in MEMBERSHIP_COLUMNS):
            df = pd.concat([df, rated[MEMBERSHIP_COLUMNS]], ignore_index=True)
    return df.astype(str).apply(lambda s: s.str.strip())


def _load_json(path: str) -> tuple[dict | None, str | None]:
    """(object, None) or (None, why it is unusable)."""
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"unreadable ({exc})"
    except json.JSONDecodeError as exc:
        return None, f"corrupt JSON ({exc.msg} at line {exc.lineno})"
    return (obj, None) if isinstance(obj, dict) else (None, "corrupt JSON (expected an object)")


class _Reader:
    """Reads generations once each and records issues while doing so."""

    def __init__(self, paths: DataPaths, catalog):
        self.paths, self.catalog = paths, catalog
        self.issues: list[dict] = []
        self.recs: dict[tuple[str, str], dict] = {}

    def issue(self, stage, gen_id, kind, detail):
        self.issues.append({"stage": stage, "gen_id": gen_id, "issue": kind, "detail": detail})

    def read(self, stage: str, gen_id: str, keys: dict, member: bool) -> dict:
        """One generation's record: membership keys + what its files say."""
        rec = dict(keys, stage=stage, gen_id=gen_id, member=member, files=set(), meta=None, raw=None, parsed=None)
        if stage not in STAGES or not is_safe_id(gen_id):
            self.issue(stage, gen_id, "broken_lineage", f"cannot locate files for stage {stage!r}, gen_id {gen_id!r}")
            return rec
        d = os.path.join(self.paths.gens, stage, gen_id)  # plain strings: pathlib costs more than the read
        try:
            rec["files"] = set(os.listdir(d))
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise DaydreamError("report", f"cannot list generation directory: {exc}", path=d) from None
        for name, slot in (("metadata.json", "meta"), ("raw_metadata.json", "raw"), ("parsed_metadata.json", "parsed")):
            if name in rec["files"]:
                rec[slot], problem = _load_json(os.path.join(d, name))
                if problem:
                    self.issue(stage, gen_id, "corrupt_metadata", f"{name}: {problem}")
        if stage == "evaluation" and rec["parsed"] and finite(rec["parsed"].get("score")) is None \
                and "parsed.txt" in rec["files"]:
            try:
                text = read_text(Path(d) / "parsed.txt") or ""
            except DaydreamError as exc:
                text = ""
                self.issue(stage, gen_id, "corrupt_metadata", f"parsed.txt: {exc.message}")
            rec["parsed"] = dict(rec["parsed"], score=text.strip())
        return rec

    def external(self, stage: str, gen_id: str) -> dict | None:
        """A parent outside the membership (e.g. an existing essay scored anew), from its metadata."""
        if not is_safe_id(gen_id) or not (self.paths.gens / stage / gen_id).is_dir():
            return None
        rec = self.read(stage, gen_id, {}, member=False)
        meta = rec["meta"] or {}
        for k in MEMBERSHIP_COLUMNS[2:]:
            v = meta.get(k)
            rec[k] = "" if v is None else str(v).strip()
        _normalise(rec)
        return rec


def _normalise(rec: dict) -> None:
    """Blank keys → ``unknown``; copy-mode model → ``copy`` (drafts legitimately have no parent)."""
    for k in ("combo_id", "template_id", "replicate", "mode"):
        rec[k] = rec.get(k) or UNKNOWN
    if rec["stage"] != "draft":
        rec["parent_gen_id"] = rec.get("parent_gen_id") or UNKNOWN
    else:
        rec["parent_gen_id"] = rec.get("parent_gen_id") or ""
    if rec["mode"] == COPY:
        rec["llm_model_id"] = COPY
    else:
        rec["llm_model_id"] = rec.get("llm_model_id") or UNKNOWN


def _status(rec: dict) -> None:
    """done | failed | pending, with an error category and detail (validation beats a stale parse)."""
    raw, parsed, files = rec["raw"] or {}, rec["parsed"], rec["files"]
    corrupt = [n for n, slot in (("raw_metadata.json", "raw"), ("parsed_metadata.json", "parsed"))
               if n in files and rec[slot] is None]
    status, error, detail = "pending", "missing", "not generated yet"
    if raw.get("valid") is False:
        reason = str(raw.get("invalid_reason") or "invalid")
        status, detail = "failed", reason
        error = "truncated" if reason == "truncated" or raw.get("truncated") is True else "invalid_output"
    elif parsed is not None and parsed.get("success") is False:
        status, error, detail = "failed", "parse_failure", str(parsed.get("error") or "parser failed")
    elif parsed is not None and parsed.get("success") is True:
        if "parsed.txt" in files:
            status, error, detail = "done", "", ""
        else:
            detail = "parsed_metadata.json says success but parsed.txt is missing"
    elif corrupt:
        error, detail = "corrupt_metadata", f"unreadable {', '.join(corrupt)}"
    rec.update(status=status, error=error, error_detail=detail)


def _classify(rec: dict, state) -> None:
    """The state the one classifier (``generation.state_of``) gives the generation decides its
    status; what the files say (``_status``) only names the error of a failure or a pending one.
    ``stale``: its outcome was made from other inputs than it would be rendered from now (a
    template edited, a parent regenerated); its reason is the detail, and its score is not
    current, so it counts nowhere. ``blocked`` (an ancestor failed) is ``pending`` with the error
    ``upstream_failure``."""
    kind, reason = state.kind, state.reason or ""
    if kind == STALE:
        rec.update(status="stale", error="stale", error_detail=reason)
    elif kind == DONE:
        rec.update(status="done", error="", error_detail="")
    elif kind == FAILED:
        if rec["status"] != "failed":
            rec.update(status="failed", error="failed", error_detail=reason.split("\n")[0])
    elif kind == BLOCKED:
        rec.update(status="pending", error="upstream_failure", error_detail=reason)
    elif rec["status"] != "pending":
        rec.update(status="pending", error="missing", error_detail=reason or "not generated yet")


def _check_score(rec: dict, scale: tuple[float, float, str]) -> None:
    """An evaluation is only done with a finite score inside its scale (never clamped)."""
    lo, hi, _ = scale
    rec["score"] = score = finite((rec["parsed"] or {}).get("score")) if rec["status"] == "done" else None
    if rec["status"] == "done" and score is None:
        rec.update(status="failed", error="parse_failure", error_detail="parsed output holds no score")
    elif score is not None and not lo <= score <= hi:
        rec.update(status="failed", error="score_out_of_scale", error_detail=f"score {score:g} outside {lo:g}–{hi:g}",
                   score=None)


def _check_files(reader: _Reader, rec: dict) -> None:
    """Files a generation in its status must have (pending: the seeded metadata.json)."""
    need = {"done": GEN_FILES, "failed": ("metadata.json", "prompt.txt", "raw.txt", "raw_metadata.json"),
            "stale": ("metadata.json", "parsed_metadata.json"), "pending": ("metadata.json",)}[rec["status"]]
    if "parsed_metadata.json" in rec["files"] and (rec["parsed"] or {}).get("success") is True:
        need = tuple(need) + ("parsed.txt",)
    absent = [f for f in dict.fromkeys(need) if f not in rec["files"]]
    if absent and rec["stage"] in STAGES and is_safe_id(rec["gen_id"]):
        reader.issue(rec["stage"], rec["gen_id"], "missing_file", ", ".join(absent))


def _check_lineage(reader: _Reader, rec: dict) -> None:
    """metadata.json must agree with membership on every key it records."""
    meta = rec["meta"]
    if meta is None:
        return
    for k in ("parent_gen_id", "combo_id", "template_id", "llm_model_id", "replicate", "mode"):
        if k not in meta:
            continue
        mv = "" if meta[k] is None else str(meta[k]).strip()
        rv = rec[k]
        if k == "llm_model_id" and rec["mode"] == COPY:
            rv = ""
        if k == "parent_gen_id" and rec["stage"] == "draft":
            continue
        if mv != ("" if rv == UNKNOWN else rv):
            reader.issue(rec["stage"], rec["gen_id"], "broken_lineage",
                         f"metadata.json {k}={mv or '(blank)'!s} but membership says {rv}")


def collect(paths: DataPaths, cohort_id: str, catalog=None) -> Collected:
    """Membership + gens store → generations, scores and issues frames. ``catalog`` may be None."""
    m = read_membership(paths, cohort_id)
    reader = _Reader(paths, catalog)
    members: list[dict] = []
    for row in m.itertuples(index=False):
        keys = dict(zip(MEMBERSHIP_COLUMNS, row))
        stage, gen_id = keys.pop("stage") or UNKNOWN, keys.pop("gen_id") or UNKNOWN
        if gen_id == UNKNOWN:
            reader.issue(stage, gen_id, "broken_lineage", "membership row with a blank gen_id")
        rec = reader.read(stage, gen_id, keys, member=True)
        _normalise(rec)
        members.append(rec)
        if (stage, gen_id) in reader.recs and gen_id != UNKNOWN:
            reader.issue(stage, gen_id, "broken_lineage", "listed more than once in membership.csv")
        reader.recs.setdefault((stage, gen_id), rec)

    # Lineage: resolve parents (from membership, else the gens store), evaluations first so that
    # essays found only in the store get their drafts resolved too.
    for stage in ("evaluation", "essay"):
        pstage = PARENT_STAGE[stage]
        for rec in [r for r in reader.recs.values() if r["stage"] == stage]:
            pid = rec["parent_gen_id"]
            if pid == UNKNOWN:
                reader.issue(stage, rec["gen_id"], "broken_lineage", "blank parent_gen_id")
            elif (pstage, pid) not in reader.recs:
                ext = reader.external(pstage, pid)
                if ext is None:
                    reader.issue(stage, rec["gen_id"], "broken_lineage",
                                 f"parent {pstage} {pid} is neither in the cohort nor in the gens store")
                else:
                    reader.recs[(pstage, pid)] = ext

    every = members + [r for r in reader.recs.values() if not r["member"]]
    # without a catalog nothing can be rendered to compare with: the files alone say (no stale)
    rt, memo = (None if catalog is None else runtime(paths)), {}
    for stage in STAGES:  # parents first, so upstream failures propagate down
        for rec in [r for r in every if r["stage"] == stage]:
            _status(rec)
            if rt is not None and rec["meta"] is not None:  # else the files alone say (an issue names the problem)
                try:
                    _classify(rec, state_of(rt, stage, rec["gen_id"], memo))
                except DaydreamError as exc:  # it cannot be rendered now (a template gone, say)
                    reader.issue(stage, rec["gen_id"], "catalog_error", exc.message)
            parent = reader.recs.get((PARENT_STAGE.get(stage), rec["parent_gen_id"]))
            if rec["status"] == "pending" and rec["error"] == "missing" and parent is not None:
                if parent["status"] == "failed" or parent["error"] == "upstream_failure":
                    rec["error"], rec["error_detail"] = "upstream_failure", f"{parent['stage']} {parent['gen_id']} failed"
                elif parent["status"] == "pending":
                    rec["error_detail"] = f"waiting for {parent['stage']} {parent['gen_id']}"
    scale_of = _scales(reader, members)
    for rec in every:
        rec["simulated"] = _simulated(rec, catalog)
        if rec["stage"] == "evaluation":
            _check_score(rec, scale_of.get(rec["gen_id"], (*DEFAULT_SCALE, "default")))
    for rec in members:
        _check_files(reader, rec)
        _check_lineage(reader, rec)
        if rec["status"] == "failed":
            reader.issue(rec["stage"], rec["gen_id"], "failed", f"{rec['error']}: {rec['error_detail']}")

    gens = _generations_frame(members, catalog)
    scores = _scores_frame(reader, members, scale_of)
    essays = _essays_frame(reader, members)
    issues = pd.DataFrame(reader.issues, columns=ISSUE_COLUMNS)
    return Collected(gens, scores, essays, issues.drop_duplicates(ignore_index=True))


def _scales(reader: _Reader, members: list[dict]) -> dict:
    """Scale per evaluation: catalog template → parsed_metadata scale → 0–9 (flagged)."""
    cat = reader.catalog
    out, unknown, mismatch = {}, {}, {}
    for rec in members:
        if rec["stage"] != "evaluation":
            continue
        t = rec["template_id"]
        tpl = None if cat is None else cat.templates.get("evaluation", {}).get(t)
        p = rec["parsed"] or {}
        plo, phi = finite(p.get("scale_min")), finite(p.get("scale_max"))
        pscale = (plo, phi) if plo is not None and phi is not None and phi > plo else None
        if tpl is not None:
            scale = (float(tpl.score_min), float(tpl.score_max), "catalog")
            if pscale and pscale != scale[:2]:
                mismatch.setdefault(t, set()).add(pscale)
        elif pscale:
            scale = (*pscale, "parsed_metadata")
            unknown[t] = unknown.get(t, 0) + 1
        else:
            scale = (*DEFAULT_SCALE, "default")
            unknown[t] = unknown.get(t, 0) + 1
        out[rec["gen_id"]] = scale
    for t, n in unknown.items():
        if cat is not None:
            reader.issue("evaluation", "", "unknown_template",
                         f"template {t} ({n} evaluations) is not in the catalog; scale taken from parsed_metadata.json or 0–9")
    for t, scales in mismatch.items():
        reader.issue("evaluation", "", "scale_mismatch",
                     f"template {t}: some evaluations were parsed on scale(s) "
                     f"{', '.join(f'{a:g}–{b:g}' for a, b in sorted(scales))}, the catalog now says otherwise")
    if cat is not None:
        seen = set()
        for rec in members:
            st, t, mdl = rec["stage"], rec["template_id"], rec["llm_model_id"]
            if st in ("draft", "essay") and (st, "t", t) not in seen and t not in cat.templates.get(st, {}):
                seen.add((st, "t", t))
                reader.issue(st, "", "unknown_template", f"template {t} is not in the catalog")
            if st in STAGES and mdl not in (COPY, UNKNOWN) and (st, "m", mdl) not in seen and mdl not in cat.models:
                seen.add((st, "m", mdl))
                reader.issue(st, "", "unknown_model", f"model {mdl} is not in the catalog")
    return out


def _simulated(rec: dict, catalog) -> bool:
    raw = rec["raw"] or {}
    if isinstance(raw.get("simulated"), bool):
        return raw["simulated"]
    model = None if catalog is None else catalog.models.get(rec["llm_model_id"])
    return bool(model is not None and model.simulated)


def _generations_frame(members: list[dict], catalog) -> pd.DataFrame:
    prices = {} if catalog is None else catalog_prices(catalog)
    rows = []
    for rec in members:
        raw = rec["raw"] or {}
        row = {k: rec[k] for k in MEMBERSHIP_COLUMNS + ["status", "error", "error_detail", "simulated"]}
        row["finish_reason"] = raw.get("finish_reason") or ""
        for k in ("prompt_tokens", "completion_tokens", "cost_usd", "duration_s", "attempts"):
            row[k] = finite(raw.get(k))
        call = call_record(raw, prices.get(rec["llm_model_id"]))
        row["cost_source"] = call["cost_source"] if call else ""
        row["started_at"], row["finished_at"] = raw.get("started_at") or "", raw.get("finished_at") or ""
        rows.append(row)
    df = pd.DataFrame(rows, columns=GENERATION_COLUMNS)
    for k in ("prompt_tokens", "completion_tokens", "attempts"):
        df[k] = pd.to_numeric(df[k]).astype("Int64")
    for k in ("cost_usd", "duration_s"):
        df[k] = pd.to_numeric(df[k]).astype(float)
    df["simulated"] = df["simulated"].astype(bool)
    return df


_NONE = {"gen_id": UNKNOWN, "template_id": UNKNOWN, "llm_model_id": UNKNOWN, "mode": UNKNOWN, "replicate": UNKNOWN,
         "combo_id": UNKNOWN, "parent_gen_id": UNKNOWN, "status": "not_found", "files": set(), "simulated": False,
         "stage": "", "member": False}


def _essays_frame(reader: _Reader, members: list[dict]) -> pd.DataFrame:
    ids = [r["gen_id"] for r in members if r["stage"] == "essay"]
    ids += [r["parent_gen_id"] for r in members if r["stage"] == "evaluation"]
    rows = []
    for eid in dict.fromkeys(ids):
        e = reader.recs.get(("essay", eid), _NONE)
        d = reader.recs.get(("draft", e["parent_gen_id"]), _NONE)
        combo = next((x["combo_id"] for x in (e, d) if x["combo_id"] != UNKNOWN), UNKNOWN)
        rows.append([eid, e["parent_gen_id"], combo, d["template_id"], d["llm_model_id"], e["template_id"],
                     e["llm_model_id"], e["mode"], e["status"], e["member"], bool(e["simulated"] or d["simulated"])])
    return pd.DataFrame(rows, columns=ESSAY_COLUMNS)


def _scores_frame(reader: _Reader, members: list[dict], scale_of: dict) -> pd.DataFrame:
    rows = []
    for v in members:
        if v["stage"] != "evaluation":
            continue
        e = reader.recs.get(("essay", v["parent_gen_id"]), _NONE)
        d = reader.recs.get(("draft", e["parent_gen_id"]), _NONE)
        lo, hi, source = scale_of[v["gen_id"]]
        score = v["score"]
        combo = next((x["combo_id"] for x in (v, e, d) if x["combo_id"] != UNKNOWN), UNKNOWN)
        rows.append({
            "evaluation_gen_id": v["gen_id"], "essay_gen_id": v["parent_gen_id"], "draft_gen_id": e["parent_gen_id"],
            "combo_id": combo, "draft_template": d["template_id"], "draft_llm": d["llm_model_id"],
            "essay_template": e["template_id"], "essay_llm": e["llm_model_id"], "essay_mode": e["mode"],
            "evaluation_template": v["template_id"], "evaluation_llm": v["llm_model_id"],
            "draft_replicate": d["replicate"], "essay_replicate": e["replicate"], "evaluation_replicate": v["replicate"],
            "status": v["status"], "score": score, "scale_min": lo, "scale_max": hi, "scale_source": source,
            "score_norm": None if score is None else (score - lo) / (hi - lo),
            "error": v["error"], "error_detail": v["error_detail"],
            "simulated": bool(v["simulated"] or e["simulated"] or d["simulated"]),
            "evaluation_raw_path": f"gens/evaluation/{v['gen_id']}/raw.txt" if "raw.txt" in v["files"] else "",
            "essay_parsed_path": f"gens/essay/{e['gen_id']}/parsed.txt" if "parsed.txt" in e["files"] else "",
        })
    df = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    for k in ("score", "scale_min", "scale_max", "score_norm"):
        df[k] = pd.to_numeric(df[k]).astype(float)
    df["simulated"] = df["simulated"].astype(bool)
    return df
