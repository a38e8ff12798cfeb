"""Overlap, boundary and volume metrics of label volumes, restricted to a region of interest.

Every function takes numpy arrays or torch tensors of integer labels of the same shape (any number of
dimensions; 3D ``(X, Y, Z)`` volumes in practice) and an optional boolean ``roi`` of that shape in which
True means "this voxel counts". Voxels outside the ROI are ignored as if they were background in both
volumes. Reference voxels with a negative label (``IGNORE_INDEX``, unlabelled) are ignored too.

Conventions for classes that are absent (documented because they change averages):

* :func:`dice` is NaN for a class absent from both prediction and reference inside the ROI: there is
  nothing to agree or disagree on, and neither 1 nor 0 would be honest. Average with ``np.nanmean``.
* :func:`hd95` is NaN when the class is absent from both, and ``inf`` when it is absent from exactly one
  (the distance to an empty set is unbounded). Summaries should report such cases, not drop them silently.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _prepare(pred: Any, target: Any, roi: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    p, t = _as_numpy(pred), _as_numpy(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from reference shape {t.shape}")
    m = None
    if roi is not None:
        m = _as_numpy(roi).astype(bool)
        if m.shape != p.shape:
            raise ValueError(f"ROI shape {m.shape} differs from label shape {p.shape}")
    if np.any(t < 0):  # unlabelled reference voxels (IGNORE_INDEX) count as neither
        m = (t >= 0) if m is None else (m & (t >= 0))
    return p, t, m


def _spacing(spacing: float | Sequence[float], ndim: int) -> np.ndarray:
    s = np.asarray(spacing, dtype=float)
    if s.ndim == 0:
        s = np.full(ndim, float(s))
    if s.shape != (ndim,) or not np.all(s > 0):
        raise ValueError(f"spacing must be a positive number or {ndim} positive numbers, got {spacing!r}")
    return s


def dice(pred: Any, target: Any, classes: Sequence[int], roi: Any | None = None) -> dict[int, float]:
    """Dice overlap per class, ``2|P∩T| / (|P| + |T|)``, counting only voxels inside ``roi``.

    Args:
        pred: predicted labels, shape ``S`` (numpy or torch, integer).
        target: reference labels, shape ``S``.
        classes: label values to score (e.g. ``(2, 3)`` for GM and WM).
        roi: optional boolean mask of shape ``S``; True = the voxel counts.

    Returns:
        ``{class: dice}``; NaN for a class absent from both volumes inside the ROI.
    """
    p, t, m = _prepare(pred, target, roi)
    if m is not None:
        p, t = p[m], t[m]
    out: dict[int, float] = {}
    for c in classes:
        pc, tc = p == c, t == c
        denom = int(pc.sum()) + int(tc.sum())
        out[int(c)] = float("nan") if denom == 0 else 2.0 * int((pc & tc).sum()) / denom
    return out


def hd95(pred: Any, target: Any, cls: int, spacing: float | Sequence[float], roi: Any | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between the surfaces of one class.

    Computed with MONAI's ``compute_hausdorff_distance(percentile=95)`` (Euclidean distances from each
    surface voxel of one mask to the nearest surface voxel of the other, in mm through ``spacing``; the
    larger of the two directed 95th percentiles). With an ROI, both masks are first cut to the ROI, so a
    cut face shared by prediction and reference contributes zero distances.

    Args:
        pred: predicted labels, shape ``(X, Y, Z)`` (or 2D).
        target: reference labels, same shape.
        cls: the label value whose surfaces are compared.
        spacing: voxel size in mm, one number or one per axis.
        roi: optional boolean mask; True = the voxel counts.

    Returns:
        Distance in mm; NaN when ``cls`` is absent from both, ``inf`` when absent from exactly one.
    """
    p, t, m = _prepare(pred, target, roi)
    s = _spacing(spacing, p.ndim)
    pc, tc = p == cls, t == cls
    if m is not None:
        pc, tc = pc & m, tc & m
    has_p, has_t = bool(pc.any()), bool(tc.any())
    if not has_p and not has_t:
        return float("nan")
    if has_p != has_t:
        return float("inf")
    # crop to both masks' bounding box plus one background voxel: surface distances are unchanged
    idx = np.nonzero(pc | tc)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    pc, tc = pc[box], tc[box]
    y_pred = torch.from_numpy(pc[None, None].astype(np.float32))
    y = torch.from_numpy(tc[None, None].astype(np.float32))
    with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument its own helper still passes
        warnings.simplefilter("ignore", FutureWarning)
        hd = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=s.tolist())
    return float(hd.reshape(-1)[0])


def class_volumes(
    labels: Any, spacing: float | Sequence[float], roi: Any | None = None, classes: Sequence[int] | None = None
) -> dict[int, float]:
    """Volume of each class in mm³ (voxel count × voxel volume), counting only voxels inside ``roi``.

    Args:
        labels: integer label volume, shape ``(X, Y, Z)``.
        spacing: voxel size in mm, one number or one per axis.
        roi: optional boolean mask; True = the voxel counts.
        classes: classes to report (default: every non-zero label present, 0 being background).

    Returns:
        ``{class: volume_mm3}`` (0.0 for a requested class that is absent).
    """
    lab, _, m = _prepare(labels, labels, roi)
    voxel = float(np.prod(_spacing(spacing, lab.ndim)))
    values = lab[m] if m is not None else lab.reshape(-1)
    if classes is None:
        classes = [int(c) for c in np.unique(values) if c != 0]
    return {int(c): float((values == c).sum()) * voxel for c in classes}
