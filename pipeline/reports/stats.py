"""Pure statistics for the report tables (numpy/pandas in, numbers out; no I/O).

Conventions, chosen once so every table agrees:
- std is the *sample* standard deviation (ddof=1); one value → NaN, never 0.
- CV = std / |mean|; a mean of 0 (or NaN) gives NaN, never infinity.
- Agreement between scores is judged on the range as a share of the rubric's scale, so 0–9 and
  0–10 rubrics are judged alike: range ≤ 10% of the scale → ``high``, ≤ 25% → ``moderate``,
  larger → ``low``; fewer than two values → ``n/a`` (nothing to agree with).
- ICC(2,1): two-way random effects, absolute agreement, single rater (Shrout & Fleiss 1979),
  classed after Koo & Li (2016): < 0.5 poor, < 0.75 moderate, < 0.9 good, else excellent; a class
  is given only when determined (``icc_class_of``: ``uncertain`` with few subjects or an interval
  spanning classes).
- Intervals of means and differences are Student-t intervals on the lineage (see "Small-sample
  intervals" below), or from a mixed model's estimated marginal means with Satterthwaite's df
  (``mixed_emm``); none is ever the data's range by construction, and a zero-width or one-unit
  interval is "not estimable" with the reason.
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
# Intervals. Every interval is 95 %; anything random (the rank simulation, α's bootstrap) uses a
# fixed seed so a report rebuilt from the same files prints the same numbers.

CONFIDENCE = 0.95
BOOT_SEED = 20240521


def _rng():
    return np.random.default_rng(BOOT_SEED)


def _cluster_sums(units, values) -> tuple[np.ndarray, np.ndarray]:
    """Per unit (cluster), in sorted unit order: sum and count of the finite values."""
    v = np.asarray(values, dtype=float).ravel()
    u = np.asarray(units, dtype=object).astype(str).ravel()
    ok = np.isfinite(v)
    if not ok.any():
        return np.zeros(0), np.zeros(0)
    _, inv = np.unique(u[ok], return_inverse=True)
    return np.bincount(inv, weights=v[ok]), np.bincount(inv).astype(float)


def cluster_pearson_ci(clusters, x, y) -> tuple[float, float, float, int, int]:
    """Pearson r of paired (x, y) points with a Fisher-z interval whose n is the number of
    ``clusters`` (points of one essay are not independent). Returns (r, ci_low, ci_high, n_points, n_clusters).
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
    if not math.isfinite(r):
        return float("nan"), float("nan"), float("nan"), n, k
    # Fisher's z with the clusters as the independent units: points of one essay are not
    # independent, so n is the number of essays (conservative when each holds several points)
    lo, hi = fisher_z_ci(r, min(k, n))
    return r, lo, hi, n, k


def mean_pairwise_pearson_ci(frame: pd.DataFrame, min_n: int = 3) -> tuple[float, float, float, int]:
    """Mean pairwise Pearson r of ``frame``'s columns (as ``mean_pairwise_pearson``) with a
    Fisher-z interval over its rows (essays). Returns (mean r, ci_low, ci_high, n rows used)."""
    r, _ = mean_pairwise_pearson(frame, min_n)
    cols = list(frame.columns)
    pairs = list(itertools.combinations(range(len(cols)), 2))
    x = frame.to_numpy(dtype=float)
    used = (~np.isnan(x)).sum(axis=1) >= 2
    x = x[used]
    k = len(x)
    if not math.isfinite(r) or not pairs:
        return r, float("nan"), float("nan"), k
    # Fisher's z over the essays (the units): approximate for a mean of pairwise r, never the
    # resampled range of a handful of essays
    lo, hi = fisher_z_ci(r, k)
    return r, lo, hi, k


def icc_forms(matrix) -> dict:
    """The named ICCs of an n-subjects × k-raters matrix without missing values (Shrout & Fleiss
    1979; McGraw & Wong 1996), each with its analytic 95 % interval as pingouin and psych::ICC
    report them: ``icc2_1`` (two-way random, absolute agreement, single rater), ``icc3_1``
    (two-way mixed, consistency: a rater's constant offset does not count against it), ``icc2_k``
    (absolute agreement of the mean of the k raters). Each as (value, ci_low, ci_high); NaN when
    undefined (fewer than 2 subjects or raters, no variance) and the interval NaN with no residual.
    """
    from scipy.stats import f as fdist

    nan3 = (float("nan"),) * 3
    x = np.asarray(matrix, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2 or np.isnan(x).any():
        return {"icc2_1": nan3, "icc3_1": nan3, "icc2_k": nan3}
    n, k = x.shape
    msr, msc, mse = _mean_squares(x)
    a = (1 - CONFIDENCE) / 2
    out = {}
    icc2 = icc2_1(x)
    d3 = msr + (k - 1) * mse
    icc3 = float((msr - mse) / d3) if d3 > 0 else float("nan")
    d2k = msr + (msc - mse) / n
    icc2k = float((msr - mse) / d2k) if d2k > 0 else float("nan")
    if mse <= 0 or not math.isfinite(icc2):  # raters differ by constants only: no sampling distribution
        return {"icc2_1": (icc2, float("nan"), float("nan")), "icc3_1": (icc3, float("nan"), float("nan")),
                "icc2_k": (icc2k, float("nan"), float("nan"))}
    fj = msc / mse
    vn = (k - 1) * (n - 1) * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    vd = (n - 1) * k ** 2 * icc2 ** 2 * fj ** 2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    v = vn / vd
    fu, fl = fdist.ppf(1 - a, n - 1, v), fdist.ppf(1 - a, v, n - 1)
    out["icc2_1"] = (icc2, float(n * (msr - fu * mse) / (fu * (k * msc + (k * n - k - n) * mse) + n * msr)),
                     float(n * (fl * msr - mse) / (k * msc + (k * n - k - n) * mse + n * fl * msr)))
    out["icc2_k"] = (icc2k, float(n * (msr - fu * mse) / (fu * (msc - mse) + n * msr)),
                     float(n * (fl * msr - mse) / ((msc - mse) + n * fl * msr)))
    f3 = msr / mse
    df1, df2 = n - 1, (n - 1) * (k - 1)
    f3l, f3u = f3 / fdist.ppf(1 - a, df1, df2), f3 * fdist.ppf(1 - a, df2, df1)
    out["icc3_1"] = (icc3, float((f3l - 1) / (f3l + k - 1)), float((f3u - 1) / (f3u + k - 1)))
    return out


def icc2_1_ci(matrix) -> tuple[float, float, float]:
    """ICC(2,1) with its analytic 95 % interval (McGraw & Wong 1996, as pingouin's
    ``intraclass_corr`` and R's ``psych::ICC`` report it). NaN when undefined."""
    return icc_forms(matrix)["icc2_1"]


MIN_CLASS_UNITS = 5  # fewer subjects than this: an ICC gets no class, however high


def icc_class_of(icc: float, lo: float, hi: float, n_units: int) -> str:
    """Koo & Li's class of an ICC only when it is determined: ``uncertain`` with fewer than
    MIN_CLASS_UNITS subjects, without an interval, or when the interval spans classes; ``n/a``
    when there is no ICC."""
    label = icc_class(icc)
    if label == "n/a":
        return label
    if n_units < MIN_CLASS_UNITS or not (math.isfinite(lo) and math.isfinite(hi)):
        return "uncertain"
    return label if icc_class(lo) == icc_class(min(hi, 0.999999)) == label else "uncertain"


N_ALPHA_BOOT = 1000  # resamples of essays for α's interval


def _alpha_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per unit (row) of a units × raters matrix: pairable values m, Σv, Σv² and the within-unit
    disagreement Σ_{i≠j}(v_i − v_j)² / (m − 1): what interval α is made of."""
    ok = ~np.isnan(x)
    v = np.where(ok, x, 0.0)
    m = ok.sum(axis=1).astype(float)
    s1, s2 = v.sum(axis=1), (v * v).sum(axis=1)
    within = 2 * (m * s2 - s1 ** 2) / np.where(m > 1, m - 1, 1)
    return m, s1, s2, within


def _alpha_from_sums(m, s1, s2, within):
    """Interval α = 1 − D_o / D_e from summed unit parts (arrays: one α per row of sums)."""
    n = m
    with np.errstate(divide="ignore", invalid="ignore"):
        d_o = within / n
        d_e = 2 * (n * s2 - s1 ** 2) / (n * (n - 1))
        return 1 - d_o / d_e


def krippendorff_alpha(matrix, min_units: int = MIN_CLASS_UNITS) -> tuple[float, float, float]:
    """Krippendorff's α (interval metric, the ``krippendorff`` package) of an n-units × k-raters
    matrix (NaN = not rated), with a percentile-bootstrap 95 % interval over units (fixed seed;
    each resample's α from the units' sums, the same formula, so 1,000 resamples of 1,000 essays
    cost one matrix product); the interval is NaN with fewer than ``min_units`` units rated by at
    least two raters."""
    import krippendorff

    x = np.asarray(matrix, dtype=float)
    nan = float("nan")
    if x.ndim != 2 or x.shape[1] < 2:
        return nan, nan, nan
    x = x[(~np.isnan(x)).sum(axis=1) >= 2]
    n = len(x)
    if n < 2 or np.nanstd(x) == 0:
        return nan, nan, nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alpha = float(krippendorff.alpha(reliability_data=x.T, level_of_measurement="interval"))
    if n < min_units:
        return alpha, nan, nan
    parts = np.column_stack(_alpha_parts(x))
    weights = _rng().multinomial(n, np.full(n, 1 / n), size=N_ALPHA_BOOT).astype(float)
    boots = _alpha_from_sums(*(weights @ parts).T)
    boots = boots[np.isfinite(boots)]
    if len(boots) < N_ALPHA_BOOT // 2:
        return alpha, nan, nan
    return alpha, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


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


# ---------------------------------------------------------------------------------------------
# Small-sample intervals on the lineage. Essays that share a draft (or a combo) are not
# independent, so an interval's unit is the highest level of the lineage (combo → draft →
# essay) at which the rows in question share anything; its n is the number of such clusters and
# it is a Student-t interval on their means (a ratio estimator when clusters hold different
# numbers of evaluations: with equal sizes it is exactly the t interval on the cluster means).
# A percentile bootstrap over 3–6 clusters returns the data's range and covers far less than
# 95 %; a t interval on k clusters is exact under normality at any k ≥ 2.

LINEAGE = ("combo_id", "draft_gen_id", "essay_gen_id")
LEVEL_NAMES = {"combo_id": "combo", "draft_gen_id": "draft", "essay_gen_id": "essay",
               "evaluation_llm": "evaluator", "cell": "cell"}
MIN_CLUSTERS = 2  # a t interval needs a spread: two cluster means give one degree of freedom
NOT_ESTIMABLE = "not estimable"


def t_quantile(df):
    """The two-sided 95 % Student-t quantile for ``df`` degrees of freedom (elementwise)."""
    from scipy.stats import t

    q = t.ppf(1 - (1 - CONFIDENCE) / 2, df)
    return float(q) if np.ndim(q) == 0 else q


def lineage_clusters(rows: pd.DataFrame) -> tuple[str, np.ndarray]:
    """(level, cluster id per row): the highest lineage level at which two of ``rows``' essays
    share a cluster (combo, then draft) and the rows span at least two clusters, else the essay.
    A blank or ``unknown`` combo or draft id is no evidence of sharing: such a row is its own
    essay's cluster."""
    return lineage_ids(*(rows[c].to_numpy() if c in rows.columns else None for c in LINEAGE[::-1]))


def lineage_ids(essay, draft=None, combo=None) -> tuple[str, np.ndarray]:
    """``lineage_clusters`` on arrays (essay, draft and combo id per row)."""
    essay = np.asarray(essay).astype(str)
    for col, ids in (("combo_id", combo), ("draft_gen_id", draft)):
        if ids is None:
            continue
        ids = np.asarray(ids).astype(str)
        bad = np.isin(ids, ["", "unknown", "nan", "None"])
        ids = np.where(bad, np.char.add("essay:", essay), ids)
        n_ids = len(set(ids))
        shared = len(set(zip(ids, essay))) > n_ids  # some cluster holds two essays
        # one cluster holding every row (a single combo's mean): the rows are conditional on it,
        # and the next level down is what varies
        if shared and n_ids >= MIN_CLUSTERS:
            return col, ids
    return "essay_gen_id", essay


def _ratio_var(sums: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """Mean Σs/Σc and the variance of that ratio estimator over k clusters (the t interval on the
    cluster means when every cluster has the same count)."""
    k = len(sums)
    m = float(sums.sum() / counts.sum())
    if k < 2:
        return m, float("nan")
    resid = sums - m * counts
    return m, float(k / (k - 1) * (resid ** 2).sum() / counts.sum() ** 2)


def _reason_zero(k: int, level: str) -> str:
    return f"{NOT_ESTIMABLE}: the {k} {LEVEL_NAMES.get(level, level)} means are identical (no spread to estimate)"


def t_cluster_mean(values, clusters, level: str = "essay_gen_id") -> dict:
    """Mean of ``values`` with a 95 % t interval over the means of ``clusters``.

    Returns {estimate, ci_low, ci_high, n_clusters, df, se, ci_method, ci_note}; the interval is
    blank, with the reason in ``ci_note``, when there are fewer than two clusters or no spread.
    """
    sums, counts = _cluster_sums(clusters, values)
    k = len(sums)
    unit = LEVEL_NAMES.get(level, level)
    out = {"estimate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n_clusters": k,
           "df": float("nan"), "se": float("nan"), "ci_method": f"t over {unit} means", "ci_note": ""}
    if k == 0:
        out["ci_note"] = f"{NOT_ESTIMABLE}: no scored evaluations"
        return out
    m, var = _ratio_var(sums, counts)
    out["estimate"] = m
    if k < MIN_CLUSTERS:
        out["ci_note"] = f"{NOT_ESTIMABLE}: one {unit} only"
    elif not var > 1e-18:
        out["ci_note"] = _reason_zero(k, level)
    else:
        se = math.sqrt(var)
        half = t_quantile(k - 1) * se
        out.update(ci_low=m - half, ci_high=m + half, df=float(k - 1), se=se,
                   ci_method=f"t over {unit} means (df {k - 1})")
    return out


def t_cluster_diff(values, clusters, is_a, level: str = "essay_gen_id") -> dict:
    """Difference of means (a − b) of two groups of rows with a 95 % t interval on the lineage.

    Where the groups' clusters are disjoint: Welch's t on the two groups' cluster means (each
    group a ratio estimator). Where clusters hold both groups (the factor varies within combos or
    drafts), the clusters are the matched units: the t interval of the within-cluster
    differences over the clusters that hold both (clusters holding one group only are left out,
    said in ``ci_note``). Returns {estimate, ci_low, ci_high, n_clusters, df, se, t, p_value,
    ci_method, ci_note, paired}.
    """
    from scipy.stats import t as tdist

    v = np.asarray(values, dtype=float)
    c = np.asarray(clusters, dtype=object).astype(str)
    a = np.asarray(is_a, dtype=bool)
    ok = np.isfinite(v)
    v, c, a = v[ok], c[ok], a[ok]
    unit = LEVEL_NAMES.get(level, level)
    nan = float("nan")
    out = {"estimate": nan, "ci_low": nan, "ci_high": nan, "n_clusters": 0, "df": nan, "se": nan, "t": nan,
           "p_value": nan, "ci_method": "", "ci_note": "", "paired": False}
    if not a.any() or a.all():
        out["ci_note"] = f"{NOT_ESTIMABLE}: one group has no scored evaluations"
        return out
    ca, cb = set(c[a]), set(c[~a])
    both = ca & cb
    if both:
        keys, inv = np.unique(c, return_inverse=True)
        na, nb = np.bincount(inv[a], minlength=len(keys)), np.bincount(inv[~a], minlength=len(keys))
        sa = np.bincount(inv[a], weights=v[a], minlength=len(keys))
        sb = np.bincount(inv[~a], weights=v[~a], minlength=len(keys))
        hold = (na > 0) & (nb > 0)
        d = sa[hold] / na[hold] - sb[hold] / nb[hold]
        k = len(d)
        est = float(d.mean())
        out.update(estimate=est, n_clusters=k, paired=True, ci_method=f"paired t over {unit}s holding both")
        dropped = len(ca | cb) - k
        note = f"{dropped} {unit}(s) holding one level only left out" if dropped else ""
        if k < MIN_CLUSTERS:
            out["ci_note"] = f"{NOT_ESTIMABLE}: one {unit} holds both levels" + (f"; {note}" if note else "")
            return out
        var = float(d.var(ddof=1) / k)
        df = float(k - 1)
        out["ci_method"] = f"paired t over {unit}s holding both (df {k - 1})"
    else:
        sa, na = _cluster_sums(c[a], v[a])
        sb, nb = _cluster_sums(c[~a], v[~a])
        ma, va = _ratio_var(sa, na)
        mb, vb = _ratio_var(sb, nb)
        ka, kb = len(sa), len(sb)
        est = ma - mb
        out.update(estimate=est, n_clusters=ka + kb, ci_method=f"Welch t over {unit} means")
        note = ""
        if min(ka, kb) < MIN_CLUSTERS:
            out["ci_note"] = f"{NOT_ESTIMABLE}: a level has one {unit} only"
            return out
        var = va + vb
        df = var ** 2 / (va ** 2 / (ka - 1) + vb ** 2 / (kb - 1)) if va > 0 and vb > 0 else float(min(ka, kb) - 1)
        out["ci_method"] = f"Welch t over {unit} means (df {df:.1f})"
    if not var > 1e-18:
        out["ci_note"] = f"{NOT_ESTIMABLE}: the {unit} differences do not vary (no spread to estimate)"
        return out
    se = math.sqrt(var)
    half = t_quantile(df) * se
    tt = est / se
    out.update(ci_low=est - half, ci_high=est + half, df=df, se=se, t=tt, p_value=float(2 * tdist.sf(abs(tt), df)),
               ci_note=note)
    return out


def t_p_value(estimate, se, df) -> float:
    from scipy.stats import t as tdist

    if not (math.isfinite(estimate) and math.isfinite(se) and se > 0 and math.isfinite(df) and df > 0):
        return float("nan")
    return float(2 * tdist.sf(abs(estimate / se), df))


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def fisher_z_ci(r: float, n: int) -> tuple[float, float]:
    """95 % interval of a correlation by Fisher's z with n independent units (n ≥ 4)."""
    from scipy.stats import norm

    if not (math.isfinite(r) and n >= 4) or abs(r) >= 1:
        return float("nan"), float("nan")
    z = math.atanh(r)
    half = norm.ppf(1 - (1 - CONFIDENCE) / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def backfit(df: pd.DataFrame, value: str, factors: list[str], iterations: int = 50, tol: float = 1e-10) -> dict:
    """Additive least-squares fit value ~ μ + Σ factor effects (main effects only), by backfitting:
    each factor's effects are the mean residual of its levels given the others, repeated until
    they settle. Returns {factor: Series of effects by level} with each factor's effects centred
    to a frequency-weighted mean of 0, so in a balanced design removing them moves no level mean.
    Cost: a few groupbys per iteration, so 10,000 evaluations fit in milliseconds."""
    y = df[value].to_numpy(dtype=float)
    mu = float(y.mean())
    codes = {f: pd.factorize(df[f].astype(str), sort=True) for f in factors}
    eff = {f: np.zeros(len(codes[f][1])) for f in factors}
    counts = {f: np.bincount(codes[f][0], minlength=len(codes[f][1])).astype(float) for f in factors}
    fitted = np.zeros_like(y)
    for _ in range(iterations):
        change = 0.0
        for f in factors:
            code = codes[f][0]
            fitted -= eff[f][code]
            new = np.bincount(code, weights=y - mu - fitted, minlength=len(eff[f])) / counts[f]
            change = max(change, float(np.abs(new - eff[f]).max()))
            eff[f] = new
            fitted += new[code]
        if change < tol:
            break
    out = {}
    for f in factors:
        e = eff[f] - np.average(eff[f], weights=counts[f])
        out[f] = pd.Series(e, index=codes[f][1])
    return out


# ---------------------------------------------------------------------------------------------
# Variance components: a linear mixed model (statsmodels MixedLM, REML) per rubric.

MAX_VARIANCE = 0.25  # the largest variance a score on [0, 1] can have
VC_MAX_ROWS = 400  # rows per fit: REML's cost grows fast with the random-effect levels
VC_COMPONENTS = ("combo", "draft", "essay", "evaluator", "essay × evaluator", "replicate")


def _chi2_interval(var: float, nu: float) -> tuple[float, float]:
    """Satterthwaite's 95 % interval of a variance estimate with ν effective degrees of freedom."""
    from scipy.stats import chi2

    if not (math.isfinite(var) and math.isfinite(nu) and var > 0 and nu > 0):
        return float("nan"), float("nan")
    a = (1 - CONFIDENCE) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = float(nu * var / chi2.ppf(1 - a, nu)), float(nu * var / chi2.ppf(a, nu))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return float("nan"), float("nan")
    # a 0–1 score's variance is at most 1/4: a bound beyond it says only that the data cannot bound it
    return min(lo, MAX_VARIANCE), min(hi, MAX_VARIANCE)


def variance_components(rows: pd.DataFrame, value: str = "score_norm") -> tuple[list[dict], str]:
    """Variance of ``value`` split into the lineage (combo ⊃ draft ⊃ essay), the evaluator, the
    essay × evaluator interaction and the replicate (residual) by REML (statsmodels MixedLM):
    the top lineage level is the model's group, the levels below and the interaction are variance
    components within it, and the evaluators, crossed with everything, are fixed effects whose
    variance is estimated by moments (the spread of their effects less their sampling error).
    Levels the design does not vary (one combo; one essay per draft; one replicate) are left out
    and said in the method. Intervals: Satterthwaite's χ² with ν = 2·(estimate/SE)² from the fit's
    standard errors; the evaluator's with (evaluators − 1) df. A cohort larger than VC_MAX_ROWS
    is fitted on whole combos drawn in a fixed order up to that size (said in the method).

    Returns ([{component, variance, ci_low, ci_high, n_levels, ci_note}], method) or ([], reason).
    """
    from statsmodels.regression.mixed_linear_model import MixedLM

    rows = rows.assign(**{c: rows["essay_gen_id"] for c in LINEAGE if c not in rows.columns})
    df = rows[[value, "combo_id", "draft_gen_id", "essay_gen_id", "evaluation_llm"]].dropna().copy()
    df.columns = ["y", "combo", "draft", "essay", "ev"]
    for c in ("combo", "draft", "essay", "ev"):
        df[c] = df[c].astype(str)
    df["cell"] = df["essay"] + "|" + df["ev"]
    note = ""
    if len(df) > VC_MAX_ROWS:
        top = "combo" if df["combo"].nunique() >= 2 else "draft" if df["draft"].nunique() >= 2 else "essay"
        order = sorted(df[top].unique(), key=lambda x: hash_order(x))
        sizes = df.groupby(top).size().reindex(order).cumsum()
        keep = set(sizes.index[sizes <= VC_MAX_ROWS]) or {order[0]}
        df = df[df[top].isin(keep)]
        note = f"; fitted on {len(keep)} {top}s ({len(df)} evaluations) of {len(order)}"
    n_ess = df["essay"].nunique()
    if n_ess < 3:
        return [], f"{NOT_ESTIMABLE}: fewer than 3 scored essays"
    per = lambda a, b: df.groupby(a)[b].nunique()  # noqa: E731
    levels = []
    if df["combo"].nunique() >= 2 and (per("combo", "draft") > 1).any():
        levels.append("combo")
    elif df["combo"].nunique() >= 2 and (per("combo", "essay") > 1).any():
        levels.append("combo")
    if (per("draft", "essay") > 1).any() and df["draft"].nunique() >= 2 and "combo" in levels \
            and (per("combo", "draft") > 1).any():
        levels.append("draft")
    elif (per("draft", "essay") > 1).any() and df["draft"].nunique() >= 2 and not levels:
        levels.append("draft")
    levels.append("essay")
    n_ev = df["ev"].nunique()
    has_cell = n_ev >= 2 and (df.groupby("cell").size() > 1).any()
    if has_cell:
        levels.append("cell")
    group = levels[0]
    vcf = {lv: f"0 + C({lv})" for lv in levels[1:]}
    formula = "y ~ C(ev)" if n_ev >= 2 else "y ~ 1"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = MixedLM.from_formula(formula, groups=group, re_formula="1", vc_formula=vcf or None, data=df)
            # Powell first: derivative-free, it copes with a component at 0 (where the default
            # gradient methods stall) and is the fastest here; L-BFGS when it does not converge
            fit = model.fit(reml=True, method=["powell"])
            if not fit.converged:
                fit = model.fit(reml=True, method=["lbfgs"])
    except Exception as exc:  # singular designs raise LinAlgError, ValueError...: said, never hidden
        return [], f"{NOT_ESTIMABLE}: the mixed model could not be fitted ({type(exc).__name__})"
    if not fit.converged:
        return [], f"{NOT_ESTIMABLE}: the mixed model did not converge"
    scale = float(fit.scale)
    names = {"combo": "combo", "draft": "draft", "essay": "essay", "cell": "essay × evaluator"}
    est = {group: float(fit.cov_re.iloc[0, 0])}
    est.update({n: float(v) for n, v in zip(model.exog_vc.names, fit.vcomp)})
    bse = fit.bse
    out = []
    for lv in levels:
        var = max(est.get(lv, float("nan")), 0.0)
        key = f"{lv} Var"  # statsmodels names the group's variance after its column
        se = float(bse.get(key, float("nan"))) * scale if key in bse.index else float("nan")
        nu = 2 * (var / se) ** 2 if se and math.isfinite(se) and se > 0 else float("nan")
        lo, hi = _chi2_interval(var, nu)
        out.append({"component": names[lv], "variance": var, "ci_low": lo, "ci_high": hi,
                    "n_levels": int(df[lv].nunique()),
                    "ci_note": "" if math.isfinite(lo) else f"{NOT_ESTIMABLE}: "
                    + ("estimate at 0 (the boundary)" if var < 1e-9 else "too little information for an interval")})
    if n_ev >= 2:
        fe = fit.fe_params.to_numpy()[1:]
        cov = fit.cov_params().to_numpy()[1:len(fe) + 1, 1:len(fe) + 1]
        effects = np.concatenate([[0.0], fe])
        # variance of k fixed effects around their mean, less what their sampling error adds
        kk = len(effects)
        contrast = np.eye(kk) - 1 / kk
        full = np.zeros((kk, kk))
        full[1:, 1:] = cov
        noise = float(np.trace(contrast @ full @ contrast)) / (kk - 1)
        var = max(float(effects.var(ddof=1)) - noise, 0.0)
        lo, hi = _chi2_interval(var, kk - 1)
        out.append({"component": "evaluator", "variance": var, "ci_low": lo, "ci_high": hi, "n_levels": kk,
                    "ci_note": "" if math.isfinite(lo) else f"{NOT_ESTIMABLE}: estimate at 0 (the boundary)"})
    # the residual's df: what is left within the lowest random level (cells, or essays less the
    # evaluators' fixed effects)
    n_resid = len(df) - df[levels[-1]].nunique() - (0 if has_cell else n_ev - 1)
    lo, hi = _chi2_interval(scale, max(n_resid, 1))
    out.append({"component": "replicate" if has_cell else "residual", "variance": scale, "ci_low": lo, "ci_high": hi,
                "n_levels": len(df), "ci_note": ""})
    left = [c for c in ("combo", "draft") if c not in levels]
    method = ("REML mixed model (statsmodels MixedLM); Satterthwaite χ² intervals (upper bounds capped at 0.25, "
              "the largest variance of a 0–1 score)"
              + (f"; not separated: {', '.join(left)} (the design does not vary it apart from the level below)"
                 if left else "") + ("" if has_cell else "; one replicate per cell: the residual holds the "
                                     "essay × evaluator interaction and the replicate noise together") + note)
    return out, method


def hash_order(x: str) -> str:
    """A fixed, id-independent order of clusters for subsampling (not the sorted ids, which may
    follow the design)."""
    import hashlib

    return hashlib.sha256(str(x).encode()).hexdigest()


def precision_gain(components: dict[str, float], n_evaluators: float, n_replicates: float) -> dict[str, float]:
    """What more evaluations buy for an essay's mean on one rubric, from its variance components.

    The noise of an essay's mean over E evaluators × R replicates, as essays scored by the same
    panel are compared (the evaluators' own offsets are shared, so they cancel): σ²_{e×v}/E +
    σ²_rep/(E·R). Doubling R or doubling E costs the same number of evaluations; returns the noise
    now and after each, and the reliability of the essay mean now (essay-level variance, lineage
    included, over itself plus the noise). NaN where a component is missing."""
    inter = components.get("essay × evaluator", 0.0)
    rep = components.get("replicate", components.get("residual", float("nan")))
    essay = sum(components.get(k, 0.0) for k in ("combo", "draft", "essay"))
    e, r = max(float(n_evaluators), 1.0), max(float(n_replicates), 1.0)

    def noise(e_, r_):
        return inter / e_ + rep / (e_ * r_)

    now = noise(e, r)
    return {"noise": now, "noise_more_replicates": noise(e, 2 * r), "noise_more_evaluators": noise(2 * e, r),
            "reliability": essay / (essay + now) if essay + now > 0 else float("nan"),
            "n_evaluators": e, "n_replicates": r}


# ---------------------------------------------------------------------------------------------
# Estimated marginal means from a linear mixed model. Where evaluators and rubrics are crossed
# with the essays, a generation factor's level means and differences come from one REML fit
# (statsmodels MixedLM) of value ~ factor + the evaluation factors, with random intercepts along
# the lineage (the top cluster as the model's group, the finer lineage levels as variance
# components within it). The fixed effects and their covariance are the GLS ones at the REML
# variances ((X'V⁻¹X)⁻¹, what lme4's vcov gives), never the Wald z: intervals are Student t with
# Satterthwaite's df from the REML information, which in a balanced design are the df of the
# cluster-means ANOVA (3 essays a level, one essay a cluster: df 4). Above MIXED_MAX_ROWS, or
# where the fit is not kept, the caller uses the t over cluster means and says why in ci_note.

MIXED_MAX_ROWS = 1500  # rows per fit: REML's cost grows with the rows (about 1 s of CPU per fit at 1,500-2,000)
MIXED_METHOD_MEAN = "mixed-model EMM, Satterthwaite t"
MIXED_METHOD_DIFF = "mixed-model contrast, Satterthwaite t"
MIXED_NOT_FITTED = "mixed model not fitted"
BOUNDARY = 1e-4  # a component below this share of the residual variance is taken as estimated at 0
MIN_WITHIN_CLUSTERS = 6  # top clusters holding two levels, for a factor that varies within them


class MixedUnavailable(Exception):
    """Why no mixed-model estimate is given (the message is shown in ``ci_note``)."""


def _clean_lineage(rows: pd.DataFrame) -> pd.DataFrame:
    """combo, draft, essay ids per row as strings; an unknown combo or draft is the essay's own."""
    essay = rows["essay_gen_id"].astype(str).to_numpy()
    out = {"essay": essay}
    for name, col in (("draft", "draft_gen_id"), ("combo", "combo_id")):
        ids = rows[col].astype(str).to_numpy() if col in rows.columns else np.full(len(rows), "")
        bad = np.isin(ids, ["", "unknown", "nan", "None"])
        out[name] = np.where(bad, np.char.add("essay:", essay.astype(str)), ids)
    return pd.DataFrame(out, index=rows.index)


def _model_levels(lin: pd.DataFrame) -> list[str]:
    """The lineage levels that get a random intercept, coarsest first: the top cluster (the one
    ``lineage_ids`` picks), then each finer level that splits the one above it. A level whose
    units each hold one row is left out (it is the residual)."""
    top_col, _ = lineage_ids(lin["essay"].to_numpy(), lin["draft"].to_numpy(), lin["combo"].to_numpy())
    chain = ["combo", "draft", "essay"]
    levels = [LEVEL_NAMES[top_col]]
    for lv in chain[chain.index(levels[0]) + 1:]:
        if lin[lv].nunique() > lin[levels[-1]].nunique():
            levels.append(lv)
    while levels and lin[levels[-1]].nunique() == len(lin):
        levels.pop()
    return levels


def _gls(y, x, groups: list[np.ndarray], codes: list[np.ndarray], variances: list[float], scale: float):
    """GLS at the REML variances, and what Satterthwaite's df needs.

    V is block diagonal over ``groups`` (row indices of each top cluster): scale·I + Σ_j
    variances[j]·Z_j Z_j' with Z_j the indicators of ``codes[j]``. Returns β, C = (X'V⁻¹X)⁻¹, and
    per variance parameter θ_i (the components, then the residual) M_i = X'V⁻¹V_iV⁻¹X, so that
    ∂C/∂θ_i = C M_i C, with the REML expected information I_ij = ½ tr(P V_i P V_j) (P the REML
    projection), from which ``satterthwaite_df`` makes the df of any c'β."""
    p = x.shape[1]
    r = len(codes) + 1
    xwx, xwy = np.zeros((p, p)), np.zeros(p)
    m = np.zeros((r, p, p))
    n_ij = np.zeros((r, r, p, p))
    t1 = np.zeros((r, r))
    for idx in groups:
        xg, yg = x[idx], y[idx]
        zs = [np.eye(len(u))[inv] for u, inv in (np.unique(c[idx], return_inverse=True) for c in codes)]
        zs.append(np.eye(len(idx)))
        v = scale * np.eye(len(idx))
        for z, var in zip(zs, variances):
            v += var * (z @ z.T)
        w = np.linalg.inv(v)
        q = w @ xg
        xwx += xg.T @ q
        xwy += q.T @ yg
        b = [w @ z for z in zs]  # V⁻¹Z_i
        zq = [z.T @ q for z in zs]  # Z_i'V⁻¹X
        for i in range(r):
            m[i] += zq[i].T @ zq[i]
            for j in range(i, r):
                zwz = zs[i].T @ b[j]  # Z_i'V⁻¹Z_j
                t1[i, j] += float((zwz ** 2).sum())
                n_ij[i, j] += zq[i].T @ zwz @ zq[j]
    cov = np.linalg.inv(xwx)
    info = np.zeros((r, r))
    for i in range(r):
        for j in range(i, r):
            info[i, j] = info[j, i] = 0.5 * (t1[i, j] - 2 * np.trace(cov @ n_ij[i, j])
                                             + np.trace(cov @ m[i] @ cov @ m[j]))
    return cov @ xwy, cov, m, info


def satterthwaite_df(c: np.ndarray, cov: np.ndarray, m: np.ndarray, info: np.ndarray, free=None) -> float:
    """Satterthwaite's df of c'β: 2·var² / (g' I⁻¹ g), g_i = c'C M_i C c the derivative of var(c'β)
    by the i-th variance parameter, I the REML (expected) information; ``free`` (a boolean mask)
    keeps the parameters not estimated at 0: a component at the boundary is fixed there, as the
    model without it would be fitted."""
    var = float(c @ cov @ c)
    cc = cov @ c
    keep = np.ones(len(m), dtype=bool) if free is None else np.asarray(free, dtype=bool)
    g = np.array([float(cc @ mi @ cc) for mi in m])[keep]
    denom = float(g @ np.linalg.solve(info[np.ix_(keep, keep)], g))
    return 2 * var ** 2 / denom if denom > 0 else float("inf")


def mixed_emm(rows: pd.DataFrame, value: str, factor: str, adjust: list[str]) -> dict:
    """Estimated marginal means of ``factor``'s levels and their differences from the first
    level, from a REML mixed model of ``value`` ~ factor + ``adjust`` (fixed, the evaluation
    factors other than ``factor`` that vary) with random intercepts along the lineage of
    ``rows`` (``_model_levels``).

    EMM of a level: its fixed effect with every adjust factor at its frequency-weighted average
    (the table's own mix of evaluators and rubrics). Intervals are t with Satterthwaite's df
    (``satterthwaite_df``; a lower component estimated at 0 is fixed there). Raises
    MixedUnavailable (the reason in words) when rows exceed MIXED_MAX_ROWS, there is nothing
    random to model, the factor is aliased with an adjust factor, the fit fails or does not
    converge, the top cluster's variance is not identified or is estimated at 0 (there its
    intervals are conservative and the t over cluster means is exact), or a df is below 1.

    Returns {"levels": [...], "mean": {level: row}, "diff": {level: row}}, each row
    {estimate, se, df, ci_low, ci_high, p_value, ci_method}; ``diff`` holds every level but the first.
    """
    from scipy.stats import t as tdist
    from statsmodels.regression.mixed_linear_model import MixedLM

    df = rows[rows[value].notna()]
    if len(df) > MIXED_MAX_ROWS:
        raise MixedUnavailable(f"{len(df):,} evaluations, above the {MIXED_MAX_ROWS:,} a fit is kept to")
    lin = _clean_lineage(df)
    levels_f = sorted(df[factor].astype(str).unique())
    if len(levels_f) < 2:
        raise MixedUnavailable("one level only")
    adjust = [a for a in adjust if a != factor and a in df.columns and df[a].nunique() >= 2]
    model_levels = _model_levels(lin)
    if not model_levels:
        raise MixedUnavailable("one evaluation per essay: no lineage variance to model")
    y = df[value].to_numpy(dtype=float)
    # the fixed-effect design by hand (treatment coding, first level sorted as reference), so the
    # EMM weights and the GLS below use the same columns as the fit
    cols, names = [np.ones(len(df))], ["Intercept"]
    f_codes = df[factor].astype(str).to_numpy()
    for lv in levels_f[1:]:
        cols.append((f_codes == lv).astype(float))
        names.append(f"f:{lv}")
    weights = [1.0] + [0.0] * (len(levels_f) - 1)
    for a in adjust:
        a_codes = df[a].astype(str).to_numpy()
        a_levels = sorted(set(a_codes))
        for lv in a_levels[1:]:
            col = (a_codes == lv).astype(float)
            cols.append(col)
            names.append(f"{a}:{lv}")
            weights.append(float(col.mean()))
    x = np.column_stack(cols)
    if np.linalg.matrix_rank(x) < x.shape[1]:
        raise MixedUnavailable(f"{factor} is aliased with {', '.join(adjust)} in these rows")
    group = lin[model_levels[0]].to_numpy()
    # a factor that varies within the top clusters is estimated within them; with few such
    # clusters Satterthwaite's df overstate what the within-cluster spread supports (coverage
    # 92.7 % with 3 combos, 93.0 % with 4, 94.3 % with 6), so below MIN_WITHIN_CLUSTERS the
    # paired t over the clusters holding both levels is used
    per_top = pd.Series(f_codes).groupby(group).nunique()
    within_top = bool((per_top > 1).any())
    if within_top and (per_top > 1).sum() < MIN_WITHIN_CLUSTERS:
        raise MixedUnavailable(f"{factor} varies within {(per_top > 1).sum()} {model_levels[0]}s only (the model's "
                               f"intervals are calibrated from {MIN_WITHIN_CLUSTERS})")
    frame = pd.DataFrame({"y": y, "g": group, **{f"l{i}": lin[lv].to_numpy() for i, lv in enumerate(model_levels)}})
    vc_cols = [f"l{i}" for i in range(1, len(model_levels))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = MixedLM(y, x, groups=group, exog_re=np.ones((len(df), 1)),
                            exog_vc=_exog_vc(frame, vc_cols) if vc_cols else None)
            # Powell first, as in variance_components: a top variance at 0 is common with few
            # clusters, and there the gradient methods stall (BFGS failed on most such fits)
            fit = model.fit(reml=True, method=["powell"])
            if not fit.converged:
                fit = model.fit(reml=True, method=["lbfgs"])
    except Exception as exc:  # a singular design raises LinAlgError, ValueError...: said, never hidden
        raise MixedUnavailable(f"the fit failed ({type(exc).__name__})") from None
    if not fit.converged:
        raise MixedUnavailable("the fit did not converge")
    scale = float(fit.scale)
    variances = [float(np.asarray(fit.cov_re)[0, 0])] + [float(v) for v in np.atleast_1d(fit.vcomp)]
    codes = [pd.factorize(lin[lv])[0] for lv in model_levels]
    if not (scale > 0 and all(math.isfinite(v) for v in variances)):
        raise MixedUnavailable("the fit has no residual variance")
    groups = list(pd.Series(np.arange(len(df))).groupby(codes[0]).indices.values())
    try:
        beta, cov, dcov, info = _gls(y, x, groups, codes, [max(v, 0.0) for v in variances], scale)
    except np.linalg.LinAlgError:
        raise MixedUnavailable("the fixed effects' covariance is singular") from None
    # a component the rows carry no information on (two top clusters and a factor between them: the
    # REML projection removes every cluster mean) makes any interval a guess
    scale_info = np.abs(np.diag(info)).max()
    if not (np.diag(info) > 1e-9 * scale_info).all():
        raise MixedUnavailable(f"the {model_levels[0]} variance is not identified: too few {model_levels[0]}s "
                               "beside the fixed effects")
    free = np.array([v > BOUNDARY * scale for v in variances] + [True])
    if not free[0] and not within_top:
        # REML truncates the top cluster's variance at 0 when its between-cluster spread is below
        # what the levels under it imply; for a factor between the clusters its intervals are then
        # conservative (98-99 % measured with 2 clusters a level), while the t over the cluster
        # means stays exact. A factor within them is estimated within either way: the fit is kept
        raise MixedUnavailable(f"the {model_levels[0]} variance is estimated at 0 (at that boundary the model's "
                               "intervals are conservative)")
    # no more df than a fixed-effects analysis of every row would have
    max_df = len(df) - x.shape[1]
    out = {"levels": levels_f, "mean": {}, "diff": {}}

    def row(c, label):
        est, var = float(c @ beta), float(c @ cov @ c)
        if not var > 1e-18:
            raise MixedUnavailable("an estimate has no variance")
        try:
            d = min(satterthwaite_df(c, cov, dcov, info, free), max_df)
        except np.linalg.LinAlgError:
            raise MixedUnavailable("the variance components' information is singular") from None
        if not (math.isfinite(d) and d >= 1):
            raise MixedUnavailable(f"too few {model_levels[0]}s for the fixed effects (df {d:.2f})")
        se = math.sqrt(var)
        half = t_quantile(d) * se
        return {"estimate": est, "se": se, "df": d, "ci_low": est - half, "ci_high": est + half,
                "p_value": float(2 * tdist.sf(abs(est / se), d)), "ci_method": f"{label} (df {d:.1f})"}

    w = np.array(weights)
    for i, lv in enumerate(levels_f):
        c = w.copy()
        if i:
            c[i] = 1.0
        out["mean"][lv] = row(c, MIXED_METHOD_MEAN)
        if i:
            c = np.zeros(len(w))
            c[i] = 1.0
            out["diff"][lv] = row(c, MIXED_METHOD_DIFF)
    return out


def _exog_vc(frame: pd.DataFrame, cols: list[str]):
    """statsmodels' variance-component design: per column of ``frame`` in ``cols`` (a lineage
    level), one indicator matrix of its units per group ``frame["g"]``."""
    from statsmodels.regression.mixed_linear_model import VCSpec

    names, colnames, mats = [], [], []
    groups = sorted(set(frame["g"]))  # statsmodels orders its groups sorted
    idx = frame.groupby("g", sort=False).indices
    for col in cols:
        names.append(col)
        cn, ms = [], []
        for g in groups:
            sub = frame[col].to_numpy()[idx[g]]
            lv, inv = np.unique(sub, return_inverse=True)
            cn.append([str(v) for v in lv])
            ms.append(np.eye(len(lv))[inv])
        colnames.append(cn)
        mats.append(ms)
    return VCSpec(names, colnames, mats)
