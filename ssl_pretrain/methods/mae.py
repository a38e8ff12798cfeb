"""Masked autoencoder for multi-channel 3D MRI, with cross-modal targets.

He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022
(https://arxiv.org/abs/2111.06377), adapted to a convolutional 3D U-Net as in masked image modelling for
medical volumes: random 3D blocks of the input are hidden (set to 0, or to a learned per-channel token in
the channels the patch shows), the U-Net reconstructs every channel, and the loss is the MSE on hidden
voxels. Choices for brain MRI:

- **Plain targets** (``norm_target=False``, the default): MAE's ``norm_pix_loss`` whitens each block by
  its own mean and SD, which removes the block mean (the GM/WM/CSF intensity the downstream task needs)
  and blows homogeneous blocks (white matter, background) up to unit-variance noise. nnssl's MAE for 3D
  brain MRI uses plain masked MSE (Wald et al. 2024, https://arxiv.org/abs/2412.17041).
- **Cross-modal targets** (``cross_modal=True``, as MultiMAE: Bachmann, Mizrahi, Atanov, Zamir,
  "MultiMAE: Multi-modal Multi-task Masked Autoencoders", ECCV 2022, https://arxiv.org/abs/2204.01678):
  the input shows a subset of the modalities (:mod:`ssl_pretrain.data.subsets`, e.g. T1w alone) and the
  loss reconstructs every modality the subject *acquired*. A modality that is dropped from the input is
  hidden everywhere, so all its voxels count; a shown modality counts at its masked voxels. The encoder
  thereby learns T1w → T2w/FA/MD, what T1w-only inference needs.
- **Clean targets**: the target is the patch before intensity augmentation and artefacts (batch key
  ``target``; spatial augmentation applies to both), so the loss has no irreducible noise term.
- **Sparse normalisation** (``sparse_norm=True``, SparK: Tian et al., ICLR 2023,
  https://arxiv.org/abs/2301.03580): the encoder computes instance-norm statistics on visible voxels
  only and keeps masked voxels empty (:mod:`ssl_pretrain.models.sparse`); the mask token is then unused
  (SparK's masked input is empty) and not created.

The loss averages, per modality, the squared error over the voxels that count in the whole batch, then
averages over the modalities that have any (MultiMAE sums its per-modality losses; the mean keeps the
scale of a single-channel MSE).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import ClassVar, cast

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_pretrain.data.batch import ACQUIRED, IMAGE, PRESENCE, TARGET
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.methods.base import Patch, PretrainMethod
from ssl_pretrain.methods.masking import apply_mask, as_block, normalise_blocks, random_block_mask
from ssl_pretrain.models.sparse import SparseMasking
from ssl_pretrain.models.unet import build_unet


def check_masking(cfg: DictConfig, patch: Patch) -> None:
    """Raise :class:`ConfigError` for a ``method.mask_ratio`` outside (0, 1) or a ``method.mask_block`` that
    does not divide the patch ``(X, Y, Z)``."""
    ratio = float(cfg.mask_ratio)
    if not 0.0 < ratio < 1.0:
        raise ConfigError("method.mask_ratio", f"must lie strictly between 0 and 1, got {ratio}")
    try:
        block = as_block(cfg.mask_block)
    except (ValueError, TypeError) as err:
        raise ConfigError("method.mask_block", str(err)) from None
    if any(p % b for p, b in zip(patch, block, strict=True)):
        raise ConfigError("method.mask_block", f"{block} does not divide data.patch_size {patch}")


def loss_weights(mask: Tensor, presence: Tensor, acquired: Tensor | None = None) -> Tensor:
    """Which voxels of which channels count: ``(B, C, X, Y, Z)`` float, 1 = counted.

    Args:
        mask: ``(B, 1, X, Y, Z)``, 1 = masked.
        presence: ``(B, C)``, 1 = the channel is in the input.
        acquired: ``(B, C)``, 1 = the subject has the modality (``None``: same as ``presence``, i.e. no
            cross-modal targets).

    Returns:
        ``acquired · (mask if present else 1)``: masked voxels of shown channels, every voxel of channels
        the subject has but the input drops, nothing of channels the subject lacks.
    """
    shown = presence.float().view(*presence.shape, 1, 1, 1)
    have = shown if acquired is None else acquired.float().view(*acquired.shape, 1, 1, 1)
    return have * (shown * mask.float() + (1.0 - shown))


def per_channel_mse(pred: Tensor, target: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(mse (C,), counted voxels (C,))`` over the batch: ``Σ w (p − t)² / Σ w`` per channel (0 where none count)."""
    squared = (pred.float() - target.float()) ** 2 * weight
    counts = weight.sum(dim=(0, 2, 3, 4))
    return squared.sum(dim=(0, 2, 3, 4)) / counts.clamp_min(1.0), counts


class MAELoss(nn.Module):
    """Masked MSE of a reconstruction, per modality, averaged over the modalities that count.

    Args:
        block: the mask block edge(s) in voxels; with ``norm_target`` targets are normalised per block.
        norm_target: normalise each block of each target channel by its own mean/SD (MAE's
            ``norm_pix_loss``); False (default) uses the intensities themselves.
        eps: added to the block variance.
    """

    def __init__(self, block: int | Sequence[int], norm_target: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.block = as_block(block)
        self.norm_target = norm_target
        self.eps = eps

    def prepare_target(self, target: Tensor) -> Tensor:
        """The target in loss units: block-normalised with ``norm_target``, else as it is (float32)."""
        target = target.float()
        return normalise_blocks(target, self.block, self.eps) if self.norm_target else target

    def forward(
        self, pred: Tensor, target: Tensor, mask: Tensor, presence: Tensor, acquired: Tensor | None = None
    ) -> Tensor:
        """The loss.

        Args:
            pred: ``(B, C, X, Y, Z)`` reconstruction.
            target: ``(B, C, X, Y, Z)`` the clean patch (every acquired channel).
            mask: ``(B, 1, X, Y, Z)``, 1 = masked.
            presence: ``(B, C)``, 1 = the channel is in the input.
            acquired: ``(B, C)``, 1 = the subject has it (cross-modal targets); ``None``: only shown channels count.

        Returns:
            Scalar: mean over channels with counted voxels of their masked MSE (:func:`per_channel_mse`);
            0, with a zero gradient, when nothing counts.
        """
        if pred.shape != target.shape or mask.shape != (target.shape[0], 1, *target.shape[2:]):
            raise ValueError(
                f"shapes disagree: pred {tuple(pred.shape)}, target {tuple(target.shape)}, mask {tuple(mask.shape)}"
            )
        mse, counts = per_channel_mse(pred, self.prepare_target(target), loss_weights(mask, presence, acquired))
        used = (counts > 0).float()
        return (mse * used).sum() / used.sum().clamp_min(1.0)


class MAE(PretrainMethod):
    """The MAE objective around a U-Net whose output has the input's channels (one view, clean targets).

    Args:
        unet: a U-Net ``(B, C, X, Y, Z) -> (B, C, X, Y, Z)`` with an ``encoder`` attribute.
        in_channels: C.
        mask_ratio: fraction of blocks masked per sample.
        mask_block: block edge(s) in voxels.
        norm_target: per-block normalised targets (see :class:`MAELoss`).
        mask_token: masked voxels of shown channels take a learned value per channel instead of 0.
        cross_modal: reconstruct every acquired modality, also those the input drops.
        sparse_norm: SparK-style sparse encoder (statistics on visible voxels; no mask token).
    """

    name: ClassVar[str] = "mae"
    views: ClassVar[int] = 1
    clean_target: ClassVar[bool] = True

    def __init__(
        self,
        unet: nn.Module,
        in_channels: int,
        mask_ratio: float = 0.75,
        mask_block: int | Sequence[int] = 8,
        norm_target: bool = False,
        mask_token: bool = True,
        cross_modal: bool = True,
        sparse_norm: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        self.unet = unet
        self.mask_ratio = float(mask_ratio)
        self.mask_block = as_block(mask_block)
        use_token = mask_token and not sparse_norm
        self.mask_token = nn.Parameter(torch.zeros(in_channels)) if use_token else None
        self.cross_modal = bool(cross_modal)
        self.sparse = SparseMasking(self.encoder) if sparse_norm else None
        self.loss = MAELoss(self.mask_block, norm_target)

    @classmethod
    def from_config(cls, cfg: DictConfig, model_cfg: DictConfig, in_channels: int) -> MAE:
        """MAE on a fresh U-Net ``(B, C, X, Y, Z) -> (B, C, X, Y, Z)`` from ``model_cfg`` (keys of method/mae.yaml)."""
        unet = build_unet(model_cfg, in_channels, in_channels)
        try:
            return cls(
                unet,
                in_channels,
                mask_ratio=float(cfg.mask_ratio),
                mask_block=as_block(cfg.mask_block),
                norm_target=bool(cfg.get("norm_target", False)),
                mask_token=bool(cfg.get("mask_token", True)),
                cross_modal=bool(cfg.get("cross_modal", True)),
                sparse_norm=bool(cfg.get("sparse_norm", False)),
            )
        except ValueError as err:
            if "sparse normalisation" in str(err):
                raise ConfigError("method.sparse_norm", str(err)) from None
            raise

    @classmethod
    def check_config(cls, cfg: DictConfig, patch: Patch, batch_size: int) -> None:
        """The mask ratio and block (:func:`check_masking`)."""
        check_masking(cfg, patch)

    @property
    def encoder(self) -> nn.Module:
        """The U-Net's encoder: what pretraining leaves behind."""
        return cast(nn.Module, self.unet.encoder)

    def reconstructor(self) -> MAE:
        """Itself: its reconstructions are the run's figures and reconstruction evidence."""
        return self

    def draw_mask(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A random ``(B, 1, X, Y, Z)`` block mask for ``image`` (1 = masked)."""
        return random_block_mask(
            image.shape[0], image.shape[2:], self.mask_block, self.mask_ratio, generator, image.device
        )

    def reconstruct(self, image: Tensor, mask: Tensor, presence: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mask ``image`` and reconstruct it.

        Args:
            image: ``(B, C, X, Y, Z)``; absent channels are zero.
            mask: ``(B, 1, X, Y, Z)``, 1 = masked (all zeros: reconstruct from the whole input).
            presence: ``(B, C)``, 1 = the channel is in ``image`` (the token goes there only); None = all.

        Returns:
            ``(masked_input, reconstruction)``, both ``(B, C, X, Y, Z)``; the reconstruction is in
            block-normalised units when ``norm_target`` is on.
        """
        masked = apply_mask(image, mask, self.mask_token, presence)
        sparse = self.sparse.visible(1.0 - mask) if self.sparse is not None else nullcontext()
        with sparse:
            return masked, self.unet(masked)

    def targets(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(target (B, C, X, Y, Z), acquired (B, C))`` of a batch.

        The clean ``target`` and ``acquired`` when the batch has them (``acquired`` only with
        ``cross_modal``, else ``presence``); a batch without ``target`` (e.g. built by hand) reconstructs
        its own ``image``, shown channels only.
        """
        if TARGET not in batch:
            return batch[IMAGE], batch[PRESENCE]
        acquired = batch.get(ACQUIRED, batch[PRESENCE]) if self.cross_modal else batch[PRESENCE]
        return batch[TARGET], acquired

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Loss of one batch: ``{"loss", "mae"}`` (the same scalar), plus, when the batch drops modalities it
        reconstructs, ``"mae_shown"`` and ``"mae_cross"`` (the loss of shown and of dropped channels)."""
        image, presence = batch[IMAGE], batch[PRESENCE]
        target, acquired = self.targets(batch)
        mask = self.draw_mask(image, generator)
        _, pred = self.reconstruct(image, mask, presence)
        loss = self.loss(pred, target, mask, presence, acquired)
        out = {"loss": loss, "mae": loss.detach()}
        dropped = acquired.float() * (1.0 - presence.float())
        if bool(dropped.any()):
            with torch.no_grad():
                prepared = self.loss.prepare_target(target)
                for name, have in (("mae_shown", presence.float() * acquired.float()), ("mae_cross", dropped)):
                    mse, counts = per_channel_mse(pred, prepared, loss_weights(mask, presence, have))
                    used = (counts > 0).float()
                    out[name] = (mse * used).sum() / used.sum().clamp_min(1.0)
        return out
