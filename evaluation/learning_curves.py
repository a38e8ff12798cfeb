"""Label-efficiency curves and paired comparisons between initialisations (DESIGN §9, §10 rule 5).

Input: one row per (fine-tuning run, test subject, tissue class), as dicts with keys
``init`` (e.g. ``scratch``, ``ssl_mae``), ``k`` (labelled training subjects: an int, or ``"all"``; 0 for a
zero-shot run), ``seed`` (the training seed, which also drew the labelled subjects), optionally
``pretrain_seed`` (the pretraining run's seed; 0 when absent) and ``converged`` (the run's plateau test),
``subject``, ``class`` (``"GM"``, ``"WM"``, …) and ``dice``.

How the numbers are made:

1. A cell is one (pretraining seed, training seed, test subject) of an (init, k); its value is the mean over
   classes of the run's Dice for that subject (NaN Dice, a class absent, is skipped).
2. ``dice_mean`` of (init, k) is the mean over its cells, with a hierarchical bootstrap 95% CI that
   resamples subjects, training seeds and pretraining seeds (:mod:`evaluation.hierarchical_bootstrap`);
   ``between_seed_sd`` is the SD over training seeds of each seed's mean.
3. ``fraction_of_full`` = mean Dice at k / mean Dice at the full-label k of the same init (``"all"``, or
   the largest k when there is no ``"all"``), with a paired hierarchical CI.
4. ``comparisons``: for each k and each pair of inits, the difference a − b over the subjects tested under
   both, paired on subjects and training seeds, with its hierarchical CI; a Wilcoxon signed-rank p over
   subjects (seed-averaged per subject; :func:`evaluation.statistics.paired_wilcoxon`) and the Holm-adjusted
   p across *all* comparisons of the table (or, with ``holm_family="k"``, across the comparisons at one k).
5. ``converged``: True when every run of (init, k) passed its plateau test, False when one failed, None when
   it is unknown (e.g. results from runs that did not record it).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from evaluation import hierarchical_bootstrap as hb
from evaluation.statistics import bootstrap_ci, holm, paired_wilcoxon

ROW_KEYS = ("init", "k", "seed", "subject", "class", "dice")
FULL = "all"
PSEED = "pretrain_seed"


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
    if PSEED not in df.columns:
        df[PSEED] = 0
    df[PSEED] = df[PSEED].fillna(0).astype(int)
    if "k" in df.columns:
        df["k"] = df["k"].map(normalise_k)
    return df


def cell_values(df: pd.DataFrame) -> pd.DataFrame:
    """Per-cell Dice: one row per (init, k, pretrain_seed, seed, subject), a column per class and ``dice_mean``."""
    cells = df.groupby(["init", "k", PSEED, "seed", "subject", "class"], sort=False)["dice"].mean().unstack("class")
    cells["dice_mean"] = cells.mean(axis=1, skipna=True)
    return cells


class Grids:
    """The ``(P, S, N)`` grids of every (init, k) of a table of cells (see the module docstring)."""

    def __init__(self, cells: pd.DataFrame) -> None:
        self.cells = cells
        index = cells.index.to_frame(index=False)
        self.seeds = {k: sorted(set(index.loc[index["k"] == k, "seed"])) for k in set(index["k"])}
        self.index = index

    def subjects(self, init: str, k: Any, column: str = "dice_mean") -> list[str]:
        """Subjects with a finite value of (init, k)."""
        sub = self.cells.loc[(init, k)][column].dropna()
        return sorted(set(sub.index.get_level_values("subject")))

    def grid(self, init: str, k: Any, subjects: Sequence[str], seeds: Sequence[int], column: str = "dice_mean"):
        """``(P, S, N)`` array of (init, k) on ``seeds`` × ``subjects`` (NaN where a cell is missing)."""
        sub = self.cells.loc[(init, k)][column]
        pseeds = sorted(set(sub.index.get_level_values(PSEED)))
        out = np.full((len(pseeds), len(seeds), len(subjects)), np.nan)
        where = {(p, s, n): v for (p, s, n), v in sub.items()}
        for i, p in enumerate(pseeds):
            for j, s in enumerate(seeds):
                for m, n in enumerate(subjects):
                    out[i, j, m] = where.get((p, s, n), np.nan)
        return out


def _converged(df: pd.DataFrame, init: str, k: Any) -> bool | None:
    if "converged" not in df.columns:
        return None
    flags = df.loc[(df["init"] == init) & (df["k"] == k), "converged"]
    known = [bool(f) for f in flags if f is not None and not (isinstance(f, float) and np.isnan(f))]
    if not known or len(known) < len(flags):
        return False if any(not f for f in known) else None
    return all(known)


def learning_curves(rows: Iterable[Mapping[str, Any]], n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """DESIGN §9 ``learning_curves`` entries, one per (init, k), sorted by init then k.

    Returns:
        Dicts with ``init``, ``k``, ``dice_mean``, ``ci95``, ``between_seed_sd``, ``per_class``
        (``{class: {"dice", "ci95"}}``), ``fraction_of_full``, ``fraction_ci95``, ``full_k``, ``n_seeds``,
        ``n_pretrain_seeds``, ``n_subjects``, ``converged``.
    """
    df = _frame(rows, ROW_KEYS)
    grids = Grids(cell_values(df))
    classes = [c for c in grids.cells.columns if c != "dice_mean"]
    out = []
    for init in dict.fromkeys(df["init"]):
        ks = sorted(set(df.loc[df["init"] == init, "k"]), key=k_order)
        full_k = FULL if FULL in ks else max((k for k in ks if isinstance(k, int)), default=ks[-1])
        for k in ks:
            seeds, subjects = grids.seeds[k], grids.subjects(init, k)
            values = grids.grid(init, k, subjects, seeds)
            mean, lo, hi = hb.mean_ci(values, n_boot, seed)
            per_class = {}
            for c in classes:
                est, clo, chi = hb.mean_ci(grids.grid(init, k, subjects, seeds, c), n_boot, seed)
                if np.isfinite(est):
                    per_class[c] = {"dice": est, "ci95": [clo, chi]}
            common = sorted(set(subjects) & set(grids.subjects(init, full_k)))
            both = sorted(set(seeds) | set(grids.seeds[full_k]))
            ratio, rlo, rhi = hb.paired_ci(
                grids.grid(init, k, common, both), grids.grid(init, full_k, common, both), np.divide, n_boot, seed
            )
            out.append(
                {
                    "init": init,
                    "k": k,
                    "dice_mean": mean,
                    "ci95": [lo, hi],
                    "between_seed_sd": hb.between_seed_sd(values),
                    "per_class": per_class,
                    "fraction_of_full": ratio,
                    "fraction_ci95": [rlo, rhi],
                    "full_k": full_k,
                    "n_seeds": len(seeds) if values.size else 0,
                    "n_pretrain_seeds": int(values.shape[0]),
                    "n_subjects": len(subjects),
                    "converged": _converged(df, init, k),
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
        Dicts with ``k``, ``a``, ``b``, ``delta`` (mean a − mean b over the paired cells), ``ci95``
        (hierarchical), ``median_delta`` and ``p`` (Wilcoxon over seed-averaged subjects), ``p_holm``,
        ``holm_family``, ``holm_m`` (tests in the family), ``n_subjects``, ``n_seeds``; ordered by k, then
        pairs in the order inits first appear in ``rows``. At k = 0 an arm with a zero-shot point is also
        compared with every arm that has none at *its* fewest labels, k = 1 (``b_k: 1``): no target label
        against one.
    """
    if holm_family not in ("all", "k"):
        raise ValueError(f"holm_family must be 'all' or 'k', got {holm_family!r}")
    df = _frame(rows, ROW_KEYS)
    grids = Grids(cell_values(df))
    inits = list(dict.fromkeys(df["init"]))
    present = set(zip(df["init"], df["k"], strict=True))
    pairs = [(k, a, b, k) for k in sorted(set(df["k"]), key=k_order)
             for a, b in combinations([i for i in inits if (i, k) in present], 2)]  # fmt: skip
    # zero-shot (k = 0) against the arms without a head at their fewest labels (k = 1): no label vs one
    heads = [a for a in inits if (a, 0) in present]
    pairs += [(0, a, b, 1) for a in heads for b in inits if (b, 0) not in present and (b, 1) in present]
    out = []
    for k, a, b, kb in sorted(pairs, key=lambda p: k_order(p[0])):
        subjects = sorted(set(grids.subjects(a, k)) & set(grids.subjects(b, kb)))
        ga, gb = grids.grid(a, k, subjects, grids.seeds[k]), grids.grid(b, kb, subjects, grids.seeds[kb])
        delta, lo, hi = hb.paired_ci(ga, gb, np.subtract, n_boot, seed)
        with warnings.catch_warnings():  # a subject missing from every seed of an arm: NaN, dropped by the test
            warnings.simplefilter("ignore", RuntimeWarning)
            va, vb = np.nanmean(ga, axis=(0, 1)), np.nanmean(gb, axis=(0, 1))
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
                "n_subjects": len(subjects),
                "n_seeds": len(grids.seeds[k]),
                **({"b_k": kb} if kb != k else {}),
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


def supported(ci95: Any, p: Any) -> bool:
    """A difference the data support: its CI excludes 0 and its Holm p is below 0.05."""
    return bool(ci95) and None not in ci95 and (ci95[0] > 0 or ci95[1] < 0) and p is not None and p < 0.05


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

    An init whose runs at that k did not converge (``converged`` False) is not ranked (DESIGN §10 rule 3):
    it is listed in ``unranked`` instead, since a still-improving arm's Dice says how far its budget got, not
    how well its initialisation transfers.

    Returns:
        Dicts with ``k``, ``best``, ``dice_mean``, ``ci95``, ``fraction_of_full``, ``runner_up``, ``delta``
        (best − runner-up, mean over paired test subjects), ``delta_ci95``, ``p_holm`` (``None`` where there
        is a single init), ``vs_reference`` (``{"init", "delta", "ci95", "p_holm"}`` of best − ``reference``;
        ``None`` when the best is the reference or the reference was not run at that k) and ``unranked``
        (inits left out as unconverged). ``best`` is ``None`` when no init at that k converged.
    """
    out = []
    for k in sorted({c["k"] for c in curves}, key=k_order):
        here = [c for c in curves if c["k"] == k]
        unranked = [c["init"] for c in here if c.get("converged") is False]
        ranked = [c for c in here if c.get("converged") is not False]
        at_k = sorted(ranked, key=lambda c: -np.nan_to_num(c["dice_mean"], nan=-np.inf))
        best = at_k[0] if at_k else {}
        row: dict[str, Any] = {
            "k": k,
            "best": best.get("init"),
            "dice_mean": best.get("dice_mean"),
            "ci95": best.get("ci95"),
            "fraction_of_full": best.get("fraction_of_full"),
            "runner_up": None,
            "delta": None,
            "delta_ci95": None,
            "p_holm": None,
            "vs_reference": None,
            "unranked": unranked,
        }
        if len(at_k) > 1:
            row["runner_up"] = at_k[1]["init"]
            pair = paired_difference(comps, k, best["init"], at_k[1]["init"])
            if pair is not None:
                row.update(delta=pair["delta"], delta_ci95=pair["ci95"], p_holm=pair["p_holm"])
        if at_k and best["init"] != reference and any(c["init"] == reference for c in at_k):
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
        est, lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
        out.setdefault(str(region), {})[str(cls)] = {"dice": est, "ci95": [lo, hi], "n_subjects": int(v.size)}
    return out
