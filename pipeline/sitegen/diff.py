"""Word-level comparison of two texts (a draft and its essay, two replicates of an evaluation).

Pure: texts in, opcodes and escaped HTML out. Tokens are words with the whitespace after them,
so a diff never splits a word and whitespace is never a change of its own.
"""

from __future__ import annotations

import difflib
import re

from markupsafe import Markup, escape

_TOKEN = re.compile(r"\S+\s*|\s+")
MAX_TOKENS = 4000     # longer texts are shown side by side without marks (difflib is quadratic)
MIN_SHARED = 0.2      # below this share of shared words two texts are not versions of each other


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text or "")


def word_diff(a: str, b: str) -> list[tuple[str, str, str]] | None:
    """``[(op, a_part, b_part)]`` with op ``equal`` | ``delete`` | ``insert`` | ``replace``, or None
    when the texts are too long or share too little for a diff to help."""
    ta, tb = tokens(a), tokens(b)
    if len(ta) > MAX_TOKENS or len(tb) > MAX_TOKENS:
        return None
    key = lambda ts: [t.strip() for t in ts]  # noqa: E731 (whitespace after a word is not a change)
    sm = difflib.SequenceMatcher(None, key(ta), key(tb), autojunk=False)
    ops = sm.get_opcodes()
    shared = sum(i2 - i1 for op, i1, i2, _, _ in ops if op == "equal")
    if (ta or tb) and shared < MIN_SHARED * max(len(ta), len(tb)):
        return None
    return [(op, "".join(ta[i1:i2]), "".join(tb[j1:j2])) for op, i1, i2, j1, j2 in ops]


def similarity(ops: list[tuple[str, str, str]] | None) -> float | None:
    """Share of words the two sides have in common (of the longer side), None without a diff."""
    if ops is None:
        return None
    same = sum(len(tokens(x)) for op, x, _ in ops if op == "equal")
    na = sum(len(tokens(x)) for _, x, _ in ops)
    nb = sum(len(tokens(y)) for _, _, y in ops)
    return same / max(na, nb) if max(na, nb) else 1.0


def side_by_side(a: str, b: str, label_a: str, label_b: str) -> Markup:
    """Two texts in two columns; words only in ``a`` struck out on the left, words only in ``b``
    marked on the right. Everything escaped."""
    ops = word_diff(a, b)
    if ops is None:
        left, right = escape(a or ""), escape(b or "")
        note = "The texts share too little (or are too long) for a word diff; shown side by side."
    else:
        # plain string building: Markup.format per fragment costs seconds over a cohort's essays
        left = Markup("".join(str(escape(x)) if op == "equal" else f"<del>{escape(x)}</del>" for op, x, _ in ops if x))
        right = Markup("".join(str(escape(y)) if op == "equal" else f"<ins>{escape(y)}</ins>" for op, _, y in ops if y))
        sim = similarity(ops)
        note = ("Identical texts (a copy)." if sim == 1.0 else
                f"{sim:.0%} of the words are shared; struck-out words are only on the left, marked words only on the right.")
    return Markup('<p class="dd-meta">{}</p>\n<div class="dd-compare">\n'
                  '<div class="dd-compare-side"><div class="dd-compare-label">{}</div><div class="dd-output">{}</div></div>\n'
                  '<div class="dd-compare-side"><div class="dd-compare-label">{}</div><div class="dd-output">{}</div></div>\n'
                  "</div>\n").format(note, label_a, left, label_b, right)
