"""Load a cohort spec (contract §3): parse YAML/JSON, resolve ``@file:`` includes, check structure.

Every file read of the DSL happens here, so ``compile_design`` stays pure. Values are normalised
on the way in (levels become strings, replicate levels canonical integers, id-like levels checked
for safety) because this is the one place that knows which axis each value belongs to. Semantic
checks that need the whole spec (unknown axes, values outside an axis) belong to the compiler.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..catalog import ComboDef  # one type for combos, whether a spec or the catalog defines them
from ..errors import DaydreamError
from ..ids import combo_id
from ..store import check_id

Level = str | None  # None is "no value" (YAML null), e.g. the essay_llm of a copy-mode essay

TOP_KEYS = ("axes", "rules", "output", "combos")
RULE_KINDS = ("subsets", "ties", "pairs", "tuples")
PAIR_KEYS = ("left", "right", "allowed", "balance")
TUPLE_KEYS = ("axes", "items", "key")
OUTPUT_KEYS = ("field_order",)
BALANCES = ("left", "right", "both")
COMBO_LEVELS = ("sentence", "paragraph", "article")
REPLICATE_AXES = ("draft_replicate", "essay_replicate", "evaluation_replicate")
ID_SUFFIXES = ("_id", "_template", "_llm", "_replicate")  # levels of these axes name files
NOT_NULL_SUFFIXES = ("_id", "_template", "_replicate")
INCLUDE = "@file:"
INCLUDE_TYPES = (".csv", ".txt", ".json", ".yaml", ".yml")
MAX_ROWS = 10_000_000  # a design (or combo enumeration) beyond this is a mistake, not an experiment
MAX_REPLICATES = 10_000
_INT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class PairDef:
    """``left``/``right`` name an axis or a tuple rule; ``allowed`` rows are (left, right).

    A side naming a tuple takes values of that tuple's ``key`` axis, so the pair couples whole
    tuple rows. In a CSV of allowed pairs, the columns are the side names as written.
    """

    left: str
    right: str
    allowed: tuple[tuple[Level, Level], ...]
    balance: str | None


@dataclass(frozen=True)
class TupleDef:
    """Rows over ``axes`` (positional in YAML lists, by name in mappings and CSV headers).

    ``key`` (default: the first axis) identifies a row when a pair names the tuple as one of its
    sides; its values must then be unique among the items.
    """

    axes: tuple[str, ...]
    items: tuple[tuple[Level, ...], ...]
    key: str


@dataclass
class Spec:
    """A loaded spec: every include resolved, every value a normalised string (or None).

    ``axes`` is in declaration order, with the ``combo_id`` axis built from ``combos:`` first.
    """

    path: Path
    axes: dict[str, list[Level]]
    subsets: dict[str, list[Level]]
    ties: dict[str, list[str]]
    pairs: dict[str, PairDef]
    tuples: dict[str, TupleDef]
    field_order: list[str]
    combos: dict[str, ComboDef]
    combo_ids_from_catalog: list[str]


def load_spec(path: str | Path) -> Spec:
    """Read and structurally validate the spec at ``path``; any user mistake is a DaydreamError."""
    return _Loader(Path(path)).load()


def _kind(value: object) -> str:
    """How to name a wrongly typed value in a message: its type, and the value when short."""
    if isinstance(value, (dict, list)):
        return "a mapping" if isinstance(value, dict) else "a list"
    if value is None:
        return "nothing"
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"the string {shown}" if isinstance(value, str) else f"{type(value).__name__} {shown}"


class _DuplicateKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        raise _DuplicateKey(f"duplicate key {next(k for k, _ in pairs if k in seen or seen.add(k))!r}")
    return obj


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys: YAML would silently keep the last one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable):
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep)


class _Loader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, message: str):
        raise DaydreamError("spec", f"{where}: {message}" if where else message, path=self.path)

    # documents and includes -------------------------------------------------------------------
    def load(self) -> Spec:
        doc = self.parse(self.read(self.path, "", "spec file"), self.path.suffix.lower(), "")
        if not isinstance(doc, dict):
            self.fail("", f"a spec must be a mapping with keys {', '.join(TOP_KEYS)}, got {_kind(doc)}")
        doc = self.mapping(doc, "", TOP_KEYS, "top-level key")
        rules = self.mapping(doc.get("rules"), "rules", RULE_KINDS, "rule kind")
        output = self.mapping(doc.get("output"), "output", OUTPUT_KEYS, "key")

        combo_order, combos, from_catalog = self.combos(doc.get("combos"))
        axes: dict[str, list[Level]] = {"combo_id": combo_order} if combo_order else {}
        for name, raw in self.mapping(doc.get("axes"), "axes").items():
            self.axis_name(name, "axes")
            if name in axes:
                self.fail("axes.combo_id", "is declared both under axes and by combos:; use one of them")
            axes[name] = self.levels(raw, name, f"axes.{name}", shorthand=True)
            if not axes[name]:
                self.fail(f"axes.{name}", "has no levels")

        tuples = {
            name: self.tuple_def(name, body)
            for name, body in self.mapping(rules.get("tuples"), "tuples").items()
        }
        if not axes and not tuples:
            self.fail("", "declares no axes")
        pairs = {
            name: self.pair_def(name, body, tuples)
            for name, body in self.mapping(rules.get("pairs"), "pairs").items()
        }
        subsets = {
            axis: self.levels(raw, axis, f"subsets.{axis}")
            for axis, raw in self.mapping(rules.get("subsets"), "subsets").items()
        }
        ties = {
            name: self.names(body, f"ties.{name}", at_least=2)
            for name, body in self.mapping(rules.get("ties"), "ties").items()
        }
        field_order = self.names(output.get("field_order", []), "output.field_order")
        return Spec(self.path, axes, subsets, ties, pairs, tuples, field_order, combos, from_catalog)

    def read(self, path: Path, where: str, what: str) -> str:
        try:
            return path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            self.fail(where, f"{what} not found: {path}")
        except (OSError, ValueError) as exc:  # ValueError: undecodable bytes, NUL in the path
            self.fail(where, f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}")

    def parse(self, text: str, suffix: str, where: str) -> object:
        try:
            if suffix == ".json":
                return json.loads(text, object_pairs_hook=_json_object)
            return yaml.load(text, Loader=_UniqueKeyLoader)
        except json.JSONDecodeError as exc:
            self.fail(where, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
        except _DuplicateKey as exc:
            self.fail(where, f"invalid JSON: {exc}")
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            self.fail(where, f"invalid YAML{at}: {problem}")

    def include(self, ref: str, where: str, columns: list[str] | None = None) -> object:
        """Read ``@file:rel/path``: a list of values, or (with ``columns``) rows bound by header."""
        rel = ref[len(INCLUDE):].strip()
        cohort_dir = self.path.resolve().parent.parent
        if not rel:
            self.fail(where, f"{ref!r} names no file")
        try:
            target = (self.path.parent / rel).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: symlink loop
            self.fail(where, f"{ref!r} is not a usable path: {exc}")
        if not target.is_relative_to(cohort_dir):
            self.fail(where, f"{ref!r} resolves outside the cohort directory {cohort_dir}")
        suffix = target.suffix.lower()
        if suffix not in INCLUDE_TYPES:
            expected = ", ".join(INCLUDE_TYPES)
            self.fail(where, f"{ref!r}: unsupported file type {suffix or '(none)'!r} (expected {expected})")
        text = self.read(target, where, f"{ref!r}: file")
        if suffix == ".csv":
            try:
                return self.csv_include(text, ref, where, columns)
            except csv.Error as exc:
                self.fail(where, f"{ref!r}: malformed CSV: {exc}")
        if suffix == ".txt":
            if columns:
                self.fail(where, f"{ref!r}: a .txt file holds one value per line; rows need .csv, .json or .yaml")
            return [line.strip() for line in text.splitlines() if line.strip()]
        return self.parse(text, suffix, f"{where}: {ref!r}")

    def csv_include(self, text: str, ref: str, where: str, columns: list[str] | None) -> list:
        reader = csv.reader(io.StringIO(text))
        header = [h.strip() for h in next(reader, [])]
        if not any(header):
            self.fail(where, f"{ref!r}: empty CSV (a header row is required)")
        if len(set(header)) != len(header):
            self.fail(where, f"{ref!r}: repeated column in header ({', '.join(header)})")
        if columns is None:
            if len(header) != 1:
                shown = ", ".join(header)
                self.fail(where, f"{ref!r}: has {len(header)} columns ({shown}); a list of values needs one")
            return [r[0].strip() for r in reader if r and r[0].strip()]
        for name in columns:
            if name not in header:
                self.fail(where, f"{ref!r}: no column {name!r} (header: {', '.join(header)})")
        index = [header.index(name) for name in columns]
        rows = []
        for r in reader:
            if not any(cell.strip() for cell in r):
                continue
            cells = [r[i].strip() if i < len(r) else "" for i in index]
            if "" in cells:
                column = columns[cells.index("")]
                self.fail(where, f"{ref!r} line {reader.line_num}: empty cell in column {column!r}")
            rows.append(cells)
        return rows

    # values -----------------------------------------------------------------------------------
    def mapping(self, raw: object, where: str, allowed: tuple[str, ...] = (), what: str = "") -> dict:
        """A mapping with string keys (None means empty); with ``allowed``, unknown keys fail."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.fail(where, f"must be a mapping, got {_kind(raw)}")
        for key in raw:
            if not isinstance(key, str):
                self.fail(where, f"key {key!r} must be a string")
            if allowed and key not in allowed:
                self.fail(where, f"unknown {what} {key!r} (expected one of {', '.join(allowed)})")
        return raw

    def axis_name(self, name: object, where: str) -> str:
        if not isinstance(name, str):
            self.fail(where, f"axis name {name!r} must be a string")
        return check_id(name, f"{where}: axis name", path=self.path)

    def names(self, raw: object, where: str, at_least: int = 0) -> list[str]:
        """A list of distinct axis (or column) names."""
        if not isinstance(raw, list):
            self.fail(where, f"must be a list of axis names, got {_kind(raw)}")
        if len(raw) < at_least:
            self.fail(where, f"needs at least {at_least} axes, got {len(raw)}")
        names = [self.axis_name(n, where) for n in raw]
        for n in names:
            if names.count(n) > 1:
                self.fail(where, f"axis {n!r} is listed twice")
        return names

    def value(self, raw: object, axis: str, where: str) -> Level:
        """One level as a string: ``1`` and ``"1"`` are the same level."""
        if raw is None:
            if axis.endswith(NOT_NULL_SUFFIXES):
                self.fail(where, f"null is not a valid value for {axis!r}")
            return None
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            self.fail(where, f"value {raw!r} must be a string or a number (quote it)")
        s = str(raw).strip()
        if not s:
            self.fail(where, "empty value")
        if axis in REPLICATE_AXES:
            if not _INT.fullmatch(s) or int(s) < 1:
                self.fail(where, f"replicate {raw!r} must be an integer >= 1")
            s = str(int(s))
        if axis.endswith(ID_SUFFIXES):
            check_id(s, f"{where}: value", path=self.path)
        return s

    def levels(self, raw: object, axis: str, where: str, shorthand: bool = False) -> list[Level]:
        """Levels of ``axis``: a list or an include, de-duplicated in first-seen order.

        With ``shorthand``, an integer N for a replicate axis means ``[1..N]``.
        """
        if isinstance(raw, str) and raw.startswith(INCLUDE):
            raw, where = self.include(raw, where), f"{where}: {raw!r}"
        if shorthand and axis in REPLICATE_AXES and isinstance(raw, int) and not isinstance(raw, bool):
            if not 1 <= raw <= MAX_REPLICATES:
                self.fail(where, f"replicate count {raw} must be an integer from 1 to {MAX_REPLICATES}")
            raw = list(range(1, raw + 1))
        if not isinstance(raw, list):
            self.fail(where, f"levels must be a list or '@file:...', got {_kind(raw)}")
        return list(dict.fromkeys(self.value(v, axis, where) for v in raw))

    def rows(self, raw: object, columns: list[str], axes: list[str], where: str) -> tuple[tuple[Level, ...], ...]:
        """Rows of values: lists bound by position, mappings and CSV columns bound by name."""
        if isinstance(raw, str) and raw.startswith(INCLUDE):
            raw, where = self.include(raw, where, columns), f"{where}: {raw!r}"
        if not isinstance(raw, list):
            self.fail(where, f"must be a list of rows or '@file:...', got {_kind(raw)}")
        if not raw:
            self.fail(where, "has no rows")
        out = []
        for n, item in enumerate(raw, 1):
            if isinstance(item, dict):
                unknown = [k for k in item if k not in columns]
                missing = [c for c in columns if c not in item]
                if unknown or missing:
                    bad = f"unknown key {unknown[0]!r}" if unknown else f"missing {missing[0]!r}"
                    self.fail(where, f"row {n}: {bad} (expected {', '.join(columns)})")
                item = [item[c] for c in columns]
            if not isinstance(item, list):
                self.fail(where, f"row {n} must be a list of {len(columns)} values, got {_kind(item)}")
            if len(item) != len(columns):
                self.fail(where, f"row {n} has {len(item)} values; expected {len(columns)} ({', '.join(columns)})")
            out.append(tuple(self.value(v, axis, where) for v, axis in zip(item, axes)))
        return tuple(dict.fromkeys(out))

    # rules ------------------------------------------------------------------------------------
    def body(self, raw: object, where: str, keys: tuple[str, ...], required: tuple[str, ...]) -> dict:
        if not isinstance(raw, dict):
            self.fail(where, f"must be a mapping with keys {', '.join(keys)}, got {_kind(raw)}")
        body = self.mapping(raw, where, keys, "key")
        for key in required:
            if key not in body:
                self.fail(where, f"missing {key!r}")
        return body

    def tuple_def(self, name: str, raw: object) -> TupleDef:
        where = f"tuples.{name}"
        body = self.body(raw, where, TUPLE_KEYS, ("axes", "items"))
        axes = self.names(body["axes"], f"{where}.axes", at_least=2)
        key = body.get("key", axes[0])
        if key not in axes:
            self.fail(where, f"key {key!r} is not one of its axes ({', '.join(axes)})")
        return TupleDef(tuple(axes), self.rows(body["items"], axes, axes, where), key)

    def pair_def(self, name: str, raw: object, tuples: dict[str, TupleDef]) -> PairDef:
        where = f"pairs.{name}"
        body = self.body(raw, where, PAIR_KEYS, ("left", "right", "allowed"))
        left, right = (self.axis_name(body[side], f"{where}.{side}") for side in ("left", "right"))
        if left == right:
            self.fail(where, f"left and right are both {left!r}")
        balance = body.get("balance")
        if balance is not None and balance not in BALANCES:
            self.fail(where, f"balance {balance!r} must be one of {', '.join(BALANCES)}")
        # A side naming a tuple takes values of the tuple's key axis.
        axes = [tuples[s].key if s in tuples else s for s in (left, right)]
        return PairDef(left, right, self.rows(body["allowed"], [left, right], axes, where), balance)

    def combos(self, raw: object) -> tuple[list[str], dict[str, ComboDef], list[str]]:
        """``combos:`` entries → (combo_id levels in entry order, enumerated combos, catalog ids)."""
        if raw is None:
            return [], {}, []
        if not isinstance(raw, list) or not raw:
            self.fail("combos", f"must be a non-empty list of {{concepts, level, k}} or {{ids}} entries, "
                                f"got {_kind(raw)}")
        order: list[str] = []
        enumerated: dict[str, ComboDef] = {}
        for n, entry in enumerate(raw, 1):
            where = f"combos[{n}]"
            if isinstance(entry, dict) and "ids" in entry:
                body = self.body(entry, where, ("ids",), ("ids",))
                order += self.levels(body["ids"], "combo_id", f"{where}.ids")
                continue
            body = self.body(entry, where, ("concepts", "level", "k"), ("concepts", "level"))
            concepts = self.levels(body["concepts"], "concept_id", f"{where}.concepts")
            if not concepts:
                self.fail(f"{where}.concepts", "has no concepts")
            level, k = body["level"], body.get("k", len(concepts))
            if level not in COMBO_LEVELS:
                self.fail(f"{where}.level", f"{level!r} is not one of {', '.join(COMBO_LEVELS)}")
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(concepts):
                self.fail(f"{where}.k", f"{k!r} must be an integer from 1 to {len(concepts)} (the number of concepts)")
            count = math.comb(len(concepts), k)
            if count > MAX_ROWS:
                self.fail(where, f"{len(concepts)} concepts choose {k} is {count} combos; the limit is {MAX_ROWS}")
            for subset in itertools.combinations(concepts, k):
                cid = combo_id(subset, level, k)
                enumerated.setdefault(cid, ComboDef(subset, level, k))
                order.append(cid)
        order = list(dict.fromkeys(order))
        return order, enumerated, [c for c in order if c not in enumerated]
