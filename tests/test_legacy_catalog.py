"""The earlier system's catalog shape runs unchanged: an ``active`` column, essay templates that
read the draft as ``links_block``, evaluations parsed with ``in_last_line``, and an
``llm_models.csv`` whose provider column names vendors while every call goes to one gateway.

The catalog under ``tests/legacy_catalog`` is written for this project in that shape.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import config
from pipeline.design.catalog import load_catalog
from pipeline.design.cohort import compile_cohort
from pipeline.errors import DaydreamError
from pipeline.design.parsers import known_parser
from pipeline.design.render import essay_context, render
from pipeline.store import DataPaths

LEGACY = Path(__file__).parent / "legacy_catalog"
COHORT = "legacy"
N_DRAFTS, N_ESSAYS, N_EVALS = 3, 6, 12


def legacy_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(LEGACY, root)
    if not known_parser("in_last_line"):
        # Until parsers.py makes in_last_line an alias of the score parser, run the fixture with
        # the parser it will alias; once the alias exists the real name is tested unchanged.
        p = root / "1_raw" / "evaluation_templates.csv"
        p.write_text(p.read_text().replace(",in_last_line,", ",score,"))
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


@pytest.fixture
def cfg_option():
    """Set luigi config options in-process for one test, restoring what was there."""
    cfg = config._cfg()
    undo = []

    def set_(section: str, key: str, value: str) -> None:
        had_section = cfg.has_section(section)
        old = cfg.get(section, key) if had_section and cfg.has_option(section, key) else None
        if not had_section:
            cfg.add_section(section)
        cfg.set(section, key, value)
        undo.append((section, key, old, had_section))

    yield set_
    for section, key, old, had_section in reversed(undo):
        if not had_section:
            cfg.remove_section(section)
        elif old is None:
            cfg.remove_option(section, key)
        else:
            cfg.set(section, key, old)


# -- end to end through the CLI, offline -------------------------------------------------------------


def run_cli(root: Path, tmp_path: Path, cfg_text: str | None, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAYDREAM_DATA_ROOT=str(root))
    env.pop("LUIGI_CONFIG_PATH", None)
    if cfg_text is not None:
        cfg = tmp_path / "legacy.cfg"
        cfg.write_text(cfg_text)
        env["LUIGI_CONFIG_PATH"] = str(cfg)
    code = "import sys; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=300, cwd=Path(__file__).resolve().parents[1])


def assert_cohort_ran(root: Path) -> None:
    paths = DataPaths(root)
    members = list(csv_rows(paths.membership_csv(COHORT)))
    by_stage = {s: [r for r in members if r["stage"] == s] for s in ("draft", "essay", "evaluation")}
    assert [len(by_stage[s]) for s in by_stage] == [N_DRAFTS, N_ESSAYS, N_EVALS]
    for r in members:
        pm = json.loads(paths.gen_file(r["stage"], r["gen_id"], "parsed_metadata.json").read_text())
        assert pm["success"] is True, (r["gen_id"], pm)
    for r in by_stage["essay"]:
        draft = paths.gen_file("draft", r["parent_gen_id"], "parsed.txt").read_text()
        assert draft.strip() and draft in paths.gen_file("essay", r["gen_id"], "prompt.txt").read_text()
        if r["mode"] == "copy":
            assert paths.gen_file("essay", r["gen_id"], "parsed.txt").read_text() == draft
        else:
            rm = json.loads(paths.gen_file("essay", r["gen_id"], "raw_metadata.json").read_text())
            assert rm["simulated"] is True and rm["llm_model_id"] == "gemini_flash"
    for r in by_stage["evaluation"]:
        score = float(paths.gen_file("evaluation", r["gen_id"], "parsed.txt").read_text())
        assert 0 <= score <= 9


def csv_rows(path: Path):
    import csv

    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def test_default_provider_maps_vendors_to_the_offline_simulator(tmp_path):
    root = legacy_root(tmp_path)
    r = run_cli(root, tmp_path, "[daydream]\ndefault_provider = offline\n", "run", COHORT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_cohort_ran(root)


def test_endpoint_column_maps_vendors_to_the_offline_simulator(tmp_path):
    root = legacy_root(tmp_path)
    models = root / "1_raw" / "llm_models.csv"
    lines = models.read_text().splitlines()
    models.write_text("\n".join([lines[0] + ",endpoint"] + [ln + ",offline" for ln in lines[1:]]) + "\n")
    r = run_cli(root, tmp_path, None, "run", COHORT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert_cohort_ran(root)


def test_unmapped_vendor_is_one_clear_error_before_any_work(tmp_path):
    root = legacy_root(tmp_path)
    r = run_cli(root, tmp_path, None, "run", COHORT)
    assert r.returncode == 2
    assert "error[config]" in r.stderr and "Traceback" not in r.stderr
    assert "default_provider" in r.stderr and "endpoint" in r.stderr
    assert not list((root / "gens").glob("*/*/raw.txt"))


# -- which endpoint a model calls --------------------------------------------------------------------


def test_endpoint_for_resolution_order(tmp_path, cfg_option):
    root = legacy_root(tmp_path)
    models = root / "1_raw" / "llm_models.csv"
    edit(models, "display_name\n", "display_name,endpoint\n")
    edit(models, "DeepSeek Chat\n", "DeepSeek Chat,local\n")
    edit(models, "Gemini Flash\n", "Gemini Flash,\n")
    edit(models, "Claude Sonnet\n", "Claude Sonnet,\n")
    cat = load_catalog(DataPaths(root))
    # the endpoint column wins; provider stays the vendor
    assert config.endpoint_for(cat.model("deepseek_chat")) == "local"
    assert cat.model("deepseek_chat").provider == "deepseek"
    cfg_option("llm.google", "base_url", "http://127.0.0.1:1/v1")
    assert config.endpoint_for(cat.model("gemini_flash")) == "google"
    cfg_option("daydream", "default_provider", "offline")
    assert config.endpoint_for(cat.model("sonnet")) == "offline"
    assert cat.model("sonnet").simulated and not cat.model("deepseek_chat").simulated


def test_unknown_provider_error_names_model_provider_file_and_fixes(tmp_path):
    root = legacy_root(tmp_path)
    cat = load_catalog(DataPaths(root))
    with pytest.raises(DaydreamError) as e:
        config.endpoint_for(cat.model("sonnet"))
    msg = e.value.message
    assert e.value.code == "config"
    for part in ("'sonnet'", "'anthropic'", str(root / "1_raw" / "llm_models.csv"), "[llm.anthropic]",
                 "endpoint column", "[daydream] default_provider = openrouter"):
        assert part in msg, (part, msg)
    assert not cat.model("sonnet").simulated


def test_endpoint_naming_no_section_is_an_error(tmp_path):
    root = legacy_root(tmp_path)
    models = root / "1_raw" / "llm_models.csv"
    edit(models, "display_name\n", "display_name,endpoint\n")
    edit(models, "Claude Sonnet\n", "Claude Sonnet,nowhere\n")
    with pytest.raises(DaydreamError) as e:
        config.endpoint_for(load_catalog(DataPaths(root)).model("sonnet"))
    assert "'nowhere'" in e.value.message and "[llm.nowhere]" in e.value.message


def test_default_provider_without_a_section_is_a_config_error(cfg_option):
    cfg_option("daydream", "default_provider", "nowhere")
    with pytest.raises(DaydreamError) as e:
        config.validate([])
    assert e.value.code == "config" and "default_provider" in e.value.message


# -- the active column --------------------------------------------------------------------------------


def test_active_column_is_read():
    cat = load_catalog(DataPaths(LEGACY))
    assert cat.template("draft", "links-v1").active and not cat.template("draft", "links-v0").active
    assert cat.template("essay", "copy-links").active and not cat.template("essay", "expand-links-v0").active
    assert cat.template("evaluation", "clarity-v1").active  # blank means active


@pytest.mark.parametrize("stage,old,new", [
    ("draft", "draft_template: [links-v1]", "draft_template: [links-v0]"),
    ("essay", "[expand-links-v1, gemini_flash]", "[expand-links-v0, gemini_flash]"),
])
def test_inactive_template_in_a_spec_is_a_compile_error(tmp_path, stage, old, new):
    root = legacy_root(tmp_path)
    spec = root / "cohorts" / COHORT / "spec" / "config.yaml"
    edit(spec, old, new)
    with pytest.raises(DaydreamError) as e:
        compile_cohort(DataPaths(root), COHORT)
    msg = e.value.message
    tid = new.strip("[]").split(",")[0].split("[")[-1]
    assert e.value.code == "spec"
    assert f"'{tid}'" in msg and "inactive" in msg, msg
    assert f"{stage}_templates.csv" in msg and str(spec) in msg, msg
    assert not (root / "gens").exists()


def test_bad_active_value_is_a_catalog_error(tmp_path):
    root = legacy_root(tmp_path)
    edit(root / "1_raw" / "draft_templates.csv", "llm,FALSE", "llm,maybe")
    with pytest.raises(DaydreamError) as e:
        load_catalog(DataPaths(root))
    assert e.value.code == "catalog" and "links-v0" in e.value.message and "'maybe'" in e.value.message


# -- score_label ----------------------------------------------------------------------------------------


def test_score_label_defaults_and_is_read(tmp_path):
    root = legacy_root(tmp_path)
    assert load_catalog(DataPaths(root)).template("evaluation", "surprise-v1").score_label == "SCORE"
    p = root / "1_raw" / "evaluation_templates.csv"
    edit(p, "score_min,score_max\n", "score_min,score_max,score_label\n")
    edit(p, ",0,9\nclarity", ",0,9,Final Verdict_2-a\nclarity")
    edit(p, "0,9\n", "0,9,\n")  # clarity-v1: blank label
    cat = load_catalog(DataPaths(root))
    assert cat.template("evaluation", "surprise-v1").score_label == "Final Verdict_2-a"
    assert cat.template("evaluation", "clarity-v1").score_label == "SCORE"


@pytest.mark.parametrize("label", ["SCORE:", "Score (0-9)", "**SCORE**", "x" * 41, "Note\\d+"])
def test_score_label_must_be_a_plain_label(tmp_path, label):
    root = legacy_root(tmp_path)
    p = root / "1_raw" / "evaluation_templates.csv"
    edit(p, "score_min,score_max\n", "score_min,score_max,score_label\n")
    edit(p, ",0,9\nclarity", f',0,9,"{label}"\nclarity')
    with pytest.raises(DaydreamError) as e:
        load_catalog(DataPaths(root))
    assert e.value.code == "catalog" and "surprise-v1" in e.value.message and "score_label" in e.value.message


# -- links_block --------------------------------------------------------------------------------------


def test_links_block_renders_the_draft():
    text = (LEGACY / "1_raw" / "templates" / "essay" / "expand-links-v1.txt").read_text()
    out = render(text, essay_context("first link\nsecond link"), stage="essay", template_id="expand-links-v1")
    assert "first link\nsecond link" in out
    assert render("{{ draft_block }}|{{ links_block }}", essay_context("d"), stage="essay", template_id="t") == "d|d"
