"""Parsers: turn a model's raw response into the text (or score) a generation keeps (contract §5).

Pure: no I/O, no luigi. Every failure raises ``ParseError`` with a reason a researcher can act on,
because the earlier system swallowed parse reasons (defect §9.4); ``try_parse`` packages that
reason, with a preview of the raw tail, for ``parsed_metadata.json``.

Every regex here is linear in the input: tag patterns stop at the next ``<``, quantifiers that
could overlap are possessive, the declared score label is anchored to a line start, the score
reader looks at most ``_SCORE_REACH`` characters past each label, and at most
``_JSON_OBJECTS_TRIED`` JSON objects are decoded, so hostile or megabyte-sized responses cannot
trigger catastrophic backtracking.
"""

from __future__ import annotations

import functools
import json
import math
import re
import textwrap
from dataclasses import dataclass
from typing import Callable

from pipeline.errors import DaydreamError, ParseError

__all__ = [
    "DEFAULT_SCORE_LABEL",
    "PARSERS",
    "ParseResult",
    "format_score",
    "known_parser",
    "parse",
    "parse_score",
    "strip_thinking",
    "try_parse",
]

RAW_TAIL_CHARS = 500  # how much of the raw response a failed parse records
TAIL_LINES = 50  # the score is read from this many last non-blank lines
_SCORE_REACH = 200  # max characters between the end of a score label and its number
DEFAULT_SCORE_LABEL = "SCORE"  # the final-score label a rubric asks for unless its template declares another


def _normalize(text: str) -> str:
    """CRLF and lone CR become LF, so every parser (and every output) sees one line ending."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


# ---------------------------------------------------------------------------------------------
# Tagged blocks
# ---------------------------------------------------------------------------------------------


def _tag_pattern(tag: str) -> re.Pattern[str]:
    """Opening tag with optional attributes, or closing tag; case-insensitive.

    ``[^<>]*`` cannot run past the next ``<``, which keeps matching linear even on inputs made of
    thousands of unterminated ``<essay`` fragments. ``<essay-idea>`` is not an ``<essay>`` tag:
    the name must be followed by whitespace or ``>``.
    """
    return re.compile(rf"<{tag}(?P<attrs>\s[^<>]*)?>|</{tag}\s*>", re.IGNORECASE)


_ESSAY_TAG = _tag_pattern("essay")
_IDEA_TAG = _tag_pattern("essay-idea")
_THINKING_TAG = _tag_pattern("thinking")
_STAGE_ATTR = re.compile(r"""\bstage\s*=\s*(?:"\s*(\d+)\s*"|'\s*(\d+)\s*'|(\d+)(?![^\s/>]))""", re.I)


def _is_closer(m: re.Match[str]) -> bool:
    return m.group(0).startswith("</")


@dataclass(frozen=True)
class _Blocks:
    complete: list[tuple[re.Match[str], str]]  # (opening tag, inner text), in document order
    unclosed: re.Match[str] | None  # last opening tag never closed
    orphan_closer: re.Match[str] | None  # first closing tag with no opening tag before it


def _blocks(text: str, pattern: re.Pattern[str]) -> _Blocks:
    """Pair each closing tag with the most recent unclosed opening tag (no nesting).

    A block is complete when an opening tag is followed by a closing tag with no other tag of
    the same name in between; ``<essay><essay>x</essay></essay>`` therefore yields ``x``.
    """
    complete: list[tuple[re.Match[str], str]] = []
    opener = unclosed = orphan = None
    for m in pattern.finditer(text):
        if not _is_closer(m):
            if opener is not None:
                unclosed = opener
            opener = m
        elif opener is not None:
            complete.append((opener, text[opener.end() : m.start()]))
            opener = None
        elif orphan is None:
            orphan = m
    return _Blocks(complete, opener or unclosed, orphan)


def _complete_blocks(text: str, pattern: re.Pattern[str], tag: str) -> _Blocks:
    """``_blocks``, or a ParseError saying why there is no complete ``<tag>`` block."""
    found = _blocks(text, pattern)
    if found.complete:
        return found
    if found.unclosed is not None:
        line = _line_of(text, found.unclosed.start())
        raise ParseError(f"unclosed <{tag}> tag: opened on line {line}, no </{tag}> after it")
    if found.orphan_closer is not None:
        line = _line_of(text, found.orphan_closer.start())
        raise ParseError(f"found </{tag}> on line {line} but no opening <{tag}> tag before it")
    raise ParseError(f"no <{tag}>…</{tag}> block found")


def _essay_block(text: str, **_opts: object) -> str:
    """Text inside the last complete ``<essay>…</essay>`` block.

    The last block wins because models often echo the format instruction or write a rough draft
    in tags first; the block they end with is the one they hand in.
    """
    text = _normalize(text)
    found = _complete_blocks(text, _ESSAY_TAG, "essay")
    opener, inner = found.complete[-1]
    inner = inner.strip()
    if not inner:
        line = _line_of(text, opener.start())
        raise ParseError(f"the last <essay> block (line {line}) is empty")
    return inner


def strip_thinking(text: str) -> str:
    """Remove ``<thinking>…</thinking>`` sections (nesting allowed) and any stray thinking tags.

    An unclosed ``<thinking>`` loses only its tag, not the text after it: a model that forgets to
    close its thinking usually goes on to write the answer, and dropping it would lose the essay.
    """
    spans: list[tuple[int, int]] = []
    stack: list[re.Match[str]] = []
    for m in _THINKING_TAG.finditer(text):
        if not _is_closer(m):
            stack.append(m)
        elif stack:
            spans.append((stack.pop().start(), m.end()))
        else:
            spans.append((m.start(), m.end()))
    spans += [(m.start(), m.end()) for m in stack]
    pieces, cursor = [], 0
    for start, end in sorted(spans):
        if start > cursor:
            pieces.append(text[cursor:start])
        cursor = max(cursor, end)
    pieces.append(text[cursor:])
    return "".join(pieces)


def _essay_block_lenient(text: str, **_opts: object) -> str:
    """``essay_block`` after removing thinking; else the whole remaining text.

    For models that do not reliably use the tags. In the fallback, leftover ``<essay>`` tags
    (e.g. an unclosed opening tag) are removed: tags are markup, never essay content.
    """
    remaining = strip_thinking(_normalize(text))
    try:
        return _essay_block(remaining)
    except ParseError:
        pass
    fallback = _ESSAY_TAG.sub("", remaining).strip()
    if not fallback:
        raise ParseError("response is empty after removing <thinking> sections and essay tags")
    return fallback


def _stage_of(opener: re.Match[str]) -> int | None:
    m = _STAGE_ATTR.search(opener.group("attrs") or "")
    return int(next(g for g in m.groups() if g is not None)) if m else None


def _essay_idea_last(text: str, **_opts: object) -> str:
    """Inner text of the ``<essay-idea stage="N">`` block with the highest stage.

    Ties go to the later block; blocks without a stage number only count when no block has one
    (then the last block wins). Only complete blocks compete: a truncated final stage is caught
    by raw-output validation, not guessed at here. Inner text is dedented, then stripped.
    """
    text = _normalize(text)
    found = _complete_blocks(text, _IDEA_TAG, "essay-idea")
    staged = [(s, i) for i, (m, _) in enumerate(found.complete) if (s := _stage_of(m)) is not None]
    index = max(staged)[1] if staged else len(found.complete) - 1
    opener, inner = found.complete[index]
    inner = textwrap.dedent(inner).strip()
    if not inner:
        stage = _stage_of(opener)
        which = f'stage="{stage}"' if stage is not None else "last"
        raise ParseError(f"the chosen <essay-idea> block ({which}, line {_line_of(text, opener.start())}) is empty")
    return inner


def _identity(text: str, **_opts: object) -> str:
    """The response as is, minus surrounding whitespace."""
    out = _normalize(text).strip()
    if not out:
        raise ParseError("empty response")
    return out


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------

_NUM = r"[-+\u2212]?(?:[0-9]++(?:\.[0-9]++)?|\.[0-9]++)"
# A score may use a decimal comma ("7,5"): one or two digits after the comma and nothing after
# them that makes it a thousands group ("1,000") or a list ("7,5,8"); those fall to ``bad``.
_SCORE_NUM = r"[-+\u2212]?(?:[0-9]++(?:\.[0-9]++|,[0-9]{1,2}(?![0-9]|,[0-9]))?|\.[0-9]++)"
# number, then what makes it unusable (percent, list, thousands group / second dot, range), then "/D"
_VALUE = rf"""
    (?P<num>{_SCORE_NUM}|(?:nan|[-+]?inf(?:inity)?)\b|n/?a\b)
    (?P<bad>%|,[ \t]*+[0-9]|\.[0-9]|[ \t]*[-–][ \t]*[0-9])?
    (?:[ \t*_]*+(?:/|out[ \t]+of)[ \t*_]*+(?P<den>{_NUM}))?
"""
# "Score", "SCORE", "Final Score", "**Total** Score", "Overall Quality Score", "Final Rating",
# "Final verdict", "Grade"
_LABEL = re.compile(
    r"(?<![A-Za-z0-9])(?:(?P<kind>final|total|overall|rounded)(?:[ \t*_]{1,6}[A-Za-z]{1,30})?[ \t*_]{0,6})?"
    r"(?:score|rating|verdict|grade)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
# "Overall: 7.5" opening a line: an overall score without the word score
_OVERALL_LINE = re.compile(r"^[ \t>*_#|+\-•]*+overall[ \t*_]*+[:：]", re.IGNORECASE | re.MULTILINE)
# "I'd give it a 7", "I would rate this a 6 out of 10", "I assign SCORE: 6": the evaluator's own verdict
_VERDICT = re.compile(
    r"(?<![A-Za-z0-9])i(?:['’]d|['’]ll)?[ \t]++(?:would[ \t]++|will[ \t]++)?"
    r"(?:give|rate|score|assign|award|grade)[ \t]++"
    r"(?:(?:it|this|that|the)[ \t]++(?:(?!a[ \t]|an[ \t])[A-Za-z-]{1,20}[ \t]++)?)?"
    r"(?:an?[ \t]++)?(?:(?:final[ \t]++|overall[ \t]++)?(?:score|rating|grade)(?:[ \t]++of)?[ \t*_:]*+)?"
    r"(?=[-+\u2212]?[0-9.])",
    re.IGNORECASE,
)
_COUNT_OF = re.compile(r"[ \t]++(?:of|criteria|points?[ \t]++for)(?![A-Za-z])", re.IGNORECASE)
# "6 out of 10" anywhere in the tail: a plain claim, a sub-score unless out of the scale maximum
_OUT_OF = re.compile(r"(?<![A-Za-z0-9.,/])(?=[0-9]++(?:\.[0-9]++)?[ \t]++out[ \t]++of[ \t]++[0-9])", re.IGNORECASE)
# "→ Rounded to **7/10**", "which I round up to 7"
_ROUNDED = re.compile(r"(?<![A-Za-z0-9])round(?:ed|s|ing)?(?:[ \t]+(?:up|down))?[ \t]+to(?![A-Za-z0-9])", re.I)
# "| **Total** | **7/10** |", "Total: 7/10": a total without the word score (those are _LABEL's)
_BARE_TOTAL = re.compile(
    r"(?<![A-Za-z0-9])total(?![A-Za-z0-9])(?![ \t*_]{0,6}(?:[A-Za-z]{1,30}[ \t*_]{1,6})?(?:score|rating)\b)", re.I
)
_AFTER_LABEL = re.compile(
    r"""
    (?:[ \t]*\((?P<paren>[^()\n]{0,40})\))?   # "Final Score (0-10): 7", "Score (out of 10): 7"
    [ \t*_:：#=\[|]*+                          # ": ", ":** ", " = ", "| **" (tables)
    (?:[-–—][ \t]++)?                          # "Overall score - 7"
    [ \t*_\[(|]*+
    (?:\n[ \t*_#>\[(|]*+){0,2}                 # number on the next line: "## Score\n**4/10**"
    """
    + _VALUE,
    re.IGNORECASE | re.VERBOSE,
)
# "Score: 4/10 for clarity" grades one aspect, so it is not the declared final score even though
# it starts with the label; "SCORE: 7 for this essay" still is.
_QUALIFIED = re.compile(
    r"[ \t*_\])]*+for[ \t]++(?!(?:a|an|the|this|that|its|it|my|your|me|now)(?![A-Za-z]))[A-Za-z]", re.I
)
# A last line holding only a number: "7", "**7/10**", "## 8.5".
_BARE_LINE = re.compile(r"[ \t*_#>\[(]*+" + _VALUE + r"[ \t*_\].)]*+", re.IGNORECASE | re.VERBOSE)
_PAREN_SCALE = re.compile(rf"(?:out\s+of|/|[-–]|\bto)\s*(?P<den>{_NUM})\s*$", re.IGNORECASE)
_UNICODE_SPACES = str.maketrans({c: " " for c in "\u00a0\u2007\u202f\u2009\u200a\u3000"})
_AMBIGUOUS_SHOWN = 5  # candidates quoted in an "ambiguous score" message

# How strongly a candidate claims to be the final score when the declared label is absent.
_SUB, _PLAIN, _TOTAL, _FINAL, _ROUNDED_TIER = range(5)


def format_score(value: float) -> str:
    """Canonical text of a score: ``7`` for integral values, else the shortest repr (``7.5``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class _Candidate:
    tier: int
    num: str
    den: str | None
    bad: str | None
    span: tuple[int, int]  # where in the text it was read, quoted in error messages

    def shown(self) -> str:
        return self.num + "".join((self.bad or "").split()) + (f"/{self.den}" if self.den else "")


def _context(text: str, start: int, end: int) -> str:
    """The line(s) around ``text[start:end]``, whitespace collapsed, at most 80 characters.

    Looks at most 80 characters either side so that thousands of labels on one huge line stay
    linear.
    """
    line_start = text.rfind("\n", max(0, start - 80), start) + 1 or max(0, start - 80)
    line_end = text.find("\n", end, end + 80)
    snippet = " ".join(text[line_start : line_end if line_end != -1 else end + 80].split())
    return snippet if len(snippet) <= 80 else snippet[:77] + "..."


def _tail_start(text: str, n: int) -> int:
    """Where the last ``n`` non-blank lines (and the blank lines between them) begin."""
    seen, end = 0, len(text)
    while True:
        start = text.rfind("\n", 0, end) + 1
        if text[start:end].strip():
            seen += 1
            if seen == n:
                return start
        if start == 0:
            return 0
        end = start - 1


def _candidate(tier: int, label_start: int, m: re.Match[str]) -> _Candidate:
    den = m.group("den")
    if den is None and m.group("paren"):
        scale = _PAREN_SCALE.search(m.group("paren"))
        den = scale.group("den") if scale else None
    return _Candidate(tier, m.group("num"), den, m.group("bad"), (label_start, m.end()))


@functools.lru_cache(maxsize=64)
def _declared_pattern(label: str) -> re.Pattern[str]:
    """The declared label opening a line, after markdown (``**``, ``##``, ``>``, ``|``, a bullet
    or a list number), in any case.

    Other mentions do not count: "Clarity Score: 2/3" or "Originality: Score: 1/2" use the word
    to grade one criterion, and "The rubric says to end with SCORE: 9 only for…" quotes the rule.
    """
    body = r"[ \t*_]++".join(re.escape(word) for word in label.split())
    return re.compile(rf"^[ \t>*_#|+\-•]*+(?:[0-9]{{1,3}}[.)][ \t*_]*+)?(?i:{body})(?![A-Za-z0-9])", re.MULTILINE)


# The rest of a line holding only a label ("### **SCORE:**"), whose value is on the next
# non-blank line, maybe in a line of its own ("**Total Score: 7/10**", "### Final Score: 4/10").
_LABEL_LINE_END = re.compile(r"[ \t*_:：#]*+\n(?:[ \t]*+\n)*+[ \t>*_#|+\-•]*+")


def _after_declared(text: str, end: int) -> re.Match[str] | None:
    """The value after a declared label ending at ``end``: on its line or the next non-blank one."""
    after = _AFTER_LABEL.match(text, end, end + _SCORE_REACH)
    if after is not None:
        return after
    nxt = _LABEL_LINE_END.match(text, end, end + _SCORE_REACH)
    if nxt is None:
        return None
    label = _LABEL.match(text, nxt.end(), nxt.end() + 80)
    if label is None:
        return None
    return _AFTER_LABEL.match(text, label.end(), label.end() + _SCORE_REACH)


def _declared(text: str, label: str, hi: float) -> _Candidate | None:
    """The last value after the declared label anywhere in ``text``, or None.

    A value out of another denominator ("- **Score**: **1/2**" in a breakdown) grades one item:
    it is skipped here, so the final score (declared or not) decides; if there is none, the tail
    reading reports the sub-score.
    """
    last = None
    for m in _declared_pattern(label).finditer(text):
        after = _after_declared(text, m.end())
        if after is None or _QUALIFIED.match(text, after.end(), after.end() + 40):
            continue
        c = _candidate(_FINAL, m.start(), after)
        if c.den is None or _float(c.den) == hi:
            last = c
    return last


# ---- JSON (structured output, or a JSON object a model ends with) ----------------------------

# Keys that hold the final score, most specific first; the template's label (lower-cased) leads.
_JSON_KEYS = ("final_score", "total_score", "overall_score", "score", "total", "overall", "rating", "final")
_FENCE = re.compile(r"^[ \t]*```[^\n`]*$", re.MULTILINE)
_JSON_OBJECTS_TRIED = 50  # fenced blocks and '{' line starts tried, so hostile text stays fast


def _json_key(key: object) -> str:
    return str(key).strip().lower().replace(" ", "_").replace("-", "_")


def _json_value(obj: dict, label: str) -> tuple[str, object] | None:
    """(key, value) of the first score key holding a number (or a numeric string), else None."""
    keys = {_json_key(k): v for k, v in obj.items()}
    for key in (_json_key(label), *_JSON_KEYS):
        value = keys.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)) or (isinstance(value, str) and _BARE_LINE.fullmatch(value.strip())):
            return key, value
    return None


def _json_objects(text: str, start: int) -> list[tuple[int, int, dict]]:
    """JSON objects in ``text``: the whole response, fenced blocks, and objects opening a line
    in ``text[start:]`` (after prose), as (start, end, object) in document order."""
    decoder = json.JSONDecoder()
    found: list[tuple[int, int, dict]] = []

    def attempt(pos: int, end_limit: int | None = None) -> int | None:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):  # RecursionError: thousands of nested '{'
            return None
        if isinstance(obj, dict) and (end_limit is None or end <= end_limit):
            found.append((pos, end, obj))
            return end
        return None

    fences = [m for m in _FENCE.finditer(text)]
    for opener, closer in list(zip(fences[::2], fences[1::2]))[-_JSON_OBJECTS_TRIED:]:
        inner = opener.end() + 1
        while inner < closer.start() and text[inner] in " \t\n":
            inner += 1
        if inner < closer.start() and text[inner] == "{":
            attempt(inner, closer.start())
    whole = len(text) - len(text.lstrip())
    if whole < len(text) and text[whole] == "{" and not found:
        attempt(whole)  # the whole response, however long (structured output pretty-printed)
    covered = max((end for _, end, _ in found), default=-1)
    tried = 0
    for m in re.finditer(r"^[ \t]*+\{", text[start:], re.MULTILINE):
        pos = start + m.end() - 1
        if pos < covered or tried >= _JSON_OBJECTS_TRIED:
            continue
        tried += 1
        end = attempt(pos)
        if end is not None:
            covered = end
    return sorted(found, key=lambda f: f[0])


def _json_candidate(text: str, start: int, label: str) -> _Candidate | None:
    """The score of the last JSON object in the response that holds one, or None.

    One level of nesting is looked into ({"evaluation": {"score": 7}}); sub-scores in a nested
    object ({"criteria": {"clarity": 3}}) are not score keys and are ignored.
    """
    for pos, end, obj in reversed(_json_objects(text, start)):
        hit = _json_value(obj, label)
        if hit is None:
            nested = [v for v in obj.values() if isinstance(v, dict)]
            hits = [h for v in nested if (h := _json_value(v, label)) is not None]
            hit = hits[-1] if len(hits) == 1 else None
        if hit is None:
            continue
        key, value = hit
        if isinstance(value, str):
            m = _BARE_LINE.fullmatch(value.strip())
            return _Candidate(_FINAL, m.group("num"), m.group("den"), m.group("bad"), (pos, end))
        return _Candidate(_FINAL, repr(value) if isinstance(value, float) else str(value), None, None, (pos, end))
    return None


def _in_quotes(text: str, pos: int) -> bool:
    """True when ``pos`` is inside a quotation opened earlier on its line."""
    line = text[max(text.rfind("\n", max(0, pos - _SCORE_REACH), pos) + 1, pos - _SCORE_REACH) : pos]
    return line.count('"') % 2 == 1 or line.count("“") > line.count("”")


def _tier(label: re.Match[str]) -> int:
    words = label.group(0).lower()
    if "round" in words:
        return _ROUNDED_TIER
    if "final" in words:
        return _FINAL
    return _TOTAL if label.group("kind") else _PLAIN


def _candidates(text: str, start: int, hi: float) -> tuple[list[_Candidate], tuple[int, int] | None]:
    """Every labelled score and "rounded to" value in ``text[start:]``, plus a bare number on
    the last line; and the span of the last label with no number after it (reported when
    nothing else is found).

    A denominator other than the scale maximum ("3/5" on a 0–10 rubric) marks a sub-score, so
    such a candidate drops to the lowest tier whatever its label says.
    """
    found: list[tuple[int, _Candidate]] = []
    unnumbered = None
    patterns = (
        (_LABEL, _tier),
        (_ROUNDED, lambda _: _ROUNDED_TIER),
        (_BARE_TOTAL, lambda _: _TOTAL),
        (_OVERALL_LINE, lambda _: _TOTAL),
        (_VERDICT, lambda _: _FINAL),
        (_OUT_OF, lambda _: _PLAIN),
    )
    for pattern, tier_of in patterns:
        for label in pattern.finditer(text, start):
            if _in_quotes(text, label.start()):
                continue  # 'finish with "SCORE: 10" only if…' quotes the rubric
            m = _AFTER_LABEL.match(text, label.end(), label.end() + _SCORE_REACH)
            if m is None:
                if pattern is _LABEL:
                    unnumbered = label.span()
                continue
            if pattern is _VERDICT and (_QUALIFIED.match(text, m.end(), m.end() + 40)
                                        or _COUNT_OF.match(text, m.end(), m.end() + 40)):
                continue  # "I assign SCORE: 6 for originality" grades one aspect; "I rate 3 of them" counts
            c = _candidate(tier_of(label), label.start(), m)
            # "Total: 850 words" or a table's "Total | 3/5" is some other total, not the score
            if pattern is _BARE_TOTAL and (c.den is None or _float(c.den) != hi):
                continue
            found.append((label.start(), c))
    end = len(text.rstrip())
    line = max(start, text.rfind("\n", 0, end) + 1)
    bare = _BARE_LINE.fullmatch(text, line, end)
    if bare is not None:
        found.append((line, _Candidate(_FINAL, bare.group("num"), bare.group("den"), bare.group("bad"), (line, end))))
    out = []
    for _, c in sorted(found, key=lambda pc: pc[0]):
        if c.den is not None and _float(c.den) != hi:
            c = _Candidate(_SUB, c.num, c.den, c.bad, c.span)
        out.append(c)
    return out, unnumbered


def _float(num: str) -> float:
    return float(num.replace("\u2212", "-").replace(",", "."))


def _value(c: _Candidate, lo: float, hi: float, text: str) -> float:
    """The candidate's score, or a ParseError saying exactly why it is not usable."""
    where = f"in {_context(text, *c.span)!r}"
    scale = f"{format_score(lo)}–{format_score(hi)}"
    if c.bad:
        bad = c.bad.strip()
        kind = (
            "a percentage" if bad == "%"
            else "a range" if bad[0] in "-–"
            else "a list of numbers" if c.bad[0] == "," and not c.bad[1].isdigit()
            else "not a plain number"
        )
        shown = c.num + "".join(c.bad.split())
        raise ParseError(f"score {shown!r} is {kind}, expected one number on the {scale} scale ({where})")
    if c.num.lower().replace("/", "") == "na":
        raise ParseError(f"score is {c.num!r}, not a number ({where})")
    value = _float(c.num)
    if not math.isfinite(value):
        raise ParseError(f"score {c.num!r} is not a finite number ({where})")
    if c.den is not None and _float(c.den) != hi:
        raise ParseError(
            f"score {c.num}/{c.den} is out of {c.den} but the template's scale is {scale}; "
            f"refusing to rescale ({where})"
        )
    if not lo <= value <= hi:
        raise ParseError(f"score {format_score(value)} outside scale {scale} ({where})")
    return value


def _agreed(tied: list[_Candidate], lo: float, hi: float, text: str, label: str) -> float:
    """The one value ``tied`` candidates of the best tier agree on, else an "ambiguous" error.

    Choosing the last or the largest would silently pick between readings a human would call
    contradictory; the researcher should fix the rubric's label or the response instead.
    """
    outcomes: dict[object, _Candidate] = {}  # value (or, if unusable, the raw text) → last candidate
    for c in tied:
        try:
            key: object = _value(c, lo, hi, text)
        except ParseError:
            key = c.shown()
        outcomes.pop(key, None)
        outcomes[key] = c
    if len(outcomes) == 1:
        return _value(tied[-1], lo, hi, text)
    shown = list(outcomes.values())[-_AMBIGUOUS_SHOWN:]
    listed = "; ".join(
        f"{c.shown()} on line {_line_of(text, c.span[0])} ({_context(text, *c.span)!r})" for c in shown
    )
    more = f"; and {len(outcomes) - len(shown)} more" if len(outcomes) > len(shown) else ""
    raise ParseError(
        f"ambiguous score: {len(outcomes)} candidates disagree and no {label!r} label decides: {listed}{more}"
    )


def _check_scale(lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DaydreamError("catalog", f"invalid score scale {lo}–{hi}: need finite score_min < score_max")


def _clean_label(label: str | None) -> str:
    """The declared label without a trailing colon; blank (an empty catalog cell) means SCORE."""
    cleaned = (label or "").strip().rstrip(":：").strip()
    return cleaned or DEFAULT_SCORE_LABEL


def parse_score(text: str, scale_min: float, scale_max: float, *, label: str = DEFAULT_SCORE_LABEL) -> float:
    """The final score of an evaluation, on the template's scale; never clamped.

    A JSON object holding a score key that ends the response (the whole response, a fenced block,
    or an object opening a line in the tail: structured output) is read first; one followed by
    more text counts only when the declared label is absent. Then the declared ``label`` (the rubric's
    "end with SCORE: <n>") decides: its last occurrence opening a line anywhere in the response,
    with its value on that line or the next non-blank one, wins over every sub-score, subtotal or
    breakdown around it; a mention inside a sentence or a quote is not the label, and a value out
    of another denominator ("- **Score**: **1/2**") is a sub-score, not the final one. Without it,
    the last ``TAIL_LINES`` non-blank lines are read: a "rounded to" value beats a final score or
    verdict ("Final verdict: 7/10", "I'd give it a 7", or a number alone on the last line), which
    beats a total/overall score ("Total: 7/10", "Overall: 7.5"), which beats any other labelled
    score or "6 out of 10"; candidates of the best tier must agree, else the response is
    ambiguous. A denominator must equal ``scale_max``: ``4/5`` on a 0–10 rubric is a sub-score
    (an error if nothing else is found), not 8.
    """
    _check_scale(scale_min, scale_max)
    label = _clean_label(label)
    text = _normalize(text).translate(_UNICODE_SPACES)
    if not text.strip():
        raise ParseError("empty response: no score")
    start = _tail_start(text, TAIL_LINES)
    structured = _json_candidate(text, start, label)
    # an object the response ends with is its answer; one followed by more text (an echoed
    # example of the format, say) yields to the declared label
    if structured is not None and not text[structured.span[1]:].strip(" \t\n`"):
        return _value(structured, scale_min, scale_max, text)
    declared = _declared(text, label, scale_max)
    if declared is not None:
        return _value(declared, scale_min, scale_max, text)
    if structured is not None:
        return _value(structured, scale_min, scale_max, text)
    found, unnumbered = _candidates(text, start, scale_max)
    if not found:
        if unnumbered:
            raise ParseError(
                f"found a score label in the last {TAIL_LINES} non-blank lines but no number after it "
                f"(last: {_context(text, *unnumbered)!r})"
            )
        raise ParseError(
            f"no score found in the last {TAIL_LINES} non-blank lines "
            f"(expected e.g. '{label}: 7' or 'Final Score: 7/10')"
        )
    best = max(c.tier for c in found)
    if best == _SUB:
        return _value(found[-1], scale_min, scale_max, text)
    return _agreed([c for c in found if c.tier == best], scale_min, scale_max, text, label)


def _score(text: str, *, scale_min: float = 0, scale_max: float = 9, label: str = DEFAULT_SCORE_LABEL) -> str:
    return format_score(parse_score(text, scale_min, scale_max, label=label))


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

# Every entry takes (text, *, scale_min, scale_max, label) so callers treat all parsers alike;
# only the score parser uses them.
PARSERS: dict[str, Callable[..., str]] = {
    "identity": _identity,
    "essay_block": _essay_block,
    "essay_block_lenient": _essay_block_lenient,
    "essay_idea_last": _essay_idea_last,
    "score": _score,
    # the earlier system's name for the score parser; its catalogs still say it
    "in_last_line": _score,
}


def _resolve(name: str | None) -> str:
    """Blank or missing parser names mean ``identity`` (a blank catalog cell)."""
    return (name or "").strip() or "identity"


def known_parser(name: str | None) -> bool:
    """True when ``name`` names a parser ("" and None mean identity)."""
    return _resolve(name) in PARSERS


def parse(
    name: str | None, text: str, *, scale_min: float = 0, scale_max: float = 9, label: str = DEFAULT_SCORE_LABEL
) -> str:
    """Run parser ``name`` on ``text``; raises ``ParseError`` with the reason on failure.

    An unknown name is a catalog mistake, not a parse failure: ``DaydreamError("catalog")``.
    """
    resolved = _resolve(name)
    if resolved not in PARSERS:
        raise DaydreamError("catalog", f"unknown parser {name!r}; known parsers: {', '.join(sorted(PARSERS))}")
    return PARSERS[resolved](text, scale_min=scale_min, scale_max=scale_max, label=label)


@dataclass(frozen=True)
class ParseResult:
    """Outcome of one parse, shaped for ``parsed_metadata.json`` (defect §9.4: keep the reason)."""

    parser: str
    success: bool
    text: str | None  # parsed.txt content (for ``score``, the canonical score text)
    error: str | None = None
    score: float | None = None
    raw_tail_preview: str | None = None  # only on failure: the end of the raw response

    def metadata(self) -> dict:
        return {
            "parser": self.parser,
            "success": self.success,
            "error": self.error,
            "raw_tail_preview": self.raw_tail_preview,
            "score": self.score,
        }


def try_parse(
    name: str | None, text: str, *, scale_min: float = 0, scale_max: float = 9, label: str = DEFAULT_SCORE_LABEL
) -> ParseResult:
    """Like ``parse`` but a ``ParseError`` becomes a failed ``ParseResult`` carrying its reason."""
    resolved = _resolve(name)
    try:
        out = parse(resolved, text, scale_min=scale_min, scale_max=scale_max, label=label)
    except ParseError as exc:
        return ParseResult(resolved, False, None, exc.message, None, _normalize(text)[-RAW_TAIL_CHARS:])
    return ParseResult(resolved, True, out, None, float(out) if PARSERS[resolved] is _score else None)
