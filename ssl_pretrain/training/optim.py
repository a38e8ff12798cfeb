"""AdamW with linear warmup and cosine decay, stepped per optimiser step; parameter groups.

Config keys (the ``optim`` group): ``lr``, ``weight_decay``, ``warmup_steps`` (an int, or a float in
(0, 1) for a fraction of the training steps), ``min_lr_ratio`` (final lr / peak lr), optional ``betas``
(default ``[0.9, 0.999]``) and, for fine-tuning, ``encoder_lr_scale`` (the encoder's lr relative to the
rest; 0 leaves it out of the optimiser).

AdamW runs its fused implementation (one kernel over every parameter) where PyTorch has one for the parameters'
device (CPU and CUDA): the same update up to floating-point rounding, 1.02-1.09x faster per training step of the
quick network on 2 cores than the per-parameter loop (``benchmarks/step_options.py``, variant ``unfused_adamw``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ssl_pretrain.errors import ConfigError

log = logging.getLogger(__name__)
REQUIRED_KEYS = ("lr", "weight_decay", "warmup_steps", "min_lr_ratio")
FUSED_DEVICES = ("cpu", "cuda")  # where torch.optim.AdamW(fused=True) runs


class WarmupCosineSchedule:
    """The lr multiplier after ``step`` optimiser steps (``LambdaLR`` calls it with its step count).

    ``f(s) = (s + 1) / W`` for ``s < W`` (linear warmup reaching 1 at the last warmup step), then
    ``f(s) = r + (1 - r) * (1 + cos(pi * min(1, (s - W) / (T - W)))) / 2`` (cosine decay from 1 at ``s = W``
    to ``r`` at ``s = T`` and after), with ``W`` warmup steps, ``T`` total steps and ``r`` the minimum ratio.
    A plain object rather than a closure so that ``LambdaLR.state_dict`` stores its settings and a
    checkpoint loads with ``weights_only=True``.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= warmup_steps < total_steps:
            raise ValueError(f"warmup_steps must lie in [0, total_steps={total_steps}), got {warmup_steps}")
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"optim.{key}", "missing from the optim config")
    return cfg[key]


def warmup_steps_of(optim_cfg: Mapping[str, Any], total_steps: int) -> int:
    """``optim.warmup_steps`` in steps: an int as is, a float in (0, 1) as a fraction of ``total_steps``.

    A warmup as long as the run (e.g. a 5-step smoke run with the default warmup) is shortened to a tenth
    of the run, with a warning, instead of failing.
    """
    value = _get(optim_cfg, "warmup_steps")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError("optim.warmup_steps", f"must be a step count >= 0 or a fraction in (0, 1), got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        if value >= 1:
            raise ConfigError("optim.warmup_steps", f"a fraction must lie in (0, 1), got {value}")
        steps = round(value * total_steps)
    else:
        steps = int(value)
    if steps >= total_steps:
        shorter = total_steps // 10
        log.warning("optim.warmup_steps=%s >= the %d training steps: warming up over %d", value, total_steps, shorter)
        steps = shorter
    return steps


def param_groups(
    module: nn.Module, optim_cfg: Mapping[str, Any], encoder: nn.Module | None = None
) -> list[dict[str, Any]]:
    """Parameter groups: no weight decay on 1-D tensors (biases, norms, PReLU); the encoder at a scaled lr.

    Args:
        module: the whole trainable model (frozen parameters, ``requires_grad=False``, are left out).
        optim_cfg: the ``optim`` group; ``encoder_lr_scale`` (default 1) scales the encoder's lr.
        encoder: the sub-module whose parameters get ``encoder_lr_scale`` (e.g. ``model.encoder``).

    Returns:
        Groups for :func:`build_optimizer`: dicts with ``params``, ``lr_scale`` and ``weight_decay``
        (empty groups are dropped).
    """
    scale = float(optim_cfg.get("encoder_lr_scale", 1.0) if encoder is not None else 1.0)
    if scale < 0:
        raise ConfigError("optim.encoder_lr_scale", f"must be >= 0, got {scale}")
    weight_decay = float(_get(optim_cfg, "weight_decay"))
    encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for param in module.parameters():
        if not param.requires_grad:
            continue
        in_encoder = id(param) in encoder_ids
        if in_encoder and scale == 0:
            continue
        groups.setdefault((in_encoder, param.ndim <= 1), []).append(param)
    return [
        {"params": params, "lr_scale": scale if in_encoder else 1.0, "weight_decay": 0.0 if no_decay else weight_decay}
        for (in_encoder, no_decay), params in sorted(groups.items())
    ]


def build_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], optim_cfg: Mapping[str, Any], total_steps: int
) -> dict[str, Any]:
    """AdamW with per-step linear warmup and cosine decay, in the form ``configure_optimizers`` returns.

    Args:
        params: parameters, or groups (dicts with ``params`` and optional ``lr_scale`` (x ``optim.lr``) and
            ``weight_decay``), e.g. from :func:`param_groups`.
        optim_cfg: the ``optim`` group (see the module docstring).
        total_steps: optimiser steps of the whole run (``trainer.estimated_stepping_batches``).

    Returns:
        ``{"optimizer": AdamW, "lr_scheduler": {"scheduler": LambdaLR, "interval": "step", "frequency": 1}}``.

    Raises:
        ConfigError: naming the ``optim.*`` key that is missing or invalid, or when ``total_steps`` is not
            finite (set ``trainer.max_steps``).
    """
    for key in REQUIRED_KEYS:
        _get(optim_cfg, key)
    if not math.isfinite(total_steps) or total_steps < 1:
        raise ConfigError("trainer.max_steps", f"the schedule needs a finite number of steps, got {total_steps}")
    total_steps = int(total_steps)
    lr = float(optim_cfg["lr"])
    weight_decay = float(optim_cfg["weight_decay"])
    min_lr_ratio = float(optim_cfg["min_lr_ratio"])
    betas = tuple(float(b) for b in optim_cfg.get("betas", (0.9, 0.999)))
    if lr <= 0:
        raise ConfigError("optim.lr", f"must be > 0, got {lr}")
    if weight_decay < 0:
        raise ConfigError("optim.weight_decay", f"must be >= 0, got {weight_decay}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError("optim.min_lr_ratio", f"must lie in [0, 1], got {min_lr_ratio}")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError("optim.betas", f"must be two numbers in [0, 1), got {list(betas)}")
    groups: list[Any] = []
    tensors: list[torch.Tensor] = []
    for group in params:
        if isinstance(group, dict):
            group = dict(group)
            group["lr"] = lr * float(group.pop("lr_scale", 1.0))
            group["params"] = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
            tensors.extend(group["params"])
        else:
            tensors.append(group)
        groups.append(group)
    if not groups:
        raise ValueError("no parameters to optimise")
    fused = all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in tensors)
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused or None)
    schedule = WarmupCosineSchedule(warmup_steps_of(optim_cfg, total_steps), total_steps, min_lr_ratio)
    scheduler = LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}
