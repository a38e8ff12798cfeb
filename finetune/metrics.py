"""Per-subject segmentation metrics inside a stage's ROI: Dice, HD95 and class volumes.

Dice and HD95 come from MONAI (``compute_dice``, ``compute_hausdorff_distance`` with ``percentile=95``
and the voxel spacing, so HD95 is in mm). Both the prediction and the truth are restricted to the ROI
(voxels outside it, and voxels without a tissue label, count as neither). Conventions for empty classes:
Dice is NaN when a class is absent from both the prediction and the truth (0 when absent from only one);
HD95 is NaN when a class is absent from either.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from ssl_pretrain.data.batch import IGNORE_INDEX
from ssl_pretrain.data.labels import TISSUE_CLASSES

# The classes reported, in column order (background is not a tissue of interest).
REPORTED_CLASSES: tuple[str, ...] = ("GM", "WM", "CSF")
_INDEX = {name: idx for idx, name in TISSUE_CLASSES.items()}


def metric_columns() -> list[str]:
    """Column names of :func:`roi_metrics`, in order."""
    cols = [f"dice_{c}" for c in REPORTED_CLASSES] + [f"hd95_{c}_mm" for c in REPORTED_CLASSES]
    cols += [f"vol_pred_{c}_mm3" for c in REPORTED_CLASSES] + [f"vol_true_{c}_mm3" for c in REPORTED_CLASSES]
    return cols


def _onehot(labels: np.ndarray, n: int) -> torch.Tensor:
    t = torch.as_tensor(labels.astype(np.int64))
    return torch.nn.functional.one_hot(t, n).movedim(-1, 0)[None].float()  # (1, n, X, Y, Z)


def _crop(*arrays: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Crop to the bounding box of ``mask`` plus one voxel (surface distances are unchanged)."""
    if not mask.any():
        return list(arrays)
    idx = np.nonzero(mask)
    sl = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
    return [a[sl] for a in arrays]


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
        ``{column: value}`` with the columns of :func:`metric_columns`.
    """
    if not (pred.shape == truth.shape == roi.shape):
        raise ValueError(f"shape mismatch: pred {pred.shape}, truth {truth.shape}, roi {roi.shape}")
    step = np.broadcast_to(np.asarray(spacing, float), (3,))
    counted = roi.astype(bool) & (truth != IGNORE_INDEX)
    p = np.where(counted, pred, 0)
    t = np.where(counted, truth, 0)
    p, t = _crop(p, t, mask=counted)
    n = len(TISSUE_CLASSES)
    yp, yt = _onehot(p, n), _onehot(t, n)
    dice = compute_dice(yp, yt, include_background=True, ignore_empty=False)[0]
    voxel = float(np.prod(step))
    out: dict[str, float] = {}
    present_p = yp[0].flatten(1).sum(1)
    present_t = yt[0].flatten(1).sum(1)
    for name in REPORTED_CLASSES:
        c = _INDEX[name]
        both_empty = present_p[c] == 0 and present_t[c] == 0
        out[f"dice_{name}"] = float("nan") if both_empty else float(dice[c])
    for name in REPORTED_CLASSES:
        c = _INDEX[name]
        if hd95 and present_p[c] > 0 and present_t[c] > 0:
            with warnings.catch_warnings():  # MONAI warns about its own deprecated internal argument
                warnings.simplefilter("ignore", FutureWarning)
                hd = compute_hausdorff_distance(
                    yp[:, c : c + 1], yt[:, c : c + 1], include_background=True, percentile=95, spacing=step.tolist()
                )
            out[f"hd95_{name}_mm"] = float(hd[0, 0])
        else:
            out[f"hd95_{name}_mm"] = float("nan")
    for name in REPORTED_CLASSES:
        out[f"vol_pred_{name}_mm3"] = float(present_p[_INDEX[name]]) * voxel
    for name in REPORTED_CLASSES:
        out[f"vol_true_{name}_mm3"] = float(present_t[_INDEX[name]]) * voxel
    return out


def mean_dice(rows: Sequence[Mapping[str, object]], classes: Sequence[str] = ("GM", "WM")) -> float:
    """Mean over subjects and ``classes`` of the per-subject Dice, ignoring NaN (NaN when nothing counts)."""
    values = [float(r[f"dice_{c}"]) for r in rows for c in classes]  # type: ignore[arg-type]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")
