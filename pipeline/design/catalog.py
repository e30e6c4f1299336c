"""Read and validate the catalogs in ``data/1_raw`` (contract §2).

The catalog is read once per command and is immutable afterwards. Every id is checked to be a
safe file-name component when read, so nothing built from a catalog can escape the data root.
Template text is read lazily (``Template.text``) but its fingerprint is part of the catalog's, so
editing a template changes what "complete" means for the generations rendered from it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pipeline.errors import DaydreamError
from pipeline.store import STAGES, DataPaths, check_id, file_token, read_csv_rows, read_text
from pipeline.design.structured import OUTPUT_FORMATS

LEVELS = ("sentence", "paragraph", "article")
GENERATORS = ("llm", "copy")
DEFAULT_SCALE = (0.0, 9.0)
DEFAULT_SCORE_LABEL = "SCORE"
# The label is pasted into rubrics and matched by the score parser: keep it to characters that
# need no escaping in either, and short enough to be one line's lead-in.
_SCORE_LABEL = re.compile(r"[A-Za-z0-9_\- ]{1,40}")
_TRUE = ("true", "1", "yes", "")
_FALSE = ("false", "0", "no")


@dataclass(frozen=True)
class Concept:
    id: str
    name: str


@dataclass(frozen=True)
class ComboDef:
    """A set of concepts rendered at one description level; ``k`` is part of its id."""

    concept_ids: tuple[str, ...]
    level: str
    k: int


@dataclass(frozen=True)
class Template:
    stage: str
    id: str
    name: str
    description: str
    parser: str
    generator: str
    path: Path | None
    score_min: float = DEFAULT_SCALE[0]
    score_max: float = DEFAULT_SCALE[1]
    score_label: str = DEFAULT_SCORE_LABEL
    # "json": the evaluation's answer is structured output (pipeline/design/structured.py), else "text"
    output_format: str = "text"
    # Earlier catalogs keep retired templates listed with active=false; compiling a spec that
    # names one is an error rather than silently running a template its author switched off.
    active: bool = True

    @property
    def text(self) -> str | None:
        """The Jinja source, or None (copy mode / missing file; validation reports the latter)."""
        return None if self.path is None else authored_text(self.path)

    @property
    def sha256(self) -> str:
        return hashlib.sha256((self.text or "").encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Model:
    id: str
    model: str
    provider: str
    display_name: str
    temperature: float | None = None
    max_tokens: int | None = None
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None
    # The optional ``endpoint`` column as written: the [llm.<name>] section to call when
    # ``provider`` only names the vendor. Resolve what a model calls with
    # ``config.endpoint_for(model)``, never from this field alone.
    endpoint: str | None = None
    # Share of the price a provider's batch jobs take off (``batch_discount`` column; blank: the
    # usual 0.5 when the endpoint runs batch jobs, see ``spend.batch_prices``).
    batch_discount: float | None = None
    # "json": every evaluation this model makes is asked for structured output, whatever the rubric
    output_format: str = "text"
    catalog_path: Path | None = field(default=None, compare=False, repr=False)  # named in errors

    @property
    def simulated(self) -> bool:
        from pipeline.config import endpoint_for

        try:
            return endpoint_for(self) == "offline"
        except DaydreamError:
            return False  # an unresolvable endpoint is reported by whoever calls it, not here


@dataclass
class Catalog:
    paths: DataPaths
    concepts: dict[str, Concept]
    templates: dict[str, dict[str, Template]]
    models: dict[str, Model]
    combos: dict[str, ComboDef] = field(default_factory=dict)
    _description_files: dict[tuple[str, str], str] = field(default_factory=dict, repr=False, compare=False)

    def template(self, stage: str, template_id: str) -> Template:
        try:
            return self.templates[stage][template_id]
        except KeyError:
            raise DaydreamError(
                "catalog", f"unknown {stage} template {template_id!r}",
                path=self.paths.catalog_csv(f"{stage}_templates.csv"),
            ) from None

    def model(self, model_id: str) -> Model:
        try:
            return self.models[model_id]
        except KeyError:
            raise DaydreamError(
                "catalog", f"unknown model {model_id!r}", path=self.paths.catalog_csv("llm_models.csv")
            ) from None

    def concept_text(self, concept_id: str, level: str) -> str:
        """Description at ``level``, falling back paragraph → sentence → the concept's name."""
        order = [level] + [lv for lv in ("paragraph", "sentence") if lv != level]
        for lv in order:
            text = authored_text(self.description_file(lv, concept_id))
            if text is not None and text.strip():
                return text.strip()
        return self.concepts[concept_id].name

    def description_file(self, level: str, concept_id: str) -> str:
        """The file of a concept's description at ``level`` (``DataPaths.concept_description``),
        built once: each draft's prompt and state look at its concepts' files at every level,
        and a path built with pathlib costs more than the stat it is for."""
        path = self._description_files.get((level, concept_id))
        if path is None:
            path = self._description_files[(level, concept_id)] = str(self.paths.concept_description(level, concept_id))
        return path

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 over every catalog CSV and template file: recorded in each cohort manifest."""
        h = hashlib.sha256()
        for name in sorted(_CSV_FILES):
            h.update(name.encode() + b"\0" + (read_text(self.paths.catalog_csv(name)) or "").encode() + b"\0")
        for stage in STAGES:
            for tid in sorted(self.templates[stage]):
                h.update(f"{stage}/{tid}\0{self.templates[stage][tid].sha256}\0".encode())
        return h.hexdigest()


_TEXTS: dict[str, tuple[tuple, str | None]] = {}  # an authored file -> (its stat when read, its text)


def authored_text(path: Path) -> str | None:
    """A template's or concept description's text (``read_text(authored=True)``), read again
    only once the file changed (its size, modification time or inode): every prompt rendered
    reads its template and, for a draft, its concepts, a handful of files a whole cohort shares,
    so a stat stands in for an open and a read (the same test the classifier's tokens use)."""
    key = os.fspath(path)
    try:
        token = file_token(key)
    except OSError:
        _TEXTS.pop(key, None)
        return read_text(path, authored=True)  # unreadable: its error
    if token is None:  # absent (a level a concept has no description at): not opened as well
        _TEXTS.pop(key, None)
        return None
    seen = _TEXTS.get(key)
    if seen is not None and seen[0] == token:
        return seen[1]
    text = read_text(path, authored=True)
    _TEXTS[key] = (token, text)  # read after the stat: a change in between shows at the next one
    return text


_CSV_FILES = (
    "concepts_metadata.csv", "draft_templates.csv", "essay_templates.csv",
    "evaluation_templates.csv", "llm_models.csv", "combo_mappings.csv",
)


def _rows(path: Path, required: tuple[str, ...], *, optional_file: bool = False) -> list[dict[str, str]]:
    if optional_file and not path.exists():
        return []
    rows = read_csv_rows(path)
    header = set(rows[0].keys()) if rows else set(_header(path))
    missing = [c for c in required if c not in header]
    if missing:
        raise DaydreamError("catalog", f"missing column(s) {', '.join(missing)}", path=path)
    return [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in rows]


def _header(path: Path) -> list[str]:
    text = read_text(path, authored=True) or ""
    first = text.splitlines()[0] if text else ""
    return [c.strip() for c in first.split(",") if c.strip()]


def _unique(path: Path, ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise DaydreamError("catalog", f"duplicate {what} {i!r}", path=path)
        seen.add(i)


def _number(path: Path, row_id: str, column: str, value: str, kind=float):
    if value == "":
        return None
    try:
        return kind(value)
    except ValueError:
        raise DaydreamError("catalog", f"{row_id}: column {column} must be a number, got {value!r}", path=path) from None


def _flag(path: Path, row_id: str, column: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise DaydreamError("catalog", f"{row_id}: column {column} must be true or false, got {value!r}", path=path)


def _score_label(path: Path, row_id: str, value: str) -> str:
    if value == "":
        return DEFAULT_SCORE_LABEL
    if not _SCORE_LABEL.fullmatch(value):
        raise DaydreamError(
            "catalog",
            f"{row_id}: score_label {value!r} must be a short plain label "
            "(letters, digits, spaces, '_' or '-'; at most 40 characters)",
            path=path,
        )
    return value


def load_catalog(paths: DataPaths) -> Catalog:
    """Read every catalog; any malformed row is a ``catalog`` error naming the file and value."""
    if not paths.raw.is_dir():
        raise DaydreamError("catalog", "catalog directory not found (is the data root right?)", path=paths.raw)

    p = paths.catalog_csv("concepts_metadata.csv")
    concepts = {}
    rows = _rows(p, ("concept_id", "name"))
    _unique(p, [r["concept_id"] for r in rows], "concept_id")
    for r in rows:
        cid = check_id(r["concept_id"], "concept_id", path=p)
        concepts[cid] = Concept(cid, r["name"] or cid)

    templates: dict[str, dict[str, Template]] = {}
    for stage in STAGES:
        p = paths.catalog_csv(f"{stage}_templates.csv")
        rows = _rows(p, ("template_id", "template_name", "description", "parser", "generator"))
        _unique(p, [r["template_id"] for r in rows], "template_id")
        templates[stage] = {}
        for r in rows:
            tid = check_id(r["template_id"], "template_id", path=p)
            generator = r["generator"] or "llm"
            if generator not in GENERATORS or (generator == "copy" and stage != "essay"):
                raise DaydreamError("catalog", f"{tid}: generator {generator!r} is not allowed for {stage} templates", path=p)
            lo, hi = DEFAULT_SCALE
            label = DEFAULT_SCORE_LABEL
            output_format = (r.get("output_format") or "").strip().lower() or "text"
            if output_format not in OUTPUT_FORMATS or (output_format == "json" and stage != "evaluation"):
                raise DaydreamError("catalog", f"{tid}: output_format {output_format!r} must be "
                                    + ("text or json" if stage == "evaluation" else "text (json is for evaluations)"), path=p)
            if stage == "evaluation":
                label = _score_label(p, tid, r.get("score_label", ""))
                lo = _number(p, tid, "score_min", r.get("score_min", ""))
                hi = _number(p, tid, "score_max", r.get("score_max", ""))
                lo = DEFAULT_SCALE[0] if lo is None else lo
                hi = DEFAULT_SCALE[1] if hi is None else hi
                if not hi > lo:
                    raise DaydreamError("catalog", f"{tid}: score_max {hi:g} must exceed score_min {lo:g}", path=p)
            templates[stage][tid] = Template(
                stage=stage, id=tid, name=r["template_name"] or tid, description=r["description"],
                parser=r["parser"] or "identity", generator=generator,
                path=None if generator == "copy" else paths.template_file(stage, tid),
                score_min=lo, score_max=hi, score_label=label, output_format=output_format,
                active=_flag(p, tid, "active", r.get("active", "")),
            )

    p = paths.catalog_csv("llm_models.csv")
    rows = _rows(p, ("id", "model", "provider", "display_name"))
    _unique(p, [r["id"] for r in rows], "model id")
    models = {}
    for r in rows:
        mid = check_id(r["id"], "model id", path=p)
        provider = check_id(r["provider"], f"{mid}: provider", path=p)
        endpoint = check_id(r["endpoint"], f"{mid}: endpoint", path=p) if r.get("endpoint") else None
        if not r["model"]:
            raise DaydreamError("catalog", f"{mid}: empty model slug", path=p)
        model_format = (r.get("output_format") or "").strip().lower() or "text"
        if model_format not in OUTPUT_FORMATS:
            raise DaydreamError("catalog", f"{mid}: output_format {model_format!r} must be text or json", path=p)
        models[mid] = Model(
            id=mid, model=r["model"], provider=provider, display_name=r["display_name"] or mid,
            temperature=_number(p, mid, "temperature", r.get("temperature", "")),
            max_tokens=_number(p, mid, "max_tokens", r.get("max_tokens", ""), int),
            input_price_per_mtok=_number(p, mid, "input_price_per_mtok", r.get("input_price_per_mtok", "")),
            output_price_per_mtok=_number(p, mid, "output_price_per_mtok", r.get("output_price_per_mtok", "")),
            endpoint=endpoint, output_format=model_format, catalog_path=p,
            batch_discount=_number(p, mid, "batch_discount", r.get("batch_discount", "")),
        )
        if models[mid].batch_discount is not None and not 0 <= models[mid].batch_discount < 1:
            raise DaydreamError("catalog", f"{mid}: batch_discount must be in [0, 1), got {models[mid].batch_discount:g}",
                                path=p)

    p = paths.catalog_csv("combo_mappings.csv")
    grouped: dict[str, list[dict[str, str]]] = {}
    for r in _rows(p, ("combo_id", "concept_id", "description_level", "k"), optional_file=True):
        grouped.setdefault(check_id(r["combo_id"], "combo_id", path=p), []).append(r)
    combos = {}
    for cid, rs in grouped.items():
        levels = {r["description_level"] for r in rs}
        ks = {r["k"] for r in rs}
        if len(levels) != 1 or len(ks) != 1 or next(iter(levels)) not in LEVELS:
            raise DaydreamError("catalog", f"{cid}: rows disagree on description_level/k or the level is unknown", path=p)
        k = _number(p, cid, "k", next(iter(ks)), int)
        combos[cid] = ComboDef(tuple(check_id(r["concept_id"], "concept_id", path=p) for r in rs), next(iter(levels)), k)

    return Catalog(paths=paths, concepts=concepts, templates=templates, models=models, combos=combos)
