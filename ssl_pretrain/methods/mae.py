"""Masked autoencoder for multi-channel 3D MRI.

He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
(https://arxiv.org/abs/2111.06377). Adapted to a convolutional 3D U-Net as in masked image modelling
for medical volumes: random 3D blocks of the input are hidden (set to 0 or to a learned per-channel
token), the U-Net reconstructs every channel, and the loss is the MSE on masked voxels only, against
targets normalised per block (MAE's ``norm_pix_loss``). Channels of missing modalities never count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from ssl_pretrain.data.batch import IMAGE, PRESENCE
from ssl_pretrain.methods.masking import apply_mask, as_block, normalise_blocks, random_block_mask


class MAELoss(nn.Module):
    """MSE on masked voxels of present channels, against per-block normalised targets.

    Args:
        block: the mask block edge(s) in voxels; targets are normalised per block of this size.
        norm_target: normalise each block of each target channel by its own mean/std (MAE's
            ``norm_pix_loss``); if False the raw target is used.
        eps: added to the block variance.
    """

    def __init__(self, block: int | Sequence[int], norm_target: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.block = as_block(block)
        self.norm_target = norm_target
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor, presence: Tensor) -> Tensor:
        """Mean squared error over the voxels that count.

        Args:
            pred: ``(B, C, X, Y, Z)`` reconstruction.
            target: ``(B, C, X, Y, Z)`` the unmasked input.
            mask: ``(B, 1, X, Y, Z)``, 1 = masked (counted), 0 = visible (ignored).
            presence: ``(B, C)``, 1 = modality present; absent channels are ignored.

        Returns:
            Scalar: sum of squared errors over masked voxels of present channels divided by their count
            (0, with a zero gradient, when nothing counts).
        """
        if pred.shape != target.shape or mask.shape != (target.shape[0], 1, *target.shape[2:]):
            raise ValueError(
                f"shapes disagree: pred {tuple(pred.shape)}, target {tuple(target.shape)}, mask {tuple(mask.shape)}"
            )
        target = target.float()
        if self.norm_target:
            target = normalise_blocks(target, self.block, self.eps)
        weight = mask.float() * presence.float().view(*presence.shape, 1, 1, 1)
        squared = (pred.float() - target) ** 2 * weight
        return squared.sum() / weight.sum().clamp_min(1.0)


class MAE(nn.Module):
    """The MAE objective around a U-Net whose output has the input's channels.

    Args:
        unet: a U-Net ``(B, C, X, Y, Z) -> (B, C, X, Y, Z)`` with an ``encoder`` attribute.
        in_channels: C.
        mask_ratio: fraction of blocks masked per sample.
        mask_block: block edge(s) in voxels.
        norm_target: per-block normalised targets (see :class:`MAELoss`).
        mask_token: replace masked voxels by a learned value per channel instead of 0.
    """

    name = "mae"
    views = 1

    def __init__(
        self,
        unet: nn.Module,
        in_channels: int,
        mask_ratio: float = 0.75,
        mask_block: int | Sequence[int] = 8,
        norm_target: bool = True,
        mask_token: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.unet = unet
        self.mask_ratio = float(mask_ratio)
        self.mask_block = as_block(mask_block)
        self.mask_token = nn.Parameter(torch.zeros(in_channels)) if mask_token else None
        self.loss = MAELoss(self.mask_block, norm_target)

    @property
    def encoder(self) -> nn.Module:
        """The U-Net's encoder: what pretraining leaves behind."""
        return cast(nn.Module, self.unet.encoder)

    def draw_mask(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A random ``(B, 1, X, Y, Z)`` block mask for ``image`` (1 = masked)."""
        return random_block_mask(
            image.shape[0], image.shape[2:], self.mask_block, self.mask_ratio, generator, image.device
        )

    def reconstruct(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Mask ``image`` and reconstruct it.

        Args:
            image: ``(B, C, X, Y, Z)``.
            mask: ``(B, 1, X, Y, Z)``, 1 = masked.

        Returns:
            ``(masked_input, reconstruction)``, both ``(B, C, X, Y, Z)``; the reconstruction is in
            block-normalised units when ``norm_target`` is on.
        """
        masked = apply_mask(image, mask, self.mask_token)
        return masked, self.unet(masked)

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Loss of one batch: ``{"loss": …, "mae": …}`` (the same scalar under both names)."""
        image, presence = batch[IMAGE], batch[PRESENCE]
        mask = self.draw_mask(image, generator)
        _, pred = self.reconstruct(image, mask)
        loss = self.loss(pred, image, mask, presence)
        return {"loss": loss, "mae": loss.detach()}
