"""How similar two sets of representations are: paired (CKA) and distribution-level (shift, MMD).

Two different questions, two kinds of measure:

* **Paired rows** — the same voxels seen by two encoders (or two layers): :func:`linear_cka`
  (Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019) compares
  the two representations row by row. Use it for "how much did subcortical fine-tuning change what the
  SSL encoder computes in the brainstem": ``linear_cka(F_ssl[brainstem voxels], F_finetuned[same voxels])``
  (:func:`cka_matrix` does every encoder pair).
* **Unpaired rows** — one encoder's features in region A and in region B. Voxel i of A and voxel i of B
  are unrelated, so CKA between them (on any matched random samples) measures nothing but noise.
  What can be compared is the two *distributions*: :func:`domain_shift` is the cross-validated balanced
  accuracy of a linear classifier telling A's features from B's (0.5 = indistinguishable, 1 = fully
  separated), with tissue composition matched so that "A has more WM" does not count as a shift;
  :func:`mmd_rbf` is the kernel maximum mean discrepancy (Gretton et al., JMLR 2012).
  :func:`shift_matrix` fills the region × region table for one encoder.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


def cka_matrix(features_by_encoder: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Linear CKA between every pair of encoders' features of the same voxels.

    Args:
        features_by_encoder: encoder name -> ``(n, p_e)`` features; the rows must be the same voxels,
            in the same order, for every encoder.

    Returns:
        ``{a: {b: cka}}`` for every ordered pair (symmetric, 1 on the diagonal).
    """
    names = list(features_by_encoder)
    out: dict[str, dict[str, float]] = {a: {} for a in names}
    for i, a in enumerate(names):
        for b in names[i:]:
            value = 1.0 if a == b else linear_cka(features_by_encoder[a], features_by_encoder[b])
            out[a][b] = out[b][a] = value
    return out


def _matched_subsample(
    xa: np.ndarray, xb: np.ndarray, ya: np.ndarray | None, yb: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Equal numbers of rows from A and B, with equal counts per tissue class when labels are given."""
    if ya is None or yb is None:
        n = min(len(xa), len(xb))
        return xa[rng.choice(len(xa), n, replace=False)], xb[rng.choice(len(xb), n, replace=False)]
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
    return xa[np.concatenate(parts_a)], xb[np.concatenate(parts_b)]


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
    xa, xb = _as_2d(XA, "XA"), _as_2d(XB, "XB")
    if xa.shape[1] != xb.shape[1]:
        raise ValueError(f"XA and XB must have the same feature columns: {xa.shape[1]} vs {xb.shape[1]}")
    rng = np.random.default_rng(seed)
    a, b = _matched_subsample(xa, xb, labels_a, labels_b, rng)
    if len(a) > max_per_region:
        keep = rng.choice(len(a), max_per_region, replace=False)
        a, b = a[keep], b[keep]
    if len(a) < n_folds:
        raise ValueError(f"too few matched samples ({len(a)}) for {n_folds}-fold cross-validation")
    x = np.concatenate([a, b])
    y = np.r_[np.zeros(len(a), int), np.ones(len(b), int)]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(model, x, y, cv=folds)
    return float(0.5 * (np.mean(pred[y == 0] == 0) + np.mean(pred[y == 1] == 1)))


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


def shift_matrix(features_by_region: Mapping[str, RegionFeatures], seed: int = 0) -> dict[str, dict[str, float]]:
    """:func:`domain_shift` between every pair of regions of one encoder, tissue composition matched.

    Args:
        features_by_region: region name -> its :class:`~evaluation.features.RegionFeatures`.

    Returns:
        ``{a: {b: balanced_accuracy}}``, symmetric, 0.5 on the diagonal (a region is indistinguishable
        from itself by definition; not computed).
    """
    names = list(features_by_region)
    out: dict[str, dict[str, float]] = {a: {} for a in names}
    for i, a in enumerate(names):
        out[a][a] = 0.5
        for b in names[i + 1 :]:
            fa, fb = features_by_region[a], features_by_region[b]
            value = domain_shift(fa.X, fb.X, seed=seed, labels_a=fa.y, labels_b=fb.y)
            out[a][b] = out[b][a] = value
    return out
