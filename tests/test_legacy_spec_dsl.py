"""The earlier system's specs as written (tests/legacy_spec_dsl/): its 7 DSL fixtures give the
rows its own tests expect; its replicate axis names are aliases; a combo's level defaults; a
catalog or spec CSV saved with a byte-order mark reads."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from pipeline.design.catalog import load_catalog
from pipeline.errors import DaydreamError
from pipeline.design.spec import compile_design, load_spec
from pipeline.store import DataPaths

FIXTURES = Path(__file__).parent / "legacy_spec_dsl"

# the row counts the earlier system's tests assert for each fixture
EXPECTED_ROWS = {
    "baseline_cartesian": 12,
    "cohort_cartesian": 8,
    "creative_alignment_tuple": 528,
    "curated_essays": 2,
    "dual_llm_cartesian": 4,
    "full_two_phase_cartesian": 64,
    "paired_copy_mix": 2,
}


def rows_of(name: str) -> list[dict]:
    return compile_design(load_spec(FIXTURES / name / "config.yaml")).rows


def test_every_fixture_is_checked():
    assert {p.name for p in FIXTURES.iterdir() if p.is_dir()} == set(EXPECTED_ROWS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_fixture_gives_the_rows_its_tests_expect(name):
    assert len(rows_of(name)) == EXPECTED_ROWS[name]


def test_fixture_details_its_tests_check():
    assert {r["draft_replicate"] for r in rows_of("dual_llm_cartesian")} == {"1", "2"}
    assert {r["evaluation_template"] for r in rows_of("curated_essays")} == {"verification-eval-v1"}
    assert {(r["draft_template"], r["essay_template"]) for r in rows_of("creative_alignment_tuple")} == {
        ("creative-synthesis-v10", "creative-synthesis-v10"),
        ("creative-synthesis-v7", "parsed-from-links-v1"),
    }
    # cohort_cartesian: 2 drafts (replicates 1, 2), 8 essays (2 templates x 2 replicates each), 8 evaluations
    rows = rows_of("cohort_cartesian")
    drafts = {(r["combo_id"], r["draft_template"], r["draft_llm"], r["draft_replicate"]) for r in rows}
    essays = {d + (r["essay_template"], r["essay_llm"], r["essay_replicate"])
              for r in rows for d in [(r["combo_id"], r["draft_template"], r["draft_llm"], r["draft_replicate"])]}
    assert len(drafts) == 2 and {d[3] for d in drafts} == {"1", "2"}
    assert len(essays) == 8 and {e[4] for e in essays} == {"essay-X", "essay-Y"}
    assert len(rows) == 8 and {r["evaluation_template"] for r in rows} == {"eval-1"}


def write(tmp_path: Path, text: str, files: dict[str, str] | None = None, bom: bool = False) -> Path:
    prefix = "\ufeff" if bom else ""
    for name, body in (files or {}).items():
        (tmp_path / name).write_text(prefix + body, encoding="utf-8")
    path = tmp_path / "config.yaml"
    path.write_text(prefix + textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.mark.parametrize("alias,axis", [
    ("draft_template_replicate", "draft_replicate"), ("draft_rep", "draft_replicate"),
    ("essay_template_replicate", "essay_replicate"), ("essay_rep", "essay_replicate"),
    ("evaluation_template_replicate", "evaluation_replicate"), ("evaluation_rep", "evaluation_replicate"),
])
def test_replicate_aliases_name_the_replicate_axis_everywhere(tmp_path, alias, axis):
    spec = write(tmp_path, f"""
        axes:
          draft_template: [d1]
          {alias}: 3
        rules:
          subsets: {{{alias}: [1, 3]}}
        output:
          field_order: [{alias}, draft_template]
        """)
    design = compile_design(load_spec(spec))
    assert design.columns == [axis, "draft_template"]
    assert [r[axis] for r in design.rows] == ["1", "3"]


def test_an_alias_and_its_axis_both_declared_is_one_error(tmp_path):
    spec = write(tmp_path, """
        axes:
          draft_template: [d1]
          draft_replicate: 2
          draft_rep: 2
        """)
    with pytest.raises(DaydreamError) as info:
        load_spec(spec)
    assert "axes.draft_rep" in str(info.value) and "'draft_replicate'" in str(info.value)


def test_alias_in_a_csv_header_and_replicates_default_column(tmp_path):
    spec = write(tmp_path, """
        axes:
          draft_template: [d1, d2]
        rules:
          tuples:
            t: {axes: [essay_template, essay_rep], items: '@file:t.csv'}
        replicates:
          draft_template: {count: 2}
        """, {"t.csv": "essay_template,essay_template_replicate\ne1,1\ne2,2\n"})
    design = compile_design(load_spec(spec))
    assert "essay_replicate" in design.columns and "draft_replicate" in design.columns
    assert len(design.rows) == 2 * 2 * 2


def test_combo_level_defaults_to_paragraph(tmp_path):
    with_level = compile_design(load_spec(write(tmp_path, """
        combos: [{concepts: [a, b, c], k: 2, level: paragraph}]
        axes: {draft_template: [d1]}
        """)))
    without = compile_design(load_spec(write(tmp_path, """
        combos: [{concepts: [a, b, c], k: 2}]
        axes: {draft_template: [d1]}
        """)))
    assert without.rows == with_level.rows and len(without.rows) == 3


def test_spec_and_its_csv_with_a_byte_order_mark(tmp_path):
    spec = write(tmp_path, """
        axes:
          draft_template: '@file:d.csv'
        """, {"d.csv": "draft_template\nd1\nd2\n"}, bom=True)
    assert [r["draft_template"] for r in compile_design(load_spec(spec)).rows] == ["d1", "d2"]


def test_catalog_saved_with_a_byte_order_mark(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(Path(__file__).parent / "legacy_catalog" / "1_raw", root / "1_raw")
    plain = load_catalog(DataPaths(root))
    touched = 0
    for f in (root / "1_raw").rglob("*"):
        if f.suffix in (".csv", ".txt"):
            f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
            touched += 1
    assert touched > 5
    bom = load_catalog(DataPaths(root))
    assert set(bom.concepts) == set(plain.concepts) and set(bom.models) == set(plain.models)
    for stage, templates in plain.templates.items():
        assert set(bom.templates[stage]) == set(templates)
        for tid, t in templates.items():
            assert bom.templates[stage][tid].text == t.text and not (t.text or "").startswith("\ufeff")
    cid = next(iter(plain.concepts))
    assert bom.concept_text(cid, "sentence") == plain.concept_text(cid, "sentence")
