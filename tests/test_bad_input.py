"""User mistakes outside the spec DSL (see test_spec_errors.py for the DSL): each is one clear
line on stderr naming the file and value, exit status 2, no traceback, and nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from datafactory import SPEC, make_data_root


def run_cli(root, *args, env_extra=None):
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(root), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def snapshot(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def edit(path, old, new):
    text = path.read_text()
    assert old in text, (old, text)
    path.write_text(text.replace(old, new))


CASES = {
    # name: (mutation(root), expected code, expected fragments of the message)
    "unknown_template": (lambda r: edit(r / "cohorts/t1/spec/config.yaml", "[d-block]", "[d-nope]"),
                         "spec", ["config.yaml", "d-nope"]),
    "unknown_model": (lambda r: edit(r / "cohorts/t1/spec/config.yaml", "evaluation_llm: [srv-b]", "evaluation_llm: [gpt-99]"),
                      "spec", ["config.yaml", "gpt-99"]),
    "unknown_concept": (lambda r: edit(r / "cohorts/t1/spec/config.yaml", "c-gamma]", "c-delta]"),
                        "spec", ["config.yaml", "c-delta"]),
    "missing_template_file": (lambda r: (r / "1_raw/templates/draft/d-block.txt").unlink(),
                              "catalog", ["d-block"]),
    "jinja_syntax_error": (lambda r: (r / "1_raw/templates/evaluation/v-ten.txt").write_text("{% for x in %}\n"),
                           "template", ["v-ten", "syntax"]),
    "jinja_undefined_variable": (lambda r: (r / "1_raw/templates/essay/e-llm.txt").write_text("{{ draft }}\n"),
                                 "template", ["e-llm", "draft"]),
    "catalog_missing_column": (lambda r: edit(r / "1_raw/llm_models.csv", "id,model,provider,display_name", "id,model,display_name"),
                               "catalog", ["llm_models.csv", "provider"]),
    "catalog_duplicate_id": (lambda r: (r / "1_raw/concepts_metadata.csv").write_text("concept_id,name\nc-alpha,A\nc-alpha,B\nc-beta,B\nc-gamma,G\n"),
                             "catalog", ["concepts_metadata.csv", "c-alpha"]),
    "catalog_unsafe_id": (lambda r: edit(r / "1_raw/draft_templates.csv", "d-block,", "../d-block,"),
                          "unsafe_id", ["draft_templates.csv", "../d-block"]),
    "unknown_parser": (lambda r: edit(r / "1_raw/draft_templates.csv", "essay_block", "essay_blok"),
                       "catalog", ["draft_templates.csv", "essay_blok"]),
    "bad_score_scale": (lambda r: edit(r / "1_raw/evaluation_templates.csv", ",0,10", ",10,0"),
                        "catalog", ["evaluation_templates.csv", "v-ten"]),
    "copy_template_with_model": (lambda r: edit(r / "cohorts/t1/spec/config.yaml", "[e-copy, None]", "[e-copy, srv-a]"),
                                 "spec", ["config.yaml", "e-copy"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compile_errors_are_one_clear_line(tmp_path, case):
    root = make_data_root(tmp_path / "data", provider="offline")
    mutate, code, fragments = CASES[case]
    mutate(root)
    before = snapshot(root)
    r = run_cli(root, "compile", "t1")
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error[{code}]"), r.stderr
    assert "Traceback" not in r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert snapshot(root) == before, "nothing is written on an error"


def test_unknown_cohort(tmp_path):
    root = make_data_root(tmp_path / "data", provider="offline")
    r = run_cli(root, "run", "nope")
    assert r.returncode == 2 and r.stderr.startswith("error[cohort]") and "'nope'" in r.stderr and "t1" in r.stderr
    r = run_cli(root, "status", "t1")
    assert r.returncode == 2 and "not compiled" in r.stderr


@pytest.mark.parametrize("bad", ["../x", "a/b", "x" * 200])
def test_unsafe_cohort_id(tmp_path, bad):
    root = make_data_root(tmp_path / "data", provider="offline")
    r = run_cli(root, "compile", bad)
    assert r.returncode == 2 and r.stderr.startswith("error[unsafe_id]") and "Traceback" not in r.stderr


@pytest.mark.parametrize("setting, fragment", [
    ("[stage.draft]\nmax_tokens = lots\n", "max_tokens"),
    ("[llm.offline]\nconcurrency = -3\n", "concurrency"),
    ("[daydream]\nbatch_size = 0\n", "batch_size"),
    ("[reports]\nhigh_threshold = 0.1\nlow_threshold = 0.5\n", "threshold"),
])
def test_invalid_luigi_cfg_value(tmp_path, setting, fragment):
    root = make_data_root(tmp_path / "data", provider="offline")
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(setting)
    r = run_cli(root, "run", "t1", env_extra={"LUIGI_CONFIG_PATH": str(cfg)})
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error[config]") and fragment in r.stderr and "bad.cfg" in r.stderr
    assert not (root / "gens" / "draft").exists() or not list((root / "gens").rglob("raw.txt"))


def test_corrupt_metadata_is_repaired_by_the_next_compile(tmp_path):
    root = make_data_root(tmp_path / "data", spec=SPEC, provider="offline")
    assert run_cli(root, "compile", "t1").returncode == 0
    md = next((root / "gens" / "draft").glob("*/metadata.json"))
    good = md.read_text()
    md.write_text("{ not json")
    r = run_cli(root, "check", "t1", "--list")
    assert r.returncode == 1 and "corrupt_file" in r.stdout and md.parent.name in r.stdout
    assert run_cli(root, "compile", "t1").returncode == 0
    assert md.read_text() == good
