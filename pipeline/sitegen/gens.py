"""What an essay page shows, read from the cohort's membership and the gens store.

Essay pages show model output verbatim, so they read the files themselves rather than the report
tables: the draft and essay ``parsed.txt``, and each evaluation's ``raw.txt`` (the full reasoning;
``parsed.txt`` of an evaluation holds only the score). A missing or corrupt file never stops the
build: the page says what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import DaydreamError
from ..store import DataPaths, read_csv_rows, read_json, read_text


@dataclass
class Gen:
    """One generation as shown on a page: membership keys, its metadata files and its text."""

    stage: str
    gen_id: str
    parent_gen_id: str
    combo_id: str
    template_id: str
    model_id: str
    replicate: str
    mode: str
    raw_meta: dict = field(default_factory=dict)
    parsed_meta: dict = field(default_factory=dict)
    text: str | None = None          # parsed.txt (draft, essay) or raw.txt (evaluation reasoning)
    problems: list[str] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        return bool(self.raw_meta.get("simulated") or self.parsed_meta.get("simulated"))

    @property
    def status(self) -> str:
        """``ok``, ``failed`` (invalid output or parse failure) or ``pending`` (no response yet)."""
        if self.parsed_meta.get("success") is True:
            return "ok"
        if self.raw_meta or self.parsed_meta:
            return "failed"
        return "pending"

    @property
    def error(self) -> str:
        if self.status != "failed":
            return ""
        return str(self.parsed_meta.get("error") or self.raw_meta.get("invalid_reason")
                   or ("truncated" if self.raw_meta.get("truncated") else "") or "failed")

    @property
    def score(self) -> float | None:
        s = self.parsed_meta.get("score") if self.status == "ok" else None
        return float(s) if isinstance(s, (int, float)) else None


@dataclass
class EssayBundle:
    """An essay with its draft and the cohort's evaluations of it (lineage order)."""

    essay: Gen
    draft: Gen | None
    evaluations: list[Gen]

    @property
    def simulated(self) -> bool:
        return any(g.simulated for g in [self.essay, self.draft, *self.evaluations] if g is not None)


def _json(paths: DataPaths, g: Gen, name: str) -> dict:
    try:
        return read_json(paths.gen_file(g.stage, g.gen_id, name)) or {}
    except DaydreamError as exc:
        g.problems.append(f"{name}: {exc.message}")
        return {}


def _load(paths: DataPaths, row: dict[str, str], with_text: bool) -> Gen:
    g = Gen(stage=row.get("stage", ""), gen_id=row.get("gen_id", ""),
            parent_gen_id=row.get("parent_gen_id", "") or "", combo_id=row.get("combo_id", "") or "",
            template_id=row.get("template_id", "") or "", model_id=row.get("llm_model_id", "") or "",
            replicate=row.get("replicate", "") or "", mode=row.get("mode", "") or "")
    try:
        paths.gen_dir(g.stage, g.gen_id)
    except DaydreamError as exc:
        g.problems.append(exc.message)
        return g
    g.raw_meta = _json(paths, g, "raw_metadata.json")
    g.parsed_meta = _json(paths, g, "parsed_metadata.json")
    if with_text:
        name = "raw.txt" if g.stage == "evaluation" else "parsed.txt"
        try:
            g.text = read_text(paths.gen_file(g.stage, g.gen_id, name))
        except DaydreamError as exc:
            g.problems.append(f"{name}: {exc.message}")
    return g


def load_essays(paths: DataPaths, cohort_id: str) -> list[EssayBundle]:
    """Every essay of the cohort, in membership order, with its draft and evaluations."""
    path = paths.membership_csv(cohort_id)
    if not path.exists():
        raise DaydreamError("site", "cohort has no membership.csv (compile it first)", path=path)
    rows = read_csv_rows(path)
    drafts: dict[str, Gen] = {}
    essays: list[Gen] = []
    evals: dict[str, list[Gen]] = {}
    for row in rows:
        stage = row.get("stage")
        if stage == "draft":
            g = _load(paths, row, with_text=True)
            drafts[g.gen_id] = g
        elif stage == "essay":
            essays.append(_load(paths, row, with_text=True))
        elif stage == "evaluation":
            g = _load(paths, row, with_text=True)
            evals.setdefault(g.parent_gen_id, []).append(g)
    return [EssayBundle(e, drafts.get(e.parent_gen_id), evals.get(e.gen_id, [])) for e in essays]
