"""Whole-volume prediction with MONAI's sliding-window inference.

A cached subject's ``(C, X, Y, Z)`` volume is covered by overlapping windows of the training patch size
(instance normalisation then sees the statistics it was trained on), the class probabilities of the
windows are blended with Gaussian weights, and the result is ``(K, X, Y, Z)`` on the cache grid.
Modalities that are missing, or that the user leaves out (``predict.modalities=[T1w]``), are zero channels,
exactly as modality dropout presents them during training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from ssl_pretrain.errors import ConfigError

BLEND_MODES = ("gaussian", "constant")


@dataclass(frozen=True)
class InferenceSettings:
    """How whole volumes are covered (config group ``inference``).

    Attributes:
        roi_size: window size in voxels (a multiple of the network's total stride).
        overlap: fraction by which neighbouring windows overlap, in [0, 1).
        sw_batch_size: windows per forward pass.
        mode: ``gaussian`` or ``constant`` blending.
        amp: bf16 autocast on CUDA (ignored on CPU).
    """

    roi_size: tuple[int, int, int]
    overlap: float = 0.25
    sw_batch_size: int = 2
    mode: str = "gaussian"
    amp: bool = True

    @classmethod
    def from_config(cls, cfg: Any, roi_size: Sequence[int], total_stride: int) -> InferenceSettings:
        """From an ``inference`` config node; ``roi_size`` is used when ``inference.roi_size`` is null.

        Raises:
            ConfigError: naming the ``inference.*`` key with a bad value.
        """
        size = cfg.get("roi_size") or roi_size
        size = [int(size)] * 3 if isinstance(size, int) else [int(s) for s in size]
        if len(size) != 3 or any(s < 1 or s % total_stride for s in size):
            raise ConfigError(
                "inference.roi_size", f"expected 3 positive multiples of the total stride {total_stride}, got {size}"
            )
        overlap = float(cfg.get("overlap", 0.25))
        if not 0.0 <= overlap < 1.0:
            raise ConfigError("inference.overlap", f"expected a value in [0, 1), got {overlap}")
        mode = str(cfg.get("mode", "gaussian"))
        if mode not in BLEND_MODES:
            raise ConfigError("inference.mode", f"expected one of {BLEND_MODES}, got {mode!r}")
        batch = int(cfg.get("sw_batch_size", 2))
        if batch < 1:
            raise ConfigError("inference.sw_batch_size", f"expected >= 1, got {batch}")
        return cls(tuple(size), overlap, batch, mode, bool(cfg.get("amp", True)))  # type: ignore[arg-type]


def input_volume(image: np.ndarray, presence: Sequence[bool], use: Sequence[bool] | None = None) -> torch.Tensor:
    """The network input of one subject: ``(1, C, X, Y, Z)`` float32, absent or unused channels zero.

    Args:
        image: ``(C, X, Y, Z)`` cached intensities.
        presence: ``(C,)`` which modalities the subject has.
        use: ``(C,)`` which modalities to feed (``None`` = all present).
    """
    keep = np.asarray(presence, bool) & (np.ones(len(presence), bool) if use is None else np.asarray(use, bool))
    x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    x[torch.from_numpy(~keep)] = 0.0
    return x[None]


@torch.no_grad()
def predict_probabilities(
    net: nn.Module, x: torch.Tensor, settings: InferenceSettings, device: torch.device | str | None = None
) -> torch.Tensor:
    """Class probabilities of a whole volume.

    Args:
        net: maps ``(B, C, *roi_size)`` to logits ``(B, K, *roi_size)``; put in eval mode here.
        x: ``(1, C, X, Y, Z)`` input (see :func:`input_volume`); any size (padded to ``roi_size`` if smaller).
        settings: window size, overlap, blending.
        device: where the network runs (default: the network's device).

    Returns:
        ``(K, X, Y, Z)`` float32 probabilities on the CPU (sum to 1 over K).
    """
    was_training = net.training
    net.eval()
    device = torch.device(device) if device is not None else next(net.parameters()).device
    autocast = settings.amp and device.type == "cuda"

    def predictor(window: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = net(window.to(device))
        return torch.softmax(logits.float(), dim=1)

    try:
        probs = sliding_window_inference(
            x,
            roi_size=settings.roi_size,
            sw_batch_size=settings.sw_batch_size,
            predictor=predictor,
            overlap=settings.overlap,
            mode=settings.mode,
            sw_device=device,
            device=torch.device("cpu"),
        )
    finally:
        net.train(was_training)
    return probs[0].float()  # type: ignore[index]


def predict_labels(probs: torch.Tensor) -> np.ndarray:
    """``(X, Y, Z)`` uint8 argmax of ``(K, X, Y, Z)`` probabilities."""
    return probs.argmax(0).to(torch.uint8).numpy()
