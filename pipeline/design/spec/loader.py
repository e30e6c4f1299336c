"""Load a cohort spec (contract §3): parse YAML/JSON, resolve ``@file:`` includes, check structure.

Every file read of the DSL happens here, so ``compile_design`` stays pure. Values are normalised
on the way in (levels become strings, replicate levels canonical integers, id-like levels checked
for safety) because this is the one place that knows which axis each value belongs to. Semantic
checks that need the whole spec (unknown axes, values outside an axis) belong to the compiler.
Specs written for the earlier system (axis mappings, a list of rules, ``replicates:``, output
flags) are translated here into the same ``Spec``, so the compiler knows one form only.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
import math
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from pipeline.design.catalog import ComboDef  # one type for combos, whether a spec or the catalog defines them
from pipeline.errors import DaydreamError
from pipeline.ids import combo_id
from pipeline.design.search import BUDGET_UNITS, CONFIRM_REPLICATES, STATISTICS, Budget, SearchDef, start_combos
from pipeline.store import check_id

Level = str | None  # None is "no value" (YAML null), e.g. the essay_llm of a copy-mode essay
Columns = list[str] | Callable[[list[str]], list[str]] | None

TOP_KEYS = ("axes", "rules", "output", "combos", "annotations", "replicates", "budget_usd", "search")
SEARCH_KEYS = ("pool", "level", "seed", "start", "select", "expand", "stop", "confirm")
SEARCH_PARTS = {"start": ("k", "sample"), "select": ("top", "statistic"), "expand": ("sample",),
                "stop": ("max_k", "rounds", "target", *(f"budget_{u}" for u in BUDGET_UNITS)),
                "confirm": ("replicates",)}
RULE_KINDS = ("subsets", "ties", "pairs", "tuples")
PAIR_KEYS = ("left", "right", "allowed", "balance")
TUPLE_KEYS = ("axes", "items", "key")
AXIS_KEYS = ("levels", "catalog_lookup")
# The earlier system's output flags: only the behaviour this compiler has is accepted (flag: value).
OUTPUT_FLAGS = {"expand_pairs": True, "expand_ties": True, "expand_tuples": True,
                "keep_pair_axis": False, "keep_tuple_axis": False}
OUTPUT_KEYS = ("field_order", *OUTPUT_FLAGS)
# The earlier system's list of single-rule mappings: the section each becomes, the keys it may hold.
LIST_SECTIONS = {"subset": "subsets", "tie": "ties", "pair": "pairs", "tuple": "tuples"}
LIST_RULES = {
    "subset": ("axis", "keep"),
    "tie": ("axes", "to"),
    "pair": ("name", *PAIR_KEYS),
    "tuple": ("name", "axes", "items", "key", "expand"),
}
BALANCES = ("left", "right", "both")
COMBO_LEVELS = ("sentence", "paragraph", "article")
# Fields the cohort compiler reads from a design row (contract §3); any other axis is a typo
# unless the spec declares it under `annotations:`.
DESIGN_FIELDS = ("combo_id", "draft_template", "draft_llm", "essay_template", "essay_llm",
                 "evaluation_template", "evaluation_llm", "essay_gen_id")
DEFAULT_COMBO_LEVEL = "paragraph"  # a combo's description level when its entry gives none, as in search:
REPLICATE_AXES = ("draft_replicate", "essay_replicate", "evaluation_replicate")
# The earlier system's names of the replicate axes (its spec planner accepted each): read as the
# canonical axis wherever the spec names an axis (axes, rules, output, CSV headers, replicates).
AXIS_ALIASES = {
    "draft_template_replicate": "draft_replicate",
    "draft_rep": "draft_replicate",
    "essay_template_replicate": "essay_replicate",
    "essay_rep": "essay_replicate",
    "evaluation_template_replicate": "evaluation_replicate",
    "evaluation_rep": "evaluation_replicate",
}
ID_SUFFIXES = ("_id", "_template", "_llm", "_replicate")  # levels of these axes name files
NOT_NULL_SUFFIXES = ("_id", "_template", "_replicate")
INCLUDE = "@file:"
INCLUDE_TYPES = (".csv", ".txt", ".json", ".yaml", ".yml")
MAX_ROWS = 10_000_000  # a design (or combo enumeration) beyond this is a mistake, not an experiment
MAX_REPLICATES = 10_000
_INT = re.compile(r"[0-9]+")


Side = Level | tuple[Level, ...]  # a pair side's value: one level, or a whole tuple item


@dataclass(frozen=True)
class PairDef:
    """``left``/``right`` name an axis or a tuple rule; ``allowed`` rows are (left, right).

    A side naming a tuple takes either a whole item (a tuple of values in the tuple's axis order)
    or a value of the tuple's ``key`` axis, so the pair couples whole tuple rows. In a CSV of
    allowed pairs a tuple side is the tuple's axes as columns, or one column named after it
    holding keys.
    """

    left: str
    right: str
    allowed: tuple[tuple[Side, Side], ...]
    balance: str | None


@dataclass(frozen=True)
class TupleDef:
    """Rows over ``axes`` (positional in YAML lists, by name in mappings and CSV headers).

    ``key`` (default: the first axis) identifies a row when a pair names the tuple as one of its
    sides and gives a key instead of a whole item; the keys it uses must then be unique.
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
    annotations: list[str] = field(default_factory=list)  # free axes, not design fields
    budget_usd: float | None = None  # the cohort's spend cap (``daydream run --max-cost`` overrides it)
    search: SearchDef | None = None  # a search cohort: ``combos`` holds round 0 only

    def with_combos(self, combos: dict[str, ComboDef]) -> "Spec":
        """The same spec over ``combos`` (a search's rounds so far) as its combo_id axis."""
        axes = {"combo_id": list(combos), **{k: v for k, v in self.axes.items() if k != "combo_id"}}
        return replace(self, axes=axes, combos=dict(combos))


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


class _UniqueKeys:
    """A YAML loader that rejects duplicate keys: YAML would silently keep the last one."""

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


class _UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    pass


# libyaml's parser where PyYAML has it: the pure-Python one took a tenth of a second of a
# 3,000-generation run's start-up. A document it rejects is read again by the pure-Python one,
# whose messages name the offending character and what it expected.
_FastLoader = type("_FastLoader", (_UniqueKeys, yaml.CSafeLoader), {}) if hasattr(yaml, "CSafeLoader") else None


class _Loader:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, message: str):
        raise DaydreamError("spec", f"{where}: {message}" if where else message, path=self.path)

    # documents and includes -------------------------------------------------------------------
    def load(self) -> Spec:
        if self.path.is_dir():
            self.fail("", "is a directory; name its config.yaml (files such as axes/<axis>.txt are only read "
                          "through includes: write `<axis>: '@file:axes/<axis>.txt'` under axes)")
        if self.path.suffix.lower() == ".toml":
            self.fail("", "TOML specs are not supported; write the same mapping as YAML (config.yaml) or JSON")
        doc = self.parse(self.read(self.path, "", "spec file"), self.path.suffix.lower(), "")
        if not isinstance(doc, dict):
            self.fail("", f"a spec must be a mapping with keys {', '.join(TOP_KEYS)}, got {_kind(doc)}")
        doc = self.earlier_axis_names(self.mapping(doc, "", TOP_KEYS, "top-level key"))
        rules = self.rule_sections(doc.get("rules"))
        field_order = self.output(doc.get("output"))

        combo_order, combos, from_catalog = self.combos(doc.get("combos"))
        search = None
        if doc.get("search") is not None:
            if doc.get("combos") is not None:
                self.fail("search", "a search makes its own combos; remove combos: (or the search: section)")
            search = self.search(doc["search"])
            raw_axes = doc.get("axes") if isinstance(doc.get("axes"), dict) else {}
            for axis in ("combo_id", "essay_gen_id"):
                if axis in raw_axes:
                    self.search_axis(axis)
            combos = {search.combo_id(c): ComboDef(c, search.level, len(c)) for c in start_combos(search)}
            combo_order = list(combos)
        axes: dict[str, list[Level]] = {"combo_id": combo_order} if combo_order else {}
        for name, raw in self.mapping(doc.get("axes"), "axes").items():
            self.axis_name(name, "axes")
            if name in axes:
                self.fail("axes.combo_id", "is declared both under axes and by combos:; use one of them")
            axes[name] = self.axis(raw, name, f"axes.{name}")
            if not axes[name]:
                self.fail(f"axes.{name}", "has no levels")

        tuples = {
            name: self.tuple_def(name, body)
            for name, body in self.mapping(rules.get("tuples"), "tuples").items()
        }
        axes.update(self.replicates(doc.get("replicates"), axes, tuples))
        if not axes and not tuples:
            self.fail("", "declares no axes")
        pairs = {
            name: self.pair_def(name, body, tuples)
            for name, body in self.mapping(rules.get("pairs"), "pairs").items()
        }
        subsets = {
            self.axis_name(axis, "subsets"): self.levels(raw, self.axis_name(axis, "subsets"), f"subsets.{axis}")
            for axis, raw in self.mapping(rules.get("subsets"), "subsets").items()
        }
        ties = {
            name: self.names(body, f"ties.{name}", at_least=2)
            for name, body in self.mapping(rules.get("ties"), "ties").items()
        }
        annotations = self.names(doc.get("annotations") or [], "annotations")
        if search is not None:
            for axis in ("combo_id", "essay_gen_id"):
                if any(axis in t.axes for t in tuples.values()):
                    self.search_axis(axis)
            ruled = [f"subsets.{a}" for a in subsets if a == "combo_id"]
            ruled += [f"ties.{n}" for n, axes_ in ties.items() if "combo_id" in axes_]
            ruled += [f"pairs.{n}" for n, p in pairs.items() if "combo_id" in (p.left, p.right)]
            if ruled:
                self.fail(ruled[0], "a search cohort's combos come from search:; no rule may name combo_id")
            if search.target is not None:  # a confirmation adds draft replicates to one combo
                ruled = [f"subsets.{a}" for a in subsets if a == "draft_replicate"]
                ruled += [f"{kind}.{n}" for kind, rules_ in (("ties", {n: a for n, a in ties.items()}),
                                                             ("tuples", {n: t.axes for n, t in tuples.items()}))
                          for n, a in rules_.items() if "draft_replicate" in a]
                ruled += [f"pairs.{n}" for n, p in pairs.items() if "draft_replicate" in (p.left, p.right)]
                if ruled:
                    self.fail(ruled[0], "a search with a target confirms a combo on fresh draft replicates; "
                                        "no rule may name draft_replicate")
        return Spec(self.path, axes, subsets, ties, pairs, tuples, field_order, combos, from_catalog, annotations,
                    self.budget(doc.get("budget_usd")), search)

    def budget(self, raw: object) -> float | None:
        from pipeline.store.spend import check_cap

        try:
            return check_cap(raw, "budget_usd")
        except ValueError as exc:
            self.fail("", str(exc))

    def search_axis(self, axis: str):
        self.fail(f"axes.{axis}", "a search cohort's combos come from search:, and its essays are generated "
                                  "from them; remove this axis")

    def search(self, raw: object) -> SearchDef:
        """``search:`` → SearchDef; each mistake one message naming the key and the value."""
        body = self.body(raw, "search", SEARCH_KEYS, ("pool", "start", "select", "stop"))
        parts = {name: self.body(body.get(name) or {}, f"search.{name}", keys, ())
                 for name, keys in SEARCH_PARTS.items()}
        pool = tuple(sorted(self.levels(body["pool"], "concept_id", "search.pool")))
        if not pool:
            self.fail("search.pool", "has no concepts")
        level = body.get("level", "paragraph")
        if level not in COMBO_LEVELS:
            self.fail("search.level", f"{level!r} is not one of {', '.join(COMBO_LEVELS)}")

        def integer(part: str, key: str, lo: int, hi: int | None = None, why: str = "") -> int | None:
            where, value = f"search.{part}.{key}", parts[part].get(key)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                self.fail(where, f"{value!r} must be an integer ≥ {lo}{why}")
            if hi is not None and value > hi:
                self.fail(where, f"{value} is larger than the pool ({len(pool)} concepts)")
            return value

        k0 = integer("start", "k", 1, len(pool))
        if k0 is None:
            self.fail("search.start", "missing 'k' (the number of concepts of the first round's combos)")
        top = integer("select", "top", 1, why=" (the number of combos kept per round)")
        if top is None:
            self.fail("search.select", "missing 'top' (the number of combos kept per round)")
        statistic = parts["select"].get("statistic", "mean")
        if statistic not in STATISTICS:
            self.fail("search.select.statistic", f"unknown statistic {statistic!r} (expected one of "
                                                 f"{', '.join(STATISTICS)})")
        stop = parts["stop"]
        if not stop:
            self.fail("search.stop", f"no stopping rule; give at least one of {', '.join(SEARCH_PARTS['stop'])}")
        max_k = integer("stop", "max_k", k0, len(pool), why=f" (the first round's k is {k0})")
        target = stop.get("target")
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                                   or not 0 <= target <= 1):
            self.fail("search.stop.target", f"{target!r} must be a number from 0 to 1 (the mean normalised "
                                            "0-1 score a confirmed combo must reach)")
        usd = stop.get("budget_usd")
        if usd is not None and (isinstance(usd, bool) or not isinstance(usd, (int, float)) or not 0 < usd < math.inf):
            self.fail("search.stop.budget_usd", f"{usd!r} must be an amount in USD > 0")
        limits = {"calls": integer("stop", "budget_calls", 1), "usd": usd}
        budgets = [Budget(unit, limits[unit]) for unit in BUDGET_UNITS if limits[unit] is not None]
        if len(budgets) > 1:
            self.fail("search.stop", "give one budget, budget_calls or budget_usd, not both (a top-level "
                                     "budget_usd caps the run's spend too)")
        budget = budgets[0] if budgets else None
        seed = body.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            self.fail("search.seed", f"{seed!r} must be an integer")
        start_sample = integer("start", "sample", 1)
        if start_sample is None and math.comb(len(pool), k0) > MAX_ROWS:
            self.fail("search.start", f"{len(pool)} concepts choose {k0} is {math.comb(len(pool), k0)} combos; "
                                      f"the limit is {MAX_ROWS}: give a sample (start: {{k: {k0}, sample: N}})")
        confirm = integer("confirm", "replicates", 1, why=" (fresh draft replicates that confirm a combo "
                                                           "reaching the target)")
        if confirm is not None and confirm > MAX_REPLICATES:
            self.fail("search.confirm.replicates", f"{confirm} is more than {MAX_REPLICATES}")
        if "confirm" in body and target is None:
            self.fail("search.confirm", "only a search with a stop.target confirms a combo; add a target or "
                                        "remove confirm")
        return SearchDef(pool, level, k0, top, statistic,
                         start_sample=start_sample, expand_sample=integer("expand", "sample", 1),
                         seed=seed, max_k=max_k, rounds=integer("stop", "rounds", 1),
                         target=None if target is None else float(target), budget=budget,
                         confirm=CONFIRM_REPLICATES if confirm is None else confirm)

    # the earlier system's shapes, translated into this one's ---------------------------------
    def axis(self, raw: object, name: str, where: str) -> list[Level]:
        """``[levels]``, ``'@file:...'``, a replicate count, or ``{levels, catalog_lookup}``."""
        if isinstance(raw, dict):
            body = self.body(raw, where, AXIS_KEYS, ("levels",))
            lookup = body.get("catalog_lookup")
            if lookup is not None:
                # Compiling a cohort checks every design field against data/1_raw anyway, so the
                # lookup is redundant there and meaningless elsewhere.
                if not isinstance(lookup, dict):
                    self.fail(f"{where}.catalog_lookup", f"must be a mapping such as {{catalog: drafts}}, got {_kind(lookup)}")
                if name not in DESIGN_FIELDS:
                    self.fail(f"{where}.catalog_lookup", f"only design fields are checked against catalogs; "
                                                         f"remove catalog_lookup from {name!r}")
            raw = body["levels"]
        return self.levels(raw, name, where, shorthand=True)

    def rule_sections(self, raw: object) -> dict:
        """``rules:`` as sections ``{subsets, ties, pairs, tuples}``, or the earlier system's list."""
        if not isinstance(raw, list):
            return self.mapping(raw, "rules", RULE_KINDS, "rule kind")
        sections: dict[str, dict] = {kind: {} for kind in RULE_KINDS}
        one_key = f"must be a mapping with one key ({', '.join(LIST_RULES)})"
        for n, entry in enumerate(raw, 1):
            where = f"rules[{n}]"
            if not isinstance(entry, dict):
                self.fail(where, f"{one_key}, got {_kind(entry)}")
            if len(entry) != 1:
                self.fail(where, f"{one_key}, got {len(entry)} keys ({', '.join(map(str, entry))})")
            kind, body = next(iter(entry.items()))
            if kind not in LIST_RULES:
                self.fail(where, f"unknown rule {kind!r} (expected one of {', '.join(LIST_RULES)})")
            where = f"{where}.{kind}"
            required = {"subset": ("axis", "keep"), "tie": ("axes",),
                        "pair": ("left", "right", "allowed"), "tuple": ("axes", "items")}[kind]
            body = self.body(body, where, LIST_RULES[kind], required)
            if kind == "subset":
                section, name = "subsets", self.axis_name(body["axis"], f"{where}.axis")
                value = body["keep"]
            else:
                section = LIST_SECTIONS[kind]
                name = body.get("to" if kind == "tie" else "name", f"rules[{n}]")
                if not isinstance(name, str) or not name:
                    self.fail(where, f"{'to' if kind == 'tie' else 'name'} {name!r} must be a non-empty string")
                if body.get("expand", True) is not True:
                    self.fail(f"{where}.expand", f"{body['expand']!r} is not supported: every tuple axis is "
                                                 "always a column; remove expand or set it to true")
                value = body["axes"] if kind == "tie" else {
                    k: v for k, v in body.items() if k in (PAIR_KEYS if kind == "pair" else TUPLE_KEYS)}
            if name in sections[section]:
                what = f"axis {name!r} already has a subset; merge the keep lists" if kind == "subset" \
                    else f"a {kind} named {name!r} is already defined; give each {kind} its own name"
                self.fail(where, what)
            sections[section][name] = value
        return sections

    def output(self, raw: object) -> list[str]:
        """``output.field_order``; the earlier system's flags only with the one behaviour kept."""
        output = self.mapping(raw, "output", OUTPUT_KEYS, "key")
        for flag, only in OUTPUT_FLAGS.items():
            if flag in output and output[flag] is not only:
                why = "rows always carry every axis of a pair, tie and tuple" if only \
                    else "no column holds a whole pair or tuple"
                self.fail(f"output.{flag}", f"{output[flag]!r} is not supported ({why}); "
                                            f"remove {flag} or set it to {str(only).lower()}")
        return self.names(output.get("field_order", []), "output.field_order")

    def replicates(self, raw: object, axes: dict, tuples: dict[str, TupleDef]) -> dict[str, list[Level]]:
        """The earlier ``replicates: {axis: {count, column}}`` as replicate axes (varying fastest)."""
        out: dict[str, list[Level]] = {}
        tuple_axes = {a for t in tuples.values() for a in t.axes}
        for axis, raw_body in self.mapping(raw, "replicates").items():
            where = f"replicates.{axis}"
            body = self.body(raw_body, where, ("count", "column"), ("count",))
            if axis not in axes and axis not in tuple_axes:
                self.fail(where, f"{axis!r} is not an axis")
            column = body.get("column", f"{axis}_replicate")
            column = AXIS_ALIASES.get(column, column) if isinstance(column, str) else column
            if column not in REPLICATE_AXES:
                stage = f"{axis.split('_')[0]}_replicate"
                hint = stage if stage in REPLICATE_AXES else difflib.get_close_matches(str(column), REPLICATE_AXES, 1, 0)[0]
                self.fail(where, f"column {column!r} is not a replicate axis; write `column: {hint}` "
                                 f"(one of {', '.join(REPLICATE_AXES)})")
            if column in axes or column in tuple_axes or column in out:
                self.fail(where, f"column {column!r} is already an axis; give its replicates in one place")
            count = body["count"]
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_REPLICATES:
                self.fail(f"{where}.count", f"{count!r} must be an integer from 1 to {MAX_REPLICATES}")
            out[column] = [str(i) for i in range(1, count + 1)]
        return out

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
            if _FastLoader is not None:
                try:
                    return yaml.load(text, Loader=_FastLoader)
                except yaml.YAMLError:
                    pass
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

    def include(self, ref: str, where: str, columns: Columns = None) -> object:
        """Read ``@file:rel/path``: a list of values, or (with ``columns``) rows bound by header.

        ``columns`` may be a function of the CSV header, for rules whose columns depend on it.
        """
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

    def csv_include(self, text: str, ref: str, where: str, columns: Columns) -> list:
        reader = csv.reader(io.StringIO(text))
        header = [AXIS_ALIASES.get(h.strip(), h.strip()) for h in next(reader, [])]
        if not any(header):
            self.fail(where, f"{ref!r}: empty CSV (a header row is required)")
        if len(set(header)) != len(header):
            self.fail(where, f"{ref!r}: repeated column in header ({', '.join(header)})")
        if columns is None:
            if len(header) != 1:
                shown = ", ".join(header)
                self.fail(where, f"{ref!r}: has {len(header)} columns ({shown}); a list of values needs one")
            return [r[0].strip() for r in reader if r and r[0].strip()]
        if callable(columns):
            columns = columns(header)
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

    def earlier_axis_names(self, doc: dict) -> dict:
        """``doc`` with the axes declared under an earlier alias renamed to their canonical axis."""
        raw_axes = doc.get("axes")
        if not isinstance(raw_axes, dict) or not any(a in AXIS_ALIASES for a in raw_axes):
            return doc
        renamed: dict = {}
        for written, raw in raw_axes.items():
            name = AXIS_ALIASES.get(written, written)
            if name in renamed:
                self.fail(f"axes.{written}", f"declares {name!r}, which another key of axes: declares too "
                                                f"(one is the earlier system's name for it); use one of them")
            renamed[name] = raw
        return {**doc, "axes": renamed}

    def axis_name(self, name: object, where: str) -> str:
        """The axis ``name`` refers to: itself, or the canonical axis of an earlier alias."""
        if not isinstance(name, str):
            self.fail(where, f"axis name {name!r} must be a string")
        return AXIS_ALIASES.get(name) or check_id(name, f"{where}: axis name", path=self.path)

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
        out = [tuple(self.value(v, axis, where) for v, axis in zip(self.row(item, n, columns, where), axes))
               for n, item in enumerate(raw, 1)]
        return tuple(dict.fromkeys(out))

    def row(self, item: object, n: int, columns: list[str], where: str) -> list:
        """Row ``n`` as a list in ``columns`` order: a list by position, or a mapping by name."""
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
        return item

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
        key = AXIS_ALIASES.get(key, key) if isinstance(key, str) else key
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
        return PairDef(left, right, self.pair_rows(body["allowed"], (left, right), tuples, where), balance)

    def pair_rows(self, raw: object, sides: tuple[str, str], tuples: dict[str, TupleDef],
                  where: str) -> tuple[tuple[Side, Side], ...]:
        split: list[list[str]] = []

        def columns(header: list[str]) -> list[str]:
            # A tuple side is its axes as columns, unless a column named after the tuple holds keys.
            split[:] = [list(tuples[s].axes) if s in tuples and s not in header else [s] for s in sides]
            return split[0] + split[1]

        if isinstance(raw, str) and raw.startswith(INCLUDE):
            raw, where = self.include(raw, where, columns), f"{where}: {raw!r}"
            if split:  # a CSV: regroup each flat row into [left, right], a tuple's cells as one list
                n = len(split[0])
                raw = [[r[:n] if n > 1 else r[0], r[n:] if len(split[1]) > 1 else r[n]] for r in raw]
        if not isinstance(raw, list):
            self.fail(where, f"must be a list of [left, right] rows or '@file:...', got {_kind(raw)}")
        if not raw:
            self.fail(where, "has no rows")
        out = [tuple(self.side_value(v, side, tuples, where) for v, side in zip(self.row(item, n, list(sides), where), sides))
               for n, item in enumerate(raw, 1)]
        return tuple(dict.fromkeys(out))

    def side_value(self, raw: object, side: str, tuples: dict[str, TupleDef], where: str) -> Side:
        """A tuple side takes a whole item (a list in the tuple's axis order) or a key value."""
        if side in tuples:
            t = tuples[side]
            if not isinstance(raw, list):
                return self.value(raw, t.key, where)
            if len(raw) != len(t.axes):
                self.fail(where, f"value {raw!r} has {len(raw)} values; tuple {side!r} has {len(t.axes)} axes "
                                 f"({', '.join(t.axes)})")
            return tuple(self.value(v, axis, where) for v, axis in zip(raw, t.axes))
        if isinstance(raw, list):
            self.fail(where, f"value {raw!r} is a list, but {side!r} is an axis; only a side naming a tuple "
                             "rule takes a list of that tuple's values")
        return self.value(raw, side, where)

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
            body = self.body(entry, where, ("concepts", "level", "k"), ("concepts",))
            concepts = self.levels(body["concepts"], "concept_id", f"{where}.concepts")
            if not concepts:
                self.fail(f"{where}.concepts", "has no concepts")
            level, k = body.get("level", DEFAULT_COMBO_LEVEL), body.get("k", len(concepts))
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
