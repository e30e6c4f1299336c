"""pipeline.ops.synthetic writes a store with the shape docs/architecture.md describes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from pipeline import ids
from pipeline.design.catalog import load_catalog
from pipeline.store import GEN_FILES
from pipeline.ops.synthetic import make_synthetic_cohort


@pytest.fixture
def root(tmp_path):
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    r = Path(tempfile.mkdtemp(prefix="daydream-test-", dir=shm))
    yield r
    shutil.rmtree(r, ignore_errors=True)


def _json(p: Path) -> dict:
    return json.loads(p.read_text())


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_ids_and_catalog(root):
    paths = make_synthetic_cohort(root, "s", n_essays=9, evaluators=("sim-alpha", "sim-beta"), replicates=2)
    m = pd.read_csv(paths.membership_csv("s"), dtype=str, keep_default_na=False)
    assert list(m["stage"].drop_duplicates()) == ["draft", "essay", "evaluation"]
    assert (m["stage"] == "evaluation").sum() == 9 * 2 * 2 * 2 and (m["stage"] == "essay").sum() == 9
    cat = load_catalog(paths)
    manifest = _json(paths.manifest_json("s"))
    assert set(manifest["combos"]) <= set(cat.combos)
    by_id = {r.gen_id: r for r in m.itertuples()}
    for r in m.itertuples():
        meta = _json(paths.gen_file(r.stage, r.gen_id, "metadata.json"))
        assert meta["stage"] == r.stage and meta["cohorts"] == ["s"] and meta["template_id"] == r.template_id
        assert r.template_id in cat.templates[r.stage]
        if r.stage == "draft":
            c = cat.combos[r.combo_id]
            assert ids.combo_id(c.concept_ids, c.level, c.k) == r.combo_id
            assert ids.draft_gen_id(r.combo_id, r.template_id, r.llm_model_id, int(r.replicate)) == r.gen_id
        elif r.stage == "essay":
            assert by_id[r.parent_gen_id].stage == "draft"
            assert ids.essay_gen_id(r.parent_gen_id, r.template_id, r.llm_model_id or None, int(r.replicate)) == r.gen_id
            assert (r.mode == "copy") == (r.llm_model_id == "") == (meta["llm_model_id"] is None)
        else:
            assert ids.evaluation_gen_id(r.parent_gen_id, r.template_id, r.llm_model_id, int(r.replicate)) == r.gen_id
            assert r.llm_model_id in cat.models and cat.models[r.llm_model_id].provider == "offline"


def test_failures_copy_mode_and_hostile_text(root):
    paths = make_synthetic_cohort(root, "s", n_essays=6, failure_rate=0.05, include_hostile=True)
    m = pd.read_csv(paths.membership_csv("s"), dtype=str, keep_default_na=False)
    kinds = set()
    for r in m.itertuples():
        d = paths.gen_dir(r.stage, r.gen_id)
        files = set(os.listdir(d))
        raw = _json(d / "raw_metadata.json") if "raw_metadata.json" in files else None
        parsed = _json(d / "parsed_metadata.json") if "parsed_metadata.json" in files else None
        if raw:
            assert raw["simulated"] is True
        if files == set(GEN_FILES):
            kinds.add("done")
            if r.stage == "evaluation":
                lo, hi = parsed["scale_min"], parsed["scale_max"]
                assert lo <= float((d / "parsed.txt").read_text()) == parsed["score"] <= hi
        elif files == {"metadata.json"}:
            kinds.add("pending")
        elif raw is not None and raw["valid"] is False:  # recorded as a failure too, as a run records it
            assert parsed["success"] is False and parsed["error"] == raw["invalid_reason"]
            kinds.add(raw["invalid_reason"])
        elif parsed is not None and parsed["success"] is False:
            assert parsed["error"] and parsed["raw_tail_preview"] and "parsed.txt" not in files
            kinds.add("parse")
        if r.mode == "copy":
            draft = (paths.gen_dir("draft", r.parent_gen_id) / "parsed.txt").read_text()
            assert all((d / f).read_text() == draft for f in ("prompt.txt", "raw.txt", "parsed.txt"))
    assert {"done", "pending", "parse", "truncated", "too_short"} <= kinds
    essays = [(paths.gen_dir("essay", g) / "parsed.txt") for g in m.loc[m["stage"] == "essay", "gen_id"]]
    text = "".join(p.read_text() for p in essays if p.exists())
    for hostile in ("<script>alert(1)</script>", "[x](javascript:alert(1))", "</pre>", "</textarea>", "{{", "---"):
        assert hostile in text


def test_deterministic_and_cohorts_share_without_overwriting(root):
    paths = make_synthetic_cohort(root, "a", n_essays=6, failure_rate=0.1)
    before = _tree_digest(root / "gens")
    make_synthetic_cohort(root, "a", n_essays=6, failure_rate=0.1)  # re-run: no byte changes
    assert _tree_digest(root / "gens") == before
    # a second cohort with other settings keeps every output of the first untouched
    make_synthetic_cohort(root, "b", n_essays=4, evaluators=("sim-beta", "sim-gamma"), failure_rate=0.5, seed=3)
    after = _tree_digest(root / "gens")
    changed = {k for k in before if before[k] != after[k]}
    assert changed and all(k.endswith("metadata.json") and not k.endswith("_metadata.json") for k in changed)
    shared = paths.gen_file("essay", pd.read_csv(paths.membership_csv("b"))["gen_id"][4], "metadata.json")
    assert _json(shared)["cohorts"] == ["a", "b"]
    cat = load_catalog(paths)  # the catalog now holds both cohorts' models
    assert {"sim-alpha", "sim-beta", "sim-gamma"} <= set(cat.models)
