"""Does a measured volume agree with the truth, subject by subject? Measures that can fail (DESIGN §10 rule 6).

A group difference that matches the true one can come from a measure that is wrong in every subject (a
segmenter calling a fixed share of the brainstem GM reproduces the atrophy of the whole outline). So a model's
volumes are checked against the true volumes of the *same* subjects:

* Bland–Altman per group (Bland & Altman, Lancet 1986): the per-subject difference as a percentage of the
  true value, its mean (``bias_pct``) and 95 % limits of agreement (``loa_pct`` = bias ± 1.96 SD);
* Lin's concordance correlation coefficient (Lin, Biometrics 1989) over all subjects;
* the recovery of the effect: (measured patients-vs-controls difference %) − (true difference %) on the same
  subjects, with a joint bootstrap CI (each resample draws subjects within each group and takes both the
  measured and the true difference from them), so "the truth lies in the measured CI" is replaced by a CI of
  the error itself;
* the trivial floor: the same recovery for a predictor that knows only the outline (a constant tissue
  fraction — the cohort's mean measured fraction — times each subject's measured region volume). A tissue
  measure that does no better than it has not separated GM from WM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _pct(measured: np.ndarray, true: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (measured - true) / true


def bland_altman(measured: Sequence[float], true: Sequence[float]) -> dict[str, Any]:
    """Bias and 95 % limits of agreement of ``measured`` vs ``true``, in % of the true value (NaN pairs dropped)."""
    d = _pct(np.asarray(measured, float), np.asarray(true, float))
    d = d[np.isfinite(d)]
    if d.size < 2:
        return {"n": int(d.size), "bias_pct": float(d.mean()) if d.size else float("nan"), "loa_pct": [None, None]}
    bias, sd = float(d.mean()), float(d.std(ddof=1))
    return {"n": int(d.size), "bias_pct": bias, "loa_pct": [bias - 1.96 * sd, bias + 1.96 * sd]}


def lin_ccc(measured: Sequence[float], true: Sequence[float]) -> float:
    """Lin's concordance correlation coefficient ``2 s_xy / (s_x² + s_y² + (x̄ − ȳ)²)`` (population moments)."""
    x, y = np.asarray(measured, float), np.asarray(true, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2:
        return float("nan")
    sxy = float(np.mean((x - x.mean()) * (y - y.mean())))
    denominator = float(x.var() + y.var() + (x.mean() - y.mean()) ** 2)
    return 2.0 * sxy / denominator if denominator > 0 else float("nan")


def _diff_pct(values: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """Patients-vs-controls difference (%) along the last axis, for ``(..., n)`` values and ``(n,)`` groups."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (values[..., patient].mean(-1) / values[..., ~patient].mean(-1) - 1.0)


def recovery(
    measured: Sequence[float],
    true: Sequence[float],
    patient: Sequence[bool],
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Measured minus true group difference (%) on the same subjects, with a joint-bootstrap CI.

    Args:
        measured, true: one value per subject (subjects with either missing are dropped).
        patient: one bool per subject, True = patient.

    Returns:
        ``{"measured_diff_pct", "true_diff_pct", "error_pct", "ci95", "n"}``.
    """
    x, y, g = np.asarray(measured, float), np.asarray(true, float), np.asarray(patient, bool)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[ok], y[ok], g[ok]
    out: dict[str, Any] = {"n": int(ok.sum())}
    if g.sum() < 2 or (~g).sum() < 2:
        return {**out, "measured_diff_pct": float("nan"), "true_diff_pct": float("nan"), "error_pct": float("nan"),
                "ci95": [None, None]}  # fmt: skip
    dm, dt = float(_diff_pct(x, g)), float(_diff_pct(y, g))
    rng = np.random.default_rng(seed)
    idx_p, idx_c = np.flatnonzero(g), np.flatnonzero(~g)
    draws = np.concatenate(
        [
            idx_p[rng.integers(0, len(idx_p), (n_boot, len(idx_p)))],
            idx_c[rng.integers(0, len(idx_c), (n_boot, len(idx_c)))],
        ],
        axis=1,
    )
    flags = np.r_[np.ones(len(idx_p), bool), np.zeros(len(idx_c), bool)]
    errors = _diff_pct(x[draws], flags) - _diff_pct(y[draws], flags)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(errors, [alpha, 1.0 - alpha])
    return {**out, "measured_diff_pct": dm, "true_diff_pct": dt, "error_pct": dm - dt, "ci95": [float(lo), float(hi)]}


def constant_fraction(tissue: Sequence[float], outline: Sequence[float]) -> np.ndarray:
    """The trivial predictor: each subject's outline volume times the cohort's mean measured tissue fraction."""
    t, o = np.asarray(tissue, float), np.asarray(outline, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.nanmean(t / o)
    return fraction * o
