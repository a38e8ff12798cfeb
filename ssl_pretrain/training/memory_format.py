"""The memory layout of a 3D network's weights (``trainer.memory_format``): measured per device, not assumed.

``channels_last_3d`` stores a 5D tensor as ``(N, X, Y, Z, C)`` in memory. PyTorch's convolutions pick
their layout from their operands (input *or* weight in channels-last → output in channels-last), so
converting the network's weights is enough: activations follow. Numerically the result is the same
convolution up to floating-point summation order.

``auto`` resolves per device, by measurement (``benchmarks/finetune_stage.py`` reports
``memory_format_step_speedup``: the median training step with ``contiguous`` over the same with ``auto``):

* CPU: ``channels_last_3d`` (oneDNN's blocked convolutions): an earlier session measured 0.118 s per training
  step of the quick preset's [8, 16, 32, 64] U-Net on two 32³ patches against 0.195 s contiguous, on 2 cores; that
  script is gone, and the benchmark above now measures the ratio again on each machine.
* CUDA: ``contiguous`` (cuDNN's default) until a GPU measurement says otherwise.

In ``channels_last_3d``, every instance norm without running statistics is computed by the group-norm kernel
with one group per channel (:func:`instance_norms_as_group_norms`): the same normalisation over each sample's
and channel's voxels, with the same ``weight``/``bias`` parameters and state-dict keys, so checkpoints load either
way. PyTorch's instance norm runs through batch norm on a ``(1, N·C, …)`` view and so copies a channels-last
input to contiguous and back; the group-norm CPU kernel reads channels-last directly. On the quick network
(2 cores, 2026-12-07) that made a training step 1.03-1.07x faster (``benchmarks/step_options.py``, variant
``instance_norm``) and a sliding-window forward pass of 8 windows 1.37x; outputs agree within 1.3e-5 of values up
to 3, gradients within 3e-7.
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_pretrain.errors import ConfigError

FORMATS = {"channels_last_3d": torch.channels_last_3d, "contiguous": torch.contiguous_format}
AUTO = {"cpu": "channels_last_3d", "gpu": "contiguous"}
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def resolve_memory_format(setting: str, accelerator: str) -> str:
    """``trainer.memory_format`` (``auto`` | ``channels_last_3d`` | ``contiguous``) on a resolved accelerator.

    Args:
        setting: the config value.
        accelerator: ``cpu`` or ``gpu`` (see :func:`ssl_pretrain.training.resolve_accelerator`).

    Raises:
        ConfigError: an unknown value.
    """
    value = str(setting).lower()
    if value == "auto":
        return AUTO.get(accelerator, "contiguous")
    if value not in FORMATS:
        raise ConfigError("trainer.memory_format", f"expected auto, {' or '.join(FORMATS)}, got {setting!r}")
    return value


def apply_memory_format(net: nn.Module, memory_format: str) -> nn.Module:
    """Store ``net``'s 4D/5D weights in ``memory_format`` (in place; returns ``net``); in ``channels_last_3d`` its
    instance norms also run on the group-norm kernel (:func:`instance_norms_as_group_norms`)."""
    net = net.to(memory_format=FORMATS[memory_format])
    return instance_norms_as_group_norms(net) if memory_format == "channels_last_3d" else net


def instance_norms_as_group_norms(net: nn.Module) -> nn.Module:
    """Replace (in place; returns ``net``) each ``nn.InstanceNorm1d/2d/3d`` without running statistics by an
    ``nn.GroupNorm`` with one group per channel, the same ``eps`` and the same affine parameters (the tensors
    themselves, so an optimiser built before still holds them). Instance norms that track running statistics
    normalise differently in eval mode and are left alone."""
    for name, child in net.named_children():
        if isinstance(child, INSTANCE_NORMS) and not child.track_running_stats:
            group = nn.GroupNorm(child.num_features, child.num_features, eps=child.eps, affine=child.affine)
            if child.affine:
                group.weight, group.bias = child.weight, child.bias
            group.train(child.training)
            setattr(net, name, group)
        else:
            instance_norms_as_group_norms(child)
    return net
