"""N4 bias-field correction (Tustison et al., IEEE TMI 2010) for the classical baselines, with SimpleITK.

Classical tissue classifiers (FSL FAST, SPM, dipy's HMRF) are run after bias-field correction as their
standard preprocessing; without it a smooth receive field as large as the GM/WM contrast (the demo
cohort simulates one) decides their labels. N4 models the field as multiplicative on *raw* intensities,
so the cached, robust-normalised channel is first mapped back to the scanner's units with the cache's own
normalisation statistics (``raw = x · scale + centre``), corrected inside the brain mask, and returned in
raw units (the baselines standardise it themselves).

Settings (``baselines.n4``): ``shrink`` (the field is fitted on a grid this many times coarser and
evaluated at full resolution, as ANTs does), ``iterations`` per fitting level (three levels by default:
a fourth, finer B-spline level starts absorbing the tissue contrast itself at 2 mm).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.errors import DataError


def raw_channel(subject: CachedSubject, modality: str) -> np.ndarray:
    """``(X, Y, Z)`` float32 intensities of one cached channel in the scanner's units (undoing the cache's
    normalisation).

    Raises:
        DataError: the subject has no such modality.
    """
    if modality not in subject.modalities or not subject.presence[subject.modalities.index(modality)]:
        raise DataError(subject.entry, f"has no {modality} image for the bias-field correction")
    stats = subject.meta["normalisation"][modality]
    image = np.asarray(subject.image[subject.modalities.index(modality)], np.float32)
    return image * np.float32(stats["scale"]) + np.float32(stats["centre"])


def n4_correct(
    image: np.ndarray, mask: np.ndarray, shrink: int = 2, iterations: Sequence[int] = (50, 50, 30)
) -> np.ndarray:
    """N4-corrected ``image`` (same shape), fitted inside ``mask``.

    Args:
        image: ``(X, Y, Z)`` positive intensities (raw units); values ≤ 0 are clipped to a small positive
            floor first (N4 works on log intensities).
        mask: ``(X, Y, Z)`` bool, True = brain (where the field is fitted).
        shrink: fitting-grid coarsening factor (≥ 1).
        iterations: maximum iterations per fitting level (one entry per level).

    Returns:
        ``(X, Y, Z)`` float32 ``image / field``.
    """
    if shrink < 1 or not iterations:
        raise ValueError(f"need shrink >= 1 and at least one level, got {shrink}, {list(iterations)}")
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("the brain mask is empty")
    positive = np.maximum(np.asarray(image, np.float32), np.float32(1e-3 * max(float(image[mask].max()), 1e-3)))
    full = sitk.GetImageFromArray(positive)
    fit = sitk.N4BiasFieldCorrectionImageFilter()
    fit.SetMaximumNumberOfIterations([int(i) for i in iterations])
    fit.Execute(
        sitk.Shrink(full, [shrink] * 3), sitk.Shrink(sitk.GetImageFromArray(mask.astype(np.uint8)), [shrink] * 3)
    )
    log_field = sitk.GetArrayFromImage(fit.GetLogBiasFieldAsImage(full))
    return (positive / np.exp(log_field)).astype(np.float32)
