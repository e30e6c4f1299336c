"""The Jinja environment for generated pages, tables and charts: how data reaches HTML safely.

Escaping rule: every value from data (model output, ids, names) is HTML-escaped exactly once,
by Jinja's autoescape or by ``markupsafe.escape`` in ``table``. Escaped HTML never passes through
Markdown: page parts reach MkDocs as slot tokens and are put into the built page afterwards
(see build.py), and essay pages are pure Jinja HTML. The only data in Markdown is in section
headings, which ``md_text`` escapes for Markdown and HTML both. MkDocs does not run Jinja on page
sources, so ``{{ ... }}`` in output stays text. Chart data travels as JSON inside
``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as ``\\u003c`` etc., so
no string in a figure can close the script element.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import jinja2
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj_json: str) -> str:
    """JSON text made safe to sit inside a <script> element."""
    for ch, rep in _JSON_ESCAPES.items():
        obj_json = obj_json.replace(ch, rep)
    return obj_json


def chart(fig: dict, key: str, caption: str = "") -> Markup:
    """A chart placeholder plus its figure JSON; ``assets/daydream.js`` calls Plotly.newPlot.

    The figure's title is shown as HTML above the plot: a Plotly title is one line that neither
    wraps nor gives way to the legend, so on a phone it was clipped or covered. The figure keeps
    its title (``layout.title``) and the margin it needs in ``layout.meta.titleMargin``: the
    page draws without them and puts them back in an exported image, which would otherwise be
    untitled."""
    layout = dict(fig.get("layout") or {})
    title = (layout.get("title") or {}).get("text", "")
    margin = dict(layout.get("margin") or {})
    if "t" in margin:
        layout["meta"] = dict(layout.get("meta") or {}, titleMargin=margin["t"])
        margin["t"] = max(24, margin["t"] - 40)
        layout["margin"] = margin
    data = script_json(json.dumps(dict(fig, layout=layout), separators=(",", ":"), allow_nan=False))
    cid = f"chart-{key}"
    head = Markup('<p class="dd-chart-title">{}</p>\n').format(title) if title else ""
    cap = Markup('<p class="dd-chart-caption">{}</p>\n').format(caption) if caption else ""
    return Markup(
        '<div class="dd-figure">\n{head}'
        '<div class="dd-chart" id="{cid}" data-figure="{cid}-data"></div>\n'
        '<script type="application/json" id="{cid}-data">{data}</script>\n'
        "</div>\n{cap}"
    ).format(cid=cid, data=Markup(data), cap=cap, head=head)


_MD_PUNCT = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md_text(v) -> Markup:
    """Text safe in a Markdown line (a heading): Markdown punctuation backslash-escaped, then
    HTML-escaped, so neither Markdown nor HTML can read anything into it."""
    return escape(_MD_PUNCT.sub(r"\\\1", str(v)))


def is_blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() == "")


def num(v, digits: int = 2) -> str:
    """A number for a table cell: blank for missing, no trailing ``.00`` for integers."""
    if is_blank(v):
        return ""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return ""
    if round(f, digits) == 0:
        f = 0.0  # never "-0.00"
    if f.is_integer() and abs(f) < 1e15:
        return f"{int(f):,}"
    return f"{f:,.{digits}f}"


def score(v) -> str:
    """A score as written by a model: ``7``, ``7.5``, never ``7.50``."""
    out = num(v, 2)
    return out.rstrip("0").rstrip(".") if "." in out else out


def pct(v, digits: int = 0) -> str:
    if is_blank(v):
        return ""
    try:
        return f"{float(v) * 100:.{digits}f}%"
    except (TypeError, ValueError):
        return str(v)


def usd(v) -> str:
    """Dollars; a missing cost is ``unknown``, never $0."""
    if is_blank(v):
        return "unknown"
    f = float(v)
    if math.isnan(f):
        return "unknown"
    return f"${f:,.4f}" if f < 1 else f"${f:,.2f}"


def duration(v) -> str:
    """Seconds at a precision that keeps sub-millisecond calls visible (``0.4 ms``, not ``0``)."""
    if is_blank(v):
        return "unknown"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "unknown"
    if f == 0:
        return "0 s"
    if f < 1:
        return f"{f * 1000:.3g} ms"
    return f"{f:,.2f} s" if f < 100 else f"{f:,.0f} s"


def interval(lo, hi, digits: int = 2) -> str:
    """A 95 % interval as ``[lo, hi]``; blank when there is none."""
    if is_blank(lo) or is_blank(hi):
        return ""
    return f"[{num(lo, digits)}, {num(hi, digits)}]"


# What a column means, shown as the header's tooltip wherever the column appears (a column
# without an entry here is plain words or an id).
GLOSSARY = {
    "n": "number of scored evaluations",
    "n_unscored": "evaluations failed or pending (never counted as 0)",
    "n_essays": "essays: the unit the 95% interval resamples",
    "n_cells": "evaluator × rubric cells of the essay (replicates averaged first)",
    "n_units": "matched units: the same essay scored by both levels (with the same other key)",
    "mean": "mean score_norm (each score rescaled to 0–1 on its own rubric's scale)",
    "std": "sample standard deviation",
    "ci": "95% interval of the mean (or difference); blank when too few units for one",
    "95% CI": "95% interval of the mean (or difference); blank when too few units for one",
    "diff": "difference of means on score_norm",
    "share_high": "share of scored evaluations at or above the high threshold (score_norm ≥ 0.8 by default)",
    "share_low": "share of scored evaluations at or below the low threshold (score_norm ≤ 0.3 by default)",
    "share_max": "share of scored evaluations at the rubric's own maximum",
    "icc2_1": "ICC(2,1): two-way random effects, absolute agreement, single rater (1 = raters agree exactly)",
    "icc_class": "Koo & Li (2016): < 0.5 poor, < 0.75 moderate, < 0.9 good, else excellent",
    "mean_pearson": "mean Pearson r over pairs of evaluation models",
    "n_rater_pairs": "pairs of evaluation models with ≥ 3 common essays",
    "n_raters": "evaluation models that scored this rubric",
    "n_pearson_essays": "essays scored by at least two evaluation models",
    "retest_icc2_1": "ICC(2,1) with replicates as raters: how repeatable one evaluator is",
    "n_retest_units": "essay × evaluation model units with every replicate scored",
    "range": "max − min of the scores (raw units)",
    "range_norm": "range as a share of the rubric's scale",
    "cv": "coefficient of variation: std / |mean|",
    "agreement": "range_norm ≤ 10% high, ≤ 25% moderate, else low; n/a with fewer than two scores",
    "coverage": "scored (or done) / expected",
    "cost_usd": "summed cost; unknown when any call recorded none",
    "n_simulated": "generations produced by the offline simulator",
    "delta": "this cohort's mean − the mean of the cohorts' means",
    "r": "Pearson r of the matched pairs",
    "excludes_zero": "yes when the 95% interval of the difference excludes 0",
}


def sort_key(v) -> str:
    """The ``data-sort`` attribute of a cell: the raw value, blank for missing."""
    return "" if is_blank(v) else str(v)


def status_tag(status, error="") -> Markup:
    """A coloured tag for a generation's status (done / failed: reason / pending)."""
    status = "" if is_blank(status) else str(status)
    error = "" if is_blank(error) else str(error)
    if status == "done":
        return Markup('<span class="dd-tag">done</span>')
    if status == "failed":
        label = f"failed: {error}" if error else "failed"
        return Markup('<span class="dd-tag dd-error" title="{}">{}</span>').format(error, label)
    return Markup('<span class="dd-tag dd-warn" title="{}">{}</span>').format(error, status or "unknown")


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,               # every template, .md included: data is always escaped
        trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(md_text=md_text, num=num, score=score, pct=pct, usd=usd, duration=duration)
    env.globals.update(status_tag=status_tag)
    return env


# ---------------------------------------------------------------------------------------------
# Tables: built in Python (one place that escapes), dropped into pages as Markup.

class Link:
    """A table cell linking to ``href``; ``code`` shows the text in monospace (ids)."""

    __slots__ = ("text", "href", "code")

    def __init__(self, text, href: str, code: bool = False):
        self.text, self.href, self.code = text, href, code


class Cell:
    """A cell with its own (already safe) HTML, sort key and CSS class: a score-matrix cell.
    ``data``: the same cell in a data table's compact form (see ``_data_cell``), when it has one
    smaller than its HTML."""

    __slots__ = ("html", "sort", "cls", "data")

    def __init__(self, html, sort: str = "", cls: str = "", data: dict | None = None):
        self.html, self.sort, self.cls, self.data = Markup(html), sort, cls, data


# Which columns a reader can filter on, by their header: categorical ones by value (a select of
# the values present), score-like ones by range. Free text always filters the whole row.
SELECT_FILTERS = {
    "stage", "status", "essay_status", "error", "issue", "mode", "essay_mode", "agreement", "icc_class",
    "rubric", "rubrics", "evaluator", "level a", "level b", "excludes 0", "cohort_id", "reference",
}
RANGE_FILTERS = {"mean", "score", "score_norm", "mean_norm", "diff", "delta", "mean score_norm", "rank"}


def default_filter(label: str, kind: str) -> str:
    """``select``, ``range`` or ``""`` (not filterable) for a column with this header and kind."""
    if label in RANGE_FILTERS and kind in ("num", "score", "int", "pct"):
        return "range"
    if label in SELECT_FILTERS or label.endswith(("_template", "_llm")):
        return "select"
    return ""


class Col:
    """A table column: ``kind`` is text | code | num | score | int | pct | usd | duration (numbers align
    right); cells do not wrap unless ``wrap`` (long text such as concepts or details); ``filter`` is
    ``select`` | ``range`` | ``""`` (default: by header, see ``default_filter``)."""

    __slots__ = ("key", "label", "kind", "title", "wrap", "filter")

    def __init__(self, key: str, label: str | None = None, kind: str = "text", title: str = "", wrap: bool = False,
                 filter: str | None = None):  # noqa: A002 (the word a reader sees)
        self.key, self.label, self.kind, self.wrap = key, label or key, kind, wrap
        self.title = title or GLOSSARY.get(self.label, "") or GLOSSARY.get(key, "")
        self.filter = default_filter(self.label, kind) if filter is None else filter


_FORMAT = {"num": num, "score": score, "int": lambda v: num(v, 0), "pct": pct, "usd": usd, "duration": duration}


def _cell(col: Col, value) -> str:
    # Plain string building with markupsafe.escape: Markup.format is ~10x slower, and a cohort's
    # tables have hundreds of thousands of cells.
    fmt = _FORMAT.get(col.kind)
    if fmt is not None:
        return f'<td class="num" data-sort="{escape(sort_key(value))}">{escape(fmt(value))}</td>'
    if isinstance(value, Link):
        text = f"<code>{escape(value.text)}</code>" if value.code else escape(value.text)
        return f'<td data-sort="{escape(value.text)}"><a href="{escape(value.href)}">{text}</a></td>'
    if isinstance(value, Cell):
        cls_attr = f' class="{escape(value.cls)}"' if value.cls else ""
        return f'<td{cls_attr} data-sort="{escape(value.sort)}">{value.html}</td>'
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    if is_blank(value):
        return "<td></td>"
    if col.kind == "code":
        return f"<td><code>{escape(value)}</code></td>"
    return f'<td class="wrap">{escape(value)}</td>' if col.wrap else f"<td>{escape(value)}</td>"


# A table with more rows than this travels as compact data (JSON in the page) that
# assets/daydream.js filters, sorts and pages over, instead of one HTML row each: every row of
# any cohort is on the page, at a size the page can hold.
INLINE_ROWS = 200


def _number(v):
    """A sort key as a JSON number where it is one (smaller, and compared as a number)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    if math.isnan(f) or math.isinf(f):
        return ""
    return int(f) if f.is_integer() and abs(f) < 2 ** 53 else f


def _data_cell(col: Col, value):
    """One cell of a data table: ``None`` (blank), a string (its text and sort key), ``[text,
    sort]``, ``{"t", "h", "c"}`` (a link; ``c``: code) or ``{"x": safe HTML, "t": its text, "s",
    "k": CSS class}`` (a cell with its own markup), or a Cell's own compact ``data``."""
    fmt = _FORMAT.get(col.kind)
    if fmt is not None:
        text, key = fmt(value), sort_key(value)
        if text == "" and key == "":
            return None
        n = _number(key) if key != "" else ""
        return n if key != "" and text == str(n) else [text, n]
    if isinstance(value, Link):
        out = {"t": str(value.text), "h": value.href}
        if value.code:
            out["c"] = 1
        return out
    if isinstance(value, Cell):
        if value.data is not None:
            return value.data
        out = {"x": str(value.html), "t": value.html.striptags(), "s": value.sort}
        if value.cls:
            out["k"] = value.cls
        return out
    if isinstance(value, Markup):
        return {"x": str(value), "t": value.striptags()}
    if is_blank(value):
        return None
    return str(value)


def _link_pattern(col: list) -> tuple[str, str, int] | None:
    """``(before, after, code)`` when every cell of a column is a link whose href is its text
    between the same two strings (``essays/<id>.html``), all in code or none: the column then
    sends only the texts."""
    pattern = None
    for v in col:
        if v is None:
            continue
        if not isinstance(v, dict) or "h" not in v or v["t"] not in v["h"]:
            return None
        before, _, after = v["h"].partition(v["t"])
        this = (before, after, v.get("c", 0))
        if pattern is None:
            pattern = this
        elif pattern != this:
            return None
    return pattern


def _data_rows(cols: list[Col], rows: list[dict]) -> dict:
    """The rows of a data table, column by column: a column of links of one pattern sends only
    their texts (``"h"``: column index → [before, after] the text in the href, and 1 when shown
    as code); a column of
    strings that repeat (names, templates, statuses) sends each distinct string once (``"d"``:
    column index → values, its cells then hold indices into them)."""
    cells = [[_data_cell(c, r.get(c.key)) for c in cols] for r in rows]
    links = {}
    for j in range(len(cols)):
        pattern = _link_pattern([row[j] for row in cells])
        if pattern is not None:
            links[str(j)] = list(pattern)
            for row in cells:
                if row[j] is not None:
                    row[j] = row[j]["t"]
    dicts = {}
    for j in range(len(cols)):
        col = [row[j] for row in cells]
        if not all(v is None or isinstance(v, str) for v in col):
            continue
        values = list(dict.fromkeys(v for v in col if v is not None))
        if len(values) * 2 > len(col):
            continue
        index = {v: i for i, v in enumerate(values)}
        for row in cells:
            if row[j] is not None:
                row[j] = index[row[j]]
        dicts[str(j)] = values
    return {"rows": cells, "d": dicts, "h": links}


def table(cols: list[Col], rows: list[dict], *, sortable: bool = True, empty: str = "Nothing to show.",
          note: str = "", tid: str = "", csv: str = "", data: bool | None = None, extra: dict | None = None) -> Markup:
    """An HTML table, sortable and filterable in the browser (``assets/daydream.js``); an empty
    one shows ``empty`` instead. ``tid`` names the table in the page's URL when a reader filters
    it (so a filtered view can be shared); ``csv`` is the href of the full table as CSV.

    ``data`` (default: more than ``INLINE_ROWS`` rows and a ``tid``): the rows travel as compact
    JSON that the browser filters, sorts and pages over, all of them; ``extra`` adds keys to
    that JSON (e.g. the matrix's essay per row)."""
    if not rows:
        return Markup('<p class="dd-empty">{}</p>\n').format(empty)
    if data is None:
        data = bool(tid) and sortable and len(rows) > INLINE_ROWS
    head = ""
    for c in cols:
        cls_attr = ' class="num"' if c.kind in _FORMAT else ""
        title_attr = f' title="{escape(c.title)}"' if c.title else ""
        filter_attr = f' data-filter="{c.filter}"' if c.filter and sortable else ""
        look = (' data-code="1"' if c.kind == "code" else "") + (' data-wrap="1"' if c.wrap else "")
        head += f'<th data-key="{escape(c.key)}"{cls_attr}{title_attr}{filter_attr}{look}>{escape(c.label)}</th>'
    cls = "dd-table dd-sortable" if sortable else "dd-table"
    tid_attr = f' data-table="{escape(tid)}"' if tid else ""
    if data:
        payload = dict(_data_rows(cols, rows), **(extra or {}))
        rid = f"dd-rows-{tid}"
        blob = script_json(json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False))
        body = ""
        cls += " dd-data"
        tid_attr += f' data-rows="{escape(rid)}" data-n="{len(rows)}"'
        script = f'<script type="application/json" id="{escape(rid)}">{blob}</script>\n'
    else:
        body = "\n".join("<tr>" + "".join(_cell(c, r.get(c.key)) for c in cols) + "</tr>" for r in rows)
        script = ""
    csv_link = (f'<p class="dd-downloads">Download: <a href="{escape(csv)}" download>{escape(csv.rsplit("/", 1)[-1])}</a>'
                " (every row)</p>\n") if csv else ""
    out = Markup(f'{csv_link}<div class="dd-table-wrap">\n<table class="{cls}"{tid_attr}>\n<thead><tr>{head}</tr></thead>\n'
                 f"<tbody>\n{body}\n</tbody>\n</table>\n</div>\n{script}")
    if note:
        out += Markup('<p class="dd-table-note">{}</p>\n').format(note)
    return out
