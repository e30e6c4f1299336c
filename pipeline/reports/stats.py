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
import warnings

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


def _mean_squares(x: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA mean squares of an n × k matrix: rows (subjects), columns (raters), error."""
    n, k = x.shape
    grand = x.mean()
    rows, cols = x.mean(axis=1), x.mean(axis=0)
    msr = k * ((rows - grand) ** 2).sum() / (n - 1)
    msc = n * ((cols - grand) ** 2).sum() / (k - 1)
    mse = ((x - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((n - 1) * (k - 1))
    return msr, msc, mse


def icc2_1(matrix) -> float:
    """ICC(2,1) of an n-subjects × k-raters matrix without missing values; NaN if undefined."""
    x = np.asarray(matrix, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 or np.isnan(x).any():
        return float("nan")
    n, k = x.shape
    msr, msc, mse = _mean_squares(x)
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


# ---------------------------------------------------------------------------------------------
# Intervals. Every interval is 95 %; bootstraps use a fixed seed so a report rebuilt from the same
# files prints the same numbers.

CONFIDENCE = 0.95
BOOT_SEED = 20240521
N_BOOT = 2000
BOOT_BATCH = 250  # resamples per vectorised batch: bounds memory for cohorts with thousands of essays
MIN_UNITS = 3  # fewer independent units than this → no interval (a bootstrap of 2 values is not one)


def _rng():
    return np.random.default_rng(BOOT_SEED)


def expanded_level(k: int, confidence: float = CONFIDENCE) -> float:
    """The percentile level of Hesterberg's *expanded percentile* interval for k units: the plain
    percentile bootstrap is too narrow for small k (its spread is that of a z interval with the
    ddof=0 variance), so widen it to match a t interval: z = √(k/(k−1))·t_{k−1}. For 8 essays a
    nominal 95 % becomes 98.9 % of the bootstrap distribution; for 100 essays, 95.3 %."""
    from scipy.stats import norm, t

    if k < 2:
        return confidence
    z = math.sqrt(k / (k - 1)) * t.ppf(1 - (1 - confidence) / 2, k - 1)
    return float(1 - 2 * norm.sf(z))


def _percentile_bootstrap(n_units: tuple[int, ...], statistic) -> tuple[float, float]:
    """Expanded percentile interval of ``statistic`` over resampled unit indices, one index array
    per independent sample (the smallest sample sets the expansion).

    scipy resamples the index arrays; the statistic gathers whole clusters through them, which is
    what makes this a cluster bootstrap (scipy on its own would resample single observations).
    """
    from scipy.stats import bootstrap

    data = tuple(np.arange(k) for k in n_units)
    # a resample where the statistic is undefined (e.g. r of one essay) makes the interval NaN:
    # too few units for an interval, reported as blank rather than warned about
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(data, statistic, n_resamples=N_BOOT, batch=BOOT_BATCH, vectorized=True, axis=-1,
                        confidence_level=expanded_level(min(n_units)), method="percentile", rng=_rng())
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (float("nan"), float("nan"))


def _cluster_sums(units, values) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (cluster): sum and count of the finite values."""
    v = pd.Series(np.asarray(values, dtype=float)).reset_index(drop=True)
    u = pd.Series(np.asarray(units, dtype=object)).reset_index(drop=True)
    ok = v.notna()
    g = v[ok].groupby(u[ok].to_numpy(), sort=True)
    return g.sum().to_numpy(dtype=float), g.count().to_numpy(dtype=float)


def cluster_mean_ci(units, values) -> tuple[float, float, float, int]:
    """Mean of ``values`` with a 95 % cluster-bootstrap interval that resamples whole ``units``
    (essays, with all their evaluations), so n for the interval is the number of units.

    Returns (mean, ci_low, ci_high, n_units); the interval is NaN with fewer than MIN_UNITS units.
    """
    sums, counts = _cluster_sums(units, values)
    k = len(sums)
    if k == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = float(sums.sum() / counts.sum())
    if k < MIN_UNITS:
        return mean, float("nan"), float("nan"), k
    lo, hi = _percentile_bootstrap((k,), lambda i, axis=-1: sums[i].sum(axis) / counts[i].sum(axis))
    return mean, lo, hi, k


def cluster_diff_ci(units_a, values_a, units_b, values_b) -> tuple[float, float, float, int, int]:
    """Unpaired difference of means (a − b) of two groups with disjoint units, each group's units
    resampled on their own (stratified cluster bootstrap).

    Returns (diff, ci_low, ci_high, n_units_a, n_units_b); no interval unless each group has at
    least two units and both together at least MIN_UNITS + 1 (enough to see any spread).
    """
    sa, ca = _cluster_sums(units_a, values_a)
    sb, cb = _cluster_sums(units_b, values_b)
    ka, kb = len(sa), len(sb)
    if not ka or not kb:
        return float("nan"), float("nan"), float("nan"), ka, kb
    diff = float(sa.sum() / ca.sum() - sb.sum() / cb.sum())
    if min(ka, kb) < 2 or ka + kb < MIN_UNITS + 1:
        return diff, float("nan"), float("nan"), ka, kb
    lo, hi = _percentile_bootstrap(
        (ka, kb), lambda i, j, axis=-1: sa[i].sum(axis) / ca[i].sum(axis) - sb[j].sum(axis) / cb[j].sum(axis))
    return diff, lo, hi, ka, kb


def cluster_pearson_ci(clusters, x, y) -> tuple[float, float, float, int, int]:
    """Pearson r of paired (x, y) points with a cluster-bootstrap interval over ``clusters``
    (points of one essay are not independent). Returns (r, ci_low, ci_high, n_points, n_clusters).
    """
    df = pd.DataFrame({"c": np.asarray(clusters, dtype=object), "x": np.asarray(x, dtype=float),
                       "y": np.asarray(y, dtype=float)}).dropna()
    n = len(df)
    if n < 3:
        return float("nan"), float("nan"), float("nan"), n, df["c"].nunique()
    df = df.assign(xx=df["x"] ** 2, yy=df["y"] ** 2, xy=df["x"] * df["y"], one=1.0)
    # sufficient statistics per cluster: r of any resample follows from their sums
    s = df.groupby("c", sort=True)[["one", "x", "y", "xx", "yy", "xy"]].sum().to_numpy()

    def r_of(tot):
        m, sx, sy, sxx, syy, sxy = (tot[..., j] for j in range(6))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (m * sxy - sx * sy) / np.sqrt((m * sxx - sx ** 2) * (m * syy - sy ** 2))

    r = float(r_of(s.sum(axis=0)))
    k = len(s)
    if not math.isfinite(r) or k < MIN_UNITS:
        return (r if math.isfinite(r) else float("nan")), float("nan"), float("nan"), n, k
    lo, hi = _percentile_bootstrap((k,), lambda i, axis=-1: r_of(s[i].sum(axis=-2)))
    return r, lo, hi, n, k


def mean_pairwise_pearson_ci(frame: pd.DataFrame, min_n: int = 3) -> tuple[float, float, float, int]:
    """Mean pairwise Pearson r of ``frame``'s columns (as ``mean_pairwise_pearson``) with a
    bootstrap interval over its rows (essays). Returns (mean r, ci_low, ci_high, n rows used)."""
    r, _ = mean_pairwise_pearson(frame, min_n)
    cols = list(frame.columns)
    pairs = list(itertools.combinations(range(len(cols)), 2))
    x = frame.to_numpy(dtype=float)
    used = (~np.isnan(x)).sum(axis=1) >= 2
    x = x[used]
    k = len(x)
    if not math.isfinite(r) or k < MIN_UNITS or not pairs:
        return r, float("nan"), float("nan"), k
    stats_ = np.zeros((k, len(pairs), 6))
    for p, (a, b) in enumerate(pairs):
        ok = ~np.isnan(x[:, a]) & ~np.isnan(x[:, b])
        xa, xb = np.where(ok, x[:, a], 0), np.where(ok, x[:, b], 0)
        stats_[:, p] = np.column_stack([ok, xa, xb, xa * xa, xb * xb, xa * xb])

    def mean_r(i, axis=-1):
        tot = stats_[i].sum(axis=-3)
        m, sx, sy, sxx, syy, sxy = (tot[..., j] for j in range(6))
        with np.errstate(divide="ignore", invalid="ignore"):
            rr = (m * sxy - sx * sy) / np.sqrt((m * sxx - sx ** 2) * (m * syy - sy ** 2))
        rr = np.where((m >= min_n) & np.isfinite(rr), rr, np.nan)
        with warnings.catch_warnings():  # a resample where no pair is defined gives NaN, by design
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(rr, axis=-1)

    lo, hi = _percentile_bootstrap((k,), mean_r)
    return r, lo, hi, k


def icc2_1_ci(matrix) -> tuple[float, float, float]:
    """ICC(2,1) with its analytic 95 % interval (McGraw & Wong 1996, as pingouin's
    ``intraclass_corr`` and R's ``psych::ICC`` report it). NaN when undefined."""
    from scipy.stats import f as fdist

    icc = icc2_1(matrix)
    if not math.isfinite(icc):
        return float("nan"), float("nan"), float("nan")
    x = np.asarray(matrix, dtype=float)
    n, k = x.shape
    msr, msc, mse = _mean_squares(x)
    if mse <= 0:  # raters differ by constants only: no residual, no sampling distribution to use
        return icc, float("nan"), float("nan")
    fj = msc / mse
    vn = (k - 1) * (n - 1) * (k * icc * fj + n * (1 + (k - 1) * icc) - k * icc) ** 2
    vd = (n - 1) * k ** 2 * icc ** 2 * fj ** 2 + (n * (1 + (k - 1) * icc) - k * icc) ** 2
    v = vn / vd
    a = (1 - CONFIDENCE) / 2
    fu, fl = fdist.ppf(1 - a, n - 1, v), fdist.ppf(1 - a, v, n - 1)
    lo = n * (msr - fu * mse) / (fu * (k * msc + (k * n - k - n) * mse) + n * msr)
    hi = n * (fl * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fl * msr)
    return icc, float(lo), float(hi)


def t_interval(mean, std, n) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise Student-t 95 % interval of a mean from its sample std and n (NaN for n < 2):
    for small sets of cells, where a bootstrap would be far too narrow."""
    from scipy.stats import t

    mean, std, n = (np.asarray(v, dtype=float) for v in (mean, std, n))
    ok = n >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        half = np.where(ok, t.ppf(1 - (1 - CONFIDENCE) / 2, np.where(ok, n - 1, 1)) * std / np.sqrt(np.where(ok, n, 1)),
                        np.nan)
    return mean - half, mean + half


def aliased_groups(design: pd.DataFrame, factors: list[str]) -> list[list[str]]:
    """Groups of factors whose levels map one-to-one across the rows of ``design`` (each level of
    one occurs with exactly one level of the other): their effects cannot be told apart.

    Factors with a single level are left out (nothing to compare, so nothing to confuse); every
    other factor is in exactly one group, in ``factors`` order (a group of one is not aliased).
    """
    varying = [f for f in factors if f in design.columns and design[f].nunique(dropna=False) >= 2]
    groups: list[list[str]] = []
    for f in varying:
        for g in groups:
            lead = g[0]
            pairs = design[[lead, f]].drop_duplicates()
            if len(pairs) == design[lead].nunique(dropna=False) == design[f].nunique(dropna=False):
                g.append(f)
                break
        else:
            groups.append([f])
    return groups
