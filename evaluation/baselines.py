"""Classical tissue classifiers, scored beside the deep models in the same regions and metrics.

Both label every voxel of a brain mask as CSF (1), GM (2) or WM (3), and 0 outside the mask, with no
training labels:

* :func:`gmm_segment`: a Gaussian mixture on the multimodal intensities (scikit-learn);
* :func:`hmrf_segment`: dipy's hidden-Markov-random-field classifier on T1w alone (Zhang, Brady & Smith,
  IEEE TMI 2001, the model behind FSL FAST), ``dipy.segment.tissue.TissueClassifierHMRF``.

Unsupervised components carry no names; they are named by their mean T1w intensity, lowest to highest
CSF < GM < WM, which is the T1-weighted tissue contrast of the adult brain. A T1w channel with another
contrast (e.g. neonatal, or a T2w image given as T1w) breaks that rule and the labels come out permuted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from ssl_pretrain.errors import DataError


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _mask(brain_mask: Any, shape: tuple[int, ...], source: str | Path) -> np.ndarray:
    m = _np(brain_mask).astype(bool)
    if m.shape != shape:
        raise DataError(source, f"brain mask of shape {m.shape} does not match the image grid {shape}")
    if not m.any():
        raise DataError(source, "the brain mask is empty")
    return m


def gmm_segment(
    image: Any,
    brain_mask: Any,
    n_classes: int = 3,
    seed: int = 0,
    t1_channel: int = 0,
    max_fit_voxels: int = 200_000,
    source: str | Path = "image",
) -> np.ndarray:
    """Gaussian-mixture tissue classification of the multimodal intensities inside a brain mask.

    Channels that are constant inside the mask (a missing modality is a zero channel) are left out, so
    the same call works on T1w alone. Each kept channel is standardised over the mask; a full-covariance
    mixture of ``n_classes`` components is fitted on at most ``max_fit_voxels`` mask voxels (seeded
    subsample) and assigns every mask voxel to its most probable component. Components are numbered
    1..n_classes by increasing mean of channel ``t1_channel`` (CSF, GM, WM for ``n_classes=3``).

    Args:
        image: ``(C, X, Y, Z)`` intensities (numpy or torch), channel ``t1_channel`` T1-weighted.
        brain_mask: ``(X, Y, Z)`` bool, True = brain.
        n_classes: mixture components.
        seed: initialisation and subsampling seed.
        t1_channel: index of the T1w channel that orders the components.
        source: file or subject named in errors.

    Returns:
        ``(X, Y, Z)`` int16 labels, 0 outside the mask.
    """
    img = _np(image).astype(np.float64)
    if img.ndim != 4:
        raise ValueError(f"image must have shape (C, X, Y, Z), got {img.shape}")
    if not 0 <= t1_channel < img.shape[0]:
        raise ValueError(f"t1_channel {t1_channel} is not a channel of a {img.shape[0]}-channel image")
    mask = _mask(brain_mask, img.shape[1:], source)
    values = img[:, mask].T  # (n_voxels, C)
    if not np.all(np.isfinite(values)):
        raise DataError(source, "image holds NaN or Inf inside the brain mask")
    std = values.std(0)
    if std[t1_channel] == 0:
        raise DataError(source, f"channel {t1_channel} (T1w) is constant inside the brain mask")
    keep = np.flatnonzero(std > 0)
    x = (values[:, keep] - values[:, keep].mean(0)) / std[keep]
    rng = np.random.default_rng(seed)
    fit = x if len(x) <= max_fit_voxels else x[rng.choice(len(x), max_fit_voxels, replace=False)]
    gmm = GaussianMixture(n_components=n_classes, covariance_type="full", n_init=2, random_state=seed).fit(fit)
    component = gmm.predict(x)
    t1_col = int(np.flatnonzero(keep == t1_channel)[0])
    rank = np.empty(n_classes, np.int16)
    rank[np.argsort(gmm.means_[:, t1_col])] = np.arange(1, n_classes + 1)
    out = np.zeros(img.shape[1:], np.int16)
    out[mask] = rank[component]
    return out


def hmrf_segment(
    t1: Any,
    brain_mask: Any,
    beta: float = 0.1,
    max_iter: int = 20,
    tolerance: float = 1e-5,
    source: str | Path = "image",
) -> np.ndarray:
    """HMRF tissue classification of a T1w image (dipy ``TissueClassifierHMRF.classify``).

    The image is cropped to the mask's bounding box, and mask voxels are mapped linearly from their
    0.5–99.5th percentiles to [0.1, 1] (clipped) with everything outside the mask 0, so dipy's extra
    background class takes exactly the outside. dipy orders classes by mean intensity, which for T1w is
    CSF (1) < GM (2) < WM (3). Mask voxels that dipy still calls background are labelled CSF.

    Args:
        t1: ``(X, Y, Z)`` T1-weighted intensities.
        brain_mask: ``(X, Y, Z)`` bool, True = brain.
        beta: MRF smoothing weight (higher = smoother).
        max_iter: ICM/EM iterations at most.
        tolerance: relative energy change that stops early (0 = run all iterations).
        source: file or subject named in errors.

    Returns:
        ``(X, Y, Z)`` int16 labels, 0 outside the mask.
    """
    from dipy.segment.tissue import TissueClassifierHMRF  # heavy import, only where used

    img = _np(t1).astype(np.float64)
    if img.ndim != 3:
        raise ValueError(f"t1 must have shape (X, Y, Z), got {img.shape}")
    mask = _mask(brain_mask, img.shape, source)
    if not np.all(np.isfinite(img[mask])):
        raise DataError(source, "T1w image holds NaN or Inf inside the brain mask")
    idx = np.nonzero(mask)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    sub, sub_mask = img[box], mask[box]
    lo, hi = np.percentile(sub[sub_mask], [0.5, 99.5])
    if hi <= lo:
        raise DataError(source, "T1w image is constant inside the brain mask")
    scaled = np.where(sub_mask, 0.1 + 0.9 * np.clip((sub - lo) / (hi - lo), 0.0, 1.0), 0.0)
    hmrf = TissueClassifierHMRF(verbose=False)
    _, seg, _ = hmrf.classify(scaled, 3, beta, tolerance=tolerance, max_iter=max_iter)
    seg = np.rint(seg).astype(np.int16)
    seg[sub_mask & (seg == 0)] = 1
    seg[~sub_mask] = 0
    out = np.zeros(img.shape, np.int16)
    out[box] = seg
    return out
