"""Label-efficiency curves and paired comparisons between initialisations (DESIGN §9).

Input: one row per (fine-tuning run, test subject, tissue class), as dicts with keys
``init`` (e.g. ``scratch``, ``ssl_mae``), ``k`` (labelled training subjects: an int, or ``"all"``),
``seed``, ``subject``, ``class`` (``"GM"``, ``"WM"``, …) and ``dice``.

How the numbers are made (the unit of replication is the *test subject*):

1. Seeds are averaged first, per (init, k, subject, class): seeds measure training noise, subjects are
   the independent units a CI should generalise over. NaN Dice (class absent) are skipped.
2. A subject's ``dice_mean`` is the mean over its classes.
3. ``dice_mean`` of (init, k) is the mean over test subjects, with a percentile bootstrap 95% CI over
   subjects (:func:`evaluation.statistics.bootstrap_ci`).
4. ``fraction_of_full`` = mean Dice at k / mean Dice at the full-label k of the same init (``"all"``, or
   the largest k when there is no ``"all"``), with a paired bootstrap CI over the subjects tested at both.
5. ``comparisons``: for each k and each pair of inits, the paired difference over subjects tested under
   both (a − b), its bootstrap CI, a Wilcoxon signed-rank p (:func:`evaluation.statistics.paired_wilcoxon`)
   and the Holm-adjusted p across *all* comparisons of the table (or, with ``holm_family="k"``, across the
   comparisons at the same k).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from evaluation.statistics import bootstrap_ci, bootstrap_diff_ci, holm, paired_wilcoxon

ROW_KEYS = ("init", "k", "seed", "subject", "class", "dice")
FULL = "all"


def normalise_k(k: Any) -> int | str:
    """``4``, ``"4"`` → 4; ``"all"`` → ``"all"``."""
    if isinstance(k, str):
        return int(k) if k.strip().isdigit() else k.strip()
    return int(k)


def k_order(k: int | str) -> tuple[int, float]:
    """Sort key: numeric k ascending, then ``"all"`` (and any other name) last."""
    return (0, float(k)) if isinstance(k, int) else (1, 0.0)


def _frame(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> pd.DataFrame:
    df = pd.DataFrame(list(rows))
    missing = [k for k in keys if k not in df.columns]
    if df.empty or missing:
        raise ValueError(f"rows need keys {list(keys)}; missing {missing or 'all rows'}")
    df = df.copy()
    df["dice"] = df["dice"].astype(float)
    df["class"] = df["class"].astype(str)
    df["subject"] = df["subject"].astype(str)
    return df


def subject_means(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per-subject Dice: seeds averaged per class, then classes averaged (``dice_mean``).

    Returns:
        A frame indexed by ``(*by, subject)`` with one column per class plus ``dice_mean``.
    """
    per_class = df.groupby([*by, "subject", "class"], sort=False)["dice"].mean().unstack("class")
    per_class["dice_mean"] = per_class.mean(axis=1, skipna=True)
    return per_class


def _ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, list[float]]:
    est, lo, hi = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return est, [lo, hi]


def _ratio_ci(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int) -> list[float]:
    """Paired bootstrap percentile CI of ``mean(num) / mean(den)`` over units."""
    if len(num) < 2:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(n_boot, len(num)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = num[idx].mean(1) / den[idx].mean(1)
    lo, hi = np.nanquantile(ratios, [0.025, 0.975])
    return [float(lo), float(hi)]


def learning_curves(rows: Iterable[Mapping[str, Any]], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """DESIGN §9 ``learning_curves`` entries, one per (init, k), sorted by init then k.

    Returns:
        Dicts with ``init``, ``k``, ``dice_mean``, ``ci95``, ``per_class`` (``{class: {"dice", "ci95"}}``),
        ``fraction_of_full``, ``fraction_ci95``, ``full_k``, ``n_seeds``, ``n_subjects``.
    """
    df = _frame(rows, ROW_KEYS)
    df["k"] = df["k"].map(normalise_k)
    per_subject = subject_means(df, ["init", "k"])
    classes = [c for c in per_subject.columns if c != "dice_mean"]
    n_seeds = df.groupby(["init", "k"], sort=False)["seed"].nunique()
    out = []
    for init in dict.fromkeys(df["init"]):
        ks = sorted(set(df.loc[df["init"] == init, "k"]), key=k_order)
        full_k = FULL if FULL in ks else max((k for k in ks if isinstance(k, int)), default=ks[-1])
        full = per_subject.loc[(init, full_k)]["dice_mean"].dropna()
        for k in ks:
            sub = per_subject.loc[(init, k)]
            mean, ci = _ci(sub["dice_mean"].to_numpy(float), n_boot, seed)
            per_class = {}
            for c in classes:
                est, cci = _ci(sub[c].to_numpy(float), n_boot, seed)
                if np.isfinite(est):
                    per_class[c] = {"dice": est, "ci95": cci}
            here = sub["dice_mean"].dropna()
            common = here.index.intersection(full.index)
            out.append(
                {
                    "init": init,
                    "k": k,
                    "dice_mean": mean,
                    "ci95": ci,
                    "per_class": per_class,
                    "fraction_of_full": float(here.mean() / full.mean()) if full.mean() > 0 else float("nan"),
                    "fraction_ci95": _ratio_ci(
                        here[common].to_numpy(float), full[common].to_numpy(float), n_boot, seed
                    ),
                    "full_k": full_k,
                    "n_seeds": int(n_seeds[(init, k)]),
                    "n_subjects": int(here.size),
                }
            )
    return out


def comparisons(
    rows: Iterable[Mapping[str, Any]], n_boot: int = 2000, seed: int = 0, holm_family: str = "all"
) -> list[dict[str, Any]]:
    """Paired comparisons between every pair of inits at every k, Holm-corrected.

    Args:
        rows: per-subject Dice rows (module docstring).
        n_boot, seed: bootstrap resamples and seed of the CIs.
        holm_family: ``"all"``: one Holm family over every comparison of the table (the conservative
            default); ``"k"``: one family per k (the pairs of inits compared at that k).

    Returns:
        Dicts with ``k``, ``a``, ``b``, ``delta`` (mean over subjects of a − b per-subject ``dice_mean``),
        ``ci95``, ``median_delta``, ``p`` (Wilcoxon), ``p_holm``, ``holm_family``, ``holm_m`` (tests in the
        family), ``n_subjects``; ordered by k, then pairs in the order inits first appear in ``rows``.
    """
    if holm_family not in ("all", "k"):
        raise ValueError(f"holm_family must be 'all' or 'k', got {holm_family!r}")
    df = _frame(rows, ROW_KEYS)
    df["k"] = df["k"].map(normalise_k)
    means = subject_means(df, ["init", "k"])["dice_mean"]
    inits = list(dict.fromkeys(df["init"]))
    out = []
    for k in sorted(set(df["k"]), key=k_order):
        present = [i for i in inits if (i, k) in means.index.droplevel("subject")]
        for a, b in combinations(present, 2):
            sa, sb = means.loc[(a, k)].dropna(), means.loc[(b, k)].dropna()
            common = sa.index.intersection(sb.index)
            va, vb = sa[common].to_numpy(float), sb[common].to_numpy(float)
            delta, lo, hi = bootstrap_diff_ci(va, vb, paired=True, n_boot=n_boot, seed=seed)
            median, p = paired_wilcoxon(va, vb)
            out.append(
                {
                    "k": k,
                    "a": a,
                    "b": b,
                    "delta": delta,
                    "ci95": [lo, hi],
                    "median_delta": median,
                    "p": p,
                    "n_subjects": len(common),
                }
            )
    families = (
        [out] if holm_family == "all" else [[r for r in out if r["k"] == k] for k in dict.fromkeys(r["k"] for r in out)]
    )
    for family in families:
        m = sum(1 for r in family if np.isfinite(r["p"]))
        for row, adjusted in zip(family, holm([r["p"] for r in family]), strict=True):
            row.update(p_holm=float(adjusted), holm_family=holm_family, holm_m=m)
    return out


REFERENCE_INIT = "scratch"  # what every other initialisation must beat


def paired_difference(comps: Sequence[Mapping[str, Any]], k: Any, a: str, b: str) -> dict[str, Any] | None:
    """The comparison of ``a`` with ``b`` at ``k`` oriented as ``a − b`` (``delta``, ``ci95``, ``p``, ``p_holm``)."""
    for c in comps:
        if c["k"] != k or {c["a"], c["b"]} != {a, b}:
            continue
        sign = 1.0 if c["a"] == a else -1.0
        ci = c.get("ci95") or [None, None]
        lo, hi = (None if v is None else sign * v for v in ci)
        bounds = None if lo is None or hi is None else [min(lo, hi), max(lo, hi)]
        delta = c.get("delta")
        return {
            "delta": None if delta is None else sign * delta,
            "ci95": bounds,
            "p": c.get("p"),
            "p_holm": c.get("p_holm"),
            "n_subjects": c.get("n_subjects"),
        }
    return None


def best_init_per_k(
    curves: Sequence[Mapping[str, Any]], comps: Sequence[Mapping[str, Any]], reference: str = REFERENCE_INIT
) -> list[dict[str, Any]]:
    """For each k, the init with the highest ``dice_mean``, its margin over the runner-up and over ``reference``.

    Returns:
        Dicts with ``k``, ``best``, ``dice_mean``, ``ci95``, ``fraction_of_full``, ``runner_up``, ``delta``
        (best − runner-up, mean over paired test subjects), ``delta_ci95``, ``p_holm`` (``None`` where there
        is a single init), and ``vs_reference`` (``{"init", "delta", "ci95", "p_holm"}`` of best − ``reference``;
        ``None`` when the best is the reference or the reference was not run at that k).
    """
    out = []
    for k in sorted({c["k"] for c in curves}, key=k_order):
        at_k = sorted((c for c in curves if c["k"] == k), key=lambda c: -np.nan_to_num(c["dice_mean"], nan=-np.inf))
        best = at_k[0]
        row: dict[str, Any] = {
            "k": k,
            "best": best["init"],
            "dice_mean": best["dice_mean"],
            "ci95": best.get("ci95"),
            "fraction_of_full": best.get("fraction_of_full"),
            "runner_up": None,
            "delta": None,
            "delta_ci95": None,
            "p_holm": None,
            "vs_reference": None,
        }
        if len(at_k) > 1:
            row["runner_up"] = at_k[1]["init"]
            pair = paired_difference(comps, k, best["init"], at_k[1]["init"])
            if pair is not None:
                row.update(delta=pair["delta"], delta_ci95=pair["ci95"], p_holm=pair["p_holm"])
        if best["init"] != reference and any(c["init"] == reference for c in at_k):
            pair = paired_difference(comps, k, best["init"], reference)
            if pair is not None:
                row["vs_reference"] = {"init": reference, **pair}
        out.append(row)
    return out


def segmentation_summary(
    rows: Iterable[Mapping[str, Any]], n_boot: int = 2000, seed: int = 0
) -> dict[str, dict[str, dict[str, Any]]]:
    """DESIGN §9 ``segmentation`` (or one ``baselines`` method): Dice per region and class with CIs.

    Args:
        rows: dicts with ``region``, ``subject``, ``class``, ``dice`` and optionally ``seed`` (seeds are
            averaged per subject first).

    Returns:
        ``{region: {class: {"dice", "ci95", "n_subjects"}}}``.
    """
    df = _frame(rows, ("region", "subject", "class", "dice"))
    per_subject = df.groupby(["region", "class", "subject"], sort=False)["dice"].mean()
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (region, cls), values in per_subject.groupby(level=["region", "class"], sort=False):
        v = values.dropna().to_numpy(float)
        est, ci = _ci(v, n_boot, seed)
        out.setdefault(str(region), {})[str(cls)] = {"dice": est, "ci95": ci, "n_subjects": int(v.size)}
    return out
