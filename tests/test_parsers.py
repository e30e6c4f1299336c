"""Parsers (contract §5; defects §9.4 and §9.9): realistic and hostile model responses."""

from __future__ import annotations

import json

import pytest

from pipeline.errors import DaydreamError, ParseError
from pipeline.design.parsers import (
    PARSERS,
    TAIL_LINES,
    ParseResult,
    format_score,
    known_parser,
    parse,
    parse_score,
    strip_thinking,
    try_parse,
)

MB = 1_000_000


def parse_error(name: str, text: str, **scale: float) -> str:
    """The ParseError message for ``text`` (fails the test if parsing succeeds)."""
    with pytest.raises(ParseError) as info:
        parse(name, text, **scale)
    assert info.value.code == "parse"
    return str(info.value)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def test_registry_names():
    assert set(PARSERS) == {"identity", "essay_block", "essay_block_lenient", "essay_idea_last", "score",
                            "in_last_line"}


@pytest.mark.parametrize(
    "name, known",
    [("identity", True), ("essay_block", True), ("score", True), ("in_last_line", True), ("", True), (None, True),
     ("  essay_idea_last ", True), ("Score", False), ("essay", False), ("json", False)],
)
def test_known_parser(name, known):
    assert known_parser(name) is known


@pytest.mark.parametrize("name", ["", None])
def test_blank_name_means_identity(name):
    assert parse(name, "  <essay>x</essay>\n") == "<essay>x</essay>"


def test_unknown_parser_is_a_catalog_error_not_a_parse_failure():
    with pytest.raises(DaydreamError) as info:
        parse("no_such_parser", "text")
    assert info.value.code == "catalog"
    assert not isinstance(info.value, ParseError)
    assert "no_such_parser" in str(info.value) and "essay_block" in str(info.value)


def test_try_parse_success_score():
    result = try_parse("score", "Reasoning...\nFinal Score: 7.5/10", scale_min=0, scale_max=10)
    assert result == ParseResult("score", True, "7.5", None, 7.5, None)
    assert result.metadata() == {"parser": "score", "success": True, "error": None,
                                 "raw_tail_preview": None, "score": 7.5}


def test_try_parse_failure_records_reason_and_raw_tail():
    raw = "x" * 2000 + "\nthe end, SCORE: 12"
    result = try_parse("score", raw)
    assert result.success is False and result.text is None and result.score is None
    assert "score 12 outside scale 0–9" in result.error
    assert result.raw_tail_preview.endswith("SCORE: 12") and len(result.raw_tail_preview) == 500


def test_try_parse_blank_name_reports_identity():
    assert try_parse("", "hello").parser == "identity"
    assert try_parse(None, "   ").error == "empty response"


@pytest.mark.parametrize("value, text", [(7.0, "7"), (7, "7"), (7.5, "7.5"), (0.0, "0"), (6.25, "6.25"),
                                         (10.0, "10"), (0.1, "0.1")])
def test_format_score(value, text):
    assert format_score(value) == text


# --------------------------------------------------------------------------------------------
# identity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, parsed",
    [("  hello\n", "hello"), ("line 1\r\nline 2\r\n", "line 1\nline 2"), ("a\rb", "a\nb"),
     ("\n\n  Ünïcødé 思考 🚀  \n", "Ünïcødé 思考 🚀"), ("<essay>kept</essay>", "<essay>kept</essay>")],
)
def test_identity(raw, parsed):
    assert parse("identity", raw) == parsed


@pytest.mark.parametrize("raw", ["", "   ", "\r\n\t\n"])
def test_identity_empty(raw):
    assert parse_error("identity", raw) == "empty response"


# --------------------------------------------------------------------------------------------
# essay_block
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, parsed",
    [
        ("<essay>Body</essay>", "Body"),
        ("Intro chatter\n<essay>\n  Body text.\n</essay>\nOutro", "Body text."),
        ('<ESSAY id="x" lang=\'en\'>Body</Essay>', "Body"),
        ("<essay\n  class=final>Body</essay >", "Body"),
        ("<Essay>Line one\r\n\r\nLine two\r\n</ESSAY>", "Line one\n\nLine two"),
        # the last complete block wins: an echoed instruction or a rough draft comes first
        ("Wrap it in <essay>your essay</essay> tags.\n<essay>The real essay.</essay>", "The real essay."),
        ("<essay>draft one</essay>\n<essay>draft two</essay>", "draft two"),
        # nested: the innermost complete block
        ("<essay><essay>inner</essay></essay>", "inner"),
        # a trailing unclosed block does not displace the last complete one
        ("<essay>complete</essay>\n<essay>cut off", "complete"),
        # <essay-idea> is not an <essay> tag
        ("<essay-idea stage='1'>idea</essay-idea><essay>essay</essay>", "essay"),
        ("<essay>Ünïcødé — 思考 🚀 <b>bold</b></essay>", "Ünïcødé — 思考 🚀 <b>bold</b>"),
        ("<essay>a < b and c > d</essay>", "a < b and c > d"),
    ],
)
def test_essay_block(raw, parsed):
    assert parse("essay_block", raw) == parsed


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("Just prose, no tags.", "no <essay>…</essay> block found"),
        ("", "no <essay>…</essay> block found"),
        ("<essay-idea>x</essay-idea>", "no <essay>…</essay> block found"),
        ("<essays>x</essays>", "no <essay>…</essay> block found"),
        ("preamble\n<essay>\nThe essay never ends", "unclosed <essay> tag: opened on line 2"),
        ("text</essay>", "found </essay> on line 1 but no opening <essay> tag"),
        ("<essay>  \n </essay>", "the last <essay> block (line 1) is empty"),
        ("<essay>good</essay>\n<essay></essay>", "the last <essay> block (line 2) is empty"),
    ],
)
def test_essay_block_errors(raw, reason):
    assert reason in parse_error("essay_block", raw)


def test_essay_block_huge_input():
    body = ("A sentence of the essay. " * 40 + "\n") * 1000  # ~1 MB
    raw = "<thinking>plan</thinking>\n<essay>\n" + body + "</essay>\n"
    assert len(raw) > MB
    assert parse("essay_block", raw) == body.strip()


@pytest.mark.parametrize("junk", ["<essay", "<essay ", "<essay x=", "</essay", "<essay-idea "])
def test_essay_block_pathological_unterminated_tags(junk):
    raw = junk * 200_000 + "<essay>found</essay>"
    assert parse("essay_block", raw) == "found"
    assert parse_error("essay_block", junk * 200_000) == "no <essay>…</essay> block found"


def test_essay_block_many_openers_unclosed():
    assert "unclosed <essay> tag" in parse_error("essay_block", "<essay>" * 200_000)


# --------------------------------------------------------------------------------------------
# essay_block_lenient and strip_thinking
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, parsed",
    [
        ("<thinking>plan <essay>draft</essay></thinking>\n<essay>Final</essay>", "Final"),
        ("<THINKING>\nmulti\nline\n</Thinking>\n<essay>Final</essay>", "Final"),
        ("<thinking>only an essay in here: <essay>no</essay></thinking>\nPlain answer.", "Plain answer."),
        ("No tags at all.\r\nSecond line.", "No tags at all.\nSecond line."),
        ("<thinking>a</thinking>Answer<thinking>b</thinking>", "Answer"),
        ("<thinking>a <thinking>nested</thinking> still thinking</thinking>Answer", "Answer"),
        # an unclosed thinking tag loses its tag only: the essay after it survives
        ("<thinking>plan\n<essay>Kept</essay>", "Kept"),
        ("<thinking>plan\nthe essay itself", "plan\nthe essay itself"),
        # essay_block failure → whole remaining text, minus stray essay tags
        ("<essay>\nThe essay was cut off", "The essay was cut off"),
        ("stray </thinking> closer then <essay>E</essay>", "E"),
    ],
)
def test_essay_block_lenient(raw, parsed):
    assert parse("essay_block_lenient", raw) == parsed


@pytest.mark.parametrize("raw", ["", "<thinking>everything is thinking</thinking>", "<thinking>x</thinking>\n<essay> </essay>\n"])
def test_essay_block_lenient_empty(raw):
    assert "empty after removing <thinking>" in parse_error("essay_block_lenient", raw)


def test_strip_thinking_keeps_everything_else_byte_for_byte():
    assert strip_thinking("a<thinking x='1'>b</thinking>c\n  <thinking>\nd\n</thinking >e") == "ac\n  e"


def test_lenient_pathological_thinking_tags():
    raw = "<thinking>" * 200_000 + "Answer"
    assert parse("essay_block_lenient", raw) == "Answer"
    raw = "<thinking" * 200_000 + "<essay>E</essay>"
    assert parse("essay_block_lenient", raw) == "E"


# --------------------------------------------------------------------------------------------
# essay_idea_last
# --------------------------------------------------------------------------------------------

IDEAS = """Here is my development.

<essay-idea stage="1">
A first seed.
</essay-idea>

<essay-idea stage="3">
    The best version,
      with an indented line.
</essay-idea>

<essay-idea stage="2">
Middle.
</essay-idea>
"""


@pytest.mark.parametrize(
    "raw, parsed",
    [
        (IDEAS, "The best version,\n  with an indented line."),
        (IDEAS.replace("\n", "\r\n"), "The best version,\n  with an indented line."),
        ("<essay-idea stage=1>a</essay-idea><essay-idea stage=2>b</essay-idea>", "b"),
        ("<essay-idea stage='10'>ten</essay-idea><essay-idea stage='9'>nine</essay-idea>", "ten"),
        ('<ESSAY-IDEA STAGE="2">x</Essay-Idea>', "x"),
        ('  <essay-idea  stage = " 4 " >spaced</essay-idea>', "spaced"),
        # ties: the later block wins
        ('<essay-idea stage="2">first</essay-idea><essay-idea stage="2">second</essay-idea>', "second"),
        # no stage anywhere: the last block
        ("<essay-idea>one</essay-idea>\n<essay-idea>two</essay-idea>", "two"),
        ('<essay-idea stage="final">one</essay-idea><essay-idea>two</essay-idea>', "two"),
        # a staged block beats unstaged ones, wherever they are
        ('<essay-idea stage="1">staged</essay-idea><essay-idea>unstaged</essay-idea>', "staged"),
        # a truncated higher stage does not win over complete blocks
        ('<essay-idea stage="1">done</essay-idea><essay-idea stage="2">cut', "done"),
        ('\t<essay-idea stage="1">\n\t\tÜnïcødé 思考\n\t</essay-idea>', "Ünïcødé 思考"),
    ],
)
def test_essay_idea_last(raw, parsed):
    assert parse("essay_idea_last", raw) == parsed


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("No ideas here.", "no <essay-idea>…</essay-idea> block found"),
        ("<essay>an essay</essay>", "no <essay-idea>…</essay-idea> block found"),
        ('intro\n<essay-idea stage="1">\ncut off', "unclosed <essay-idea> tag: opened on line 2"),
        ('<essay-idea stage="1">ok</essay-idea>\n<essay-idea stage="2">  </essay-idea>',
         'the chosen <essay-idea> block (stage="2", line 2) is empty'),
        ("<essay-idea></essay-idea>", "the chosen <essay-idea> block (last, line 1) is empty"),
    ],
)
def test_essay_idea_last_errors(raw, reason):
    assert reason in parse_error("essay_idea_last", raw)


def test_essay_idea_last_pathological():
    raw = "<essay-idea stage=" * 200_000 + '<essay-idea stage="5">five</essay-idea>'
    assert parse("essay_idea_last", raw) == "five"


# --------------------------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------------------------

RUBRIC_THEN_FINAL = """## Evaluation

**Originality:** Score: 1/2 - the central idea is familiar.
**Clarity Score:** 2/3
- Rigor score: 3/5

The essay is decent overall.

**Final Score: 7/10**
"""

FINAL_THEN_BREAKDOWN = """**Final Score: 6/10**

### Breakdown
Originality: Score: 1/2
Clarity Score: 2/3
"""

MIDDLE_THEN_FINAL = """At first glance I would give this a score of 3, but reading on changes my mind.
Score: 5 was my initial impression.

After considering the second half more carefully:

SCORE: 8
"""


@pytest.mark.parametrize(
    "raw, scale_max, expected",
    [
        ("SCORE: 7", 9, "7"),
        ("**SCORE:** 7", 9, "7"),
        ("Score: 7.5", 9, "7.5"),
        ("score: 7.50", 9, "7.5"),
        ("Final Score: 8/10", 10, "8"),
        ("Final Score:\n8/10", 10, "8"),
        ("Total Score: 6.5/10", 10, "6.5"),
        ("Total Score: 7/10", 10, "7"),
        ("**Final Score: 8/10**", 10, "8"),
        ("## Score\n**4/10**", 10, "4"),
        ("### Final Score\n\n**9/10**\n", 10, "9"),
        ("Score:\r\n\r\n**6**\r\n", 9, "6"),
        ("Overall score - 7", 9, "7"),
        ("Overall Score — 7", 9, "7"),
        ("Score: 7.", 9, "7"),
        ("Final Score: 7/10.", 10, "7"),
        ("7/10", 10, "7"),
        ("Final Score: 7 / 10", 10, "7"),
        ("Score: 7 out of 10", 10, "7"),
        ("Score: **7**/10", 10, "7"),
        ("*Score: 7*", 9, "7"),
        ("_Score_: 7", 9, "7"),
        ("## Final Score: 8", 9, "8"),
        ("| Criterion | Score |\n|---|---|\n| **Total Score** | **7/10** |", 10, "7"),
        ("Final Score (0-10): 7", 10, "7"),
        ("Score (out of 10): 9", 10, "9"),
        ("Final Rating: 6/10", 10, "6"),
        ("Final Evaluation Score: 5", 9, "5"),
        ("SCORE:\u00a07", 9, "7"),
        ("Score: [7/10]", 10, "7"),
        ("Score: 0", 9, "0"),
        ("Score: 7,5", 10, "7.5"),
        ("Final Score: 6,25/10", 10, "6.25"),
        ("SCORE: 7, which is fair.", 9, "7"),
        ("Score: 9", 9, "9"),
        ("Score: 10/10", 10, "10"),
        ("Score: 3.5/5", 5, "3.5"),
        ("7", 9, "7"),
        ("\n\n  **8.5**  \n\n", 9, "8.5"),
        ("Great essay, clear and bold.\n\nSCORE: 7\n", 9, "7"),
        ("Ünïcødé reasoning 思考 🚀\nScore: 6", 9, "6"),
        (RUBRIC_THEN_FINAL, 10, "7"),
        (FINAL_THEN_BREAKDOWN, 10, "6"),
        (MIDDLE_THEN_FINAL, 9, "8"),
        ("Clarity Score: 2/3\nOriginality Score: 3/4\n\n**7/10**", 10, "7"),
        ("Score: 4/10 for clarity.\nTotal Score: 6/10\n", 10, "6"),
        ("The underscore: 5 is not a label.\nScore: 3", 9, "3"),
    ],
)
def test_score_formats(raw, scale_max, expected):
    assert parse("score", raw, scale_min=0, scale_max=scale_max) == expected


@pytest.mark.parametrize(
    "raw, scale_max, reason",
    [
        ("Score: 12", 9, "score 12 outside scale 0–9"),
        ("SCORE: 10", 9, "score 10 outside scale 0–9"),
        ("Reasoning.\n\n12", 9, "score 12 outside scale 0–9 (in '12')"),
        ("Score: 9.5", 9, "score 9.5 outside scale 0–9"),
        ("Score: -3", 9, "score -3 outside scale 0–9"),
        ("Score: −2", 9, "score -2 outside scale 0–9"),
        ("Score: NaN", 9, "'NaN' is not a finite number"),
        ("Score: inf", 9, "'inf' is not a finite number"),
        ("Score: -Infinity", 9, "'-Infinity' is not a finite number"),
        ("Score: N/A", 9, "score is 'N/A', not a number"),
        ("Final Score: 4/5", 10, "score 4/5 is out of 5 but the template's scale is 0–10; refusing to rescale"),
        ("Final Score: 8/10", 9, "score 8/10 is out of 10 but the template's scale is 0–9"),
        ("Score (1-5): 4", 10, "out of 5"),
        ("Score: 70%", 10, "'70%' is a percentage"),
        ("Score: 7-8", 10, "'7-8' is a range"),
        ("Score: 1,000", 10, "'1,0' is not a plain number"),
        ("Score: 7,5,8", 10, "'7,5' is not a plain number"),
        ("Score: 7, 8", 10, "'7,8' is a list of numbers"),
        ("Score: 7.5.1", 10, "'7.5.1' is not a plain number"),
        ("Just an opinion, no number.", 9, "no score found in the last 50 non-blank lines"),
        ("", 9, "empty response"),
        ("The score is high, I liked it.", 9, "found a score label in the last 50 non-blank lines but no number"),
        ("Scores: 5", 9, "no score found"),
        ("underscore: 5", 9, "no score found"),
        # the final label wins even when its value is unusable: no silent fallback to a sub-score
        ("Clarity Score: 2/3\nFinal Score: 11/10", 10, "score 11 outside scale 0–10"),
        # a sub-score after the breakdown is last, so its mismatch is reported
        ("Originality: Score: 1/2", 10, "score 1/2 is out of 2"),
    ],
)
def test_score_errors(raw, scale_max, reason):
    assert reason in parse_error("score", raw, scale_min=0, scale_max=scale_max)


def test_score_error_quotes_the_line_it_read():
    message = parse_error("score", "Some reasoning.\n**Final Score: 15/10**\n", scale_max=10)
    assert "'**Final Score: 15/10**'" in message


def test_parse_score_returns_float_and_respects_scale_min():
    assert parse_score("Score: 3", 1, 5) == 3.0
    assert isinstance(parse_score("Score: 3", 1, 5), float)
    assert "score 0 outside scale 1–5" in parse_error("score", "Score: 0", scale_min=1, scale_max=5)


def test_parse_default_scale_is_0_to_9():
    assert parse("score", "SCORE: 9") == "9"
    assert "outside scale 0–9" in parse_error("score", "SCORE: 10")


@pytest.mark.parametrize("lo, hi", [(5, 5), (9, 0), (0, float("inf")), (float("nan"), 9)])
def test_parse_score_invalid_scale_is_a_catalog_error(lo, hi):
    with pytest.raises(DaydreamError) as info:
        parse_score("Score: 3", lo, hi)
    assert info.value.code == "catalog"


def test_score_read_from_the_tail_only():
    raw = "Final Score: 7/10\n" + "More reasoning.\n" * TAIL_LINES
    assert f"no score found in the last {TAIL_LINES} non-blank lines" in parse_error("score", raw, scale_max=10)
    # blank lines do not count towards the window
    raw = "Final Score: 7/10\n" + "More reasoning.\n\n\n" * (TAIL_LINES - 1)
    assert parse("score", raw, scale_max=10) == "7"


def test_score_huge_input():
    raw = ("The essay discusses many things at length. " * 20 + "\n") * 1200 + "Final Score: 8/10\n"
    assert len(raw) > MB
    assert parse("score", raw, scale_max=10) == "8"


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("Score: " * 200_000, "no number after it"),
        ("Final Score: " * 200_000 + "7", None),
        ("score" + " " * MB + "x", "no number after it"),
        ("Final " * 200_000 + "Score: 4", None),
        ("Score: 7" + "." * MB, None),
        ("Score: (" * 200_000, "no number after it"),
        ("7/" * 200_000, "no score found"),
    ],
)
def test_score_pathological_inputs(raw, reason):
    if reason is None:
        assert parse("score", raw, scale_max=9) in {"7", "4"}
    else:
        assert reason in parse_error("score", raw)


# --------------------------------------------------------------------------------------------
# score: the declared label, "rounded to", ambiguity, alias
# --------------------------------------------------------------------------------------------

LABEL_THEN_BREAKDOWN = """The essay develops the idea with care and a clear structure.

**SCORE:** 6

### Breakdown
- Problem: **0/1**
- Core Concepts (3/5)
- Synthesis: **2/2**
Idea score: 3
"""

LABEL_THEN_SECTIONS = """## SCORE: 8/10

### Strengths
- A vivid central example.

### Key Omissions
- No discussion of cost. Overall rating: 4 for the omissions alone.
"""

ROUNDED_THEN_LABEL = """Total Score: 6.5/10 → Rounded to **7/10**

**SCORE:** 7
"""


@pytest.mark.parametrize(
    "raw, scale_max, label, expected",
    [
        (LABEL_THEN_BREAKDOWN, 9, "SCORE", "6"),
        (LABEL_THEN_SECTIONS, 10, "SCORE", "8"),
        (ROUNDED_THEN_LABEL, 10, "SCORE", "7"),
        ("**SCORE:** **6/10**\nClarity Score: 9/10", 10, "SCORE", "6"),
        ("SCORE:\n7\n\nFinal Score: 3", 9, "SCORE", "7"),
        ("score: 5\nSome second thoughts.\nSCORE: 8\nOriginality score: 2", 9, "SCORE", "8"),
        ("- **Score**: 4\n\nTotal Score: 6/10", 10, "SCORE", "4"),
        ("OVERALL: 7\nScore for clarity: 3\nFinal Score: 2", 9, "OVERALL", "7"),
        ("**Overall:**\n**5**\n\nOriginality Score: 2", 9, "overall:", "5"),
        ("FINAL GRADE: 4\nScore: 2", 5, "Final Grade", "4"),
        # a blank label (an empty catalog cell) means SCORE
        ("SCORE: 3\nFinal Score: 5", 9, "", "3"),
        # the declared label opening a line with a qualifier grades one aspect
        ("Score: 4/10 for clarity.\nTotal Score: 6/10", 10, "SCORE", "6"),
        ("SCORE: 7 for this essay.", 9, "SCORE", "7"),
        # mid-sentence the label is not the label, but "I assign SCORE: 6" is the evaluator's verdict
        ("Weighing all this, I assign SCORE: 6.\nClarity Score: 3\nRigor Score: 2", 9, "SCORE", "6"),
        ("The rubric says to end with SCORE: 9 only for groundbreaking work.\nThis is not.\nFinal Score: 6",
         10, "SCORE", "6"),
        ('Finish with "SCORE: 10" only if flawless.\nIt is not.\nSCORE: 7', 10, "SCORE", "7"),
        # a breakdown's "- **Score**: **1/2**" items are sub-scores once a final score exists
        ("- **Score**: **1/2**\n- **Score**: 0/1\n\n### **SCORE:**\n**Total Score: 7/10**", 10, "SCORE", "7"),
        ("- **Score**: **1/2**\n\n### **Final Score: 4/10**", 10, "SCORE", "4"),
        ("**SCORE:** 3/5\nFinal Score: 7/10", 10, "SCORE", "7"),
        # the value of a label alone on its line is on the next non-blank line
        ("### **SCORE:**\n\n\n**6**", 10, "SCORE", "6"),
        # JSON, bare or fenced, read first
        ('{"score": 4, "reasoning": "thin"}', 10, "SCORE", "4"),
        ('Notes: SCORE: 2\n```json\n{"total_score": 7}\n```', 10, "SCORE", "7"),
        ('{"evaluation": {"final_score": "8/10"}}', 10, "SCORE", "8"),
        ('{"OVERALL": 3, "score": 9}', 10, "OVERALL", "3"),
        # an echoed example object followed by the answer yields to the label; one ending the response wins
        ('The format asked for:\n```json\n{"score": 5}\n```\nMy reading: thin.\nSCORE: 7', 10, "SCORE", "7"),
        ('SCORE: 2 (draft)\n{"score": 6, "reasoning": "revised"}\n', 10, "SCORE", "6"),
        ('{"score": 6}\nHope this helps.', 10, "SCORE", "6"),
        (json.dumps({"criteria": [{"name": f"c{i}", "note": "fine"} for i in range(60)], "score": 4}, indent=2),
         10, "SCORE", "4"),
        ("### SCORE\n\nRating: 6/10", 10, "SCORE", "6"),
        # common closing forms
        ("I would rate this a 6 out of 10.", 10, "SCORE", "6"),
        ("Reasoning follows.\nOverall: 7.5", 10, "SCORE", "7.5"),
        ("Final verdict: 7/10", 10, "SCORE", "7"),
        ("Overall, I'd give it a 7.", 10, "SCORE", "7"),
        ("I rate 3 of the criteria as weak.\nTotal: 6/10", 10, "SCORE", "6"),
        ("I assign SCORE: 6 for originality.\nFinal Score: 5", 9, "SCORE", "5"),
        ("Weighing it all, Score: 6\nFinal Score: 5", 9, "SCORE", "5"),
        ("Weighing it all, Overall: 6\nOverall: 4", 9, "Overall", "4"),
        # without the label: "rounded to" > final > total/overall > other labels
        ("Total Score: 6.5/10 → Rounded to 7/10", 10, "SCORE", "7"),
        ("Total Score: 6.5/10\nFinal Score: 7/10", 10, "SCORE", "7"),
        ("Final Score: 8/10", 10, "SCORE", "8"),
        ("Total Score: 7/10", 10, "SCORE", "7"),
        ("Clarity Score: 5\nOverall Score: 6", 9, "SCORE", "6"),
        ("Final Score: 7/10\nThis is a final score of seven.\nFinal Score: 7.0/10", 10, "SCORE", "7"),
        # a total without the word "score" counts only when it is out of the scale max
        ("| Clarity | 3/4 |\n| **Total** | **7/10** |", 10, "SCORE", "7"),
        ("Total: 6.5/10 (rounded to 7)", 10, "SCORE", "7"),
        ("Total: 850 words.\nFinal Score: 6", 9, "SCORE", "6"),
        ("Total: 3/5\nScore: 4", 9, "SCORE", "4"),
        ("Total Score: 6/10\nTotal: 6/10", 10, "OVERALL", "6"),
        # a denominator other than the scale max is a sub-score, never the final
        ("Total Score: 3/5\nScore: 7", 10, "OVERALL", "7"),
    ],
)
def test_score_declared_label(raw, scale_max, label, expected):
    assert parse("score", raw, scale_min=0, scale_max=scale_max, label=label) == expected


@pytest.mark.parametrize(
    "raw, scale_max, label, candidates",
    [
        ("Final Score: 6/10\nOn reflection...\nFinal Score: 7/10", 10, "SCORE", ["6/10 on line 1", "7/10 on line 3"]),
        ("Clarity Score: 5\nOriginality Score: 7", 9, "SCORE", ["5 on line 1", "7 on line 2"]),
        ("Originality Score: 6\nWeighing it all, Score: 7", 9, "SCORE", ["6 on line 1", "7 on line 2"]),
        ("Score: 3\nScore: 5", 9, "OVERALL", ["3 on line 1", "5 on line 2"]),
        ("Final Score: 7/10\n\n8", 10, "SCORE", ["7/10 on line 1", "8 on line 3"]),
        ("Final Score: 70%\nFinal Score: 7/10", 10, "SCORE", ["70% on line 1", "7/10 on line 2"]),
    ],
)
def test_score_ambiguous(raw, scale_max, label, candidates):
    message = parse_error("score", raw, scale_max=scale_max, label=label)
    assert message.startswith("ambiguous score:")
    assert repr(label) in message
    for c in candidates:
        assert c in message


def test_score_ambiguous_lists_a_bounded_number_of_candidates():
    raw = "".join(f"Final Score: {i}\n" for i in range(10))
    message = parse_error("score", raw, scale_max=9)
    assert message.startswith("ambiguous score: 10 candidates disagree") and "and 5 more" in message
    assert message.count(" on line ") == 5


@pytest.mark.parametrize(
    "raw, scale_max, reason",
    [
        # the declared label is authoritative: its unusable value is reported, not skipped
        ("SCORE: 12\nFinal Score: 7", 9, "score 12 outside scale 0–9"),
        ("**SCORE:** 3/5\nClarity: fine", 10, "score 3/5 is out of 5"),
        ('{"score": 12}', 10, "score 12 outside scale 0–10"),
        ('```json\n{"score": "N/A"}\n```', 10, "not a number"),
        ("Clarity is 8 out of 10.\nOriginality is 3 out of 10.", 10, "ambiguous score: 2 candidates disagree"),
        ("SCORE: 8/10", 9, "score 8/10 is out of 10 but the template's scale is 0–9"),
        ("Problem: **0/1**\nCore Concepts (3/5)", 10, "no score found"),
    ],
)
def test_score_declared_label_errors(raw, scale_max, reason):
    assert reason in parse_error("score", raw, scale_max=scale_max)


def test_declared_label_is_found_outside_the_tail():
    raw = "SCORE: 6\n" + "### Key Omissions\n- one more point\n" * TAIL_LINES + "Subscore: 3\n"
    assert parse("score", raw, scale_max=9) == "6"


def test_in_last_line_is_the_score_parser():
    raw = "Reasoning.\nOVERALL: 4\nScore: 2"
    assert parse("in_last_line", raw, scale_min=1, scale_max=5, label="OVERALL") == "4"
    result = try_parse("in_last_line", raw, scale_min=1, scale_max=5, label="OVERALL")
    assert result == ParseResult("in_last_line", True, "4", None, 4.0, None)


def test_try_parse_forwards_the_label_and_other_parsers_ignore_it():
    assert try_parse("score", "OVERALL: 3\nFinal Score: 5", label="OVERALL").score == 3.0
    assert parse("essay_block", "<essay>E</essay>", label="OVERALL") == "E"
    assert parse("identity", " x ", label="OVERALL") == "x"


@pytest.mark.parametrize(
    "raw",
    [
        "SCORE" + ":" * MB,
        "\nSCORE: " * 200_000,
        "\n**SCORE:** 7 for" * 100_000,
        "SCORE " * 200_000,
        "x SCORE: 7 for y " * 100_000,
        "rounded to " * 200_000,
        "Total " * 200_000 + "score",
        "| total | " * 200_000,
        "Final Score: 7 Final Score: 8 " * 50_000,
        "7,5," * 200_000,
        "\n" * MB + "SCORE: 7",
    ],
)
def test_score_pathological_inputs_with_labels(raw):
    import time

    started = time.perf_counter()
    try:
        parse("score", raw, scale_max=9)
    except ParseError:
        pass
    assert time.perf_counter() - started < 5
