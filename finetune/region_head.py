"""The segmentation model's second head: brain regions from images (the brainstem and its parts, the nuclei).

A model that only labels tissue needs the input's own region labels to say where the brainstem is, so a
new scan (no label maps) would get no brainstem volume at all. The network therefore has two heads on one
decoder: its last 1×1×1 convolution outputs the 4 tissue classes followed by the :data:`REGION_HEAD`
classes, each group with its own softmax. Two heads rather than one joint label map (tissue × region)
because the two answers are independent questions with their own reference labels (``desc-tissue`` and
``desc-regions``), a joint map would multiply the classes (4 × 8) and leave most combinations empty, and
tissue inside a predicted region is then just the tissue head read inside the region head's outline.

Targets come from the canonical region labels (:mod:`ssl_pretrain.data.labels`): midbrain, pons, medulla,
thalamus, caudate, putamen and pallidum are classes; everything else (cortex, white matter, cerebellum,
background) is ``other``; a voxel labelled only ``brainstem`` (a dataset that does not divide it) is
ignored, since its part is unknown. The loss (:class:`RegionHeadLoss`) is cross-entropy plus soft Dice over
every labelled voxel of the patch except a stage's excluded zone (the subcortical source stage excludes the
brainstem and its band, so it sees no label of the target region, outline included).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from torch import nn

from ssl_pretrain.data.batch import IGNORE_INDEX
from ssl_pretrain.data.labels import REGION_INDEX

REGION_HEAD: tuple[str, ...] = ("other", "midbrain", "pons", "medulla", "thalamus", "caudate", "putamen", "pallidum")
BRAINSTEM_PARTS: tuple[str, ...] = ("midbrain", "pons", "medulla")
# Region groups reported from the head (unions of its classes) beside its classes.
HEAD_GROUPS: dict[str, tuple[str, ...]] = {"brainstem": BRAINSTEM_PARTS}

_TO_HEAD = np.zeros(max(REGION_INDEX.values()) + 1, np.int64)
for _i, _name in enumerate(REGION_HEAD[1:], start=1):
    _TO_HEAD[REGION_INDEX[_name]] = _i
_TO_HEAD[REGION_INDEX["brainstem"]] = IGNORE_INDEX  # undivided brainstem: which part is unknown
_TO_CANONICAL = np.asarray([0, *(REGION_INDEX[n] for n in REGION_HEAD[1:])], np.uint8)


def head_target(regions: torch.Tensor) -> torch.Tensor:
    """Region-head classes of canonical region labels (``IGNORE_INDEX`` where only ``brainstem`` is known).

    Args:
        regions: ``(B, 1, X, Y, Z)`` canonical region indices.
    """
    lut = torch.as_tensor(_TO_HEAD, device=regions.device)
    return lut[regions.long().clamp(0, len(_TO_HEAD) - 1)]


def head_to_canonical(labels: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` head classes → canonical region indices (``other`` → 0), uint8, for a regions dseg."""
    return _TO_CANONICAL[np.asarray(labels, np.int64)]


def class_mask(labels: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Voxels whose head class is one of ``names`` (bool)."""
    return np.isin(labels, [REGION_HEAD.index(n) for n in names])


class RegionHeadLoss(nn.Module):
    """``lambda_dice * soft Dice + lambda_ce * cross-entropy`` of the region head over the counted voxels.

    Args:
        lambda_dice, lambda_ce: weights of the two terms (not both 0).
        smooth: Dice's smoothing constant.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, smooth: float = 1e-5) -> None:
        super().__init__()
        if min(lambda_dice, lambda_ce) < 0 or lambda_dice + lambda_ce == 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0 and not both 0, got {lambda_dice}, {lambda_ce}")
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce
        self.dice = MaskedDiceLoss(
            include_background=False, softmax=True, batch=True, smooth_nr=smooth, smooth_dr=smooth
        )

    def forward(self, logits: torch.Tensor, regions: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
        """The loss.

        Args:
            logits: ``(B, len(REGION_HEAD), X, Y, Z)``.
            regions: ``(B, 1, X, Y, Z)`` canonical region labels.
            counted: ``(B, 1, X, Y, Z)`` bool, 1 = the voxel may count (it is labelled and not excluded).
        """
        if logits.shape[1] != len(REGION_HEAD):
            raise ValueError(f"expected {len(REGION_HEAD)} region channels, got {logits.shape[1]}")
        target = head_target(regions)
        valid = counted.bool() & (target != IGNORE_INDEX)
        labels = torch.where(valid, target, torch.zeros_like(target))
        mask = valid.to(logits.dtype)
        loss = logits.new_zeros(())
        if self.lambda_dice:
            onehot = F.one_hot(labels[:, 0], len(REGION_HEAD)).movedim(-1, 1).to(logits.dtype)
            loss = loss + self.lambda_dice * self.dice(logits, onehot, mask=mask)
        if self.lambda_ce:
            ce = F.cross_entropy(logits, labels[:, 0], reduction="none")
            loss = loss + self.lambda_ce * (ce * mask[:, 0]).sum() / mask.sum().clamp_min(1.0)
        return loss


def region_columns() -> list[str]:
    """``metrics.csv`` columns of the region head: Dice of the whole brainstem, then of each class."""
    return [f"dice_region_{name}" for name in (*HEAD_GROUPS, *REGION_HEAD[1:])]


def region_dice(pred: np.ndarray, regions: np.ndarray, counted: np.ndarray | None = None) -> dict[str, float]:
    """Dice of the predicted regions against the reference, per class and for the whole brainstem.

    Args:
        pred: ``(X, Y, Z)`` head classes (:data:`REGION_HEAD` indices).
        regions: ``(X, Y, Z)`` canonical region labels (the reference).
        counted: ``(X, Y, Z)`` bool, where the comparison is made (e.g. the box that was predicted); all if None.

    Returns:
        ``{column of region_columns(): Dice}``: NaN where the region is absent from both, 0 where from one.
        An undivided ``brainstem`` reference counts for the whole brainstem only.
    """
    where = np.ones(pred.shape, bool) if counted is None else np.asarray(counted, bool)
    target = _TO_HEAD[np.clip(np.asarray(regions, np.int64), 0, len(_TO_HEAD) - 1)]
    undivided = np.asarray(regions) == REGION_INDEX["brainstem"]
    out = {}
    for group, names in HEAD_GROUPS.items():
        out[f"dice_region_{group}"] = _dice(
            class_mask(pred, names) & where, (class_mask(target, names) | undivided) & where
        )
    for i, name in enumerate(REGION_HEAD[1:], start=1):
        out[f"dice_region_{name}"] = _dice((pred == i) & where, (target == i) & where)
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else float(2 * int((a & b).sum()) / total)
