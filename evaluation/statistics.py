"""Confidence intervals, paired tests, multiple-comparison correction and effect sizes.

Conventions:

* Every interval is a two-sided ``level`` (default 95%) interval returned as ``(estimate, lo, hi)``.
* Resampling is seeded (``seed``), so the same inputs give the same interval.
* NaN values are dropped before anything is computed (a NaN Dice means "class absent", see
  :mod:`evaluation.metrics`); with fewer than two values left there is no interval and ``lo``/``hi`` are NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import optimize, stats

Stat = Callable[..., Any]


def _clean(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=float).reshape(-1)
    return v[np.isfinite(v)]


def _apply(stat: Stat, samples: np.ndarray) -> np.ndarray:
    """``stat`` along the last axis of ``samples`` (vectorised when ``stat`` takes ``axis``)."""
    try:
        out = np.asarray(stat(samples, axis=-1), dtype=float)
        if out.shape == samples.shape[:-1]:
            return out
    except TypeError:
        pass
    return np.apply_along_axis(lambda row: float(stat(row)), -1, samples)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Stat = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
) -> tuple[float, float, float]:
    """Bootstrap confidence interval of ``stat(values)``.

    Args:
        values: one number per independent unit (e.g. per test subject), shape ``(n,)``.
        stat: statistic; called as ``stat(samples, axis=-1)`` when it accepts ``axis``, else per sample.
        n_boot: bootstrap resamples.
        level: coverage of the two-sided interval.
        seed: resampling seed.
        method: ``"percentile"`` (Efron's percentile interval) or ``"bca"`` (bias-corrected and
            accelerated, Efron 1987; acceleration from the jackknife).

    Returns:
        ``(estimate, lo, hi)``; ``lo``/``hi`` are NaN with fewer than two finite values, and all three
        are NaN with none.
    """
    _check_level(level)
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")
    v = _clean(values)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(_apply(stat, v[None, :])[0])
    if v.size < 2:
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boot = _apply(stat, v[rng.integers(0, v.size, size=(n_boot, v.size))])
    alpha = (1.0 - level) / 2.0
    quantiles = np.array([alpha, 1.0 - alpha])
    if method == "bca":
        quantiles = _bca_quantiles(v, stat, boot, estimate, quantiles)
    lo, hi = np.quantile(boot, quantiles)
    return estimate, float(lo), float(hi)


def _bca_quantiles(v: np.ndarray, stat: Stat, boot: np.ndarray, estimate: float, q: np.ndarray) -> np.ndarray:
    """Adjusted quantiles of the BCa interval; falls back to ``q`` when the data are degenerate."""
    below = np.mean(boot < estimate) + 0.5 * np.mean(boot == estimate)
    if not 0.0 < below < 1.0:
        return q
    z0 = stats.norm.ppf(below)
    jack = _apply(stat, np.stack([np.delete(v, i) for i in range(v.size)]))
    d = jack.mean() - jack
    denom = 6.0 * np.sum(d**2) ** 1.5
    a = np.sum(d**3) / denom if denom > 0 else 0.0
    z = stats.norm.ppf(q)
    return stats.norm.cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z)))


def bootstrap_diff_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    paired: bool = True,
    stat: Stat = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Bootstrap interval of a difference between two samples (percentile method).

    Paired (``a[i]`` and ``b[i]`` measured on the same unit, e.g. the same test subject under two
    initialisations): resamples units and computes ``stat(a - b)``; pairs with a NaN on either side are
    dropped. Unpaired: resamples each sample on its own and computes ``stat(a*) - stat(b*)``.

    Returns:
        ``(estimate, lo, hi)``, with the conventions of :func:`bootstrap_ci`.
    """
    if paired:
        x, y = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
        if x.shape != y.shape:
            raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
        return bootstrap_ci(x - y, stat=stat, n_boot=n_boot, level=level, seed=seed)
    _check_level(level)
    x, y = _clean(a), _clean(b)
    if x.size == 0 or y.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(_apply(stat, x[None])[0] - _apply(stat, y[None])[0])
    if x.size < 2 or y.size < 2:
        return estimate, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    bx = _apply(stat, x[rng.integers(0, x.size, size=(n_boot, x.size))])
    by = _apply(stat, y[rng.integers(0, y.size, size=(n_boot, y.size))])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(bx - by, [alpha, 1.0 - alpha])
    return estimate, float(lo), float(hi)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values (Holm 1979), in the input order.

    The i-th smallest of m p-values is multiplied by ``m - i + 1``, made non-decreasing along the sorted
    order and capped at 1. NaN p-values (tests that could not be run) stay NaN and do not count in m.
    """
    p = np.asarray(pvalues, dtype=float).reshape(-1)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def paired_wilcoxon(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Two-sided Wilcoxon signed-rank test of paired samples (``scipy.stats.wilcoxon``).

    Pairs with a NaN on either side are dropped. Zero differences are dropped (Wilcoxon's convention);
    when every difference is zero the samples agree and ``p = 1``. The exact null distribution is used
    for small samples without ties (scipy's ``method="auto"``), so with n < 6 non-zero pairs the
    smallest attainable two-sided p is ``2 / 2**n`` (0.0625 at n = 5): such p-values are reported as
    they are, and cannot reach 0.05.

    Returns:
        ``(median of a - b, p)``; ``(nan, nan)`` when no pair is left.
    """
    x, y = np.asarray(a, dtype=float).reshape(-1), np.asarray(b, dtype=float).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    d = x - y
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan")
    delta = float(np.median(d))
    if not np.any(d != 0):
        return delta, 1.0
    result = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return delta, float(result.pvalue)


def cohens_d(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
    """Cohen's d of two independent samples with an exact noncentral-t confidence interval.

    ``d = (mean(x) - mean(y)) / s_pooled`` with ``s_pooled² = ((n1-1)s1² + (n2-1)s2²) / (n1 + n2 - 2)``.
    The interval inverts the noncentral t distribution of ``t = d·sqrt(n1·n2/(n1+n2))`` with
    ``n1 + n2 - 2`` degrees of freedom (Hedges & Olkin 1985; Steiger & Fouladi 1997).

    Returns:
        ``(d, lo, hi)``; NaN where fewer than two values per group or zero pooled variance.
    """
    _check_level(level)
    a, b = _clean(x), _clean(y)
    n1, n2 = a.size, b.size
    if n1 < 2 or n2 < 2:
        return float("nan"), float("nan"), float("nan")
    df = n1 + n2 - 2
    pooled = np.sqrt(((n1 - 1) * a.var(ddof=1) + (n2 - 1) * b.var(ddof=1)) / df)
    if pooled == 0:
        return float("nan"), float("nan"), float("nan")
    d = float((a.mean() - b.mean()) / pooled)
    scale = np.sqrt(n1 * n2 / (n1 + n2))
    t = d * scale
    alpha = (1.0 - level) / 2.0
    lo = _nct_ncp(t, df, 1.0 - alpha) / scale
    hi = _nct_ncp(t, df, alpha) / scale
    return d, float(lo), float(hi)


def _nct_ncp(t: float, df: int, prob: float) -> float:
    """The noncentrality ``ncp`` with ``P(T <= t; df, ncp) = prob`` (the cdf decreases in ncp).

    scipy's ``nct.cdf`` returns NaN far in its tails; there the cdf is 0 (ncp above t) or 1 (below t).
    """

    def f(ncp: float) -> float:
        cdf = float(stats.nct.cdf(t, df, ncp))
        if not np.isfinite(cdf):
            cdf = 0.0 if ncp > t else 1.0
        return cdf - prob

    step = 1.0
    lo, hi = t - step, t + step
    while f(lo) < 0:
        step *= 2
        lo = t - step
    step = 1.0
    while f(hi) > 0:
        step *= 2
        hi = t + step
    return float(optimize.brentq(f, lo, hi, xtol=1e-10))
