"""Plotly figure builders: plain data in, ``go.Figure`` out, no I/O.

Pages map report columns to these functions, so a chart's look is decided in one place and the
functions can be tested without a site. Every figure shares ``_layout``: the site's font, a white
template and margins that fit the content column.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import plotly.graph_objects as go

FONT = "Lato, 'Helvetica Neue', Arial, sans-serif"
PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0891b2", "#db2777", "#65a30d",
           "#475569", "#ea580c"]
HEATMAP_SCALE = "YlGnBu"


def _layout(fig: go.Figure, title: str, height: int = 380, **extra) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        template="plotly_white", font={"family": FONT, "size": 12, "color": "#1f2937"},
        height=height, margin={"l": 60, "r": 24, "t": 48, "b": 48}, colorway=PALETTE,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        **extra,
    )
    return fig


def _clean(values: Sequence) -> list[float]:
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if not math.isnan(f):
            out.append(f)
    return out


def histogram(groups: Mapping[str, Sequence[float]], *, title: str, x_title: str,
              bin_size: float | None = None) -> go.Figure:
    """Overlaid histograms, one per group (e.g. rubric); NaN/blank values are skipped."""
    fig = go.Figure()
    for name, values in groups.items():
        xbins = {"size": bin_size} if bin_size else None
        fig.add_trace(go.Histogram(x=_clean(values), name=str(name), opacity=0.75, xbins=xbins))
    fig.update_layout(barmode="overlay", xaxis_title=x_title, yaxis_title="count")
    return _layout(fig, title)


def heatmap(z: Sequence[Sequence[float | None]], x: Sequence[str], y: Sequence[str], *, title: str,
            colorbar_title: str = "score", zmin: float | None = None, zmax: float | None = None,
            hover: Sequence[Sequence[str]] | None = None, show_y_labels: bool = True) -> go.Figure:
    """A heatmap with one row per ``y`` label; blank cells stay blank (no imputation)."""
    z = [[None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in row] for row in z]
    trace = go.Heatmap(z=z, x=list(x), y=list(y), colorscale=HEATMAP_SCALE, zmin=zmin, zmax=zmax,
                       colorbar={"title": {"text": colorbar_title}}, hoverongaps=False, xgap=1, ygap=1)
    if hover is not None:
        trace.update(text=hover, hovertemplate="%{text}<extra></extra>")
    fig = go.Figure(trace)
    height = max(300, min(1400, 130 + 18 * len(y)))
    fig.update_yaxes(autorange="reversed", showticklabels=show_y_labels, type="category",
                     tickfont={"family": "Menlo, Consolas, monospace", "size": 10})
    fig.update_xaxes(type="category", side="top")
    _layout(fig, title, height=height)
    fig.update_layout(margin={"l": 150 if show_y_labels else 40, "r": 24, "t": 110, "b": 20})
    return fig


def bars(categories: Sequence[str], series: Mapping[str, Sequence[float | None]], *, title: str,
         y_title: str, errors: Mapping[str, Sequence[float | None]] | None = None,
         x_title: str = "", y_range: tuple[float, float] | None = None) -> go.Figure:
    """Grouped bars: one bar per category per series, with optional ± error bars (e.g. std)."""
    fig = go.Figure()
    for name, values in series.items():
        err = None
        if errors and name in errors:
            err = {"type": "data", "array": [0 if e is None or e != e else e for e in errors[name]],
                   "visible": True, "thickness": 1.2, "color": "#6b7280"}
        fig.add_trace(go.Bar(x=list(categories), y=list(values), name=str(name), error_y=err))
    fig.update_layout(barmode="group", xaxis_title=x_title, yaxis_title=y_title,
                      showlegend=len(series) > 1)
    fig.update_xaxes(type="category")
    if y_range:
        fig.update_yaxes(range=list(y_range))
    return _layout(fig, title)


def boxes(groups: Mapping[str, Sequence[float]], *, title: str, y_title: str) -> go.Figure:
    """One box per group (e.g. evaluator × rubric), every point shown next to its box."""
    fig = go.Figure()
    for i, (name, values) in enumerate(groups.items()):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Box(y=_clean(values), name=str(name), boxpoints="all", jitter=0.4, pointpos=0,
                             marker={"size": 4, "opacity": 0.5, "color": color}, line={"color": color}))
    fig.update_layout(yaxis_title=y_title, showlegend=False)
    fig.update_xaxes(type="category")
    return _layout(fig, title, height=420)


def scatter(x: Sequence[float], y: Sequence[float], labels: Sequence[str], *, title: str, x_title: str,
            y_title: str, diagonal: bool = True) -> go.Figure:
    """Points with hover labels, and the y = x line when both axes share a scale."""
    fig = go.Figure(go.Scatter(x=list(x), y=list(y), text=list(labels), mode="markers",
                               marker={"size": 7, "opacity": 0.7, "color": PALETTE[0]},
                               hovertemplate="%{text}<br>%{x:.2f} → %{y:.2f}<extra></extra>"))
    vals = _clean(list(x) + list(y))
    if diagonal and vals:
        lo, hi = min(vals), max(vals)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", hoverinfo="skip",
                                 line={"dash": "dot", "color": "#9ca3af"}, showlegend=False))
    fig.update_layout(xaxis_title=x_title, yaxis_title=y_title, showlegend=False)
    return _layout(fig, title, height=420)
