"""Score parser against realistic evaluator responses (tests/score_corpus/).

Each ``.txt`` is one evaluator response written for this project; ``expected.json`` holds what a
careful human reader takes as its final score (or why there is none), the template's scale and
its declared label. The expectations were written from the texts, not from the parser's output.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ParseError
from pipeline.parsers import parse, parse_score, try_parse

CORPUS = Path(__file__).parent / "score_corpus"
EXPECTED = {k: v for k, v in json.loads((CORPUS / "expected.json").read_text(encoding="utf-8")).items()
            if not k.startswith("_")}

# What each failure kind's ParseError message must say (any one of the phrases).
ERROR_PHRASES = {
    "no_score": ("no score found", "no number after it"),
    "out_of_scale": ("outside scale", "refusing to rescale"),
    "ambiguous": ("ambiguous score:",),
    "not_a_number": ("is a range", "is a percentage", "is a list of numbers", "not a plain number", "not a number"),
}


def test_corpus_is_complete():
    files = {p.name for p in CORPUS.glob("*.txt")}
    assert files == set(EXPECTED)
    assert len(files) >= 40
    for name, case in EXPECTED.items():
        assert ("score" in case) != ("error" in case), name
        assert case.get("error", "no_score") in ERROR_PHRASES, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_response(name):
    case = EXPECTED[name]
    text = (CORPUS / name).read_text(encoding="utf-8")
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
