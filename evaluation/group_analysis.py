"""Patients versus controls: per-measure differences with effect sizes, intervals and tests.

Input is one row per subject with a ``group`` column and one column per measure (e.g. brainstem GM
volume in mm³ from ``bssl predict``), plus optional covariates (``age``, ``sex``). For each measure:

* ``diff_pct``: 100 · (mean patients / mean controls − 1), with a bootstrap CI that resamples each group
  on its own (percentile method);
* ``cohens_d``: patients − controls over the pooled SD, with a noncentral-t CI
  (:func:`evaluation.statistics.cohens_d`);
* ``p``: Welch's two-sample t-test (unequal variances); ``p_mannwhitney``: the rank-based Mann–Whitney U
  test as a robustness check; ``p_holm``: Holm-adjusted ``p`` across the measures of the table;
* with ``covariates``: ordinary least squares ``measure ~ 1 + patient + covariates`` (categorical
  covariates dummy-coded, rows with a missing covariate dropped); ``diff_pct_adjusted`` is
  100 · β_patient / mean of controls, with the t-interval of β scaled the same way (the control mean is
  treated as fixed), and ``p_adjusted`` is the t-test of β;
* one pre-specified **primary** analysis (``primary="adjusted"`` when there are covariates, else ``raw``):
  ``p_primary`` is its p, ``p_holm`` the Holm correction across the table's measures of *that* analysis; the
  other analysis is secondary (``p_holm_secondary``), shown, not tested for the answer.

Whether a measure is right subject by subject is :mod:`evaluation.agreement`'s question, not this module's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from evaluation.statistics import cohens_d, holm
from ssl_pretrain.errors import DataError

# Participant metadata, never compared as a measure unless named in ``measures``.
PARTICIPANT_COLUMNS = ("subject", "participant_id", "session", "age", "sex", "handedness", "site")


def _diff_pct_ci(xp: np.ndarray, xc: np.ndarray, n_boot: int, level: float, seed: int) -> list[float]:
    if len(xp) < 2 or len(xc) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    mp = xp[rng.integers(0, len(xp), (n_boot, len(xp)))].mean(1)
    mc = xc[rng.integers(0, len(xc), (n_boot, len(xc)))].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = 100.0 * (mp / mc - 1.0)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.nanquantile(pct, [alpha, 1.0 - alpha])
    return [float(lo), float(hi)]


def _design(frame: pd.DataFrame, patient_col: np.ndarray, covariates: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    cols = [np.ones(len(frame)), patient_col.astype(float)]
    names = ["intercept", "patient"]
    for cov in covariates:
        values = frame[cov]
        if pd.api.types.is_numeric_dtype(values):
            cols.append(values.to_numpy(float))
            names.append(cov)
        else:
            levels = sorted(values.astype(str).unique())
            for level in levels[1:]:
                cols.append((values.astype(str) == level).to_numpy(float))
                names.append(f"{cov}={level}")
    return np.column_stack(cols), names


def ols_effect(y: np.ndarray, X: np.ndarray, column: int = 1, level: float = 0.95) -> tuple[float, float, float, float]:
    """Least-squares coefficient of one design column with its t-interval and two-sided p.

    Args:
        y: ``(n,)`` response; X: ``(n, p)`` design matrix (with an intercept column).
        column: the coefficient of interest.

    Returns:
        ``(beta, lo, hi, p)``; NaN when the design is rank-deficient or leaves no residual degrees of freedom.
    """
    n, k = X.shape
    beta, _, rank, _ = np.linalg.lstsq(X, y, rcond=None)
    df = n - k
    if rank < k or df <= 0:
        return float("nan"), float("nan"), float("nan"), float("nan")
    resid = y - X @ beta
    sigma2 = resid @ resid / df
    se = float(np.sqrt(sigma2 * np.linalg.inv(X.T @ X)[column, column]))
    b = float(beta[column])
    if se == 0:
        return b, b, b, 0.0 if b != 0 else 1.0
    t_crit = float(stats.t.ppf(0.5 + level / 2.0, df))
    p = float(2.0 * stats.t.sf(abs(b / se), df))
    return b, b - t_crit * se, b + t_crit * se, p


def compare_groups(
    table: pd.DataFrame,
    measures: Sequence[str] | None = None,
    covariates: Sequence[str] = (),
    group_col: str = "group",
    control: str = "HC",
    patient: str | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    source: str | Path = "group table",
    primary: str = "adjusted",
) -> list[dict[str, Any]]:
    """Compare patients with controls on every measure column of ``table``.

    Args:
        table: one row per subject: ``subject``, ``group_col`` and the measure columns.
        measures: columns to compare (default: every numeric column that is neither a covariate nor
            participant metadata, :data:`PARTICIPANT_COLUMNS`).
        covariates: columns to adjust for by OLS (numeric, or categorical such as ``sex``).
        group_col: the column holding each subject's group.
        control: the control group's label.
        patient: the patient group's label (default: the only other group in the table).
        n_boot: bootstrap resamples for the ``diff_pct`` CI.
        level: CI coverage.
        seed: bootstrap seed.
        source: the table's file, named in errors.
        primary: ``adjusted`` or ``raw``: the analysis Holm-corrected as primary (``raw`` without covariates).

    Returns:
        One dict per measure (see module docstring for the keys).

    Raises:
        DataError: a missing column, a missing group, an ambiguous patient group, a non-numeric measure.
    """
    missing = [c for c in (group_col, *covariates) if c not in table.columns]
    if missing:
        raise DataError(source, f"missing column(s) {missing}; columns are {list(table.columns)}")
    groups = table[group_col].astype(str)
    present = list(dict.fromkeys(groups))
    if control not in present:
        raise DataError(source, f"no subject of the control group {control!r}; groups present: {present}")
    if patient is None:
        others = [g for g in present if g != control]
        if len(others) != 1:
            raise DataError(source, f"cannot tell the patient group among {others}; name it explicitly")
        patient = others[0]
    if patient not in present:
        raise DataError(source, f"no subject of the patient group {patient!r}; groups present: {present}")
    if measures is None:
        skip = {group_col, *PARTICIPANT_COLUMNS, *covariates}
        measures = [c for c in table.columns if c not in skip and pd.api.types.is_numeric_dtype(table[c])]
    bad = [m for m in measures if m not in table.columns or not pd.api.types.is_numeric_dtype(table[m])]
    if bad:
        raise DataError(source, f"measure column(s) {bad} are missing or not numeric")

    frame = table[groups.isin([control, patient])].copy()
    is_patient = (frame[group_col].astype(str) == patient).to_numpy()
    out = []
    for i, measure in enumerate(measures):
        y = frame[measure].to_numpy(float)
        xc, xp = y[~is_patient], y[is_patient]
        xc, xp = xc[np.isfinite(xc)], xp[np.isfinite(xp)]
        mc, mp = float(np.mean(xc)) if xc.size else float("nan"), float(np.mean(xp)) if xp.size else float("nan")
        d, dlo, dhi = cohens_d(xp, xc, level=level)
        enough = xc.size >= 2 and xp.size >= 2
        row: dict[str, Any] = {
            "measure": measure,
            "control": control,
            "patient": patient,
            "n_control": int(xc.size),
            "n_patient": int(xp.size),
            "mean_control": mc,
            "mean_patient": mp,
            "sd_control": float(np.std(xc, ddof=1)) if xc.size > 1 else float("nan"),
            "sd_patient": float(np.std(xp, ddof=1)) if xp.size > 1 else float("nan"),
            "diff_pct": 100.0 * (mp / mc - 1.0) if mc else float("nan"),
            "ci95": _diff_pct_ci(xp, xc, n_boot, level, seed + i),
            "cohens_d": d,
            "cohens_d_ci95": [dlo, dhi],
            "p": float(stats.ttest_ind(xp, xc, equal_var=False).pvalue) if enough else float("nan"),
            "p_mannwhitney": float(stats.mannwhitneyu(xp, xc).pvalue) if enough else float("nan"),
        }
        if covariates:
            ok = np.isfinite(y) & frame[list(covariates)].notna().all(axis=1).to_numpy()
            X, _ = _design(frame[ok], is_patient[ok], covariates)
            b, lo, hi, p = ols_effect(y[ok], X, column=1, level=level)
            scale = 100.0 / mc if mc else float("nan")
            row.update(
                covariates=list(covariates),
                n_adjusted=int(ok.sum()),
                diff_pct_adjusted=b * scale,
                ci95_adjusted=[lo * scale, hi * scale],
                p_adjusted=p,
            )
        out.append(row)
    if primary not in ("adjusted", "raw"):
        raise ValueError(f"primary must be adjusted or raw, got {primary!r}")
    chosen = primary if covariates else "raw"
    key, other = ("p_adjusted", "p") if chosen == "adjusted" else ("p", "p_adjusted")
    for row, adjusted in zip(out, holm([r.get(key, float("nan")) for r in out]), strict=True):
        row.update(primary=chosen, p_primary=row.get(key), p_holm=float(adjusted))
    if covariates:
        for row, adjusted in zip(out, holm([r.get(other, float("nan")) for r in out]), strict=True):
            row["p_holm_secondary"] = float(adjusted)
    return out
