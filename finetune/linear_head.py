"""The ``finetune.policy=linear`` network: a frozen encoder read out by one linear map per voxel.

The head is a 1×1×1 convolution over the *hypercolumn* of every voxel: the encoder's multi-scale features,
each upsampled (trilinear) to the input grid and concatenated (Hariharan et al., "Hypercolumns for Object
Segmentation and Fine-grained Localization", CVPR 2015). It reads the encoder, not the decoder, because
only the encoder is shared by every pretraining method (a contrastive method leaves the decoder random),
so a linear segmentation measures what the encoder itself learned, as the evaluation's voxel probes do.

Since upsampling and a 1×1×1 convolution are both linear and act on different axes, they commute: the
head applies one 1×1×1 convolution per scale at that scale's resolution and upsamples the class maps
(``K`` channels instead of ``sum(C_i)``), which is the same function at a fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_pretrain.models.unet import ResEncoder


class HypercolumnHead(nn.Module):
    """Linear voxel classifier on upsampled multi-scale features.

    Args:
        spatial_dims: 3 (or 2).
        in_channels: feature channels per scale, fine to coarse (the encoder's ``feature_channels``).
        out_channels: number of classes.

    Shapes:
        ``forward(features, size)``: features ``[(B, in_channels[i], *spatial_i)]`` → ``(B, out_channels, *size)``.
    """

    def __init__(self, spatial_dims: int, in_channels: Sequence[int], out_channels: int) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not in_channels or any(int(c) < 1 for c in in_channels):
            raise ValueError(f"in_channels must be a non-empty list of positive ints, got {list(in_channels)}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        # One bias in total: the sum of per-scale biases would be one bias anyway.
        self.convs = nn.ModuleList(conv(int(c), out_channels, 1, bias=(i == 0)) for i, c in enumerate(in_channels))
        self.mode = "trilinear" if spatial_dims == 3 else "bilinear"

    def forward(self, features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
        """Logits ``(B, out_channels, *size)`` from the encoder's features."""
        if len(features) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} feature maps, got {len(features)}")
        out = None
        for conv, feat in zip(self.convs, features, strict=True):
            logits = conv(feat)
            if tuple(logits.shape[2:]) != tuple(size):
                logits = F.interpolate(logits, size=tuple(size), mode=self.mode, align_corners=False)
            out = logits if out is None else out + logits
        assert out is not None
        return out


class LinearProbeNet(nn.Module):
    """``.encoder`` (:class:`ResEncoder`) + ``.head`` (:class:`HypercolumnHead`).

    Args:
        encoder: the (pretrained) encoder.
        out_channels: number of classes.

    Shapes:
        ``(B, C_in, X, Y, Z) -> (B, out_channels, X, Y, Z)``.
    """

    input_weight_key = "encoder." + ResEncoder.input_weight_key

    def __init__(self, encoder: ResEncoder, out_channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = HypercolumnHead(encoder.spatial_dims, encoder.feature_channels, out_channels)
        self.out_channels = out_channels
        self.arch_config: dict[str, Any] = {**encoder.arch_config, "out_channels": out_channels, "head": "hypercolumn"}

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, out_channels, X, Y, Z)``."""
        return self.head(self.encoder(x), x.shape[2:])


def hypercolumn(features: Sequence[Tensor], size: Sequence[int]) -> Tensor:
    """The explicit hypercolumn ``(B, sum C_i, *size)`` (reference for :class:`HypercolumnHead`)."""
    mode = "trilinear" if len(size) == 3 else "bilinear"
    return torch.cat([F.interpolate(f, size=tuple(size), mode=mode, align_corners=False) for f in features], dim=1)
