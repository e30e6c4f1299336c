"""Pure statistics for the report tables (numpy/pandas in, numbers out; no I/O).

Conventions, chosen once so every table agrees:
- std is the *sample* standard deviation (ddof=1); one value → NaN, never 0.
- CV = std / |mean|; a mean of 0 (or NaN) gives NaN, never infinity.
- Agreement between scores is judged on the range as a share of the rubric's scale, so 0–9 and
  0–10 rubrics are judged alike: range ≤ 10% of the scale → ``high``, ≤ 25% → ``moderate``,
  larger → ``low``; fewer than two values → ``n/a`` (nothing to agree with).
- ICC(2,1): two-way random effects, absolute agreement, single rater (Shrout & Fleiss 1979),
  classed after Koo & Li (2016): < 0.5 poor, < 0.75 moderate, < 0.9 good, else excellent.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

AGREEMENT_HIGH = 0.10  # range / scale width at or below this → "high"
AGREEMENT_MODERATE = 0.25  # at or below this → "moderate"; above → "low"
ICC_CLASSES = ((0.5, "poor"), (0.75, "moderate"), (0.9, "good"), (np.inf, "excellent"))


def finite(value) -> float | None:
    """A finite float, or None for anything else (null, text, NaN, inf): how every reader of
    scores and numbers from JSON or CSV treats a value it cannot use."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def cv(std, mean):
    """Coefficient of variation, elementwise; NaN where the mean is 0 or NaN (never inf)."""
    std = np.asarray(std, dtype=float)
    mean = np.abs(np.asarray(mean, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(mean > 0, std / np.where(mean > 0, mean, 1.0), np.nan)
    return out


def agreement_class(range_norm, n) -> np.ndarray:
    """``high`` / ``moderate`` / ``low`` by range as a share of the scale; ``n/a`` when n < 2."""
    r = np.asarray(range_norm, dtype=float)
    n = np.asarray(n, dtype=float)
    out = np.where(r <= AGREEMENT_HIGH + 1e-12, "high", np.where(r <= AGREEMENT_MODERATE + 1e-12, "moderate", "low"))
    return np.where((n < 2) | np.isnan(r), "n/a", out).astype(object)


def icc_class(icc: float) -> str:
    if icc is None or not np.isfinite(icc):
        return "n/a"
    for bound, label in ICC_CLASSES:
        if icc < bound:
            return label
    return "excellent"


def icc2_1(matrix) -> float:
    """ICC(2,1) of an n-subjects × k-raters matrix without missing values; NaN if undefined."""
    x = np.asarray(matrix, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 or np.isnan(x).any():
        return float("nan")
    n, k = x.shape
    grand = x.mean()
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    msr = k * ((rows - grand) ** 2).sum() / (n - 1)
    msc = n * ((cols - grand) ** 2).sum() / (k - 1)
    mse = ((x - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((n - 1) * (k - 1))
    denom = msr + (k - 1) * mse + k * (msc - mse) / n
    return float((msr - mse) / denom) if denom > 0 else float("nan")


def mean_pairwise_pearson(frame: pd.DataFrame, min_n: int = 3) -> tuple[float, int]:
    """Mean Pearson r over pairs of columns (pairwise-complete rows, at least ``min_n``).

    Pairs where either column is constant have no correlation and are skipped. Returns
    (mean r or NaN, number of pairs used).
    """
    rs = []
    for a, b in itertools.combinations(frame.columns, 2):
        pair = frame[[a, b]].dropna().to_numpy(dtype=float)
        if len(pair) < min_n or pair[:, 0].std() == 0 or pair[:, 1].std() == 0:
            continue
        rs.append(float(np.corrcoef(pair[:, 0], pair[:, 1])[0, 1]))
    return (float(np.mean(rs)) if rs else float("nan")), len(rs)


def spread(df: pd.DataFrame, keys: list[str], value: str, width: str | None = None) -> pd.DataFrame:
    """Per group of ``keys``: n, mean, std, min, max, range, range_norm, cv, agreement of ``value``.

    ``width`` names a column holding the scale width (max − min) of each row, so the range is
    judged relative to the rubric's scale; without it values are already on 0–1.
    """
    g = df.groupby(keys, sort=True, dropna=False)[value]
    out = g.agg(n="count", mean="mean", std="std", min="min", max="max").reset_index()
    out["range"] = out["max"] - out["min"]
    w = df.groupby(keys, sort=True, dropna=False)[width].first().to_numpy() if width else 1.0
    out["range_norm"] = out["range"] / w
    out["cv"] = cv(out["std"], out["mean"])
    out["agreement"] = agreement_class(out["range_norm"], out["n"])
    return out
