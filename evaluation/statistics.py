"""Confidence intervals, paired tests, multiple-comparison correction and effect sizes.

Conventions:

* Every interval is a two-sided ``level`` (default 95%) interval returned as ``(estimate, lo, hi)``;
  bootstrap intervals over one level of units come from ``scipy.stats.bootstrap`` (BCa by default).
* Resampling is seeded (``seed``), so the same inputs give the same interval.
* NaN values are dropped before anything is computed (a NaN Dice means "class absent", see
  :mod:`evaluation.metrics`); with fewer than two values left there is no interval and ``lo``/``hi`` are NaN.
"""

from __future__ import annotations

import warnings
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


def _scipy_interval(samples: tuple[np.ndarray, ...], stat: Stat, n_boot: int, level: float, seed: int,
                    method: str, paired: bool) -> tuple[float, float]:  # fmt: skip
    """``scipy.stats.bootstrap``'s two-sided interval (NaN when its resamples are degenerate)."""
    vectorized = _takes_axis(stat, samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            samples, stat if vectorized else (lambda *x: float(stat(*x))), n_resamples=n_boot,
            confidence_level=level, method=method, paired=paired, vectorized=vectorized,
            rng=np.random.default_rng(seed),
        )  # fmt: skip
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _takes_axis(stat: Stat, samples: tuple[np.ndarray, ...]) -> bool:
    try:
        out = np.asarray(stat(*(s[None, :] for s in samples), axis=-1))
    except TypeError:
        return False
    return out.shape == (1,)


METHODS = {"percentile": "percentile", "bca": "BCa"}


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    stat: Stat = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "bca",
) -> tuple[float, float, float]:
    """Bootstrap confidence interval of ``stat(values)`` over independent units (``scipy.stats.bootstrap``).

    Args:
        values: one number per independent unit (e.g. per test subject), shape ``(n,)``.
        stat: statistic; called as ``stat(samples, axis=-1)`` when it accepts ``axis``, else per sample.
        n_boot: bootstrap resamples.
        level: coverage of the two-sided interval.
        seed: resampling seed.
        method: ``"bca"`` (bias-corrected and accelerated, Efron 1987; the default: it corrects the
            percentile interval's bias and skewness) or ``"percentile"``. Neither reaches its nominal level
            with very few units: at n = 13 from a skewed population both cover a 95 % interval's mean about
            90 % of the time (``tests/evaluation/test_statistics.py`` measures it), because the bootstrap's
            plug-in variance is too small; read intervals over a dozen subjects as somewhat optimistic.

    Returns:
        ``(estimate, lo, hi)``; ``lo``/``hi`` are NaN with fewer than two finite values, and all three
        are NaN with none; every value equal gives ``(v, v, v)``.
    """
    _check_level(level)
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    v = _clean(values)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(_apply(stat, v[None, :])[0])
    if v.size < 2:
        return estimate, float("nan"), float("nan")
    if np.all(v == v[0]):
        return estimate, estimate, estimate
    lo, hi = _scipy_interval((v,), stat, n_boot, level, seed, METHODS[method], paired=False)
    return estimate, lo, hi


def bootstrap_diff_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    paired: bool = True,
    stat: Stat = np.mean,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "bca",
) -> tuple[float, float, float]:
    """Bootstrap interval of a difference between two samples (``scipy.stats.bootstrap``, BCa by default).

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
        return bootstrap_ci(x - y, stat=stat, n_boot=n_boot, level=level, seed=seed, method=method)
    _check_level(level)
    x, y = _clean(a), _clean(b)
    if x.size == 0 or y.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(_apply(stat, x[None])[0] - _apply(stat, y[None])[0])
    if x.size < 2 or y.size < 2:
        return estimate, float("nan"), float("nan")

    def difference(p: np.ndarray, q: np.ndarray, axis: int = -1) -> np.ndarray:
        return _apply(stat, np.moveaxis(p, axis, -1)) - _apply(stat, np.moveaxis(q, axis, -1))

    lo, hi = _scipy_interval((x, y), difference, n_boot, level, seed, METHODS[method], paired=False)
    return estimate, lo, hi


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


def subject_bootstrap_balanced_accuracy(
    pred: np.ndarray, truth: np.ndarray, subjects: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile CI of a probe's balanced accuracy over the *subjects* it was scored on.

    Voxels of one subject are not independent, so the unit resampled is the subject: each resample draws
    subjects with replacement and pools their confusion counts (NaN with fewer than two subjects).
    """
    subjects = np.asarray(subjects).astype(str)
    names, where = np.unique(subjects, return_inverse=True)
    if len(names) < 2:
        return [float("nan"), float("nan")]
    classes = np.unique(truth)
    hits = np.zeros((len(names), len(classes)))
    totals = np.zeros((len(names), len(classes)))
    for j, c in enumerate(classes):
        is_c = truth == c
        np.add.at(totals[:, j], where[is_c], 1.0)
        np.add.at(hits[:, j], where[is_c & (pred == c)], 1.0)
    idx = np.random.default_rng(seed).integers(0, len(names), size=(n_boot, len(names)))
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = hits[idx].sum(1) / totals[idx].sum(1)  # (B, classes)
    scores = np.nanmean(recall, axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(scores, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]
