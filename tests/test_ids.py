"""Golden ids from the contract (§4): these values must never change."""

import pytest

from pipeline import ids

GOLDEN_CONCEPTS = ["dearth-ai-discoveries", "default-mode-network", "economic-innovation-models",
                   "economic-moat", "generator-verifier-gap"]


def test_golden_combo_id_is_order_independent():
    assert ids.combo_id(GOLDEN_CONCEPTS, "paragraph", 5) == "combo_v1_85128e4e5ef3"
    assert ids.combo_id(reversed(GOLDEN_CONCEPTS), "paragraph", 5) == "combo_v1_85128e4e5ef3"
    assert ids.combo_id(GOLDEN_CONCEPTS, "sentence", 5) != "combo_v1_85128e4e5ef3"


def test_golden_real_draft_and_copy_essay():
    d = ids.draft_gen_id("combo_v1_85128e4e5ef3", "creative-synthesis-v10", "gemini_25_pro", 1)
    assert d == "d_5ezrffv9uf3lr37d"
    assert ids.essay_gen_id(d, "creative-synthesis-v10", None, 1) == "e_sq5klak2lljyyom"


def test_golden_small_lineage():
    d = ids.draft_gen_id("combo-1", "draft-a", "draft-llm", 1)
    assert d == "d_3rdru73r8ppaqlsz"
    e = ids.essay_gen_id(d, "essay-x", None, 1)
    assert e == "e_3p5jidm7056q95x9"
    assert ids.evaluation_gen_id(e, "eval-1", "eval-llm", 1) == "v_d6witcypvut8jo2"
    assert ids.essay_gen_id(d, "essay-x", "essay-llm", 1) == "e_18mzybfeojvk7mom"


def test_essay_model_is_part_of_the_essay_id():
    """Defect §9.1: two essay models on one draft must not collapse into one essay."""
    d = ids.draft_gen_id("combo-1", "draft-a", "draft-llm", 1)
    assert ids.essay_gen_id(d, "essay-x", "model-a", 1) != ids.essay_gen_id(d, "essay-x", "model-b", 1)


def test_signature_normalisation():
    assert ids.draft_gen_id(" Combo-1 ", "DRAFT-A", "draft-llm", "1") == "d_3rdru73r8ppaqlsz"
    assert ids.draft_gen_id("combo-1", "draft-a", "draft-llm", 2) != "d_3rdru73r8ppaqlsz"


@pytest.mark.parametrize("value", ["../x", "a/b", "a\0b", "", ".", "..", "x" * 129, "a b", "é"])
def test_unsafe_ids_rejected(value):
    assert not ids.is_safe_id(value)


@pytest.mark.parametrize("value", ["sim-alpha", "combo_v1_85128e4e5ef3", "v1.2", "A_b-9"])
def test_safe_ids_accepted(value):
    assert ids.is_safe_id(value)
