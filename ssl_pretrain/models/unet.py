"""Residual 3D U-Net from MONAI blocks, split into a separable encoder and decoder.

The encoder (:class:`ResEncoder`) is what self-supervised pretraining leaves behind and what fine-tuning
and probes start from; it returns multi-scale features, fine to coarse. The decoder (:class:`UNetDecoder`)
upsamples them back to the input grid with skip connections. :class:`UNet` holds both: it is the
segmentation network and the MAE reconstruction network.

The layout follows nnU-Net's residual encoder (Isensee et al., "nnU-Net Revisited: A Call for Rigorous
Validation in 3D Medical Image Segmentation", MICCAI 2024, https://arxiv.org/abs/2404.09556): a stem
convolution, then per stage a strided residual unit followed by residual units at that resolution; the
decoder uses transposed convolutions, concatenation with the skip and residual units.

Every architecture hyperparameter is a ``model.*`` config key (configs/model/{cpu,gpu}.yaml), read by
:func:`build_encoder` and :func:`build_unet`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from torch import Tensor, nn

from ssl_pretrain.errors import ConfigError

UPSAMPLE_MODES = ("deconv", "nontrainable")
NormAct = str | tuple[str, dict[str, Any]] | None


def _as_tuple_arg(value: Any, name: str) -> Any:
    """A norm/act spec as MONAI wants it: ``"name"`` or ``("name", {kwargs})`` (lists from YAML become tuples)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Sequence) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], Mapping):
        return (value[0], dict(value[1]))
    raise ValueError(f"{name} must be a name or [name, {{arguments}}], got {value!r}")


def _jsonable(value: Any) -> Any:
    """Tuples -> lists (recursively) so an architecture config survives a JSON round trip unchanged."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _per_stage(value: int | Sequence[int], n_stages: int, name: str) -> tuple[int, ...]:
    values = (value,) * n_stages if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != n_stages:
        raise ValueError(f"{name} needs one value per stage ({n_stages}), got {list(values)}")
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be >= 1 per stage, got {list(values)}")
    return values


class ResEncoder(nn.Module):
    """Residual 3D encoder with multi-scale outputs.

    A stem convolution (``in_channels -> channels[0]``, stride 1) followed by one stage per entry of
    ``channels``; stage ``i`` is a residual unit with stride ``strides[i]`` and ``num_res_units[i] - 1``
    further residual units at that resolution.

    The stem convolution is the only layer that sees the input channels (``input_weight_key``), so
    weights trained on other modalities can be adapted by modality name
    (:func:`ssl_pretrain.models.checkpoint.load_weights`).

    Args:
        spatial_dims: number of spatial dimensions (3 for volumes; 2 works too).
        in_channels: number of input channels (modalities).
        channels: feature channels per stage, fine to coarse.
        strides: downsampling factor of each stage (relative to the previous one); ``strides[0]`` is
            relative to the input. Inputs must be a multiple of ``prod(strides)`` in every dimension.
        num_res_units: residual units per stage (an int for all stages, or one per stage).
        subunits: convolutions per residual unit.
        kernel_size: convolution kernel size.
        norm: MONAI norm spec, e.g. ``"instance"`` or ``("instance", {"affine": True})``.
        act: MONAI activation spec, e.g. ``"prelu"`` or ``("leakyrelu", {"negative_slope": 0.01})``.
        dropout: dropout probability after each convolution (0 disables).

    Shapes:
        ``forward(x)`` with ``x`` of shape ``(B, in_channels, X, Y, Z)`` returns a list of ``len(channels)``
        tensors; entry ``i`` has shape ``(B, channels[i], X / s_i, Y / s_i, Z / s_i)`` with
        ``s_i = strides[0] * … * strides[i]``.
    """

    input_weight_key = "stem.conv.weight"

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (1, 2, 2, 2),
        num_res_units: int | Sequence[int] = 2,
        subunits: int = 2,
        kernel_size: int = 3,
        norm: NormAct = ("instance", {"affine": True}),
        act: NormAct = "prelu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        channels = tuple(int(c) for c in channels)
        strides = tuple(int(s) for s in strides)
        if not channels or any(c < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive ints, got {list(channels)}")
        if len(strides) != len(channels):
            raise ValueError(f"strides needs one value per stage ({len(channels)}), got {list(strides)}")
        if any(s < 1 for s in strides):
            raise ValueError(f"strides must be >= 1, got {list(strides)}")
        res_units = _per_stage(num_res_units, len(channels), "num_res_units")
        if subunits < 1:
            raise ValueError(f"subunits must be >= 1, got {subunits}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        norm, act = _as_tuple_arg(norm, "norm"), _as_tuple_arg(act, "act")

        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.feature_channels: tuple[int, ...] = channels
        self.strides: tuple[int, ...] = strides
        self.total_stride = math.prod(strides)
        self.arch_config: dict[str, Any] = _jsonable(
            {
                "spatial_dims": spatial_dims,
                "in_channels": in_channels,
                "channels": channels,
                "strides": strides,
                "num_res_units": res_units,
                "subunits": subunits,
                "kernel_size": kernel_size,
                "norm": norm,
                "act": act,
                "dropout": dropout,
            }
        )
        common: dict[str, Any] = {"kernel_size": kernel_size, "norm": norm, "act": act, "dropout": dropout or None}
        self.stem = Convolution(spatial_dims, in_channels, channels[0], strides=1, **common)
        stages = []
        previous = channels[0]
        for width, stride, n_units in zip(channels, strides, res_units, strict=True):
            units = [ResidualUnit(spatial_dims, previous, width, strides=stride, subunits=subunits, **common)]
            units += [
                ResidualUnit(spatial_dims, width, width, strides=1, subunits=subunits, **common)
                for _ in range(n_units - 1)
            ]
            stages.append(nn.Sequential(*units))
            previous = width
        self.stages = nn.ModuleList(stages)

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless ``x`` is ``(B, in_channels, *spatial)`` with sizes divisible by the total stride."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}D input (B, C, spatial…), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got shape {tuple(x.shape)}")
        if any(s % self.total_stride for s in x.shape[2:]):
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} is not a multiple of the total stride {self.total_stride} "
                f"(model.strides={list(self.strides)}); use patches that are"
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Multi-scale features of ``x`` ``(B, C_in, X, Y, Z)``, fine to coarse (see the class docstring)."""
        self.check_input(x)
        h = self.stem(x)
        features = []
        for stage in self.stages:
            h = stage(h)
            features.append(h)
        return features


class UNetDecoder(nn.Module):
    """U-Net decoder: upsample coarse features, concatenate the skip, residual units; a 1×1 head.

    Args:
        spatial_dims: number of spatial dimensions.
        encoder_channels: the encoder's ``feature_channels`` (fine to coarse).
        out_channels: output channels (classes, or modalities for reconstruction).
        strides: the encoder's ``strides``; level ``i`` is upsampled by ``strides[i]``, and by
            ``strides[0]`` once more before the head when that is not 1.
        num_res_units: residual units per decoder level (>= 1).
        subunits, kernel_size, norm, act, dropout: as in :class:`ResEncoder`.
        upsample: ``"deconv"`` (transposed convolution) or ``"nontrainable"`` (linear interpolation then
            a 1×1 convolution).

    Shapes:
        ``forward(features)`` takes the encoder's list (entry ``i``: ``(B, encoder_channels[i], X / s_i, …)``)
        and returns ``(B, out_channels, X, Y, Z)`` (raw logits / values, no final activation).
    """

    def __init__(
        self,
        spatial_dims: int,
        encoder_channels: Sequence[int],
        out_channels: int,
        strides: Sequence[int],
        num_res_units: int = 1,
        subunits: int = 2,
        kernel_size: int = 3,
        norm: NormAct = ("instance", {"affine": True}),
        act: NormAct = "prelu",
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        encoder_channels = tuple(int(c) for c in encoder_channels)
        strides = tuple(int(s) for s in strides)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not encoder_channels or any(c < 1 for c in encoder_channels):
            raise ValueError(f"encoder_channels must be positive ints, got {list(encoder_channels)}")
        if len(strides) != len(encoder_channels):
            raise ValueError(f"strides needs one value per level ({len(encoder_channels)}), got {list(strides)}")
        if any(s < 1 for s in strides):
            raise ValueError(f"strides must be >= 1, got {list(strides)}")
        if out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {out_channels}")
        if num_res_units < 1:
            raise ValueError(f"num_res_units must be >= 1, got {num_res_units}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        norm, act = _as_tuple_arg(norm, "norm"), _as_tuple_arg(act, "act")
        common: dict[str, Any] = {"kernel_size": kernel_size, "norm": norm, "act": act, "dropout": dropout or None}

        def up(c_in: int, c_out: int, factor: int) -> nn.Module:
            return UpSample(
                spatial_dims, c_in, c_out, scale_factor=factor, mode=upsample, interp_mode="linear", align_corners=False
            )

        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for level in range(len(encoder_channels) - 2, -1, -1):  # coarse to fine
            width = encoder_channels[level]
            self.ups.append(up(encoder_channels[level + 1], width, strides[level + 1]))
            units = [ResidualUnit(spatial_dims, 2 * width, width, subunits=subunits, **common)]
            units += [
                ResidualUnit(spatial_dims, width, width, subunits=subunits, **common) for _ in range(num_res_units - 1)
            ]
            self.blocks.append(nn.Sequential(*units))
        self.final_up = up(encoder_channels[0], encoder_channels[0], strides[0]) if strides[0] != 1 else nn.Identity()
        self.head = Convolution(spatial_dims, encoder_channels[0], out_channels, kernel_size=1, conv_only=True)
        self.encoder_channels = encoder_channels
        self.out_channels = out_channels

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Decode the encoder's features (fine to coarse) to ``(B, out_channels, X, Y, Z)``."""
        if len(features) != len(self.encoder_channels):
            raise ValueError(f"expected {len(self.encoder_channels)} feature maps, got {len(features)}")
        h = features[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(features[:-1]), strict=True):
            h = block(torch.cat([up(h), skip], dim=1))
        return self.head(self.final_up(h))


class UNet(nn.Module):
    """Residual 3D U-Net: ``.encoder`` (:class:`ResEncoder`) + ``.decoder`` (:class:`UNetDecoder`).

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels (modalities).
        out_channels: output channels (classes for segmentation, modalities for MAE reconstruction).
        channels, strides, num_res_units, subunits, kernel_size, norm, act, dropout: the encoder's
            (:class:`ResEncoder`); the decoder shares ``subunits`` … ``dropout``.
        decoder_res_units: residual units per decoder level.
        upsample: decoder upsampling, ``"deconv"`` or ``"nontrainable"``.

    Shapes:
        ``(B, in_channels, X, Y, Z) -> (B, out_channels, X, Y, Z)``; X, Y, Z multiples of ``prod(strides)``.
    """

    input_weight_key = "encoder." + ResEncoder.input_weight_key

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        strides: Sequence[int] = (1, 2, 2, 2),
        num_res_units: int | Sequence[int] = 2,
        decoder_res_units: int = 1,
        subunits: int = 2,
        kernel_size: int = 3,
        norm: NormAct = ("instance", {"affine": True}),
        act: NormAct = "prelu",
        dropout: float = 0.0,
        upsample: str = "deconv",
    ) -> None:
        super().__init__()
        self.encoder = ResEncoder(
            spatial_dims, in_channels, channels, strides, num_res_units, subunits, kernel_size, norm, act, dropout
        )
        self.decoder = UNetDecoder(
            spatial_dims,
            self.encoder.feature_channels,
            out_channels,
            self.encoder.strides,
            decoder_res_units,
            subunits,
            kernel_size,
            norm,
            act,
            dropout,
            upsample,
        )
        self.arch_config: dict[str, Any] = {
            **self.encoder.arch_config,
            "out_channels": out_channels,
            "decoder_res_units": decoder_res_units,
            "upsample": upsample,
        }

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    @property
    def out_channels(self) -> int:
        return self.decoder.out_channels

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, X, Y, Z) -> (B, out_channels, X, Y, Z)``."""
        return self.decoder(self.encoder(x))


ENCODER_KEYS = ("channels", "strides", "num_res_units", "subunits", "kernel_size", "norm", "act", "dropout")
UNET_KEYS = (*ENCODER_KEYS, "decoder_res_units", "upsample")


def _model_kwargs(model_cfg: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    missing = [k for k in (*keys, "spatial_dims") if k not in model_cfg]
    if missing:
        raise ConfigError(f"model.{missing[0]}", "missing from the model config (see configs/model/cpu.yaml)")
    kwargs = {}
    for key in keys:
        value = model_cfg[key]
        if hasattr(value, "_metadata"):  # an OmegaConf node -> plain Python
            from omegaconf import OmegaConf

            value = OmegaConf.to_container(value, resolve=True)
        kwargs[key] = value
    return kwargs


def _build(factory: Any, key_names: Sequence[str], model_cfg: Mapping[str, Any], *args: int) -> Any:
    kwargs = _model_kwargs(model_cfg, key_names)
    try:
        return factory(int(model_cfg["spatial_dims"]), *args, **kwargs)
    except (ValueError, TypeError, KeyError, AssertionError) as err:
        message = str(err)
        first = message.split(" ", 1)[0]
        raise ConfigError(f"model.{first}" if first in kwargs else "model", message) from None


def build_encoder(model_cfg: Mapping[str, Any], in_channels: int) -> ResEncoder:
    """A :class:`ResEncoder` from a ``model`` config (configs/model/*.yaml).

    Args:
        model_cfg: keys ``spatial_dims, channels, strides, num_res_units, subunits, kernel_size, norm, act,
            dropout`` (the decoder keys are ignored).
        in_channels: number of input modalities.

    Raises:
        ConfigError: naming the ``model.*`` key that is missing or invalid.
    """
    return _build(ResEncoder, ENCODER_KEYS, model_cfg, in_channels)


def build_unet(model_cfg: Mapping[str, Any], in_channels: int, out_channels: int) -> UNet:
    """A :class:`UNet` from a ``model`` config (configs/model/*.yaml).

    Args:
        model_cfg: the encoder keys of :func:`build_encoder` plus ``decoder_res_units`` and ``upsample``.
        in_channels: number of input modalities.
        out_channels: classes (segmentation) or modalities (MAE reconstruction).

    Raises:
        ConfigError: naming the ``model.*`` key that is missing or invalid.
    """
    return _build(UNet, UNET_KEYS, model_cfg, in_channels, out_channels)
