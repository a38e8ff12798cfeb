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
"""

from __future__ import annotations

import torch
from torch import nn

from ssl_pretrain.errors import ConfigError

FORMATS = {"channels_last_3d": torch.channels_last_3d, "contiguous": torch.contiguous_format}
AUTO = {"cpu": "channels_last_3d", "gpu": "contiguous"}


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
    """Store ``net``'s 4D/5D weights in ``memory_format`` (in place; returns ``net``)."""
    return net.to(memory_format=FORMATS[memory_format])
