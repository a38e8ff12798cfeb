"""Fine-tuning policies (``finetune.policy``): which weights train, and at which learning rate.

- ``full``: every weight trains; the encoder's learning rate is ``optim.lr * optim.encoder_lr_scale``
  (1 by default, whatever the initialisation, so that arms of a transfer study differ only in where their
  weights start; 0 keeps the encoder's weights fixed while it stays in train mode).
- ``frozen_encoder``: the encoder is frozen (no gradient, kept in eval mode); the U-Net decoder trains.
- ``linear``: the encoder is frozen and read out by a 1×1×1 convolution over its upsampled multi-scale
  features (:class:`~finetune.linear_head.LinearProbeNet`); no decoder.

The network of a policy is a :class:`~ssl_pretrain.models.unet.UNet` (``full``, ``frozen_encoder``) or a
:class:`~finetune.linear_head.LinearProbeNet` (``linear``); both expose ``.encoder``, so pretrained
encoder weights load the same way into either.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from finetune.linear_head import LinearProbeNet
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.models.unet import build_encoder, build_unet
from ssl_pretrain.training.optim import param_groups as training_param_groups

POLICIES = ("full", "frozen_encoder", "linear")


def check_policy(policy: str) -> str:
    """Return ``policy`` if known.

    Raises:
        ConfigError: naming ``finetune.policy``.
    """
    if policy not in POLICIES:
        raise ConfigError("finetune.policy", f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    return policy


def build_segmentation_net(model_cfg: Mapping[str, Any], in_channels: int, out_channels: int, policy: str) -> nn.Module:
    """The network of a policy, with freshly initialised weights.

    Args:
        model_cfg: the ``model`` config (configs/model/*.yaml).
        in_channels: number of modalities.
        out_channels: number of tissue classes (4).
        policy: ``full`` | ``frozen_encoder`` | ``linear``.

    Returns:
        A module mapping ``(B, in_channels, X, Y, Z)`` to logits ``(B, out_channels, X, Y, Z)``, with an
        ``.encoder`` attribute.
    """
    check_policy(policy)
    if policy == "linear":
        return LinearProbeNet(build_encoder(model_cfg, in_channels), out_channels)
    return build_unet(model_cfg, in_channels, out_channels)


def encoder_of(net: nn.Module) -> nn.Module:
    """The ``.encoder`` of a policy's network."""
    return net.get_submodule("encoder")


def encoder_frozen(policy: str) -> bool:
    """Whether the policy freezes the encoder."""
    return check_policy(policy) in ("frozen_encoder", "linear")


def apply_policy(net: nn.Module, policy: str) -> None:
    """Freeze what the policy freezes (``requires_grad=False``; the encoder is put in eval mode)."""
    frozen = encoder_frozen(policy)
    encoder = encoder_of(net)
    for param in encoder.parameters():
        param.requires_grad_(not frozen)
    if frozen:
        encoder.eval()


def param_groups(net: nn.Module, policy: str, optim_cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Optimiser parameter groups of the trainable weights (:func:`ssl_pretrain.training.param_groups`):
    no weight decay on 1-D tensors, and under ``full`` the encoder at ``optim.encoder_lr_scale`` x the lr.

    Returns:
        Dicts with ``params``, ``lr_scale`` and ``weight_decay`` for :func:`ssl_pretrain.training.build_optimizer`.

    Raises:
        ConfigError: ``optim.encoder_lr_scale`` is not in [0, 1] (0 leaves the encoder out of the optimiser).
    """
    scale = float(optim_cfg.get("encoder_lr_scale", 1.0))
    if not 0.0 <= scale <= 1.0:
        raise ConfigError("optim.encoder_lr_scale", f"expected a value in [0, 1], got {scale!r}")
    encoder = None if encoder_frozen(policy) else encoder_of(net)
    return training_param_groups(net, optim_cfg, encoder=encoder)
