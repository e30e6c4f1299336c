"""Plotly figure builders: plain data in, a Plotly figure as a dict out, no I/O.

Pages map report columns to these functions, so a chart's look is decided in one place. They
return plain ``{"data": [...], "layout": {...}}`` dicts rather than ``go.Figure`` objects:
building a validated ``go.Figure`` with a theme template costs ~0.1 s each (deep copies of the
template), which alone would dominate a site build. Tests validate every builder's output by
loading it into ``go.Figure``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from pipeline.reports.stats import finite

FONT = "Lato, 'Helvetica Neue', Arial, sans-serif"
PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0891b2", "#db2777", "#65a30d",
           "#475569", "#ea580c"]
HEATMAP_SCALE = "YlGnBu"
_AXIS = {"gridcolor": "#e5e7eb", "linecolor": "#9ca3af", "zerolinecolor": "#d1d5db", "automargin": True}


def _figure(data: list[dict], title: str, height: int = 380, **layout) -> dict:
    """A figure with the site's look: its font, white background, light grid, left-aligned title."""
    base = {
        "title": {"text": title, "x": 0, "xref": "paper", "xanchor": "left", "font": {"size": 15}},
        "font": {"family": FONT, "size": 12, "color": "#1f2937"},
        "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff", "colorway": PALETTE,
        "height": height, "margin": {"l": 60, "r": 24, "t": 56, "b": 48},
        # the legend sits above the plot on the left: the modebar takes the top right corner
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0},
        "hoverlabel": {"font": {"family": FONT}},
    }
    for axis in ("xaxis", "yaxis"):
        base[axis] = dict(_AXIS, **layout.pop(axis, {}))
    base.update(layout)
    return {"data": data, "layout": base}


COUNT_AXIS_DTICK_BELOW = 10   # a count axis up to this many gets a tick per whole number


def count_axis(max_count: int | None) -> dict:
    """A y axis of counts: whole numbers only (Plotly picks 0.5 steps for small ranges)."""
    axis = {"rangemode": "tozero", "tickformat": ",d"}
    if max_count is not None and max_count <= COUNT_AXIS_DTICK_BELOW:
        axis.update(tick0=0, dtick=1)
    return axis


def _max_bin_count(values: list[float], bin_size: float | None) -> int | None:
    """The fullest bin's count when bins are ``bin_size`` wide (None: Plotly picks the bins, so
    the count is bounded by the number of values)."""
    if not values:
        return 0
    if not bin_size:
        return len(values)
    counts: dict[int, int] = {}
    for v in values:
        k = int(v // bin_size)
        counts[k] = counts.get(k, 0) + 1
    # Plotly may start the bins half a bin off ours: two of our bins can share one of its
    return max(counts.get(k, 0) + counts.get(k + 1, 0) for k in counts)


def _clean(values: Sequence) -> list[float]:
    """Finite floats only: blanks, NaN and text are dropped (never drawn as zeros)."""
    return [f for f in map(finite, values) if f is not None]


def histogram(groups: Mapping[str, Sequence[float]], *, title: str, x_title: str,
              bin_size: float | None = None) -> dict:
    """Histograms side by side, one per group (e.g. rubric)."""
    cleaned = {k: _clean(v) for k, v in groups.items()}
    data = [{"type": "histogram", "x": v, "name": str(k), "opacity": 0.85,
             **({"xbins": {"size": bin_size}} if bin_size else {})} for k, v in cleaned.items()]
    top = max((_max_bin_count(v, bin_size) or 0 for v in cleaned.values()), default=0)
    return _figure(data, title, barmode="group", bargap=0.08, showlegend=len(groups) > 1,
                   xaxis={"title": {"text": x_title}}, yaxis={"title": {"text": "count"}, **count_axis(top)})


VALUES_MAX_ROWS, VALUES_MAX_COLS = 100, 16   # beyond this, cell numbers would not fit: hover only


def heatmap(z: Sequence[Sequence], x: Sequence[str], y: Sequence[str], *, title: str,
            colorbar_title: str = "score", zmin: float | None = None, zmax: float | None = None,
            hover: Sequence[Sequence[str]] | None = None, links: Sequence[Sequence[str]] | None = None,
            row_links: Sequence[str] | None = None) -> dict:
    """One row per ``y`` label, top to bottom; high values dark; each cell's value written in it
    (two decimals) while the grid is small enough to read. Missing cells show the grey
    background (never imputed). ``links``: an href per cell, ``row_links``: one per row label,
    opened by a click (daydream.js)."""
    trace = {"type": "heatmap", "z": [[finite(v) for v in row] for row in z], "x": list(x), "y": list(y),
             "colorscale": HEATMAP_SCALE, "reversescale": True, "colorbar": {"title": {"text": colorbar_title}},
             "hoverongaps": False, "xgap": 1, "ygap": 1}
    if len(y) <= VALUES_MAX_ROWS and len(x) <= VALUES_MAX_COLS:
        trace.update(texttemplate="%{z:.2f}", textfont={"size": 10})
    if zmin is not None:
        trace.update(zmin=zmin, zmax=zmax)
    if hover is not None:
        trace.update(text=[list(r) for r in hover], hovertemplate="%{text}<extra></extra>")
    if links is not None:
        trace["customdata"] = [list(r) for r in links]
    height = max(280, min(1500, 110 + 20 * len(y)))
    extra = {"meta": {"rowLinks": list(row_links)}} if row_links is not None else {}
    return _figure([trace], title, height=height, plot_bgcolor="#eef0f3", margin={"l": 60, "r": 24, "t": 120, "b": 24},
                   **extra,
                   xaxis={"type": "category", "side": "top", "showgrid": False},
                   yaxis={"type": "category", "autorange": "reversed", "showgrid": False,
                          "tickfont": {"family": "Menlo, Consolas, monospace", "size": 10}})


def bars(categories: Sequence[str], series: Mapping[str, Sequence], *, title: str, y_title: str,
         intervals: Mapping[str, tuple[Sequence, Sequence]] | None = None,
         y_range: tuple[float, float] | None = None, hover: Mapping[str, Sequence[str]] | None = None,
         counts: bool = False) -> dict:
    """Grouped bars: one bar per category per series, with optional interval whiskers
    (``intervals[name] = (lows, highs)``, e.g. a 95 % CI); a missing interval draws no whisker,
    never a zero-width one. ``counts``: the values are counts (whole-number ticks)."""
    data = []
    for name, values in series.items():
        ys = [finite(v) for v in values]
        trace = {"type": "bar", "x": list(categories), "y": ys, "name": str(name)}
        if intervals and name in intervals:
            lows, highs = intervals[name]
            up, down = [], []
            for y, lo, hi in zip(ys, lows, highs):
                lo, hi = finite(lo), finite(hi)
                ok = y is not None and lo is not None and hi is not None
                up.append(hi - y if ok else None)
                down.append(y - lo if ok else None)
            trace["error_y"] = {"type": "data", "symmetric": False, "array": up, "arrayminus": down,
                                "visible": True, "thickness": 1.2, "color": "#6b7280"}
        if hover and name in hover:
            trace.update(text=[str(h) for h in hover[name]], hovertemplate="%{text}<extra></extra>",
                         textposition="none")
        data.append(trace)
    yaxis = {"title": {"text": y_title}, **({"range": list(y_range)} if y_range else {})}
    if counts:
        top = max((int(y) for t in data for y in t["y"] if y is not None), default=0)
        yaxis.update(count_axis(top))
    return _figure(data, title, barmode="group", showlegend=len(series) > 1,
                   xaxis={"type": "category"}, yaxis=yaxis)


def boxes(groups: Mapping[str, Sequence[float]], *, title: str, y_title: str) -> dict:
    """One box per group (e.g. rubric · evaluator), with every point drawn beside it."""
    data = [{"type": "box", "y": _clean(v), "name": str(k), "boxpoints": "all", "jitter": 0.4, "pointpos": 0,
             "marker": {"size": 4, "opacity": 0.5, "color": PALETTE[i % len(PALETTE)]},
             "line": {"color": PALETTE[i % len(PALETTE)]}} for i, (k, v) in enumerate(groups.items())]
    return _figure(data, title, height=420, showlegend=False, xaxis={"type": "category"},
                   yaxis={"title": {"text": y_title}})


def scatter(x: Sequence[float], y: Sequence[float], labels: Sequence[str], *, title: str, x_title: str,
            y_title: str, diagonal: bool = True) -> dict:
    """Points with hover labels, plus the y = x line when both axes share a scale."""
    data = [{"type": "scatter", "mode": "markers", "x": [finite(v) for v in x], "y": [finite(v) for v in y],
             "text": [str(s) for s in labels], "marker": {"size": 7, "opacity": 0.7, "color": PALETTE[0]},
             "hovertemplate": "%{text}<br>%{x:.2f} → %{y:.2f}<extra></extra>"}]
    vals = _clean(list(x) + list(y))
    if diagonal and vals:
        lo, hi = min(vals), max(vals)
        data.append({"type": "scatter", "mode": "lines", "x": [lo, hi], "y": [lo, hi], "hoverinfo": "skip",
                     "line": {"dash": "dot", "color": "#9ca3af"}, "showlegend": False})
    return _figure(data, title, height=420, showlegend=False,
                   xaxis={"title": {"text": x_title}}, yaxis={"title": {"text": y_title}})
