"""Segmentation metrics inside a region of interest: Dice, HD95 and class volumes (the one implementation).

Every function takes numpy arrays or torch tensors of integer labels of the same shape and an optional
boolean ``roi`` of that shape in which True means "this voxel counts". Voxels outside the ROI count as
neither prediction nor reference, and so do reference voxels with a negative label (``IGNORE_INDEX``,
unlabelled). :func:`roi_metrics` combines them into the per-subject row of a fine-tuning run's
``metrics.csv``; ``bssl evaluate`` (:mod:`evaluation.metrics` re-exports this module) uses the same code,
so a Dice in ``metrics.csv`` and one in ``results.json`` are the same number.

Conventions for absent classes (they change averages, so they are fixed here and nowhere else):

* **Dice** is ``2|P∩T| / (|P| + |T|)``. A class absent from both the prediction and the reference inside
  the ROI gives **NaN** (nothing to agree or disagree on; neither 1 nor 0 would be honest), and NaN is
  *excluded* from every mean (:func:`mean_dice`, the bootstrap summaries of :mod:`evaluation`). A class
  present in only one of them gives **0**.
* **HD95** (mm) is **NaN** when the class is absent from both, and **inf** when it is absent from exactly
  one (the distance to an empty set is unbounded: a missed or hallucinated class is the worst boundary
  error, not a missing value). ``metrics.csv`` writes it as ``inf``; ``results.json`` (strict JSON) as
  ``null``.

Dice is counted directly (numpy); HD95 comes from MONAI's ``compute_hausdorff_distance`` with
``percentile=95`` and the voxel spacing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

from ssl_pretrain.data.labels import TISSUE_CLASSES

# The classes reported, in column order (background is not a tissue of interest).
REPORTED_CLASSES: tuple[str, ...] = ("GM", "WM", "CSF")
_INDEX = {name: idx for idx, name in TISSUE_CLASSES.items()}


def metric_columns() -> list[str]:
    """Column names of :func:`roi_metrics`, in order."""
    cols = [f"dice_{c}" for c in REPORTED_CLASSES] + [f"hd95_{c}_mm" for c in REPORTED_CLASSES]
    cols += [f"vol_pred_{c}_mm3" for c in REPORTED_CLASSES] + [f"vol_true_{c}_mm3" for c in REPORTED_CLASSES]
    return cols


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _prepare(pred: Any, target: Any, roi: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Arrays of ``pred`` and ``target`` and the mask of voxels that count (None: all of them)."""
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
    if s.ndim == 0 or s.size == 1:
        s = np.full(ndim, float(s.reshape(-1)[0]))
    if s.shape != (ndim,) or not np.all(s > 0):
        raise ValueError(f"spacing must be a positive number or {ndim} positive numbers, got {spacing!r}")
    return s


def _dice_of(pc: np.ndarray, tc: np.ndarray) -> float:
    denom = int(pc.sum()) + int(tc.sum())
    return float("nan") if denom == 0 else 2.0 * int((pc & tc).sum()) / denom


def _hd95_of(pc: np.ndarray, tc: np.ndarray, spacing: np.ndarray) -> float:
    """HD95 (mm) of two boolean masks, with the conventions of the module docstring."""
    has_p, has_t = bool(pc.any()), bool(tc.any())
    if not has_p and not has_t:
        return float("nan")
    if has_p != has_t:
        return float("inf")
    # crop to both masks' bounding box plus one background voxel: surface distances are unchanged
    idx = np.nonzero(pc | tc)
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    y_pred = torch.from_numpy(pc[box][None, None].astype(np.float32))
    y = torch.from_numpy(tc[box][None, None].astype(np.float32))
    with warnings.catch_warnings():  # MONAI 1.5+ warns about an argument its own helper still passes
        warnings.simplefilter("ignore", FutureWarning)
        hd = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing.tolist())
    return float(hd.reshape(-1)[0])


def dice(pred: Any, target: Any, classes: Sequence[int], roi: Any | None = None) -> dict[int, float]:
    """Dice overlap per class, ``2|P∩T| / (|P| + |T|)``, counting only voxels inside ``roi``.

    Args:
        pred: predicted labels, shape ``S`` (numpy or torch, integer).
        target: reference labels, shape ``S``; negative = unlabelled (ignored).
        classes: label values to score (e.g. ``(2, 3)`` for GM and WM).
        roi: optional boolean mask of shape ``S``; True = the voxel counts.

    Returns:
        ``{class: dice}``; NaN for a class absent from both volumes inside the ROI, 0 for one absent
        from exactly one.
    """
    p, t, m = _prepare(pred, target, roi)
    if m is not None:
        p, t = p[m], t[m]
    return {int(c): _dice_of(p == c, t == c) for c in classes}


def hd95(pred: Any, target: Any, cls: int, spacing: float | Sequence[float], roi: Any | None = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) between the surfaces of one class.

    Euclidean distances from each surface voxel of one mask to the nearest surface voxel of the other,
    in mm through ``spacing``; the larger of the two directed 95th percentiles (MONAI). With an ROI, both
    masks are first cut to the ROI, so a cut face shared by prediction and reference adds zero distances.

    Args:
        pred: predicted labels, shape ``(X, Y, Z)`` (or 2D).
        target: reference labels, same shape; negative = unlabelled (ignored).
        cls: the label value whose surfaces are compared.
        spacing: voxel size in mm, one number or one per axis.
        roi: optional boolean mask; True = the voxel counts.

    Returns:
        Distance in mm; NaN when ``cls`` is absent from both, ``inf`` when absent from exactly one.
    """
    p, t, m = _prepare(pred, target, roi)
    pc, tc = p == cls, t == cls
    if m is not None:
        pc, tc = pc & m, tc & m
    return _hd95_of(pc, tc, _spacing(spacing, p.ndim))


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


def roi_metrics(
    pred: np.ndarray, truth: np.ndarray, roi: np.ndarray, spacing: Sequence[float], *, hd95: bool = True
) -> dict[str, float]:
    """Dice, HD95 (mm) and predicted/true volumes (mm³) of GM, WM and CSF inside ``roi``.

    Args:
        pred: ``(X, Y, Z)`` predicted tissue classes (0 bg, 1 CSF, 2 GM, 3 WM).
        truth: ``(X, Y, Z)`` true tissue classes; ``IGNORE_INDEX`` = unlabelled (excluded).
        roi: ``(X, Y, Z)`` bool, True = counts.
        spacing: voxel size in mm (one value or three).
        hd95: compute HD95 (the slowest part); otherwise those columns are NaN.

    Returns:
        ``{column: value}`` with the columns of :func:`metric_columns` (conventions: module docstring).
    """
    if not (pred.shape == truth.shape == roi.shape):
        raise ValueError(f"shape mismatch: pred {pred.shape}, truth {truth.shape}, roi {roi.shape}")
    p, t, m = _prepare(pred, truth, roi)
    step = _spacing(spacing, p.ndim)
    counted = m if m is not None else np.ones(p.shape, bool)
    if counted.any():  # crop to the counted box plus one voxel: nothing outside it counts
        idx = np.nonzero(counted)
        box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
        p, t, counted = p[box], t[box], counted[box]
    voxel = float(np.prod(step))
    masks = {name: (p == _INDEX[name]) & counted for name in REPORTED_CLASSES}
    truths = {name: (t == _INDEX[name]) & counted for name in REPORTED_CLASSES}
    out: dict[str, float] = {}
    for name in REPORTED_CLASSES:
        out[f"dice_{name}"] = _dice_of(masks[name], truths[name])
    for name in REPORTED_CLASSES:
        out[f"hd95_{name}_mm"] = _hd95_of(masks[name], truths[name], step) if hd95 else float("nan")
    for name in REPORTED_CLASSES:
        out[f"vol_pred_{name}_mm3"] = float(masks[name].sum()) * voxel
    for name in REPORTED_CLASSES:
        out[f"vol_true_{name}_mm3"] = float(truths[name].sum()) * voxel
    return out


def mean_dice(rows: Sequence[Mapping[str, object]], classes: Sequence[str] = ("GM", "WM")) -> float:
    """Mean over subjects and ``classes`` of the per-subject Dice, skipping NaN (NaN when nothing counts)."""
    values = [float(r[f"dice_{c}"]) for r in rows for c in classes]  # type: ignore[arg-type]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")
