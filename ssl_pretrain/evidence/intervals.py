"""Confidence intervals over subjects for the evidence of :mod:`ssl_pretrain.evidence`."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

MIN_SUBJECTS = 3  # the bootstrap of 2 values is their range, not an interval worth reporting


def mean_ci(values: Sequence[float], n_resamples: int, confidence: float, seed: int) -> dict[str, Any]:
    """``{"mean", "ci95", "per_subject"...}`` core: the mean of per-subject ``values`` and its BCa interval.

    Returns:
        ``{"mean": float, "ci95": [lo, hi] | None}`` plus ``"ci_note"`` when no interval could be computed
        (fewer than ``MIN_SUBJECTS`` values, all equal, or a non-finite bootstrap).
    """
    x = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"mean": float(x.mean()) if len(x) else None, "ci95": None}
    if len(x) < MIN_SUBJECTS:
        out["ci_note"] = f"{len(x)} subject(s): no interval (a bootstrap needs at least {MIN_SUBJECTS})"
        return out
    if np.ptp(x) == 0:
        out["ci_note"] = "all subjects equal: no interval"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (x,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="BCa",
            random_state=np.random.default_rng(seed),
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        out["ci_note"] = "the BCa bootstrap was degenerate (too few distinct subjects)"
        return out
    out["ci95"] = [lo, hi]
    return out
