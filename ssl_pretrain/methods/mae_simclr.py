"""MAE + SimCLR: masked reconstruction and contrastive learning on one shared encoder.

Combines He et al. 2022 (MAE, https://arxiv.org/abs/2111.06377) and Chen et al. 2020 (SimCLR,
https://arxiv.org/abs/2002.05709): the masked first view is reconstructed by the U-Net, while the
*unmasked* two views go through the contrastive branch; the loss is
``weights.mae · L_mae + weights.simclr · L_ntxent``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_pretrain.methods.base import ContrastiveMethod, Patch
from ssl_pretrain.methods.mae import MAE, check_masking
from ssl_pretrain.methods.pooling import check_pooling_config
from ssl_pretrain.methods.simclr import SimCLR, check_ntxent


class MAESimCLR(ContrastiveMethod):
    """Weighted sum of the MAE and SimCLR objectives sharing ``mae.unet.encoder``.

    Args:
        mae: the MAE objective (owns the U-Net).
        simclr: the SimCLR objective built on ``mae.encoder``.
        weight_mae / weight_simclr: non-negative weights, not both zero.
    """

    name: ClassVar[str] = "mae_simclr"
    views: ClassVar[int] = 2
    clean_target: ClassVar[bool] = True  # the masked first view is reconstructed

    def __init__(self, mae: MAE, simclr: SimCLR, weight_mae: float = 1.0, weight_simclr: float = 1.0) -> None:
        super().__init__()
        if simclr.encoder is not mae.encoder:
            raise ValueError("the SimCLR branch must use the MAE U-Net's encoder")
        if min(weight_mae, weight_simclr) < 0 or weight_mae + weight_simclr == 0:
            raise ValueError(f"weights must be >= 0 and not both 0, got mae={weight_mae}, simclr={weight_simclr}")
        self.mae = mae
        self.simclr = simclr
        self.weight_mae = float(weight_mae)
        self.weight_simclr = float(weight_simclr)

    @classmethod
    def from_config(cls, cfg: DictConfig, model_cfg: DictConfig, in_channels: int) -> MAESimCLR:
        """MAE on a fresh U-Net and SimCLR on its encoder (the keys of mae.yaml and simclr.yaml, plus ``weights``)."""
        mae = MAE.from_config(cfg, model_cfg, in_channels)
        return cls(mae, SimCLR.on_encoder(mae.encoder, cfg), float(cfg.weights.mae), float(cfg.weights.simclr))

    @classmethod
    def check_config(cls, cfg: DictConfig, patch: Patch, batch_size: int) -> None:
        """MAE's masking, then two samples per batch at least, the pooling and the NT-Xent settings."""
        check_masking(cfg, patch)
        cls.require_batch(batch_size)
        check_pooling_config(cfg)
        check_ntxent(cfg)

    @property
    def encoder(self) -> nn.Module:
        """The shared encoder."""
        return self.mae.encoder

    def before_training_step(self, step: int, total_steps: int) -> None:
        """Both objectives' hooks (SimCLR's momentum update)."""
        self.mae.before_training_step(step, total_steps)
        self.simclr.before_training_step(step, total_steps)

    def reconstructor(self) -> MAE:
        """The MAE branch: its reconstructions are the run's figures and reconstruction evidence."""
        return self.mae

    def embed(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled encoder features (B, F), projection (B, D))`` of unmasked views."""
        return self.simclr.embed(image)

    def queue_by_age(self, projections: Tensor, parts: int = 4) -> dict[str, Any] | None:
        """The SimCLR branch's :meth:`SimCLR.queue_by_age`."""
        return self.simclr.queue_by_age(projections, parts)

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss": weighted sum, "mae": …, "simclr": …}`` of one two-view batch."""
        mae = self.mae(batch, generator)["loss"]
        simclr = self.simclr(batch)["loss"]
        loss = self.weight_mae * mae + self.weight_simclr * simclr
        return {"loss": loss, "mae": mae.detach(), "simclr": simclr.detach()}
