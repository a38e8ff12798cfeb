"""How similar two sets of representations are: paired (CKA) and distribution-level (shift, MMD).

Two different questions, two kinds of measure:

* **Paired rows** — the same voxels seen by two encoders (or two layers): linear CKA
  (Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019) compares
  the two representations row by row; :func:`debiased_linear_cka` (the unbiased HSIC of Song et al. 2012)
  is what is reported, with a shuffled-pairing null and a CI over subjects (:func:`cka_with_uncertainty`),
  since the plain estimator reads 0.1–0.4 for unrelated features at a probe's sizes. Use it for "how much
  did subcortical fine-tuning change what the SSL encoder computes in the brainstem":
  ``debiased_linear_cka(F_ssl[brainstem voxels], F_finetuned[same voxels])`` (:func:`cka_matrix` does every
  encoder pair).
* **Unpaired rows** — one encoder's features in region A and in region B. Voxel i of A and voxel i of B
  are unrelated, so CKA between them (on any matched random samples) measures nothing but noise.
  What can be compared is the two *distributions*: :func:`domain_shift` is the cross-validated balanced
  accuracy of a linear classifier telling A's features from B's (0.5 = indistinguishable, 1 = fully
  separated), with tissue composition matched so that "A has more WM" does not count as a shift;
  :func:`mmd_rbf` is the kernel maximum mean discrepancy (Gretton et al., JMLR 2012).
  :func:`shift_matrix` fills the region × region table for one encoder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluation.statistics import subject_bootstrap_balanced_accuracy
from ssl_pretrain.models.features import RegionFeatures


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2D (n_samples, n_features), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear centred kernel alignment between two representations of the same samples.

    ``CKA = ||Yc^T Xc||_F² / (||Xc^T Xc||_F · ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``
    (Kornblith et al. 2019, eq. for linear HSIC). Invariant to orthogonal transforms and isotropic scaling
    of either side; 1 for identical representations; near 0 for independent ones (with a positive bias of
    order ``p·q/n`` for finite ``n``).

    Args:
        X: ``(n, p)`` features; row i is sample i.
        Y: ``(n, q)`` features of the same n samples in the same order.

    Returns:
        CKA in [0, 1]; NaN when either side is constant.
    """
    x, y = _as_2d(X, "X"), _as_2d(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs paired rows: X has {x.shape[0]} samples, Y has {y.shape[0]}")
    x = x - x.mean(0)
    y = y - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    norm = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / norm) if norm > 0 else float("nan")


def _gram(x: np.ndarray) -> np.ndarray:
    """The linear kernel of column-centred features, diagonal set to 0 (what the unbiased HSIC needs)."""
    c = x - x.mean(0)
    k = c @ c.T
    np.fill_diagonal(k, 0.0)
    return k


def _unbiased_hsic(k: np.ndarray, m: np.ndarray) -> float:
    """The unbiased HSIC estimator of Song et al. (JMLR 2012, eq. 5) on two ``(n, n)`` Gram matrices with
    zero diagonals."""
    n = k.shape[0]
    ones_k, ones_m = k.sum(0), m.sum(0)
    trace = float(np.einsum("ij,ij->", k, m))
    term = float(ones_k.sum() * ones_m.sum()) / ((n - 1) * (n - 2))
    cross = 2.0 * float(ones_k @ ones_m) / (n - 2)
    return (trace + term - cross) / (n * (n - 3))


def _cka_of_grams(k: np.ndarray, m: np.ndarray) -> float:
    xx, yy = _unbiased_hsic(k, k), _unbiased_hsic(m, m)
    if xx <= 0 or yy <= 0:
        return float("nan")
    return float(_unbiased_hsic(k, m) / np.sqrt(xx * yy))


def debiased_linear_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Linear CKA with the unbiased HSIC estimator (Song et al. 2012; Kornblith et al. 2019, appendix).

    The plain estimator (:func:`linear_cka`) is biased upward by roughly ``p·q / n``: for unrelated features
    at the sizes of a probe (a few hundred voxels, tens of channels) it reads 0.1–0.4. The unbiased HSIC
    removes that bias, so independent representations give ≈0 (it can come out slightly negative by
    chance); identical ones give 1.

    Args:
        X: ``(n, p)`` features; Y: ``(n, q)`` features of the same n samples (n ≥ 4).

    Returns:
        Debiased CKA; NaN when either side has no variance.
    """
    x, y = _as_2d(X, "X"), _as_2d(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs paired rows: X has {x.shape[0]} samples, Y has {y.shape[0]}")
    if x.shape[0] < 4:
        raise ValueError("the unbiased HSIC estimator needs at least 4 samples")
    return _cka_of_grams(_gram(x), _gram(y))


def cka_with_uncertainty(
    X: np.ndarray, Y: np.ndarray, groups: np.ndarray, n_null: int = 100, n_half: int = 100, seed: int = 0
) -> dict[str, Any]:
    """Debiased CKA with a shuffled-pairing null and a CI over subjects.

    * Null: the rows of ``Y`` are permuted (the pairing of voxels across the two representations is
      broken while each keeps its own distribution); ``null_q95`` is the 95th percentile and ``p`` the
      permutation p-value ``(1 + #{null >= observed}) / (1 + n_null)``.
    * CI: half-sampling of subjects (McCarthy 1969): half the subjects (``groups``) are drawn without
      replacement, so no voxel row is ever duplicated (a duplicated row would pair with itself and bias a
      kernel statistic upward); the SD of the half-sample estimates approximates the full-sample standard
      error, and ``ci95`` is the estimate ± 1.96 of it. NaN with fewer than four subjects.

    Args:
        X, Y: ``(n, p)``, ``(n, q)`` paired features.
        groups: ``(n,)`` subject of each row.

    Returns:
        ``{"cka", "ci95", "null_mean", "null_q95", "p", "biased"}`` (``biased``: the plain estimator).
    """
    x, y = _as_2d(X, "X"), _as_2d(Y, "Y")
    if x.shape[0] != y.shape[0] or x.shape[0] < 4:
        raise ValueError(f"CKA needs at least 4 paired rows: {x.shape[0]} vs {y.shape[0]}")
    groups = np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    k, m = _gram(x), _gram(y)
    kk, mm = _unbiased_hsic(k, k), _unbiased_hsic(m, m)
    observed = _cka_of_grams(k, m)
    null = np.full(n_null, np.nan)
    if kk > 0 and mm > 0:
        for i in range(n_null):  # HSIC(M, M) is invariant to a permutation of M's rows and columns
            perm = rng.permutation(len(y))
            null[i] = _unbiased_hsic(k, m[np.ix_(perm, perm)]) / np.sqrt(kk * mm)
    null = null[np.isfinite(null)]
    subjects = np.unique(groups)
    ci = [float("nan"), float("nan")]
    if len(subjects) >= 4 and np.isfinite(observed):
        estimates = []
        for _ in range(n_half):
            rows = np.flatnonzero(np.isin(groups, rng.choice(subjects, len(subjects) // 2, replace=False)))
            sub = np.ix_(rows, rows)  # the unbiased HSIC is invariant to shifting the features: reuse the Grams
            estimates.append(_cka_of_grams(k[sub], m[sub]) if len(rows) >= 4 else np.nan)
        sd = float(np.nanstd(estimates, ddof=1))
        ci = [observed - 1.96 * sd, observed + 1.96 * sd]
    return {
        "cka": observed,
        "ci95": ci,
        "null_mean": float(null.mean()) if null.size else float("nan"),
        "null_q95": float(np.quantile(null, 0.95)) if null.size else float("nan"),
        "p": float((1 + np.sum(null >= observed)) / (1 + null.size)) if null.size else float("nan"),
        "biased": linear_cka(x, y),
    }


def cka_matrix(
    features_by_encoder: Mapping[str, np.ndarray], groups: np.ndarray | None = None, seed: int = 0, n_null: int = 100
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, Any]]]]:
    """Debiased linear CKA between every pair of encoders' features of the same voxels.

    Args:
        features_by_encoder: encoder name -> ``(n, p_e)`` features; the rows must be the same voxels,
            in the same order, for every encoder.
        groups: ``(n,)`` subject of each row (for the CI); ``None`` treats every row as its own subject.
        seed: permutation and half-sampling seed.
        n_null: permutations of the null.

    Returns:
        ``({a: {b: cka}}, {a: {b: detail}})``: the debiased values (symmetric, 1 on the diagonal) and, per
        off-diagonal pair, :func:`cka_with_uncertainty`'s CI, null and p.
    """
    names = list(features_by_encoder)
    n = len(next(iter(features_by_encoder.values()))) if names else 0
    rows = np.arange(n).astype(str) if groups is None else np.asarray(groups)
    values: dict[str, dict[str, float]] = {a: {} for a in names}
    detail: dict[str, dict[str, dict[str, Any]]] = {a: {} for a in names}
    for i, a in enumerate(names):
        values[a][a] = 1.0
        for b in names[i + 1 :]:
            d = cka_with_uncertainty(features_by_encoder[a], features_by_encoder[b], rows, n_null, n_null, seed)
            values[a][b] = values[b][a] = d["cka"]
            detail[a][b] = detail[b][a] = d
    return values, detail


def _matched_subsample(
    xa: np.ndarray, xb: np.ndarray, ya: np.ndarray | None, yb: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of equal numbers of rows from A and B, with equal counts per tissue class when labels are given."""
    if ya is None or yb is None:
        n = min(len(xa), len(xb))
        return rng.choice(len(xa), n, replace=False), rng.choice(len(xb), n, replace=False)
    ya, yb = np.asarray(ya).reshape(-1), np.asarray(yb).reshape(-1)
    if len(ya) != len(xa) or len(yb) != len(xb):
        raise ValueError("labels must have one entry per feature row")
    parts_a, parts_b = [], []
    for c in np.intersect1d(np.unique(ya), np.unique(yb)):
        ia, ib = np.flatnonzero(ya == c), np.flatnonzero(yb == c)
        n = min(len(ia), len(ib))
        parts_a.append(rng.choice(ia, n, replace=False))
        parts_b.append(rng.choice(ib, n, replace=False))
    if not parts_a:
        raise ValueError("regions A and B share no tissue class; cannot match their composition")
    return np.concatenate(parts_a), np.concatenate(parts_b)


def _shift_predictions(
    XA: np.ndarray,
    XB: np.ndarray,
    seed: int,
    labels_a: np.ndarray | None,
    labels_b: np.ndarray | None,
    n_folds: int,
    max_per_region: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold predictions of the region classifier: ``(pred, region label, rows of A, rows of B)``."""
    xa, xb = _as_2d(XA, "XA"), _as_2d(XB, "XB")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"XA and XB must have the same feature columns: {xa.shape[1]} vs {xb.shape[1]}")
    rng = np.random.default_rng(seed)
    ia, ib = _matched_subsample(xa, xb, labels_a, labels_b, rng)
    if len(ia) > max_per_region:
        keep = rng.choice(len(ia), max_per_region, replace=False)
        ia, ib = ia[keep], ib[keep]
    if len(ia) < n_folds:
        raise ValueError(f"too few matched samples ({len(ia)}) for {n_folds}-fold cross-validation")
    x = np.concatenate([xa[ia], xb[ib]])
    y = np.r_[np.zeros(len(ia), int), np.ones(len(ib), int)]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, x, y, cv=folds), y, ia, ib


def domain_shift(
    XA: np.ndarray,
    XB: np.ndarray,
    seed: int = 0,
    labels_a: np.ndarray | None = None,
    labels_b: np.ndarray | None = None,
    n_folds: int = 5,
    max_per_region: int = 5000,
) -> float:
    """How well a linear classifier tells region A's features from region B's.

    Equal numbers of rows are drawn from A and B (per tissue class when ``labels_a``/``labels_b`` are
    given, so that a difference in GM/WM proportions is not mistaken for a shift), at most
    ``max_per_region`` each; a standardised logistic regression is scored by stratified ``n_folds``-fold
    cross-validation.

    Args:
        XA: ``(n_a, p)`` features of region A.
        XB: ``(n_b, p)`` features of region B (same encoder, same feature columns).
        seed: subsampling and fold seed.
        labels_a: optional ``(n_a,)`` tissue classes of A's rows.
        labels_b: optional ``(n_b,)`` tissue classes of B's rows.

    Returns:
        Balanced accuracy in [0, 1]: about 0.5 when the distributions are the same, 1 when separable.
    """
    pred, y, _, _ = _shift_predictions(XA, XB, seed, labels_a, labels_b, n_folds, max_per_region)
    return _balanced(pred, y)


def mmd_rbf(XA: np.ndarray, XB: np.ndarray, gamma: float | None = None, max_n: int = 1000, seed: int = 0) -> float:
    """Unbiased squared maximum mean discrepancy with a Gaussian kernel (Gretton et al. 2012).

    ``k(x, y) = exp(-gamma ||x - y||²)``; ``gamma`` defaults to ``1 / median(||x - y||²)`` over the pooled
    sample (the median heuristic). At most ``max_n`` rows per side are used (seeded subsample).

    Returns:
        MMD² (≈0 for equal distributions; can be slightly negative by chance, being unbiased).
    """
    xa, xb = _as_2d(XA, "XA"), _as_2d(XB, "XB")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"XA and XB must have the same feature columns: {xa.shape[1]} vs {xb.shape[1]}")
    if len(xa) < 2 or len(xb) < 2:
        raise ValueError("MMD needs at least two samples per side")
    rng = np.random.default_rng(seed)
    if len(xa) > max_n:
        xa = xa[rng.choice(len(xa), max_n, replace=False)]
    if len(xb) > max_n:
        xb = xb[rng.choice(len(xb), max_n, replace=False)]
    pooled = np.concatenate([xa, xb])
    sq = np.sum(pooled**2, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pooled @ pooled.T, 0.0)
    if gamma is None:
        off = d2[np.triu_indices(len(pooled), 1)]
        med = np.median(off)
        gamma = 1.0 / med if med > 0 else 1.0
    k = np.exp(-gamma * d2)
    m, n = len(xa), len(xb)
    kaa, kbb, kab = k[:m, :m], k[m:, m:], k[:m, m:]
    term_a = (kaa.sum() - np.trace(kaa)) / (m * (m - 1))
    term_b = (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
    return float(term_a + term_b - 2.0 * kab.mean())


def _shift_cells(
    features_by_region: Mapping[str, RegionFeatures], seed: int
) -> Iterator[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(a, b, out-of-fold predictions, region labels, subject of each row)`` for every pair of regions."""
    names = list(features_by_region)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fa, fb = features_by_region[a], features_by_region[b]
            pred, y, ia, ib = _shift_predictions(fa.X, fb.X, seed, fa.y, fb.y, 5, 5000)
            subjects = np.concatenate([np.asarray(fa.subjects)[ia], np.asarray(fb.subjects)[ib]]).astype(str)
            yield a, b, pred, y, subjects


def _balanced(pred: np.ndarray, y: np.ndarray) -> float:
    return float(0.5 * (np.mean(pred[y == 0] == 0) + np.mean(pred[y == 1] == 1)))


def shift_matrix(features_by_region: Mapping[str, RegionFeatures], seed: int = 0) -> dict[str, dict[str, float]]:
    """:func:`domain_shift` between every pair of regions of one encoder, tissue composition matched.

    Args:
        features_by_region: region name -> its :class:`~ssl_pretrain.models.features.RegionFeatures`.

    Returns:
        ``{a: {b: balanced_accuracy}}``, symmetric, 0.5 on the diagonal (a region is indistinguishable
        from itself by definition; not computed).
    """
    out: dict[str, dict[str, float]] = {a: {a: 0.5} for a in features_by_region}
    for a, b, pred, y, _ in _shift_cells(features_by_region, seed):
        out[a][b] = out[b][a] = _balanced(pred, y)
    return out


def shift_matrix_with_ci(
    features_by_region: Mapping[str, RegionFeatures], seed: int = 0, n_boot: int = 1000
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[float]]]]:
    """:func:`shift_matrix` with a 95% CI per pair over subjects: each resample draws subjects with replacement
    and pools their out-of-fold predictions in both regions (chance is 0.5)."""
    out: dict[str, dict[str, float]] = {a: {a: 0.5} for a in features_by_region}
    cis: dict[str, dict[str, list[float]]] = {a: {} for a in features_by_region}
    for a, b, pred, y, subjects in _shift_cells(features_by_region, seed):
        out[a][b] = out[b][a] = _balanced(pred, y)
        cis[a][b] = cis[b][a] = subject_bootstrap_balanced_accuracy(pred, y, subjects, n_boot, seed)
    return out, cis
