"""What an essay page shows: the report rows of an essay's lineage plus the texts from the store.

Status, score and scale come from the report tables (``generations.csv``, ``scores.csv``) so an
essay page never disagrees with the leaderboard. The texts are read from the gens store because
pages show model output verbatim: the draft and essay ``parsed.txt`` and each evaluation's
``raw.txt`` (the full reasoning; an evaluation's ``parsed.txt`` holds only the score). A missing
or unreadable file never stops the build: the page says what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from pipeline.errors import DaydreamError
from pipeline.store import GEN_FILES, DataPaths, read_text
from pipeline.sitegen.data import records


@dataclass
class Gen:
    """One generation as shown on an essay page (a ``generations.csv`` row, plus scores)."""

    row: dict
    text: str | None = None
    text_problem: str = ""
    score: dict = field(default_factory=dict)  # the scores.csv row of an evaluation
    prompt: str | None = None                  # the rendered prompt (prompt.txt), None when absent


@dataclass
class EssayBundle:
    essay: Gen
    draft: Gen | None
    evaluations: list[Gen]

    @property
    def simulated(self) -> bool:
        return any(bool(g.row.get("simulated")) for g in [self.essay, self.draft, *self.evaluations] if g)


def _text(paths: DataPaths, g: Gen, name: str) -> None:
    """Read ``name`` of ``g`` into ``g.text`` and its prompt into ``g.prompt``; record why the
    text cannot be shown."""
    try:
        g.prompt = read_text(paths.gen_file(g.row["stage"], g.row["gen_id"], "prompt.txt"))
    except DaydreamError:
        g.prompt = None
    try:
        g.text = read_text(paths.gen_file(g.row["stage"], g.row["gen_id"], name))
    except DaydreamError as exc:
        g.text_problem = exc.message
        return
    if g.text is None:
        g.text_problem = f"{name} is missing" if g.row.get("status") != "pending" else "not generated yet"


TAIL = 400  # characters of a failed response shown on the failures page


def failure_files(paths: DataPaths, stage: str, gen_id: str) -> tuple[dict[str, bytes], str]:
    """The files of a failed generation (to publish with the site) and the tail of its response:
    the recorded ``raw_tail_preview`` when there is one, else the end of ``raw.txt``."""
    files: dict[str, bytes] = {}
    d = paths.gen_dir(stage, gen_id)
    for name in GEN_FILES:
        try:
            files[name] = (d / name).read_bytes()
        except OSError:
            continue
    tail = ""
    try:
        meta = json.loads(files.get("parsed_metadata.json", b"{}") or b"{}")
        tail = str(meta.get("raw_tail_preview") or "") if isinstance(meta, dict) else ""
    except ValueError:
        pass
    if not tail and "raw.txt" in files:
        tail = files["raw.txt"].decode("utf-8", "replace")[-TAIL:]
    return files, tail


def _outside_rows(leaderboard: pd.DataFrame, known: set[str]) -> list[dict]:
    """Generation rows for essays the cohort scores but does not list (``in_cohort`` false), and
    their drafts, rebuilt from the leaderboard so those essays get a page too."""
    rows = []
    for r in records(leaderboard):
        if r["essay_gen_id"] in known or r.get("essay_status") == "not_found":
            continue
        common = {"combo_id": r["combo_id"], "replicate": "", "error": "", "error_detail": "",
                  "simulated": bool(r.get("simulated"))}
        rows.append(dict(common, stage="essay", gen_id=r["essay_gen_id"], parent_gen_id=r["draft_gen_id"],
                         template_id=r["essay_template"], llm_model_id=r["essay_llm"], mode=r["essay_mode"],
                         status=r["essay_status"]))
        if r["draft_gen_id"] not in known:
            rows.append(dict(common, stage="draft", gen_id=r["draft_gen_id"], parent_gen_id="",
                             template_id=r["draft_template"], llm_model_id=r["draft_llm"], mode="llm", status=""))
    return rows


def load_essays(paths: DataPaths, generations: pd.DataFrame, scores: pd.DataFrame,
                leaderboard: pd.DataFrame) -> list[EssayBundle]:
    """Every essay of the cohort (membership order, then essays it only scores), with its draft
    and its evaluations' texts."""
    gens = records(generations)
    gens += _outside_rows(leaderboard, {r["gen_id"] for r in gens})
    by_eval = {r["evaluation_gen_id"]: r for r in records(scores)}
    drafts: dict[str, Gen] = {}
    essays: list[Gen] = []
    evals: dict[str, list[Gen]] = {}
    for r in gens:
        g = Gen(r)
        if r["stage"] == "draft":
            _text(paths, g, "parsed.txt")
            drafts.setdefault(r["gen_id"], g)
        elif r["stage"] == "essay":
            _text(paths, g, "parsed.txt")
            essays.append(g)
        elif r["stage"] == "evaluation":
            _text(paths, g, "raw.txt")
            g.score = by_eval.get(r["gen_id"], {})
            evals.setdefault(r["parent_gen_id"], []).append(g)
    for lst in evals.values():
        lst.sort(key=lambda g: (str(g.row["template_id"]), str(g.row["llm_model_id"]), str(g.row["replicate"])))
    return [EssayBundle(e, drafts.get(e.row["parent_gen_id"]), evals.get(e.row["gen_id"], [])) for e in essays]
