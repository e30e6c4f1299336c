"""Score parser against realistic evaluator responses (tests/score_corpus/).

Each ``.txt`` is one evaluator response (written for this project, or a public response fixture
of the earlier system: ``legacy_*``, see the folder's README); ``expected.json`` holds what a
careful human reader takes as its final score (or why there is none), the template's scale and
its declared label. The expectations were written from the texts, not from the parser's output.
``heldout/`` was written before the parser learnt the forms it holds and is not edited to fit it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ParseError
from pipeline.design.parsers import parse, parse_score, try_parse

CORPUS = Path(__file__).parent / "score_corpus"
HELDOUT = CORPUS / "heldout"


def _expected(folder: Path) -> dict:
    cases = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    return {k: v for k, v in cases.items() if not k.startswith("_")}


EXPECTED = _expected(CORPUS)
EXPECTED_HELDOUT = _expected(HELDOUT)

# What each failure kind's ParseError message must say (any one of the phrases).
ERROR_PHRASES = {
    "no_score": ("no score found", "no number after it"),
    "out_of_scale": ("outside scale", "refusing to rescale"),
    "ambiguous": ("ambiguous score:",),
    "not_a_number": ("is a range", "is a percentage", "is a list of numbers", "not a plain number", "not a number"),
}


def test_corpus_is_complete():
    for folder, cases in ((CORPUS, EXPECTED), (HELDOUT, EXPECTED_HELDOUT)):
        assert {p.name for p in folder.glob("*.txt")} == set(cases)
        for name, case in cases.items():
            assert ("score" in case) != ("error" in case), name
            assert case.get("error", "no_score") in ERROR_PHRASES, name
    assert len(EXPECTED) + len(EXPECTED_HELDOUT) >= 80
    assert len(EXPECTED_HELDOUT) >= 10
    # every public response fixture of the earlier system (16 files and 4 inline test responses)
    assert len([n for n in EXPECTED if n.startswith("legacy_")]) == 20


def _check(folder: Path, case: dict, name: str) -> None:
    text = (folder / name).read_text(encoding="utf-8")
    lo, hi = case["scale"]
    if "score" in case:
        assert parse_score(text, lo, hi, label=case["label"]) == case["score"]
        return
    with pytest.raises(ParseError) as info:
        parse_score(text, lo, hi, label=case["label"])
    message = str(info.value)
    assert any(phrase in message for phrase in ERROR_PHRASES[case["error"]]), message
    if case["error"] == "ambiguous":
        assert message.startswith("ambiguous score:") and " on line " in message


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_response(name):
    _check(CORPUS, EXPECTED[name], name)


@pytest.mark.parametrize("name", sorted(EXPECTED_HELDOUT))
def test_heldout_response(name):
    _check(HELDOUT, EXPECTED_HELDOUT[name], name)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_through_the_registry(name):
    """``parse``/``try_parse`` (and the old name ``in_last_line``) agree with ``parse_score``."""
    case = EXPECTED[name]
    text = (CORPUS / name).read_text(encoding="utf-8")
    lo, hi = case["scale"]
    for parser in ("score", "in_last_line"):
        result = try_parse(parser, text, scale_min=lo, scale_max=hi, label=case["label"])
        assert result.success is ("score" in case)
        assert result.score == case.get("score")
        if result.success:
            assert float(parse(parser, text, scale_min=lo, scale_max=hi, label=case["label"])) == case["score"]


def test_crlf_corpus_reads_the_same():
    for name, case in EXPECTED.items():
        if "score" in case:
            text = (CORPUS / name).read_text(encoding="utf-8").replace("\n", "\r\n")
            assert parse_score(text, *case["scale"], label=case["label"]) == case["score"], name
