"""Semantics of the spec DSL (contract §3): real spec files in tmp_path, no mocks."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import yaml

from pipeline.ids import combo_id
from pipeline.design.spec import ComboDef, compile_design, format_design, load_spec

GOLDEN_CONCEPTS = [
    "dearth-ai-discoveries",
    "default-mode-network",
    "economic-innovation-models",
    "economic-moat",
    "generator-verifier-gap",
]


def write_spec(tmp_path: Path, doc: dict | str, files: dict[str, str] | None = None, name: str = "config.yaml") -> Path:
    """Write a spec where the project keeps it (data/cohorts/<id>/spec/) plus helper files."""
    spec_dir = tmp_path / "data" / "cohorts" / "c1" / "spec"
    spec_dir.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        (spec_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (spec_dir / rel).write_text(text, encoding="utf-8")
    path = spec_dir / name
    if isinstance(doc, str):
        path.write_text(doc, encoding="utf-8")
    elif name.endswith(".json"):
        path.write_text(json.dumps(doc), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def design(tmp_path: Path, doc: dict | str, files: dict[str, str] | None = None, name: str = "config.yaml"):
    return compile_design(load_spec(write_spec(tmp_path, doc, files, name)))


def tuples_of(d, *columns):
    return [tuple(r[c] for c in columns) for r in d.rows]


# axes and the product ------------------------------------------------------------------------


def test_product_in_declaration_order_last_axis_fastest(tmp_path):
    d = design(tmp_path, {"axes": {"b": ["b1", "b2"], "a": ["a1", "a2", "a3"]}, "annotations": ["a", "b"]})
    assert d.columns == ["b", "a"]
    assert tuples_of(d, "b", "a") == [
        ("b1", "a1"), ("b1", "a2"), ("b1", "a3"), ("b2", "a1"), ("b2", "a2"), ("b2", "a3"),
    ]


def test_levels_are_strings_deduplicated_first_seen(tmp_path):
    d = design(tmp_path, "axes:\n  a: [2, 1, '1', 2, x, 0.5]\nannotations: [a]\n")
    assert [r["a"] for r in d.rows] == ["2", "1", "x", "0.5"]


def test_replicates_shorthand_and_list(tmp_path):
    d = design(tmp_path, {"axes": {"draft_replicate": 3, "essay_replicate": [2, "1", "02"]}})
    assert tuples_of(d, "draft_replicate", "essay_replicate") == [
        (str(i), e) for i in (1, 2, 3) for e in ("2", "1")
    ]


def test_free_form_axis_is_not_held_to_id_rules(tmp_path):
    d = design(tmp_path, {"axes": {"note": ["hello world", "a/b"]}, "annotations": ["note"]})
    assert [r["note"] for r in d.rows] == ["hello world", "a/b"]


def test_json_spec(tmp_path):
    d = design(tmp_path, {"axes": {"a": [1, 2]}, "annotations": ["a"], "rules": {"subsets": {"a": [2]}}}, name="config.json")
    assert d.rows == [{"a": "2"}]


# subsets -------------------------------------------------------------------------------------


def test_subset_keeps_listed_levels_in_axis_order(tmp_path):
    d = design(tmp_path, {"axes": {"a": ["a1", "a2", "a3", "a4"]}, "annotations": ["a"], "rules": {"subsets": {"a": ["a4", "a2"]}}})
    assert [r["a"] for r in d.rows] == ["a2", "a4"]


def test_subset_on_tuple_only_axis(tmp_path):
    doc = {
        "axes": {"x": ["x1"]},
        "annotations": ["x"],
        "rules": {
            "subsets": {"essay_template": ["e2"]},
            "tuples": {"t": {"axes": ["essay_template", "essay_llm"], "items": [["e1", "m1"], ["e2", "m2"]]}},
        },
    }
    assert tuples_of(design(tmp_path, doc), "essay_template", "essay_llm") == [("e2", "m2")]


# ties ----------------------------------------------------------------------------------------


def test_tie_intersection_in_first_axis_order_and_no_tie_column(tmp_path):
    doc = {
        "axes": {"draft_llm": ["m1", "m2", "m3"], "essay_llm": ["m3", "m2", "m9"]},
        "rules": {"ties": {"same_model": ["essay_llm", "draft_llm"]}},
    }
    d = design(tmp_path, doc)
    assert d.columns == ["draft_llm", "essay_llm"]
    assert all("same_model" not in r for r in d.rows)
    assert tuples_of(d, "draft_llm", "essay_llm") == [("m3", "m3"), ("m2", "m2")]


def test_tie_of_three_axes_with_other_axis(tmp_path):
    doc = {
        "axes": {"a": ["1", "2"], "z": ["z1", "z2"], "b": ["2", "1"], "c": ["1", "2", "3"]},
        "annotations": ["a", "b", "c", "z"],
        "rules": {"ties": {"t": ["a", "b", "c"]}},
    }
    d = design(tmp_path, doc)
    assert d.columns == ["a", "z", "b", "c"]
    assert tuples_of(d, "a", "z", "b", "c") == [
        ("1", "z1", "1", "1"), ("1", "z2", "1", "1"), ("2", "z1", "2", "2"), ("2", "z2", "2", "2"),
    ]


# pairs ---------------------------------------------------------------------------------------


def test_pair_allows_only_listed_pairs_and_filters_both_axes(tmp_path):
    doc = {
        "axes": {"draft_llm": ["m1", "m2", "m3"], "x": ["x1", "x2"], "evaluation_llm": ["e1", "e2", "e3"]},
        "annotations": ["x"],
        "rules": {"pairs": {"p": {"left": "draft_llm", "right": "evaluation_llm",
                                  "allowed": [["m2", "e1"], ["m1", "e2"], ["m1", "e1"]]}}},
    }
    d = design(tmp_path, doc)
    assert tuples_of(d, "draft_llm", "x", "evaluation_llm") == [
        ("m1", "x1", "e1"), ("m1", "x1", "e2"), ("m1", "x2", "e1"), ("m1", "x2", "e2"),
        ("m2", "x1", "e1"), ("m2", "x2", "e1"),
    ]
    assert "e3" not in {r["evaluation_llm"] for r in d.rows} and "m3" not in {r["draft_llm"] for r in d.rows}


def test_pair_on_tied_axis_keeps_every_tied_axis(tmp_path):
    doc = {
        "axes": {"draft_llm": ["m1", "m2"], "essay_llm": ["m1", "m2"], "evaluation_llm": ["e1", "e2"]},
        "rules": {
            "ties": {"gen": ["draft_llm", "essay_llm"]},
            "pairs": {"cross": {"left": "essay_llm", "right": "evaluation_llm", "allowed": [["m1", "e2"], ["m2", "e1"]]}},
        },
    }
    d = design(tmp_path, doc)
    assert d.columns == ["draft_llm", "essay_llm", "evaluation_llm"]
    assert d.rows == [
        {"draft_llm": "m1", "essay_llm": "m1", "evaluation_llm": "e2"},
        {"draft_llm": "m2", "essay_llm": "m2", "evaluation_llm": "e1"},
    ]


def test_pair_values_removed_by_subset_are_dropped_not_errors(tmp_path):
    doc = {
        "axes": {"a": ["a1", "a2"], "b": ["b1", "b2"]},
        "annotations": ["a", "b"],
        "rules": {"subsets": {"a": ["a1"]}, "pairs": {"p": {"left": "a", "right": "b", "allowed": [["a1", "b1"], ["a2", "b2"]]}}},
    }
    assert tuples_of(design(tmp_path, doc), "a", "b") == [("a1", "b1")]


def test_balanced_pair_passes(tmp_path):
    allowed = [["m1", "e1"], ["m1", "e2"], ["m2", "e1"], ["m2", "e2"]]
    doc = {"axes": {"a": ["m1", "m2"], "b": ["e1", "e2"]}, "annotations": ["a", "b"],
           "rules": {"pairs": {"p": {"left": "a", "right": "b", "allowed": allowed, "balance": "both"}}}}
    assert len(design(tmp_path, doc).rows) == 4


def test_two_pairs_sharing_an_axis_are_joined(tmp_path):
    doc = {
        "axes": {"a": ["a1", "a2"], "b": ["b1", "b2"], "c": ["c1", "c2"]},
        "annotations": ["a", "b", "c"],
        "rules": {"pairs": {
            "ab": {"left": "a", "right": "b", "allowed": [["a1", "b1"], ["a2", "b2"]]},
            "bc": {"left": "b", "right": "c", "allowed": [["b1", "c2"], ["b2", "c1"], ["b2", "c2"]]},
        }},
    }
    assert tuples_of(design(tmp_path, doc), "a", "b", "c") == [("a1", "b1", "c2"), ("a2", "b2", "c1"), ("a2", "b2", "c2")]


def test_pair_allowed_from_csv_bound_by_header(tmp_path):
    files = {"pairs.csv": "evaluation_llm,note,draft_llm\ne1,x,m2\ne2,y,m1\n"}
    doc = {"axes": {"draft_llm": ["m1", "m2"], "evaluation_llm": ["e1", "e2"]},
           "rules": {"pairs": {"p": {"left": "draft_llm", "right": "evaluation_llm", "allowed": "@file:pairs.csv"}}}}
    assert tuples_of(design(tmp_path, doc, files), "draft_llm", "evaluation_llm") == [("m1", "e2"), ("m2", "e1")]


# tuples --------------------------------------------------------------------------------------

TUPLE_DOC = {
    "axes": {"combo_id": ["c1", "c2"], "essay_template": ["e1", "e2", "e3"]},
    "rules": {"tuples": {"gen": {"axes": ["essay_template", "essay_llm", "essay_replicate"], "items": None}}},
}


def tuple_doc(items):
    doc = json.loads(json.dumps(TUPLE_DOC))
    doc["rules"]["tuples"]["gen"]["items"] = items
    return doc


def test_tuples_couple_axes_and_undeclared_axes_take_levels_from_items(tmp_path):
    d = design(tmp_path, tuple_doc([["e2", "m2", 1], ["e1", "m1", "2"], ["e2", "m2", 1]]))
    assert d.columns == ["combo_id", "essay_template", "essay_llm", "essay_replicate"]
    assert tuples_of(d, "combo_id", "essay_template", "essay_llm", "essay_replicate") == [
        ("c1", "e1", "m1", "2"), ("c1", "e2", "m2", "1"), ("c2", "e1", "m1", "2"), ("c2", "e2", "m2", "1"),
    ]


def test_tuple_rows_as_mappings(tmp_path):
    items = [{"essay_llm": "m1", "essay_template": "e1", "essay_replicate": 1}]
    assert tuples_of(design(tmp_path, tuple_doc(items)), "essay_template", "essay_llm") == [("e1", "m1")] * 2


def test_tuple_csv_bound_by_header_name_not_position(tmp_path):
    a = "essay_template,essay_llm,essay_replicate\ne1,m1,1\ne3,m3,2\n"
    b = "essay_replicate,note,essay_llm,essay_template\n1,ignored,m1,e1\n2,,m3,e3\n"
    d1 = design(tmp_path / "a", tuple_doc("@file:items.csv"), {"items.csv": a})
    d2 = design(tmp_path / "b", tuple_doc("@file:items.csv"), {"items.csv": b})
    assert d1 == d2
    assert tuples_of(d1, "essay_template", "essay_llm", "essay_replicate")[:2] == [("e1", "m1", "1"), ("e3", "m3", "2")]


def test_tuple_null_value_means_no_model(tmp_path):
    doc = {
        "axes": {"essay_template": ["copy-tpl", "llm-tpl"]},
        "rules": {"tuples": {"mode": {"axes": ["essay_template", "essay_llm"], "items": [["copy-tpl", None], ["llm-tpl", "m1"]]}}},
    }
    d = design(tmp_path, doc)
    assert d.rows == [{"essay_template": "copy-tpl", "essay_llm": None}, {"essay_template": "llm-tpl", "essay_llm": "m1"}]
    assert format_design(d, "csv") == "essay_template,essay_llm\ncopy-tpl,\nllm-tpl,m1\n"
    assert json.loads(format_design(d, "jsonl").splitlines()[0]) == {"essay_template": "copy-tpl", "essay_llm": None}


def test_pair_side_naming_a_tuple_binds_to_its_key(tmp_path):
    doc = {
        "axes": {"evaluation_llm": ["v1", "v2"]},
        "rules": {
            "tuples": {"gen": {"axes": ["draft_llm", "essay_llm"], "items": [["m1", "m1"], ["m2", "m3"]]}},
            "pairs": {"judge": {"left": "gen", "right": "evaluation_llm", "allowed": [["m1", "v2"], ["m2", "v1"]]}},
        },
    }
    d = design(tmp_path, doc)
    assert d.columns == ["evaluation_llm", "draft_llm", "essay_llm"]
    assert tuples_of(d, "draft_llm", "essay_llm", "evaluation_llm") == [("m2", "m3", "v1"), ("m1", "m1", "v2")]


def test_pair_side_naming_a_tuple_with_explicit_key(tmp_path):
    doc = {
        "axes": {"evaluation_llm": ["v1", "v2"]},
        "rules": {
            "tuples": {"gen": {"axes": ["draft_llm", "essay_llm"], "key": "essay_llm",
                               "items": [["m1", "m1"], ["m1", "m3"]]}},
            "pairs": {"judge": {"left": "evaluation_llm", "right": "gen", "allowed": [["v1", "m3"]]}},
        },
    }
    assert design(tmp_path, doc).rows == [{"evaluation_llm": "v1", "draft_llm": "m1", "essay_llm": "m3"}]


# rule order, determinism, output -------------------------------------------------------------

RULES = {
    "subsets": {"draft_template": ["t2", "t1"]},
    "ties": {"gen": ["draft_llm", "essay_llm"]},
    "pairs": {
        "judge": {"left": "essay_llm", "right": "evaluation_llm", "allowed": [["m1", "e1"], ["m2", "e2"], ["m1", "e2"]]},
        "tpl": {"left": "draft_template", "right": "evaluation_template", "allowed": [["t1", "r1"], ["t2", "r2"]]},
    },
    "tuples": {"rep": {"axes": ["evaluation_template", "evaluation_replicate"], "items": [["r1", 1], ["r1", 2], ["r2", 1]]}},
}
AXES = {
    "draft_template": ["t1", "t2", "t3"],
    "draft_llm": ["m1", "m2"],
    "essay_llm": ["m2", "m1"],
    "evaluation_llm": ["e1", "e2"],
    "evaluation_template": ["r1", "r2"],
    "evaluation_replicate": [1, 2],
}


def test_rule_order_in_file_does_not_matter(tmp_path):
    forward = {"axes": AXES, "rules": RULES}
    backward = {
        "rules": {kind: dict(reversed(list(RULES[kind].items()))) for kind in reversed(list(RULES))},
        "axes": AXES,
    }
    d1, d2 = design(tmp_path / "f", forward), design(tmp_path / "b", backward)
    assert d1 == d2
    # ties applied before pairs, subsets before everything: t3 gone, tied models equal
    assert {r["draft_template"] for r in d1.rows} == {"t1", "t2"}
    assert all(r["draft_llm"] == r["essay_llm"] for r in d1.rows)
    assert len(d1.rows) == 3 * 2 + 3 * 1  # (m1,e1),(m1,e2),(m2,e2) × r1 reps 2 / r2 reps 1


def test_compile_is_deterministic(tmp_path):
    path = write_spec(tmp_path, {"axes": AXES, "rules": RULES})
    texts = {format_design(compile_design(load_spec(path)), "csv", seed=7) for _ in range(3)}
    assert len(texts) == 1


def test_field_order_puts_columns_first(tmp_path):
    doc = {"axes": {"a": ["1"], "b": ["2"], "c": ["3"]}, "annotations": ["a", "b", "c"], "output": {"field_order": ["c", "a"]}}
    assert design(tmp_path, doc).columns == ["c", "a", "b"]


def test_seed_shuffles_stably_and_limit_applies_after(tmp_path):
    d = design(tmp_path, {"axes": {"a": list(range(10)), "b": list(range(10))}, "annotations": ["a", "b"]})
    plain = format_design(d, "jsonl").splitlines()
    s1 = format_design(d, "jsonl", seed=1).splitlines()
    assert s1 == format_design(d, "jsonl", seed=1).splitlines()
    assert s1 != plain and sorted(s1) == sorted(plain)
    assert s1 != format_design(d, "jsonl", seed=2).splitlines()
    assert format_design(d, "jsonl", seed=1, limit=5).splitlines() == s1[:5]
    assert format_design(d, "jsonl", limit=3).splitlines() == plain[:3]
    assert format_design(d, "csv", limit=0) == "a,b\n"


def test_csv_and_jsonl_formats(tmp_path):
    d = design(tmp_path, {"axes": {"a": ["x,y", "2"], "b": ['say "hi"']}, "annotations": ["a", "b"]})
    rows = list(csv.DictReader(io.StringIO(format_design(d, "csv"))))
    assert rows == [{"a": "x,y", "b": 'say "hi"'}, {"a": "2", "b": 'say "hi"'}]
    lines = format_design(d, "jsonl").splitlines()
    assert [json.loads(line) for line in lines] == d.rows
    assert list(json.loads(lines[0])) == d.columns


# @file includes -----------------------------------------------------------------------------


def test_file_includes_for_axes(tmp_path):
    files = {
        "lists/models.csv": "draft_llm\nm1\n\n , \nm2\nm1\n",
        "templates.txt": "t1\n\n  t2  \n",
        "evals.json": '["e1", "e2"]',
        "reps.yaml": "- 1\n- 2\n",
    }
    doc = {"axes": {
        "draft_llm": "@file:lists/models.csv",
        "draft_template": "@file:templates.txt",
        "evaluation_llm": "@file:evals.json",
        "draft_replicate": "@file:reps.yaml",
    }}
    spec = load_spec(write_spec(tmp_path, doc, files))
    assert spec.axes == {"draft_llm": ["m1", "m2"], "draft_template": ["t1", "t2"],
                         "evaluation_llm": ["e1", "e2"], "draft_replicate": ["1", "2"]}


def test_file_include_may_use_the_cohort_directory(tmp_path):
    path = write_spec(tmp_path, {"axes": {"a": "@file:../shared/a.txt"}, "annotations": ["a"]})
    (path.parent.parent / "shared").mkdir()
    (path.parent.parent / "shared" / "a.txt").write_text("x\n")
    assert compile_design(load_spec(path)).rows == [{"a": "x"}]


def test_tuple_items_from_json_and_yaml(tmp_path):
    items = [["e1", "m1", 1], ["e2", "m2", 1]]
    d_json = design(tmp_path / "j", tuple_doc("@file:items.json"), {"items.json": json.dumps(items)})
    d_yaml = design(tmp_path / "y", tuple_doc("@file:items.yml"), {"items.yml": yaml.safe_dump(items)})
    assert d_json == d_yaml == design(tmp_path / "i", tuple_doc(items))


# combos --------------------------------------------------------------------------------------


def test_combo_golden_value(tmp_path):
    spec = load_spec(write_spec(tmp_path, {
        "axes": {"draft_template": ["t1"]},
        "combos": [{"concepts": GOLDEN_CONCEPTS, "level": "paragraph", "k": 5}],
    }))
    assert list(spec.axes) == ["combo_id", "draft_template"]
    assert spec.combos == {"combo_v1_85128e4e5ef3": ComboDef(tuple(GOLDEN_CONCEPTS), "paragraph", 5)}
    assert spec.combo_ids_from_catalog == []
    assert compile_design(spec).rows == [{"combo_id": "combo_v1_85128e4e5ef3", "draft_template": "t1"}]


def test_combos_enumerate_k_subsets_and_name_catalog_ids(tmp_path):
    files = {"ids.txt": "combo-legacy-2\n"}
    doc = {
        "combos": [
            {"ids": ["combo-legacy-1"]},
            {"concepts": ["c", "a", "b", "d"], "level": "sentence", "k": 3},
            {"concepts": ["a", "b"], "level": "article"},  # k defaults to len(concepts)
            {"ids": "@file:ids.txt"},
        ],
        "axes": {"draft_template": ["t1"]},
    }
    spec = load_spec(write_spec(tmp_path, doc, files))
    subsets = [("c", "a", "b"), ("c", "a", "d"), ("c", "b", "d"), ("a", "b", "d")]
    enumerated = [combo_id(s, "sentence", 3) for s in subsets] + [combo_id(["a", "b"], "article", 2)]
    assert list(spec.combos) == enumerated
    assert spec.combos[enumerated[0]] == ComboDef(("c", "a", "b"), "sentence", 3)
    assert spec.combo_ids_from_catalog == ["combo-legacy-1", "combo-legacy-2"]
    assert spec.axes["combo_id"] == ["combo-legacy-1", *enumerated, "combo-legacy-2"]
    assert [r["combo_id"] for r in compile_design(spec).rows] == spec.axes["combo_id"]


# scale ---------------------------------------------------------------------------------------


def test_hundred_thousand_rows_compile_quickly(tmp_path):
    doc = {
        "axes": {
            "combo_id": [f"c{i}" for i in range(100)],
            "draft_template": [f"t{i}" for i in range(10)],
            "draft_llm": [f"m{i}" for i in range(10)],
            "essay_llm": [f"m{i}" for i in range(10)],
            "evaluation_llm": [f"e{i}" for i in range(20)],
            "evaluation_template": ["r1", "r2"],
        },
        "rules": {
            "ties": {"gen": ["draft_llm", "essay_llm"]},
            "pairs": {"p": {"left": "essay_llm", "right": "evaluation_llm",
                            "allowed": [[f"m{i}", f"e{j}"] for i in range(10) for j in range(i, i + 5)]}},
        },
    }
    path = write_spec(tmp_path, doc)
    start = time.perf_counter()
    d = compile_design(load_spec(path))
    text = format_design(d, "csv", seed=3)
    assert time.perf_counter() - start < 5
    assert len(d.rows) == 100_000 and text.count("\n") == 100_001
