"""The Jinja environment for generated pages, and how data reaches HTML safely.

Escaping rule: every value from data (model output, ids, names) is HTML-escaped by Jinja's
autoescape and lands inside raw HTML blocks. Python-Markdown passes a block-level HTML element
through verbatim, so text inside it is never reinterpreted as Markdown; MkDocs does not run Jinja
on page sources, so ``{{ ... }}`` in output stays text. Chart data travels as JSON inside
``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as ``\\u003c`` etc., so
no string in a figure can close the script element.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jinja2
import plotly.graph_objects as go
import plotly.io as pio
from markupsafe import Markup, escape

TEMPLATES = Path(__file__).parent / "templates"

_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(obj_json: str) -> str:
    """JSON text made safe to sit inside a <script> element."""
    for ch, rep in _JSON_ESCAPES.items():
        obj_json = obj_json.replace(ch, rep)
    return obj_json


def chart(fig: go.Figure, key: str, caption: str = "") -> Markup:
    """A chart placeholder plus its figure JSON; ``assets/daydream.js`` calls Plotly.newPlot."""
    data = script_json(pio.to_json(fig, validate=False, engine="json"))
    cid = f"chart-{key}"
    cap = Markup('<p class="dd-chart-caption">{}</p>\n').format(caption) if caption else ""
    return Markup(
        '<div class="dd-figure">\n'
        '<div class="dd-chart" id="{cid}" data-figure="{cid}-data"></div>\n'
        '<script type="application/json" id="{cid}-data">{data}</script>\n'
        "</div>\n{cap}"
    ).format(cid=cid, data=Markup(data), cap=cap)


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
    if f.is_integer() and abs(f) < 1e15:
        return f"{int(f):,}"
    return f"{f:,.{digits}f}"


def pct(v, digits: int = 0) -> str:
    if is_blank(v):
        return ""
    try:
        return f"{float(v) * 100:.{digits}f}%"
    except (TypeError, ValueError):
        return str(v)


def usd(v) -> str:
    if is_blank(v):
        return "n/a"
    f = float(v)
    return f"${f:,.4f}" if f < 1 else f"${f:,.2f}"


def sort_key(v) -> str:
    """The ``data-sort`` attribute of a cell: the raw value, blank for missing."""
    return "" if is_blank(v) else str(v)


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,               # every template, .md included: data is always escaped
        trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(num=num, pct=pct, usd=usd, sort_key=sort_key, tojson_attr=lambda v: json.dumps(v))
    env.globals.update(chart=chart, is_blank=is_blank, escape=escape)
    return env
