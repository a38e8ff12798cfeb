"""ROI-masked Dice + cross-entropy: the supervised stages' loss counts only voxels inside the stage's ROI.

A stage segments tissue (0 background, 1 CSF, 2 GM, 3 WM) but is judged only inside its region of
interest (the subcortical nuclei plus a margin, or the brainstem). Voxels outside the ROI, and voxels
without a tissue label (``IGNORE_INDEX``), have no influence on the loss or its gradient: changing the
network's output there leaves the loss unchanged.

The Dice term is MONAI's :class:`~monai.losses.MaskedDiceLoss` (Milletari et al., "V-Net", 3DV 2016),
fed a one-hot target built *before* masking (MONAI would otherwise one-hot the masked target and count
the outside voxels as background); the cross-entropy term is averaged over the ROI voxels only, as in
MONAI's ``DiceCELoss`` (Isensee et al., "nnU-Net", Nat. Methods 2021, uses the same sum).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss
from torch import nn

from ssl_pretrain.data.batch import IGNORE_INDEX


class ROIDiceCELoss(nn.Module):
    """``lambda_dice * soft Dice + lambda_ce * cross-entropy``, both restricted to an ROI mask.

    Args:
        num_classes: number of output channels (4: background, CSF, GM, WM).
        lambda_dice: weight of the Dice term.
        lambda_ce: weight of the cross-entropy term.
        include_background: count class 0 in the Dice term (cross-entropy always covers every class).
            Inside a brain ROI background is rare, so it is left out of Dice by default.
        batch: sum Dice's intersections and sums over the batch before dividing (stable for the
            small ROI fractions of a patch; a patch without ROI voxels then costs nothing).
        smooth: the ``smooth_nr``/``smooth_dr`` constant of the Dice ratio.
    """

    def __init__(
        self,
        num_classes: int = 4,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        include_background: bool = False,
        batch: bool = True,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if lambda_dice < 0 or lambda_ce < 0 or lambda_dice + lambda_ce == 0:
            raise ValueError(f"lambda_dice and lambda_ce must be >= 0 and not both 0, got {lambda_dice}, {lambda_ce}")
        self.num_classes = num_classes
        self.lambda_dice = lambda_dice
        self.lambda_ce = lambda_ce
        self.dice = MaskedDiceLoss(
            include_background=include_background, softmax=True, batch=batch, smooth_nr=smooth, smooth_dr=smooth
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor, roi: torch.Tensor) -> torch.Tensor:
        """The loss over ROI voxels.

        Args:
            logits: ``(B, K, X, Y, Z)`` raw network outputs.
            target: ``(B, 1, X, Y, Z)`` integer tissue classes in ``[0, K)``; ``IGNORE_INDEX`` = unlabelled.
            roi: ``(B, 1, X, Y, Z)`` bool or {0,1}: 1 = the voxel counts.

        Returns:
            A scalar tensor (0 when no voxel counts).
        """
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} channels in logits, got {logits.shape[1]}")
        if target.shape[1] != 1 or target.shape[2:] != logits.shape[2:] or roi.shape != target.shape:
            raise ValueError(
                f"shape mismatch: logits {tuple(logits.shape)}, target {tuple(target.shape)}, roi {tuple(roi.shape)}"
            )
        target = target.long()
        valid = roi.bool() & (target != IGNORE_INDEX)
        labels = torch.where(valid, target, torch.zeros_like(target))
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"target values must lie in [0, {self.num_classes}) or be IGNORE_INDEX")
        mask = valid.to(logits.dtype)
        loss = logits.new_zeros(())
        if self.lambda_dice:
            onehot = F.one_hot(labels[:, 0], self.num_classes).movedim(-1, 1).to(logits.dtype)
            loss = loss + self.lambda_dice * self.dice(logits, onehot, mask=mask)
        if self.lambda_ce:
            ce = F.cross_entropy(logits, labels[:, 0], reduction="none")  # (B, X, Y, Z)
            loss = loss + self.lambda_ce * (ce * mask[:, 0]).sum() / mask.sum().clamp_min(1.0)
        return loss
