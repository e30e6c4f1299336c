"""Parsers: turn a model's raw response into the text (or score) a generation keeps (contract §5).

Pure: no I/O, no luigi. Every failure raises ``ParseError`` with a reason a researcher can act on,
because the earlier system swallowed parse reasons (defect §9.4); ``try_parse`` packages that
reason, with a preview of the raw tail, for ``parsed_metadata.json``.

Every regex here is linear in the input: tag patterns stop at the next ``<``, quantifiers that
could overlap are possessive, and the score reader looks at most ``_SCORE_REACH`` characters past
each label, so hostile or megabyte-sized responses cannot trigger catastrophic backtracking.
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass
from typing import Callable

from pipeline.errors import DaydreamError, ParseError

__all__ = [
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


def _essay_block(text: str, **_scale: float) -> str:
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


def _essay_block_lenient(text: str, **_scale: float) -> str:
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


def _essay_idea_last(text: str, **_scale: float) -> str:
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


def _identity(text: str, **_scale: float) -> str:
    """The response as is, minus surrounding whitespace."""
    out = _normalize(text).strip()
    if not out:
        raise ParseError("empty response")
    return out


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------

_NUM = r"[-+\u2212]?(?:[0-9]++(?:\.[0-9]++)?|\.[0-9]++)"
# number, then what makes it unusable (percent, decimal comma / second dot, range), then "/D"
_VALUE = rf"""
    (?P<num>{_NUM}|(?:nan|[-+]?inf(?:inity)?)\b|n/?a\b)
    (?P<bad>%|[.,][0-9]|[ \t]*[-–][ \t]*[0-9])?
    (?:[ \t*_]*+(?:/|out[ \t]+of)[ \t*_]*+(?P<den>{_NUM}))?
"""
# "Score", "SCORE", "Final Score", "**Total** Score", "Overall Quality Score", "Final Rating"
_LABEL = re.compile(
    r"(?<![A-Za-z0-9])(?:(?P<final>final|total|overall)(?:[ \t*_]{1,6}[A-Za-z]{1,30})?[ \t*_]{0,6})?"
    r"(?:score|rating)(?![A-Za-z0-9])",
    re.IGNORECASE,
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
# A last line holding only a number: "7", "**7/10**", "## 8.5".
_BARE_LINE = re.compile(r"[ \t*_#>\[(]*+" + _VALUE + r"[ \t*_\].)]*+", re.IGNORECASE | re.VERBOSE)
_PAREN_SCALE = re.compile(rf"(?:out\s+of|/|[-–]|\bto)\s*(?P<den>{_NUM})\s*$", re.IGNORECASE)
_UNICODE_SPACES = str.maketrans({c: " " for c in "\u00a0\u2007\u202f\u2009\u200a\u3000"})


def format_score(value: float) -> str:
    """Canonical text of a score: ``7`` for integral values, else the shortest repr (``7.5``)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class _Candidate:
    final: bool  # label says final/total/overall
    num: str
    den: str | None
    bad: str | None
    span: tuple[int, int]  # where in the window it was read, quoted in error messages


def _context(window: str, start: int, end: int) -> str:
    """The line(s) around ``window[start:end]``, whitespace collapsed, at most 80 characters.

    Looks at most 80 characters either side so that thousands of labels on one huge line stay
    linear.
    """
    line_start = window.rfind("\n", max(0, start - 80), start) + 1 or max(0, start - 80)
    line_end = window.find("\n", end, end + 80)
    snippet = " ".join(window[line_start : line_end if line_end != -1 else end + 80].split())
    return snippet if len(snippet) <= 80 else snippet[:77] + "..."


def _tail(text: str, n: int) -> str:
    """The last ``n`` non-blank lines (and the blank lines between them)."""
    lines = text.split("\n")
    seen = 0
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip():
            seen += 1
            if seen == n:
                return "\n".join(lines[i:])
    return text


def _candidates(window: str) -> tuple[list[_Candidate], tuple[int, int] | None]:
    """Every labelled score in ``window``, plus a bare number on the last line; and the span of
    the last label with no number after it (reported when nothing else is found)."""
    found: list[_Candidate] = []
    unnumbered = None
    for label in _LABEL.finditer(window):
        m = _AFTER_LABEL.match(window, label.end(), label.end() + _SCORE_REACH)
        if m is None:
            unnumbered = label.span()
            continue
        den = m.group("den")
        if den is None and m.group("paren"):
            scale = _PAREN_SCALE.search(m.group("paren"))
            den = scale.group("den") if scale else None
        found.append(
            _Candidate(bool(label.group("final")), m.group("num"), den, m.group("bad"), (label.start(), m.end()))
        )
    end = len(window.rstrip())
    start = window.rfind("\n", 0, end) + 1
    bare = _BARE_LINE.fullmatch(window, start, end)
    if bare is not None:
        found.append(_Candidate(False, bare.group("num"), bare.group("den"), bare.group("bad"), (start, end)))
    return found, unnumbered


def _value(c: _Candidate, lo: float, hi: float, window: str) -> float:
    """The candidate's score, or a ParseError saying exactly why it is not usable."""
    where = f"in {_context(window, *c.span)!r}"
    scale = f"{format_score(lo)}–{format_score(hi)}"
    if c.bad:
        kind = "a percentage" if c.bad == "%" else "a range" if c.bad.strip()[0] in "-–" else "not a plain number"
        shown = c.num + "".join(c.bad.split())
        raise ParseError(f"score {shown!r} is {kind}, expected one number on the {scale} scale ({where})")
    if c.num.lower().replace("/", "") == "na":
        raise ParseError(f"score is {c.num!r}, not a number ({where})")
    value = float(c.num.replace("\u2212", "-"))
    if not math.isfinite(value):
        raise ParseError(f"score {c.num!r} is not a finite number ({where})")
    if c.den is not None:
        den = float(c.den.replace("\u2212", "-"))
        if den != hi:
            raise ParseError(
                f"score {c.num}/{c.den} is out of {c.den} but the template's scale is {scale}; "
                f"refusing to rescale ({where})"
            )
    if not lo <= value <= hi:
        raise ParseError(f"score {format_score(value)} outside scale {scale} ({where})")
    return value


def _check_scale(lo: float, hi: float) -> None:
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise DaydreamError("catalog", f"invalid score scale {lo}–{hi}: need finite score_min < score_max")


def parse_score(text: str, scale_min: float, scale_max: float) -> float:
    """The final score at the end of an evaluation, on the template's scale; never clamped.

    Reads the last ``TAIL_LINES`` non-blank lines, collects every number that follows a
    ``score``/``rating`` label (same line or the next, markdown allowed) plus a number standing
    alone on the last line, then takes the last one labelled final/total/overall, else the last
    one. A denominator must equal ``scale_max``: ``4/5`` on a 0–10 rubric is an error, not 8.
    """
    _check_scale(scale_min, scale_max)
    text = _normalize(text).translate(_UNICODE_SPACES)
    if not text.strip():
        raise ParseError("empty response: no score")
    window = _tail(text, TAIL_LINES)
    found, unnumbered = _candidates(window)
    if not found:
        if unnumbered:
            raise ParseError(
                f"found a score label in the last {TAIL_LINES} non-blank lines but no number after it "
                f"(last: {_context(window, *unnumbered)!r})"
            )
        raise ParseError(
            f"no score found in the last {TAIL_LINES} non-blank lines "
            "(expected e.g. 'SCORE: 7' or 'Final Score: 7/10')"
        )
    finals = [c for c in found if c.final]
    return _value((finals or found)[-1], scale_min, scale_max, window)


def _score(text: str, *, scale_min: float = 0, scale_max: float = 9) -> str:
    return format_score(parse_score(text, scale_min, scale_max))


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

# Every entry takes (text, *, scale_min, scale_max) so callers treat all parsers alike.
PARSERS: dict[str, Callable[..., str]] = {
    "identity": _identity,
    "essay_block": _essay_block,
    "essay_block_lenient": _essay_block_lenient,
    "essay_idea_last": _essay_idea_last,
    "score": _score,
}


def _resolve(name: str | None) -> str:
    """Blank or missing parser names mean ``identity`` (a blank catalog cell)."""
    return (name or "").strip() or "identity"


def known_parser(name: str | None) -> bool:
    """True when ``name`` names a parser ("" and None mean identity)."""
    return _resolve(name) in PARSERS


def parse(name: str | None, text: str, *, scale_min: float = 0, scale_max: float = 9) -> str:
    """Run parser ``name`` on ``text``; raises ``ParseError`` with the reason on failure.

    An unknown name is a catalog mistake, not a parse failure: ``DaydreamError("catalog")``.
    """
    resolved = _resolve(name)
    if resolved not in PARSERS:
        raise DaydreamError("catalog", f"unknown parser {name!r}; known parsers: {', '.join(sorted(PARSERS))}")
    return PARSERS[resolved](text, scale_min=scale_min, scale_max=scale_max)


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


def try_parse(name: str | None, text: str, *, scale_min: float = 0, scale_max: float = 9) -> ParseResult:
    """Like ``parse`` but a ``ParseError`` becomes a failed ``ParseResult`` carrying its reason."""
    resolved = _resolve(name)
    try:
        out = parse(resolved, text, scale_min=scale_min, scale_max=scale_max)
    except ParseError as exc:
        return ParseResult(resolved, False, None, exc.message, None, _normalize(text)[-RAW_TAIL_CHARS:])
    return ParseResult(resolved, True, out, None, float(out) if resolved == "score" else None)
