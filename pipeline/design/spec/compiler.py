"""Compile a loaded spec into design rows (contract §3), and format them. Pure: no I/O.

The design is the Cartesian product of the axes minus every combination a rule forbids. Each rule
becomes a relation (the allowed joint values of some axes): subsets narrow levels, ties and then
pairs and tuples become relations filtered by the narrowed levels, relations sharing an axis are
natural-joined, unrelated groups are multiplied, and the rows are sorted as the plain product
would list them (axis order, last axis varying fastest). The result is a set in a canonical order,
so the order of rules in the file cannot change it, a tie is only a relation (no column of its
own), and a pair on a tied axis joins with the tie and so keeps every tied axis (defects §9.2).

Validation against an axis uses its *declared* levels: a typo is an error, while a value that a
subset or tie removed simply drops the pairs and tuple items that use it.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import operator
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pipeline.errors import DaydreamError
from pipeline.store import csv_text
from pipeline.design.spec.loader import DESIGN_FIELDS, MAX_ROWS, REPLICATE_AXES, Level, Side, Spec, TupleDef

Row = tuple[Level, ...]


@dataclass
class Design:
    """Compiled rows: each a dict over ``columns``; values are strings, or None for a YAML null."""

    columns: list[str]
    rows: list[dict[str, Level]]


@dataclass
class _Relation:
    name: str  # "pairs.p1", for messages
    columns: tuple[str, ...]
    rows: list[Row]


def compile_design(spec: Spec) -> Design:
    """Apply the rules of ``spec`` (fixed order, whatever the file says) and return the rows."""
    return _Compiler(spec).run()


def stream_design(spec: Spec) -> Design:
    """``compile_design`` with the rows as an iterator, made as they are read (the same rows in
    the same order): the first rows of a huge design come at once, in constant memory."""
    return _Compiler(spec).stream()


def count_design(spec: Spec) -> int:
    """How many rows ``compile_design`` would return, without making them: the product of the
    sizes of the independent groups of axes (only rules that share axes are joined)."""
    return _Compiler(spec).count()


def format_design(design: Design, fmt: str = "csv", seed: int | None = None, limit: int | None = None) -> str:
    """CSV or JSONL text of the rows; ``seed`` shuffles reproducibly, ``limit`` applies after it.
    Without a seed only the first ``limit`` rows are read (``design.rows`` may be an iterator)."""
    if limit is not None and limit < 0:
        raise DaydreamError("spec", f"row limit must be >= 0, got {limit}")
    if seed is not None:
        rows = list(design.rows)
        random.Random(seed).shuffle(rows)
        rows = rows if limit is None else rows[:limit]
    else:
        rows = design.rows if limit is None else itertools.islice(design.rows, limit)
    if fmt == "csv":
        return csv_text(design.columns, rows)
    if fmt == "jsonl":
        return "".join(json.dumps({c: r[c] for c in design.columns}, ensure_ascii=False) + "\n" for r in rows)
    raise DaydreamError("spec", f"unknown design format {fmt!r} (expected csv or jsonl)")


def _join(cols: tuple[str, ...], rows: list[Row], other: _Relation) -> tuple[tuple[str, ...], list[Row]]:
    """Natural hash join: linear in the input plus the output."""
    shared = [other.columns.index(c) for c in cols if c in other.columns]
    mine = [cols.index(other.columns[j]) for j in shared]
    rest = [j for j, c in enumerate(other.columns) if c not in cols]
    index: dict[Row, list[Row]] = defaultdict(list)
    for r in other.rows:
        index[tuple(r[j] for j in shared)].append(tuple(r[j] for j in rest))
    out = [r + extra for r in rows for extra in index.get(tuple(r[i] for i in mine), ())]
    return cols + tuple(other.columns[j] for j in rest), out


def _no_value(row: Row) -> Row:
    return tuple(None if v is None or v.lower() in ("none", "null") else v for v in row)


class _Compiler:
    def __init__(self, spec: Spec):
        self.spec = spec
        self.levels = self.declared_levels()  # axis order: declared, then tuple-only axes
        self.live = {a: list(v) for a, v in self.levels.items()}  # narrowed by subsets and ties

    def fail(self, where: str, message: str):
        raise DaydreamError("spec", f"{where}: {message}", path=self.spec.path)

    def run(self) -> Design:
        design = self.stream()
        return Design(design.columns, list(design.rows))

    def stream(self) -> Design:
        """The design with its rows as an iterator, made as they are read."""
        self.apply_subsets()
        relations = self.ties() + self.pairs() + self.tuples()
        columns = self.column_order()
        order = list(self.levels)
        vectors = self.product(order, self.parts(order, relations))
        if len(columns) < 2:  # itemgetter returns a bare value for one index, fails for none
            return Design(columns, ({c: v[order.index(c)] for c in columns} for v in vectors))
        pick = operator.itemgetter(*[order.index(c) for c in columns])
        return Design(columns, (dict(zip(columns, pick(v))) for v in vectors))

    def count(self) -> int:
        """The number of rows, from the sizes of the independent groups of axes (the product is
        never formed): the same validation and the same row-limit error as ``run``."""
        self.apply_subsets()
        relations = self.ties() + self.pairs() + self.tuples()
        self.column_order()
        return math.prod(len(rows) for _, rows in self.parts(list(self.levels), relations))

    # levels -----------------------------------------------------------------------------------
    def declared_levels(self) -> dict[str, list[Level]]:
        """Declared axes, then axes only tuples mention (levels from their items, first seen)."""
        levels = {a: list(v) for a, v in self.spec.axes.items()}
        declared = {a: set(v) for a, v in levels.items()}
        extra: dict[str, dict[Level, None]] = {}
        for name, t in self.spec.tuples.items():
            for i, axis in enumerate(t.axes):
                for item in t.items:
                    if axis not in declared:
                        extra.setdefault(axis, {})[item[i]] = None
                    elif item[i] not in declared[axis]:
                        self.fail(f"tuples.{name}", f"value {item[i]!r} is not a level of axis {axis!r}")
        levels.update((a, list(v)) for a, v in extra.items())
        for name in self.spec.tuples:
            if name in levels:
                self.fail(f"tuples.{name}", f"the tuple's name is also an axis; rename the tuple")
        self.check_axis_names(levels)
        return levels

    def check_axis_names(self, levels: dict[str, list[Level]]) -> None:
        """Every axis is a design field, a replicate axis or a declared annotation: an unknown
        name is almost always a typo, and a typo'd axis silently multiplies or collapses rows."""
        known = (*DESIGN_FIELDS, *REPLICATE_AXES)
        for name in self.spec.annotations:
            if name in known:
                self.fail("annotations", f"{name!r} is a design field, not a free annotation; remove it from annotations")
            if name not in levels:
                self.fail("annotations", f"{name!r} is not an axis; declare it under axes (or remove it from annotations)")
        allowed = set(known) | set(self.spec.annotations)
        for axis in levels:
            if axis in allowed:
                continue
            where = f"axes.{axis}" if axis in self.spec.axes else next(
                f"tuples.{n}" for n, t in self.spec.tuples.items() if axis in t.axes)
            self.fail(where, f"unknown axis {axis!r}{self.closest(axis)}; an axis must be a design field or a "
                             f"replicate axis, or be listed under annotations: [{axis}] to carry a free label")

    def closest(self, name: str) -> str:
        """`` (closest known name: 'x')`` for an unknown axis name."""
        known = [*DESIGN_FIELDS, *REPLICATE_AXES, *self.spec.annotations]
        match = difflib.get_close_matches(name, known, 1, 0.6) or difflib.get_close_matches(name, known, 1, 0)
        return f" (closest known name: {match[0]!r})" if match else ""

    def apply_subsets(self) -> None:
        for axis, keep in self.spec.subsets.items():
            where = f"subsets.{axis}"
            if axis not in self.levels:
                self.fail(where, f"unknown axis {axis!r}{self.closest(axis)}")
            declared = set(self.levels[axis])
            for v in keep:
                if v not in declared:
                    self.fail(where, f"value {v!r} is not a level of axis {axis!r}")
            if not keep:
                self.fail(where, f"removes every level of axis {axis!r}")
            kept = set(keep)
            self.live[axis] = [v for v in self.levels[axis] if v in kept]

    # rules → relations ------------------------------------------------------------------------
    def ties(self) -> list[_Relation]:
        """Tied axes share the intersection of their levels, in the first axis's order."""
        tied_by: dict[str, str] = {}
        relations = []
        for name, axes in self.spec.ties.items():
            where = f"ties.{name}"
            for axis in axes:
                if axis not in self.levels:
                    self.fail(where, f"unknown axis {axis!r}{self.closest(axis)}")
                if axis in tied_by:
                    self.fail(where, f"axis {axis!r} is already tied by ties.{tied_by[axis]}")
                tied_by[axis] = name
            common = set.intersection(*(set(self.live[a]) for a in axes))
            shared = [v for v in self.live[axes[0]] if v in common]
            if not shared:
                self.fail(where, f"axes {', '.join(axes)} have no level in common")
            for axis in axes:
                self.live[axis] = shared
            relations.append(_Relation(where, tuple(axes), [(v,) * len(axes) for v in shared]))
        return relations

    def side(self, name: str, where: str) -> tuple[tuple[str, ...], Callable[[Side], Row]]:
        """A pair side: (the axes its values bind to, a function from a value to their levels).

        A side naming a tuple binds every axis of the tuple: a value is a whole item, or a key
        that picks one item.
        """
        if name in self.spec.tuples:
            return self.spec.tuples[name].axes, self.tuple_side(name, self.spec.tuples[name], where)
        if name in self.levels:
            levels = set(self.levels[name])

            def bind(value: Side) -> Row:
                if value not in levels:
                    self.fail(where, f"value {value!r} is not a level of axis {name!r}")
                return (value,)

            return (name,), bind
        hint = "; name one of its axes" if name in self.spec.ties else self.closest(name)
        self.fail(where, f"{name!r} is neither an axis nor a tuple{hint}")

    def tuple_side(self, name: str, t: TupleDef, where: str) -> Callable[[Side], Row]:
        # A CSV cannot hold a null, so items read from one say `None` where YAML says null; both
        # mean "no value" to the cohort compiler, so they match here and the item is kept as written.
        items = {_no_value(item): item for item in t.items}
        key = t.axes.index(t.key)
        by_key: dict[Level, list[Row]] = defaultdict(list)
        for item in t.items:
            by_key[item[key]].append(item)

        def bind(value: Side) -> Row:
            if isinstance(value, tuple):
                if _no_value(value) not in items:
                    self.fail(where, f"value {list(value)!r} is not an item of tuple {name!r} ({', '.join(t.axes)})")
                return items[_no_value(value)]
            if value not in by_key:
                self.fail(where, f"value {value!r} is not a key of tuple {name!r} (axis {t.key!r})")
            if len(by_key[value]) > 1:
                self.fail(where, f"tuple {name!r} has key {t.key!r} value {value!r} on several items; a pair side "
                                 f"needs unique keys (set `key:` on tuples.{name}, or write the whole item as a list)")
            return by_key[value][0]

        return bind

    def pairs(self) -> list[_Relation]:
        relations = []
        for name, pair in self.spec.pairs.items():
            where = f"pairs.{name}"
            (lcols, lbind), (rcols, rbind) = self.side(pair.left, where), self.side(pair.right, where)
            both = [a for a in lcols if a in rcols]
            if both:
                self.fail(where, f"left and right both bind axis {both[0]!r}")
            bound = list(dict.fromkeys((lbind(left), rbind(right)) for left, right in pair.allowed))
            columns = lcols + rcols
            live = [set(self.live[a]) for a in columns]
            kept = [(l, r) for l, r in bound if all(v in s for v, s in zip(l + r, live))]
            if not kept:
                self.fail(where, "no allowed pair survives the subsets and ties")
            if pair.balance:
                self.check_balance(where, pair.balance, pair.left, pair.right, kept)
            relations.append(_Relation(where, columns, [l + r for l, r in kept]))
        return relations

    def check_balance(self, where: str, balance: str, left: str, right: str, kept: list[tuple[Row, Row]]) -> None:
        for col, (side, name) in enumerate((("left", left), ("right", right))):
            if balance not in (side, "both"):
                continue
            counts = Counter(pair[col] for pair in kept)
            if len(set(counts.values())) > 1:
                shown = ", ".join(f"{v[0] if len(v) == 1 else list(v)!r}: {n}"
                                  for v, n in itertools.islice(counts.items(), 12))
                more = ", ..." if len(counts) > 12 else ""
                self.fail(where, f"balance {side}: values of {name!r} have different numbers of partners "
                                 f"({shown}{more})")

    def tuples(self) -> list[_Relation]:
        relations = []
        for name, t in self.spec.tuples.items():
            live = [set(self.live[a]) for a in t.axes]
            kept = [item for item in t.items if all(v in s for v, s in zip(item, live))]
            if not kept:
                self.fail(f"tuples.{name}", "no item survives the subsets and ties")
            relations.append(_Relation(f"tuples.{name}", t.axes, kept))
        return relations

    # product ----------------------------------------------------------------------------------
    def parts(self, order: list[str], relations: list[_Relation]) -> list[tuple[tuple[str, ...], list[Row]]]:
        """The independent groups of axes: relations that share an axis joined into one, every
        unrelated axis a group of its own. The design is their product; it is checked against
        the row limit here, before anything of that size is made."""
        group = {a: a for a in order}

        def root(a: str) -> str:
            while group[a] != a:
                a = group[a]
            return a

        for rel in relations:
            for axis in rel.columns[1:]:
                group[root(axis)] = root(rel.columns[0])
        members: dict[str, list[_Relation]] = defaultdict(list)
        for rel in relations:
            members[root(rel.columns[0])].append(rel)

        parts: list[tuple[tuple[str, ...], list[Row]]] = []
        for axis in order:
            if root(axis) != axis:
                continue
            rels = members.get(axis)
            if not rels:
                parts.append(((axis,), [(v,) for v in self.live[axis]]))
                continue
            cols, rows = rels[0].columns, rels[0].rows
            pending = rels[1:]
            while pending:  # join in connected order so no step is a needless cross product
                nxt = next(r for r in pending if set(r.columns) & set(cols))
                pending.remove(nxt)
                cols, rows = _join(cols, rows, nxt)
            if not rows:
                self.fail(", ".join(r.name for r in rels), "together allow no rows")
            parts.append((cols, rows))

        total = math.prod(len(rows) for _, rows in parts)
        if total > MAX_ROWS:
            sizes = " x ".join(f"{len(rows)} ({', '.join(cols)})" for cols, rows in parts)
            self.fail("axes", f"the design would have {total} rows ({sizes}); the limit is {MAX_ROWS}")
        return parts

    def product(self, order: list[str], parts: list[tuple[tuple[str, ...], list[Row]]]) -> Iterator[list[Level]]:
        """The rows of the product of ``parts``, lazily, sorted as the plain product would list
        them (axis order, last axis varying fastest): each part sorted once by its own axes."""
        positions = [[order.index(c) for c in cols] for cols, _ in parts]
        rank = [{v: i for i, v in enumerate(self.live[a])} for a in order]
        ordered = []
        for pos, (_, rows) in zip(positions, parts):
            # sort each part by its axes in axis order (a part's columns may be listed in another)
            by_axis = sorted(range(len(pos)), key=pos.__getitem__)
            ordered.append(sorted(rows, key=lambda row: tuple(rank[pos[i]][row[i]] for i in by_axis)))
        if [p for pos in positions for p in pos] == list(range(len(order))):
            # Parts already in axis order (the usual case): the product of the sorted parts is
            # sorted. Equal sort keys mean equal rows, so the order among ties cannot show.
            return (list(itertools.chain.from_iterable(combo)) for combo in itertools.product(*ordered))
        return self.interleaved(len(order), positions, ordered)

    @staticmethod
    def interleaved(width: int, positions: list[list[int]], ordered: list[list[Row]]) -> Iterator[list[Level]]:
        """Sorted rows of a product whose parts interleave axes (a rule over the first and third
        axes, say). Axis by axis, the part owning the axis splits its rows still in play into
        runs of one value each (contiguous: the part is sorted by its axes in axis order), so
        the rows come out in order without the product ever being held or sorted."""
        owner: list[tuple[int, int]] = [(0, 0)] * width  # axis -> (part, column in the part)
        for k, pos in enumerate(positions):
            for j, p in enumerate(pos):
                owner[p] = (k, j)
        vec: list[Level] = [None] * width

        def walk(axis: int, spans: list[tuple[int, int]]) -> Iterator[list[Level]]:
            if axis == width:
                # each part's span holds rows equal on all its axes: one row per choice of them
                for _ in itertools.product(*(range(lo, hi) for lo, hi in spans)):
                    yield list(vec)
                return
            k, j = owner[axis]
            rows, span = ordered[k], spans[k]
            lo, hi = span
            while lo < hi:
                value, end = rows[lo][j], lo + 1
                while end < hi and rows[end][j] == value:
                    end += 1
                vec[axis] = value
                spans[k] = (lo, end)
                yield from walk(axis + 1, spans)
                lo = end
            spans[k] = span

        return walk(0, [(0, len(rows)) for rows in ordered])

    def column_order(self) -> list[str]:
        """``output.field_order`` first, every other axis in axis order."""
        first = self.spec.field_order
        for name in first:
            if name not in self.levels:
                self.fail("output.field_order", f"unknown column {name!r}")
        return list(first) + [a for a in self.levels if a not in first]
