"""Spec forms added for specs written for the earlier system: tuple-valued pair sides, free
annotation axes, and the earlier shapes (axis mappings, a list of rules, output flags,
``replicates:``). Each is checked against the equivalent spec in this project's own form."""

from __future__ import annotations

import textwrap

from pipeline.design.spec import compile_design, load_spec
from test_spec import design, tuples_of, write_spec

ISSUE_SPEC = """
axes:
  draft_template: [creative-synthesis-v2, other-v1]
  draft_llm: [m1]
  evaluation_template: [novelty-v1]
  evaluation_llm: [m2]
rules:
  tuples:
    essay_bundle:
      axes: [essay_template, essay_llm]
      items:
        - [essay-llm-v1, sonnet-4]
        - [essay-copy, null]
  pairs:
    draft_essay_pair:
      left: draft_template
      right: essay_bundle
      allowed:
        - [creative-synthesis-v2, [essay-llm-v1, sonnet-4]]
"""


def text_design(tmp_path, text: str, files: dict[str, str] | None = None):
    return design(tmp_path, textwrap.dedent(text), files)


# pairs with a tuple side -------------------------------------------------------------------


def test_issue_example_pair_with_a_tuple_side_written_as_a_list(tmp_path):
    d = text_design(tmp_path, ISSUE_SPEC)
    assert d.columns == ["draft_template", "draft_llm", "evaluation_template", "evaluation_llm",
                         "essay_template", "essay_llm"]
    assert d.rows == [{"draft_template": "creative-synthesis-v2", "draft_llm": "m1", "evaluation_template": "novelty-v1",
                       "evaluation_llm": "m2", "essay_template": "essay-llm-v1", "essay_llm": "sonnet-4"}]


def test_tuple_side_on_the_left_with_a_null_value(tmp_path):
    doc = {
        "axes": {"draft_template": ["d1", "d2"]},
        "rules": {
            "tuples": {"bundle": {"axes": ["essay_template", "essay_llm"], "items": [["e-llm", "m1"], ["e-copy", None]]}},
            "pairs": {"p": {"left": "bundle", "right": "draft_template",
                            "allowed": [[["e-copy", None], "d1"], [["e-llm", "m1"], "d2"], [["e-copy", None], "d2"]]}},
        },
    }
    assert tuples_of(design(tmp_path, doc), "draft_template", "essay_template", "essay_llm") == [
        ("d1", "e-copy", None), ("d2", "e-llm", "m1"), ("d2", "e-copy", None),
    ]


def test_list_and_key_forms_of_a_tuple_side_agree_and_mix(tmp_path):
    def doc(allowed):
        return {
            "axes": {"draft_template": ["d1", "d2"]},
            "rules": {
                "tuples": {"b": {"axes": ["essay_template", "essay_llm"], "items": [["e1", "m1"], ["e2", "m2"]]}},
                "pairs": {"p": {"left": "draft_template", "right": "b", "allowed": allowed}},
            },
        }
    as_lists = design(tmp_path / "l", doc([["d1", ["e1", "m1"]], ["d2", ["e2", "m2"]]]))
    as_keys = design(tmp_path / "k", doc([["d1", "e1"], ["d2", "e2"]]))
    mixed = design(tmp_path / "m", doc([["d1", "e1"], ["d2", ["e2", "m2"]], ["d2", "e2"]]))
    assert as_lists == as_keys == mixed
    assert tuples_of(as_lists, "draft_template", "essay_template", "essay_llm") == [("d1", "e1", "m1"), ("d2", "e2", "m2")]


def test_list_form_needs_no_unique_key(tmp_path):
    # both items share essay_template e1, so only whole items can tell them apart
    doc = {
        "axes": {"draft_template": ["d1", "d2"]},
        "rules": {
            "tuples": {"b": {"axes": ["essay_template", "essay_llm"], "items": [["e1", "m1"], ["e1", "m2"]]}},
            "pairs": {"p": {"left": "draft_template", "right": "b", "allowed": [["d1", ["e1", "m2"]], ["d2", ["e1", "m1"]]]}},
        },
    }
    assert tuples_of(design(tmp_path, doc), "draft_template", "essay_llm") == [("d1", "m2"), ("d2", "m1")]


def test_balance_with_a_tuple_side(tmp_path):
    allowed = [["d1", ["e1", "m1"]], ["d1", ["e2", "m2"]], ["d2", ["e1", "m1"]], ["d2", ["e2", "m2"]]]
    doc = {
        "axes": {"draft_template": ["d1", "d2"]},
        "rules": {
            "tuples": {"b": {"axes": ["essay_template", "essay_llm"], "items": [["e1", "m1"], ["e2", "m2"]]}},
            "pairs": {"p": {"left": "draft_template", "right": "b", "allowed": allowed, "balance": "both"}},
        },
    }
    assert len(design(tmp_path, doc).rows) == 4


def test_tuple_side_values_removed_by_a_subset_are_dropped(tmp_path):
    doc = {
        "axes": {"draft_template": ["d1", "d2"]},
        "rules": {
            "subsets": {"essay_llm": ["m2"]},
            "tuples": {"b": {"axes": ["essay_template", "essay_llm"], "items": [["e1", "m1"], ["e2", "m2"]]}},
            "pairs": {"p": {"left": "draft_template", "right": "b", "allowed": [["d1", ["e1", "m1"]], ["d2", ["e2", "m2"]]]}},
        },
    }
    assert tuples_of(design(tmp_path, doc), "draft_template", "essay_template") == [("d2", "e2")]


def test_tuple_side_from_csv_columns_named_after_the_tuple_axes(tmp_path):
    files = {
        "pairs.csv": "essay_llm,draft_template,note,essay_template\nsonnet-4,creative-synthesis-v2,x,essay-llm-v1\n",
        "keys.csv": "draft_template,essay_bundle\ncreative-synthesis-v2,essay-llm-v1\n",
    }
    inline = text_design(tmp_path / "i", ISSUE_SPEC)
    by_axes = text_design(tmp_path / "a", ISSUE_SPEC.split("      allowed:")[0] + "      allowed: '@file:pairs.csv'\n", files)
    by_key = text_design(tmp_path / "k", ISSUE_SPEC.split("      allowed:")[0] + "      allowed: '@file:keys.csv'\n", files)
    assert inline == by_axes == by_key


def test_tuple_side_from_yaml_include(tmp_path):
    files = {"pairs.yaml": "- [creative-synthesis-v2, [essay-llm-v1, sonnet-4]]\n"}
    spec = ISSUE_SPEC.split("      allowed:")[0] + "      allowed: '@file:pairs.yaml'\n"
    assert text_design(tmp_path / "y", spec, files) == text_design(tmp_path / "i", ISSUE_SPEC)


# annotations ------------------------------------------------------------------------------


def test_annotation_axes_are_carried_as_columns(tmp_path):
    doc = {
        "axes": {"draft_llm": ["m1", "m2"], "batch_label": ["pilot"]},
        "annotations": ["batch_label", "note"],
        "rules": {"tuples": {"t": {"axes": ["evaluation_llm", "note"], "items": [["e1", "free text, any characters"]]}}},
    }
    d = design(tmp_path, doc)
    assert d.columns == ["draft_llm", "batch_label", "evaluation_llm", "note"]
    assert [r["batch_label"] for r in d.rows] == ["pilot", "pilot"]
    assert {r["note"] for r in d.rows} == {"free text, any characters"}


def test_every_design_field_and_replicate_axis_is_known(tmp_path):
    fields = ["combo_id", "draft_template", "draft_llm", "essay_template", "essay_llm", "evaluation_template",
              "evaluation_llm", "essay_gen_id", "draft_replicate", "essay_replicate", "evaluation_replicate"]
    d = design(tmp_path, {"axes": {f: ["1"] for f in fields}})
    assert d.columns == fields and len(d.rows) == 1


# the earlier system's shapes ----------------------------------------------------------------

EARLIER = """
axes:
  draft_template:
    levels: [creative-v2, application-v2]
    catalog_lookup: { catalog: drafts }
  essay_template: [essay-copy, essay-llm]
  evaluation_template:
    levels: '@file:evals.txt'
  draft_llm: [gemini_25_pro, sonnet-4]
  essay_llm: [sonnet-4]
  evaluation_llm: [sonnet-4]
rules:
  - subset:
      axis: essay_template
      keep: [essay-copy, essay-llm]
  - tie:
      axes: [draft_llm, essay_llm]
      to: same_model
  - pair:
      left: draft_template
      right: essay_template
      name: draft_essay
      allowed:
        - [creative-v2, essay-llm]
        - [application-v2, essay-copy]
      balance: left
  - tuple:
      name: eval_bundle
      axes: [evaluation_template, evaluation_llm]
      items:
        - [eval-a, sonnet-4]
        - [eval-b, sonnet-4]
      expand: true
replicates:
  draft_template:
    count: 2
    column: draft_replicate
output:
  expand_pairs: true
  expand_ties: true
  expand_tuples: true
  keep_pair_axis: false
  keep_tuple_axis: false
  field_order: [draft_template, draft_llm, essay_template]
"""

CURRENT = """
axes:
  draft_template: [creative-v2, application-v2]
  essay_template: [essay-copy, essay-llm]
  evaluation_template: '@file:evals.txt'
  draft_llm: [gemini_25_pro, sonnet-4]
  essay_llm: [sonnet-4]
  evaluation_llm: [sonnet-4]
  draft_replicate: 2
rules:
  subsets: {essay_template: [essay-copy, essay-llm]}
  ties: {same_model: [draft_llm, essay_llm]}
  pairs:
    draft_essay:
      left: draft_template
      right: essay_template
      allowed: [[creative-v2, essay-llm], [application-v2, essay-copy]]
      balance: left
  tuples:
    eval_bundle: {axes: [evaluation_template, evaluation_llm], items: [[eval-a, sonnet-4], [eval-b, sonnet-4]]}
output:
  field_order: [draft_template, draft_llm, essay_template]
"""


def test_earlier_shapes_compile_like_the_current_ones(tmp_path):
    files = {"evals.txt": "eval-a\neval-b\n"}
    old, new = text_design(tmp_path / "old", EARLIER, files), text_design(tmp_path / "new", CURRENT, files)
    assert old == new
    assert len(old.rows) == 2 * 2 * 2  # 2 draft setups x 2 rubrics x 2 replicates
    assert {r["draft_replicate"] for r in old.rows} == {"1", "2"}
    assert all(r["draft_llm"] == r["essay_llm"] == "sonnet-4" for r in old.rows)
    assert "same_model" not in old.columns and "draft_essay" not in old.columns and "eval_bundle" not in old.columns


def test_earlier_list_rules_may_name_a_tuple_from_a_pair(tmp_path):
    spec = """
    axes:
      draft_template: [creative-synthesis-v2, other-v1]
      draft_llm: [m1]
      evaluation_template: [novelty-v1]
      evaluation_llm: [m2]
    rules:
      - tuple:
          name: essay_bundle
          axes: [essay_template, essay_llm]
          items: [[essay-llm-v1, sonnet-4], [essay-copy, null]]
      - pair:
          name: draft_essay_pair
          left: draft_template
          right: essay_bundle
          allowed: [[creative-synthesis-v2, [essay-llm-v1, sonnet-4]]]
    """
    assert text_design(tmp_path / "old", spec) == text_design(tmp_path / "new", ISSUE_SPEC)


def test_list_rules_without_names_get_positional_names(tmp_path):
    spec = """
    axes:
      draft_llm: [m1, m2]
      evaluation_llm: [e1, e2]
    rules:
      - pair: {left: draft_llm, right: evaluation_llm, allowed: [[m1, e1]]}
      - pair: {left: draft_llm, right: evaluation_llm, allowed: [[m1, e1], [m2, e2]]}
    """
    path = write_spec(tmp_path, textwrap.dedent(spec))
    spec_obj = load_spec(path)
    assert list(spec_obj.pairs) == ["rules[1]", "rules[2]"]
    assert compile_design(spec_obj).rows == [{"draft_llm": "m1", "evaluation_llm": "e1"}]


def test_replicates_default_column_and_order(tmp_path):
    spec = """
    axes:
      evaluation_llm: [e1, e2]
    replicates:
      evaluation_llm: {count: 2, column: evaluation_replicate}
    """
    d = text_design(tmp_path, spec)
    assert d.columns == ["evaluation_llm", "evaluation_replicate"]
    assert tuples_of(d, "evaluation_llm", "evaluation_replicate") == [("e1", "1"), ("e1", "2"), ("e2", "1"), ("e2", "2")]


def test_null_in_a_pair_matches_none_in_a_csv_tuple_item(tmp_path):
    # a CSV cannot hold a null: the demo's essay_modes.csv writes None for the copy mode's model
    files = {"modes.csv": "essay_template,essay_llm\ne-llm,m1\ne-copy,None\n"}
    doc = {
        "axes": {"draft_template": ["d1"]},
        "rules": {
            "tuples": {"modes": {"axes": ["essay_template", "essay_llm"], "items": "@file:modes.csv"}},
            "pairs": {"p": {"left": "draft_template", "right": "modes", "allowed": [["d1", ["e-copy", None]]]}},
        },
    }
    assert design(tmp_path, doc, files).rows == [{"draft_template": "d1", "essay_template": "e-copy", "essay_llm": "None"}]
