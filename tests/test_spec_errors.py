"""Malformed specs: each one is a single DaydreamError naming the spec file, the rule or axis and
the offending value; the ``design`` command turns it into one ``error[...]`` line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import DaydreamError
from pipeline.design.spec import compile_design, load_spec

AXES = "axes:\n  draft_llm: [m1, m2]\n  evaluation_llm: [e1, e2]\n"


def pair(body: str) -> str:
    return AXES + "rules:\n  pairs:\n    p1: " + body + "\n"


def tuple_rule(body: str, axes: str = AXES) -> str:
    return axes + "rules:\n  tuples:\n    t1: " + body + "\n"


GOLDEN = "[dearth-ai-discoveries, default-mode-network, economic-innovation-models, economic-moat, generator-verifier-gap]"
TUPLE_AXES = "{axes: [draft_llm, essay_llm], items: '@file:items.csv'}"

# (id, spec text, helper files next to the spec, error code, substrings the message must contain)
CASES = [
    # document and top level
    ("malformed-yaml", "axes:\n  a: [x, y\n", {}, "spec", ["invalid YAML", "line"]),
    # libyaml's message for a tab does not name it; a rejected document is read again by the
    # pure-Python parser, whose does
    ("tab-indent", "axes:\n\tdraft_llm: [m1]\n", {}, "spec", ["invalid YAML", "line 2", "'\\t'"]),
    ("not-a-mapping", "- axes\n- rules\n", {}, "spec", ["must be a mapping", "a list"]),
    ("unknown-top-level-key", AXES + "axis:\n  x: [1]\n", {}, "spec", ["unknown top-level key 'axis'"]),
    ("duplicate-yaml-key", AXES + "rules:\n  pairs: {}\nrules: {}\n", {}, "spec", ["duplicate key 'rules'"]),
    ("no-axes", "rules: {}\n", {}, "spec", ["declares no axes"]),
    # axes
    ("axes-not-mapping", "axes: [a, b]\n", {}, "spec", ["axes", "must be a mapping", "a list"]),
    ("levels-not-list", "axes:\n  draft_llm: m1\n", {}, "spec", ["axes.draft_llm", "must be a list", "'m1'"]),
    ("levels-mapping", "axes:\n  draft_llm: {a: 1}\n", {}, "spec", ["axes.draft_llm", "unknown key 'a'", "levels"]),
    ("empty-axis", "axes:\n  draft_llm: []\n", {}, "spec", ["axes.draft_llm", "no levels"]),
    ("boolean-level", "axes:\n  draft_llm: [m1, yes]\n", {}, "spec", ["axes.draft_llm", "True", "quote it"]),
    ("nested-level", "axes:\n  note: [[a, b]]\nannotations: [note]\n", {}, "spec", ["axes.note", "['a', 'b']"]),
    ("empty-string-level", "axes:\n  note: ['  ']\nannotations: [note]\n", {}, "spec", ["axes.note", "empty value"]),
    ("null-template", "axes:\n  draft_template: [t1, null]\n", {}, "spec", ["axes.draft_template", "null"]),
    ("non-string-axis-name", "axes:\n  1: [a]\n", {}, "spec", ["axes", "key 1"]),
    # replicates
    ("replicate-zero", "axes:\n  draft_replicate: [0]\n", {}, "spec", ["axes.draft_replicate", "0", ">= 1"]),
    ("replicate-negative-count", "axes:\n  essay_replicate: -2\n", {}, "spec", ["axes.essay_replicate", "-2"]),
    ("replicate-fraction", "axes:\n  evaluation_replicate: [1, 1.5]\n", {}, "spec", ["evaluation_replicate", "1.5"]),
    ("replicate-huge-count", "axes:\n  draft_replicate: 100000000000000\n", {}, "spec",
     ["axes.draft_replicate", "100000000000000"]),
    ("design-too-large", "axes:\n" + "".join(f"  a{i}: [{', '.join(map(str, range(10)))}]\n" for i in range(8))
     + "annotations: [" + ", ".join(f"a{i}" for i in range(8)) + "]\n", {}, "spec",
     ["axes", "100000000 rows", "limit"]),
    ("combos-too-many", "combos:\n  - {concepts: [" + ", ".join(f"c{i}" for i in range(60)) + "], level: sentence, k: 30}\n",
     {}, "spec", ["combos[1]", "60 concepts choose 30"]),
    ("replicate-word", "axes:\n  draft_replicate: [one]\n", {}, "spec", ["draft_replicate", "'one'"]),
    ("replicate-in-tuple", tuple_rule("{axes: [draft_llm, draft_replicate], items: [[m1, 0]]}"), {}, "spec",
     ["tuples.t1", "replicate 0"]),
    # unsafe ids
    ("unsafe-dotdot", "axes:\n  draft_llm: ['../x']\n", {}, "unsafe_id", ["axes.draft_llm", "'../x'"]),
    ("unsafe-slash", "axes:\n  essay_template: ['a/b']\n", {}, "unsafe_id", ["axes.essay_template", "'a/b'"]),
    ("unsafe-nul", 'axes:\n  combo_id: ["a\\0b"]\n', {}, "unsafe_id", ["axes.combo_id", "'a\\x00b'"]),
    ("unsafe-too-long", "axes:\n  evaluation_llm: [" + "m" * 129 + "]\n", {}, "unsafe_id",
     ["axes.evaluation_llm", "mmmm"]),
    ("unsafe-axis-name", "axes:\n  'a/b': [x]\n", {}, "unsafe_id", ["axes", "'a/b'"]),
    ("unsafe-catalog-combo-id", "combos:\n  - ids: [ok, '../../etc']\n", {}, "unsafe_id", ["combos[1].ids", "'../../etc'"]),
    ("unsafe-tuple-value", tuple_rule("{axes: [draft_llm, essay_llm], items: [[m1, 'x y']]}"), {}, "unsafe_id",
     ["tuples.t1", "'x y'"]),
    # rules section
    ("rules-not-mapping", AXES + "rules: [pairs]\n", {}, "spec", ["rules", "must be a mapping"]),
    ("unknown-rule-kind", AXES + "rules:\n  pair: {}\n", {}, "spec", ["rules", "unknown rule kind 'pair'"]),
    # subsets
    ("subset-unknown-axis", AXES + "rules:\n  subsets:\n    essay_llm: [m1]\n", {}, "spec",
     ["subsets.essay_llm", "unknown axis 'essay_llm'"]),
    ("subset-removes-all", AXES + "rules:\n  subsets:\n    draft_llm: []\n", {}, "spec",
     ["subsets.draft_llm", "removes every level"]),
    ("subset-unknown-level", AXES + "rules:\n  subsets:\n    draft_llm: [m1, m7]\n", {}, "spec",
     ["subsets.draft_llm", "'m7'", "not a level"]),
    ("subset-not-list", AXES + "rules:\n  subsets:\n    draft_llm: 3\n", {}, "spec", ["subsets.draft_llm", "int 3"]),
    # ties
    ("tie-empty-intersection", "axes:\n  draft_llm: [m1]\n  essay_llm: [m2]\nrules:\n  ties:\n    same: [draft_llm, essay_llm]\n",
     {}, "spec", ["ties.same", "no level in common", "draft_llm, essay_llm"]),
    ("tie-unknown-axis", AXES + "rules:\n  ties:\n    same: [draft_llm, essay_llm]\n", {}, "spec",
     ["ties.same", "unknown axis 'essay_llm'"]),
    ("tie-one-axis", AXES + "rules:\n  ties:\n    same: [draft_llm]\n", {}, "spec", ["ties.same", "at least 2"]),
    ("tie-not-list", AXES + "rules:\n  ties:\n    same: draft_llm\n", {}, "spec", ["ties.same", "'draft_llm'"]),
    ("axis-tied-twice", "axes:\n  a: [1]\n  b: [1]\n  c: [1]\nannotations: [a, b, c]\nrules:\n  ties:\n    t1: [a, b]\n    t2: [b, c]\n",
     {}, "spec", ["ties.t2", "'b'", "ties.t1"]),
    # pairs
    ("pair-body-list", pair("[draft_llm, evaluation_llm]"), {}, "spec", ["pairs.p1", "must be a mapping"]),
    ("pair-unknown-key", pair("{left: draft_llm, right: evaluation_llm, allow: [[m1, e1]]}"), {}, "spec",
     ["pairs.p1", "unknown key 'allow'"]),
    ("pair-missing-allowed", pair("{left: draft_llm, right: evaluation_llm}"), {}, "spec", ["pairs.p1", "'allowed'"]),
    ("pair-value-not-level", pair("{left: draft_llm, right: evaluation_llm, allowed: [[m1, e1], [foo, e2]]}"), {}, "spec",
     ["pairs.p1", "value 'foo' is not a level of axis 'draft_llm'"]),
    ("pair-right-not-level", pair("{left: draft_llm, right: evaluation_llm, allowed: [[m1, e9]]}"), {}, "spec",
     ["pairs.p1", "'e9'", "'evaluation_llm'"]),
    ("pair-unknown-side", pair("{left: ghost, right: evaluation_llm, allowed: [[m1, e1]]}"), {}, "spec",
     ["pairs.p1", "'ghost'", "neither an axis nor a tuple"]),
    ("pair-same-sides", pair("{left: draft_llm, right: draft_llm, allowed: [[m1, m1]]}"), {}, "spec",
     ["pairs.p1", "'draft_llm'"]),
    ("pair-bad-balance", pair("{left: draft_llm, right: evaluation_llm, allowed: [[m1, e1]], balance: middle}"), {}, "spec",
     ["pairs.p1", "'middle'"]),
    ("pair-unbalanced", pair("{left: draft_llm, right: evaluation_llm, allowed: [[m1, e1], [m1, e2], [m2, e1]], balance: left}"),
     {}, "spec", ["pairs.p1", "balance left", "'m1': 2", "'m2': 1"]),
    ("pair-unbalanced-right", pair("{left: draft_llm, right: evaluation_llm, allowed: [[m1, e1], [m2, e1], [m2, e2]], balance: right}"),
     {}, "spec", ["pairs.p1", "balance right", "'e1': 2", "'e2': 1"]),
    ("pair-row-too-long", pair("{left: draft_llm, right: evaluation_llm, allowed: [[m1, e1, x]]}"), {}, "spec",
     ["pairs.p1", "row 1 has 3 values"]),
    ("pair-filtered-away", AXES + "rules:\n  subsets:\n    draft_llm: [m2]\n  pairs:\n    p1: {left: draft_llm, right: evaluation_llm, allowed: [[m1, e1]]}\n",
     {}, "spec", ["pairs.p1", "no allowed pair survives"]),
    ("pair-names-a-tie", "axes:\n  a: [x]\n  b: [x]\n  c: [y]\nannotations: [a, b, c]\nrules:\n  ties:\n    ab: [a, b]\n  pairs:\n    p1: {left: ab, right: c, allowed: [[x, y]]}\n",
     {}, "spec", ["pairs.p1", "'ab'", "name one of its axes"]),
    ("pair-tuple-key-not-unique",
     AXES + "rules:\n  tuples:\n    t1: {axes: [essay_template, essay_llm], items: [[e, m1], [e, m2]]}\n"
     "  pairs:\n    p1: {left: t1, right: draft_llm, allowed: [[e, m1]]}\n",
     {}, "spec", ["pairs.p1", "tuple 't1'", "'e'", "unique"]),
    ("pair-tuple-key-unknown",
     AXES + "rules:\n  tuples:\n    t1: {axes: [essay_template, essay_llm], items: [[e, m1]]}\n"
     "  pairs:\n    p1: {left: t1, right: draft_llm, allowed: [[zz, m1]]}\n",
     {}, "spec", ["pairs.p1", "'zz'", "not a key of tuple 't1'"]),
    ("tie-pair-conflict", "axes:\n  a: [x, y]\n  b: [x, y]\nannotations: [a, b]\nrules:\n  ties:\n    ab: [a, b]\n  pairs:\n    p1: {left: a, right: b, allowed: [[x, y]]}\n",
     {}, "spec", ["ties.ab", "pairs.p1", "no rows"]),
    # tuples
    ("tuple-unknown-key", tuple_rule("{axes: [draft_llm, essay_llm], item: [[m1, x]]}"), {}, "spec",
     ["tuples.t1", "unknown key 'item'"]),
    ("tuple-body-string", tuple_rule("draft_llm"), {}, "spec", ["tuples.t1", "must be a mapping", "'draft_llm'"]),
    ("tuple-wrong-length", tuple_rule("{axes: [draft_llm, essay_llm], items: [[m1, x], [m2]]}"), {}, "spec",
     ["tuples.t1", "row 2 has 1 values", "expected 2"]),
    ("tuple-value-not-level", tuple_rule("{axes: [draft_llm, essay_llm], items: [[zz, x]]}"), {}, "spec",
     ["tuples.t1", "'zz'", "'draft_llm'"]),
    ("tuple-one-axis", tuple_rule("{axes: [draft_llm], items: [[m1]]}"), {}, "spec", ["tuples.t1.axes", "at least 2"]),
    ("tuple-axis-twice", tuple_rule("{axes: [draft_llm, draft_llm], items: [[m1, m1]]}"), {}, "spec",
     ["tuples.t1.axes", "'draft_llm' is listed twice"]),
    ("tuple-bad-key", tuple_rule("{axes: [draft_llm, essay_llm], key: evaluation_llm, items: [[m1, x]]}"), {}, "spec",
     ["tuples.t1", "key 'evaluation_llm'"]),
    ("tuple-row-mapping-typo", tuple_rule("{axes: [draft_llm, essay_llm], items: [{draft_llm: m1, essay_lm: x}]}"), {}, "spec",
     ["tuples.t1", "unknown key 'essay_lm'"]),
    ("tuple-name-is-axis", AXES + "rules:\n  tuples:\n    draft_llm: {axes: [essay_template, essay_llm], items: [[e, m]]}\n",
     {}, "spec", ["tuples.draft_llm", "also an axis"]),
    ("tuple-no-items", tuple_rule("{axes: [draft_llm, essay_llm], items: []}"), {}, "spec", ["tuples.t1", "has no rows"]),
    # output
    ("field-order-unknown", AXES + "output:\n  field_order: [draft_llm, essay_llm]\n", {}, "spec",
     ["output.field_order", "unknown column 'essay_llm'"]),
    ("output-unknown-key", AXES + "output:\n  fields: [draft_llm]\n", {}, "spec", ["output", "unknown key 'fields'"]),
    # combos
    ("combos-not-list", "combos: {concepts: [a, b]}\n", {}, "spec", ["combos", "a mapping"]),
    ("combo-k-too-big", f"combos:\n  - {{concepts: [a, b], level: paragraph, k: 3}}\n", {}, "spec", ["combos[1].k", "3"]),
    ("combo-k-zero", f"combos:\n  - {{concepts: {GOLDEN}, level: paragraph, k: 0}}\n", {}, "spec", ["combos[1].k", "0"]),
    ("combo-unknown-level", "combos:\n  - {concepts: [a, b], level: chapter}\n", {}, "spec", ["combos[1].level", "'chapter'"]),
    ("combo-unknown-key", "combos:\n  - {concepts: [a, b], level: sentence, size: 2}\n", {}, "spec",
     ["combos[1]", "unknown key 'size'"]),
    ("combo-and-axis", "combos:\n  - {ids: [c1]}\naxes:\n  combo_id: [c2]\n", {}, "spec", ["combo_id", "combos"]),
    ("combo-unsafe-concept", "combos:\n  - {concepts: [a, 'b/../c'], level: sentence}\n", {}, "unsafe_id",
     ["combos[1].concepts", "'b/../c'"]),
    # @file includes
    ("include-missing", "axes:\n  draft_llm: '@file:models.csv'\n", {}, "spec", ["axes.draft_llm", "models.csv", "not found"]),
    ("include-escapes", "axes:\n  draft_llm: '@file:../../../outside.txt'\n", {"../../../outside.txt": "m1\n"}, "spec",
     ["axes.draft_llm", "../../../outside.txt", "outside the cohort directory"]),
    ("include-absolute", "axes:\n  draft_llm: '@file:/etc/hostname'\n", {}, "spec", ["/etc/hostname", "outside"]),
    ("include-extension", "axes:\n  draft_llm: '@file:models.xlsx'\n", {"models.xlsx": "m1"}, "spec",
     ["axes.draft_llm", "'.xlsx'"]),
    ("include-empty-name", "axes:\n  draft_llm: '@file:'\n", {}, "spec", ["axes.draft_llm", "names no file"]),
    ("include-multi-column-axis", "axes:\n  draft_llm: '@file:m.csv'\n", {"m.csv": "draft_llm,note\nm1,x\n"}, "spec",
     ["axes.draft_llm", "m.csv", "2 columns"]),
    ("include-tuple-missing-column", tuple_rule(TUPLE_AXES), {"items.csv": "draft_llm,essay_lm\nm1,x\n"}, "spec",
     ["tuples.t1", "items.csv", "no column 'essay_llm'"]),
    ("include-tuple-empty-cell", tuple_rule(TUPLE_AXES), {"items.csv": "essay_llm,draft_llm\nx,m1\n,m2\n"}, "spec",
     ["tuples.t1", "items.csv", "line 3", "empty cell", "'essay_llm'"]),
    ("include-tuple-empty-csv", tuple_rule(TUPLE_AXES), {"items.csv": ""}, "spec", ["tuples.t1", "items.csv", "empty CSV"]),
    ("include-csv-huge-field", "axes:\n  draft_llm: '@file:m.csv'\n", {"m.csv": 'draft_llm\n"' + "m" * 200_000 + '"\n'}, "spec",
     ["axes.draft_llm", "m.csv", "malformed CSV"]),
    ("include-txt-for-rows", pair("{left: draft_llm, right: evaluation_llm, allowed: '@file:p.txt'}"), {"p.txt": "m1\n"},
     "spec", ["pairs.p1", "p.txt", ".txt"]),
    ("include-bad-yaml", "axes:\n  draft_llm: '@file:m.yaml'\n", {"m.yaml": "[m1, \n"}, "spec",
     ["axes.draft_llm", "m.yaml", "invalid YAML"]),
    ("include-bad-json", "axes:\n  draft_llm: '@file:m.json'\n", {"m.json": '["m1",]'}, "spec",
     ["axes.draft_llm", "m.json", "invalid JSON"]),
    ("include-json-not-list", "axes:\n  draft_llm: '@file:m.json'\n", {"m.json": '{"a": 1}'}, "spec",
     ["axes.draft_llm", "m.json", "a mapping"]),
    # unknown axes and annotations
    ("unknown-axis", AXES + "  temprature: [0.5, 0.9]\n", {}, "spec",
     ["axes.temprature", "unknown axis 'temprature'", "closest known name", "annotations: [temprature]"]),
    ("unknown-axis-typo", "axes:\n  draft_templat: [t1]\n", {}, "spec",
     ["axes.draft_templat", "unknown axis 'draft_templat'", "closest known name: 'draft_template'"]),
    ("unknown-tuple-axis", tuple_rule("{axes: [draft_llm, essay_lm], items: [[m1, x]]}"), {}, "spec",
     ["tuples.t1", "unknown axis 'essay_lm'", "closest known name: 'essay_llm'"]),
    ("subset-axis-typo-hint", AXES + "rules:\n  subsets:\n    draft_lm: [m1]\n", {}, "spec",
     ["subsets.draft_lm", "closest known name: 'draft_llm'"]),
    ("annotation-is-design-field", AXES + "annotations: [draft_llm]\n", {}, "spec",
     ["annotations", "'draft_llm' is a design field"]),
    ("annotation-not-an-axis", AXES + "annotations: [batch_label]\n", {}, "spec",
     ["annotations", "'batch_label' is not an axis"]),
    ("annotations-not-list", AXES + "annotations: batch_label\n", {}, "spec", ["annotations", "must be a list"]),
    # pairs with a tuple side
    ("pair-tuple-item-unknown",
     AXES + "rules:\n  tuples:\n    t1: {axes: [essay_template, essay_llm], items: [[e1, m1], [e2, null]]}\n"
     "  pairs:\n    p1: {left: draft_llm, right: t1, allowed: [[m1, [e1, m1]], [m2, [e2, m1]]]}\n",
     {}, "spec", ["pairs.p1", "['e2', 'm1']", "not an item of tuple 't1'"]),
    ("pair-tuple-item-length",
     AXES + "rules:\n  tuples:\n    t1: {axes: [essay_template, essay_llm], items: [[e1, m1]]}\n"
     "  pairs:\n    p1: {left: draft_llm, right: t1, allowed: [[m1, [e1, m1, x]]]}\n",
     {}, "spec", ["pairs.p1", "['e1', 'm1', 'x']", "has 3 values", "2 axes"]),
    ("pair-list-for-axis-side", pair("{left: draft_llm, right: evaluation_llm, allowed: [[m1, [e1, e2]]]}"), {}, "spec",
     ["pairs.p1", "['e1', 'e2']", "'evaluation_llm' is an axis", "tuple"]),
    ("pair-tuple-shares-axis",
     AXES + "rules:\n  tuples:\n    t1: {axes: [draft_llm, essay_llm], items: [[m1, x]]}\n"
     "  pairs:\n    p1: {left: draft_llm, right: t1, allowed: [[m1, [m1, x]]]}\n",
     {}, "spec", ["pairs.p1", "both bind axis 'draft_llm'"]),
    ("pair-tuple-unbalanced",
     AXES + "rules:\n  tuples:\n    t1: {axes: [essay_template, essay_llm], items: [[e1, m1], [e2, m2]]}\n"
     "  pairs:\n    p1: {left: draft_llm, right: t1, balance: right, allowed: [[m1, [e1, m1]], [m2, [e1, m1]], [m2, [e2, m2]]]}\n",
     {}, "spec", ["pairs.p1", "balance right", "['e1', 'm1']: 2", "['e2', 'm2']: 1"]),
    ("pair-tuple-csv-missing-column",
     AXES + "rules:\n  tuples:\n    t1: {axes: [essay_template, essay_llm], items: [[e1, m1]]}\n"
     "  pairs:\n    p1: {left: draft_llm, right: t1, allowed: '@file:p.csv'}\n",
     {"p.csv": "draft_llm,essay_template\nm1,e1\n"}, "spec", ["pairs.p1", "p.csv", "no column 'essay_llm'"]),
    # the earlier system's shapes
    ("axis-mapping-no-levels", "axes:\n  draft_llm: {catalog_lookup: {catalog: models}}\n", {}, "spec",
     ["axes.draft_llm", "missing 'levels'"]),
    ("axis-catalog-lookup-annotation", "axes:\n  note: {levels: [x], catalog_lookup: {catalog: notes}}\nannotations: [note]\n",
     {}, "spec", ["axes.note.catalog_lookup", "only design fields", "remove catalog_lookup"]),
    ("axis-catalog-lookup-string", "axes:\n  draft_llm: {levels: [m1], catalog_lookup: models}\n", {}, "spec",
     ["axes.draft_llm.catalog_lookup", "must be a mapping", "'models'"]),
    ("rule-list-two-keys", AXES + "rules:\n  - subset: {axis: draft_llm, keep: [m1]}\n    tie: {axes: [draft_llm, evaluation_llm]}\n",
     {}, "spec", ["rules[1]", "one key", "subset, tie"]),
    ("rule-list-unknown", AXES + "rules:\n  - pairs: {}\n", {}, "spec", ["rules[1]", "unknown rule 'pairs'"]),
    ("rule-list-string", AXES + "rules:\n  - subset\n", {}, "spec", ["rules[1]", "one key", "'subset'"]),
    ("rule-list-unknown-key", AXES + "rules:\n  - subset: {axis: draft_llm, levels: [m1]}\n", {}, "spec",
     ["rules[1].subset", "unknown key 'levels'"]),
    ("rule-list-subset-twice", AXES + "rules:\n  - subset: {axis: draft_llm, keep: [m1]}\n  - subset: {axis: draft_llm, keep: [m2]}\n",
     {}, "spec", ["rules[2].subset", "'draft_llm' already has a subset"]),
    ("rule-list-pair-name-twice",
     AXES + "rules:\n  - pair: {name: p, left: draft_llm, right: evaluation_llm, allowed: [[m1, e1]]}\n"
     "  - pair: {name: p, left: draft_llm, right: evaluation_llm, allowed: [[m2, e2]]}\n",
     {}, "spec", ["rules[2].pair", "'p' is already defined"]),
    ("rule-list-tuple-no-expand", AXES + "rules:\n  - tuple: {name: t, axes: [essay_template, essay_llm], items: [[e, m]], expand: false}\n",
     {}, "spec", ["rules[1].tuple.expand", "remove expand"]),
    ("rule-list-tie-bad-to", AXES + "rules:\n  - tie: {axes: [draft_llm, evaluation_llm], to: 3}\n", {}, "spec",
     ["rules[1].tie", "to 3"]),
    ("output-expand-false", AXES + "output:\n  expand_pairs: false\n", {}, "spec",
     ["output.expand_pairs", "False", "set it to true"]),
    ("output-keep-tuple-axis", AXES + "output:\n  keep_tuple_axis: true\n", {}, "spec",
     ["output.keep_tuple_axis", "True", "set it to false"]),
    ("replicates-default-column", AXES + "replicates:\n  draft_llm: {count: 2}\n", {}, "spec",
     ["replicates.draft_llm", "'draft_llm_replicate'", "column: draft_replicate"]),
    ("replicates-unknown-axis", AXES + "replicates:\n  ghost: {count: 2, column: draft_replicate}\n", {}, "spec",
     ["replicates.ghost", "'ghost' is not an axis"]),
    ("replicates-column-twice", AXES + "  draft_replicate: 2\nreplicates:\n  draft_llm: {count: 2, column: draft_replicate}\n",
     {}, "spec", ["replicates.draft_llm", "'draft_replicate' is already an axis"]),
    ("replicates-count-zero", AXES + "replicates:\n  draft_llm: {count: 0, column: draft_replicate}\n", {}, "spec",
     ["replicates.draft_llm.count", "0"]),
    ("replicates-not-mapping", AXES + "replicates:\n  draft_llm: 2\n", {}, "spec", ["replicates.draft_llm", "must be a mapping"]),
]


def write(tmp_path: Path, text: str, files: dict[str, str], name: str = "config.yaml") -> Path:
    spec_dir = tmp_path / "data" / "cohorts" / "c1" / "spec"
    spec_dir.mkdir(parents=True)
    for rel, content in files.items():
        target = (spec_dir / rel).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    (spec_dir / name).write_text(text, encoding="utf-8")
    return spec_dir / name


def compile_path(path: Path):
    return compile_design(load_spec(path))


@pytest.mark.parametrize("text, files, code, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_spec(tmp_path, text, files, code, needles):
    path = write(tmp_path, text, files)
    with pytest.raises(DaydreamError) as info:
        compile_path(path)
    err = info.value
    assert err.code == code, err.message
    assert str(path) in err.message and "config.yaml" in err.message
    for needle in needles:
        assert needle in err.message, f"{needle!r} not in {err.message!r}"
    assert "\n" not in err.message


def test_case_ids_are_distinct():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30
    assert len({(c[1], tuple(c[2].items())) for c in CASES}) == len(CASES)


def test_missing_spec_file(tmp_path):
    path = tmp_path / "data" / "cohorts" / "c1" / "spec" / "config.yaml"
    with pytest.raises(DaydreamError) as info:
        load_spec(path)
    assert info.value.code == "spec" and "not found" in info.value.message and "config.yaml" in info.value.message


def test_invalid_json_spec(tmp_path):
    path = write(tmp_path, '{"axes": {"a": [1,]}}', {}, name="config.json")
    with pytest.raises(DaydreamError) as info:
        load_spec(path)
    assert info.value.code == "spec" and "config.json" in info.value.message and "invalid JSON" in info.value.message


def test_duplicate_json_key(tmp_path):
    path = write(tmp_path, '{"axes": {"a": [1]}, "axes": {"b": [2]}}', {}, name="config.json")
    with pytest.raises(DaydreamError, match="duplicate key 'axes'"):
        load_spec(path)


def test_spec_path_is_a_directory(tmp_path):
    path = write(tmp_path, AXES, {})
    with pytest.raises(DaydreamError, match="is a directory; name its config.yaml") as info:
        load_spec(path.parent)
    assert info.value.code == "spec" and "\n" not in info.value.message


def test_toml_spec_is_rejected_with_what_to_write(tmp_path):
    path = write(tmp_path, '[axes]\ndraft_llm = ["m1"]\n', {}, name="config.toml")
    with pytest.raises(DaydreamError, match="TOML specs are not supported; write the same mapping as YAML") as info:
        load_spec(path)
    assert "config.toml" in info.value.message


def test_symlink_escaping_the_cohort_directory(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("m1\n")
    path = write(tmp_path, "axes:\n  draft_llm: '@file:models.txt'\n", {})
    (path.parent / "models.txt").symlink_to(outside)
    with pytest.raises(DaydreamError, match="outside the cohort directory") as info:
        load_spec(path)
    assert "models.txt" in info.value.message


# the design command ------------------------------------------------------------------------

CLI_BAD = {
    "malformed-yaml": ("axes: [x\n", "spec"),
    "unknown-top-level-key": (AXES + "colums: [a]\n", "spec"),
    "pair-value-not-level": (pair("{left: draft_llm, right: evaluation_llm, allowed: [[foo, e1]]}"), "spec"),
    "rules-wrong-type": (AXES + "rules: 3\n", "spec"),
    "unsafe-level": ("axes:\n  draft_template: ['../../x']\n", "unsafe_id"),
    "missing-include": ("axes:\n  draft_llm: '@file:nope.csv'\n", "spec"),
    "unknown-axis": ("axes:\n  draft_templat: [t1]\n", "spec"),
    "tuple-item-unknown": (AXES + "rules:\n  tuples:\n    t: {axes: [essay_template, essay_llm], items: [[e, m]]}\n"
                           "  pairs:\n    p: {left: draft_llm, right: t, allowed: [[m1, [e, x]]]}\n", "spec"),
}


def run_design(spec: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAYDREAM_DATA_ROOT": str(spec.parents[3])}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "design", str(spec), *args],
        capture_output=True, text=True, timeout=120, cwd=spec.parents[4], env=env,
    )


@pytest.mark.parametrize("name", list(CLI_BAD))
def test_cli_design_bad_spec(tmp_path, name):
    text, code = CLI_BAD[name]
    result = run_design(write(tmp_path, text, {}))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error[{code}]: "), result.stderr
    assert "config.yaml" in lines[0]
    assert result.stdout == ""


def test_cli_design_good_spec(tmp_path):
    spec = write(tmp_path, AXES + "rules:\n  pairs:\n    p1: {left: draft_llm, right: evaluation_llm, allowed: [[m1, e2], [m2, e1]]}\n", {})
    result = run_design(spec)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "draft_llm,evaluation_llm\nm1,e2\nm2,e1\n"
    shuffled = run_design(spec, "--format", "jsonl", "--seed", "3", "--limit", "1")
    assert shuffled.returncode == 0, shuffled.stderr
    assert len(shuffled.stdout.splitlines()) == 1
