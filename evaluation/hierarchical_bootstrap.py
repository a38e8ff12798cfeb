"""A bootstrap over everything a transfer study drew: test subjects, training seeds, pretraining seeds.

One arm's results at one k form a grid ``values[p, s, n]``: pretraining seed ``p`` (one level when the arm
was not pretrained, or a study ran one pretraining), training seed ``s`` (which also drew the labelled
subjects, ``labels.seed``) and test subject ``n``; NaN marks a missing cell. The three factors are
*crossed*, not nested: every seed is tested on every subject. A resample therefore draws, independently
and with replacement, ``P`` pretraining seeds, ``S`` training seeds and ``N`` subjects, and takes the mean
over the resampled grid (Davison & Hinkley 1997, §3.8 on multi-level data; Saravanan et al.,
"Application of the hierarchical bootstrap to multi-level data in neuroscience", NBDT 2020). Seeds and
subjects then both enter the spread, instead of averaging seeds away first and resampling subjects only.

Two arms are compared *paired*: the same subjects and the same training seeds (same labelled subjects)
are drawn for both; pretraining seeds are drawn once and shared when both arms have the same number of
them (arms built on the same pretraining runs), else independently per arm; training seeds likewise are
drawn independently when the arms have different seed axes (a zero-shot arm's one run against k = 1).
Intervals are percentile intervals of the resampled statistic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Indices = tuple[np.ndarray, np.ndarray, np.ndarray]


def _check(values: np.ndarray, name: str = "values") -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 3:
        raise ValueError(f"{name} must be a (pretraining seeds, seeds, subjects) grid, got shape {v.shape}")
    return v


def draw(rng: np.random.Generator, n_boot: int, shape: tuple[int, int, int]) -> Indices:
    """Resampled indices ``(B, P)``, ``(B, S)``, ``(B, N)`` of each level, drawn with replacement."""
    return tuple(rng.integers(0, n, size=(n_boot, n)) for n in shape)  # type: ignore[return-value]


def grid_means(values: np.ndarray, idx: Indices) -> np.ndarray:
    """``(B,)`` means over each resampled grid (NaN cells skipped; NaN where a whole grid is missing)."""
    p, s, n = idx
    cells = values[p[:, :, None, None], s[:, None, :, None], n[:, None, None, :]]  # (B, P, S, N)
    flat = cells.reshape(len(p), -1)
    counts = np.isfinite(flat).sum(1)
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, np.nansum(flat, 1) / np.maximum(counts, 1), np.nan)


def _interval(boot: np.ndarray, level: float) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size < 2 or np.all(boot == boot[0]):
        return (float(boot[0]), float(boot[0])) if boot.size else (float("nan"), float("nan"))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _grand_mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, lo, hi)`` of one arm's grid; the interval is NaN with fewer than two subjects."""
    v = _check(values)
    estimate = _grand_mean(v)
    if v.shape[2] < 2 or not np.isfinite(estimate):
        return estimate, float("nan"), float("nan")
    boot = grid_means(v, draw(np.random.default_rng(seed), n_boot, v.shape))
    return (estimate, *_interval(boot, level))


def _paired_draws(rng: np.random.Generator, n_boot: int, a: np.ndarray, b: np.ndarray) -> tuple[Indices, Indices]:
    """Shared subject draws; shared training-seed draws when both grids have the same seed axis (same seeds,
    same labelled subjects), else independent ones (e.g. a zero-shot arm's single run against several seeds)."""
    if a.shape[2] != b.shape[2]:
        raise ValueError(f"paired grids need the same subjects: {a.shape} vs {b.shape}")
    pa, sa, n = draw(rng, n_boot, a.shape)
    pb = pa if b.shape[0] == a.shape[0] else rng.integers(0, b.shape[0], size=(n_boot, b.shape[0]))
    sb = sa if b.shape[1] == a.shape[1] else rng.integers(0, b.shape[1], size=(n_boot, b.shape[1]))
    return (pa, sa, n), (pb, sb, n)


def paired_ci(
    a: np.ndarray,
    b: np.ndarray,
    combine: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.subtract,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """``combine(mean a, mean b)`` (the difference by default) and its paired interval.

    Args:
        a, b: ``(P_a, S_a, N)`` and ``(P_b, S_b, N)`` grids on the same subjects (in order); with ``S_a == S_b``
            the seeds are taken as the same (paired) seeds.
        combine: how the two means are combined, e.g. ``np.divide`` for a ratio.
    """
    a, b = _check(a, "a"), _check(b, "b")
    estimate = float(combine(np.asarray(_grand_mean(a)), np.asarray(_grand_mean(b))))
    if a.shape[2] < 2 or not np.isfinite(estimate):
        return estimate, float("nan"), float("nan")
    ia, ib = _paired_draws(np.random.default_rng(seed), n_boot, a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = combine(grid_means(a, ia), grid_means(b, ib))
    return (estimate, *_interval(boot, level))


def between_seed_sd(values: np.ndarray) -> float:
    """SD (ddof=1) over training seeds of each seed's mean over pretraining seeds and subjects (NaN for one seed)."""
    v = _check(values)
    with np.errstate(invalid="ignore"):
        per_seed = np.array([_grand_mean(v[:, s, :]) for s in range(v.shape[1])])
    per_seed = per_seed[np.isfinite(per_seed)]
    return float(per_seed.std(ddof=1)) if per_seed.size > 1 else float("nan")
