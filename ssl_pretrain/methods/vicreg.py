"""VICReg: variance-invariance-covariance regularisation, a non-contrastive method to compare against.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022 (https://arxiv.org/abs/2105.04906). Pooled deepest encoder features of two views
go through the VICReg projection head (lightly's ``ProjectionHead`` blocks, as its
``VICRegProjectionHead``); lightly's ``VICRegLoss`` pulls the two embeddings together (invariance, MSE),
keeps each embedding dimension's standard deviation above 1 over the batch (variance) and decorrelates
dimensions (covariance). No negatives are needed.

The paper's head has BatchNorm1d after its hidden layers, computed over a batch of 2048. Over the 2–8
patches of a 3D batch, batch norm maps each hidden unit to about ±1 (over two samples exactly ±1,
whatever the input) and lets a sample's embedding depend on the others in the batch. ``head_norm``
chooses ``none`` (default), ``layer`` (LayerNorm per sample) or ``batch`` (BatchNorm1d; under DDP with
``trainer.sync_batchnorm=true`` Lightning makes it a SyncBatchNorm over every process's samples, the
only setting where it makes sense). The variance and covariance terms are still estimated over the
batch (gathered from every process with ``gather_distributed``): VICReg needs many samples per step.

With a ``local`` term (:class:`~ssl_pretrain.methods.local_vicreg.LocalVICRegLoss`, VICRegL) the loss is
``alpha · global + (1 − alpha) · local``: the shallow stages that feed the U-Net skips get their own
objective, and its variance/covariance terms are estimated over many vectors per sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, cast

import torch
from lightly.loss import VICRegLoss
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss
from lightly.models.modules.heads import ProjectionHead
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_pretrain.data.batch import IMAGE, IMAGE_B
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.methods.base import ContrastiveMethod, Patch
from ssl_pretrain.methods.local_vicreg import LocalVICRegLoss
from ssl_pretrain.methods.pooling import check_pooling_config, pool_maps, pooled_dim
from ssl_pretrain.models.unet import build_encoder

HEAD_NORMS = ("none", "layer", "batch")


def vicreg_head(
    input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, norm: str = "none"
) -> ProjectionHead:
    """The VICReg projector: ``num_layers`` linear layers, hidden ones followed by ``norm`` and ReLU.

    Args:
        input_dim / hidden_dim / output_dim / num_layers: as lightly's ``VICRegProjectionHead``.
        norm: ``none``, ``layer`` (LayerNorm) or ``batch`` (BatchNorm1d, the paper's).

    Shapes:
        ``(B, input_dim) -> (B, output_dim)``.
    """
    if norm not in HEAD_NORMS:
        raise ValueError(f"head norm must be one of {HEAD_NORMS}, got {norm!r}")

    def norm_layer() -> nn.Module | None:
        if norm == "layer":
            return nn.LayerNorm(hidden_dim)
        return nn.BatchNorm1d(hidden_dim) if norm == "batch" else None

    blocks: list[tuple[int, int, nn.Module | None, nn.Module | None]] = [
        (input_dim, hidden_dim, norm_layer(), nn.ReLU())
    ]
    blocks += [(hidden_dim, hidden_dim, norm_layer(), nn.ReLU()) for _ in range(num_layers - 2)]
    blocks.append((hidden_dim, output_dim, None, None))
    return ProjectionHead(blocks)


def local_term(cfg: DictConfig, feature_channels: Sequence[int]) -> LocalVICRegLoss | None:
    """VICRegL's local term from ``method.local`` (None when absent or ``alpha`` is 1).

    Args:
        cfg: the ``method`` config group (``local`` and the ``lambda/mu/nu_param`` weights).
        feature_channels: the encoder's channels per stage, fine to coarse.
    """
    local = cfg.get("local")
    if not local or float(local.get("alpha", 1.0)) >= 1.0:
        return None
    stages = local.get("stages")
    stages = list(range(len(feature_channels) - 1)) if stages is None else [int(s) for s in stages]
    try:
        return LocalVICRegLoss(
            feature_channels,
            stages or [0],
            hidden_dim=int(local.hidden_dim),
            output_dim=int(local.output_dim),
            positions=int(local.positions),
            matches=int(local.matches),
            lambda_param=float(cfg.lambda_param),
            mu_param=float(cfg.mu_param),
            nu_param=float(cfg.nu_param),
        )
    except ValueError as err:
        raise ConfigError("method.local", str(err)) from None


class VICReg(ContrastiveMethod):
    """The VICReg objective around an encoder with multi-scale outputs.

    Args:
        encoder: ``(B, C, X, Y, Z) -> list`` of feature maps, fine to coarse, with ``feature_channels``.
        hidden_dim / output_dim / num_layers: the projector (paper: 8192, 8192, 3).
        head_norm: ``none`` | ``layer`` | ``batch`` after each hidden layer (see the module docstring).
        lambda_param / mu_param / nu_param: weights of the invariance, variance and covariance terms
            (paper: 25, 25, 1).
        gather_distributed: compute variance/covariance over the batches of all processes under DDP.
        local: VICRegL's local term on encoder stages (None: global VICReg only).
        alpha: weight of the global term when ``local`` is given (VICRegL: 0.75).
        pooling / pool_stages: how feature maps become the projector's input
            (:mod:`ssl_pretrain.methods.pooling`: ``mean`` | ``max`` | ``meanmax`` of ``last`` | ``all`` stages).
    """

    name: ClassVar[str] = "vicreg"
    views: ClassVar[int] = 2

    def __init__(
        self,
        encoder: nn.Module,
        hidden_dim: int = 512,
        output_dim: int = 512,
        num_layers: int = 3,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        gather_distributed: bool = True,
        head_norm: str = "none",
        local: LocalVICRegLoss | None = None,
        alpha: float = 0.75,
        pooling: str = "mean",
        pool_stages: str = "last",
    ) -> None:
        super().__init__()
        if min(hidden_dim, output_dim) < 1 or num_layers < 2:
            raise ValueError("the projection head needs hidden_dim, output_dim >= 1 and num_layers >= 2")
        self.encoder = encoder
        self.pooling, self.pool_stages = pooling, pool_stages
        feature_dim = pooled_dim(cast(Sequence[int], encoder.feature_channels), pooling, pool_stages)
        self.head = vicreg_head(feature_dim, hidden_dim, output_dim, num_layers, head_norm)
        self.loss = VICRegLoss(lambda_param, mu_param, nu_param, gather_distributed=gather_distributed)
        if local is not None and not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must lie in [0, 1) with a local term, got {alpha}")
        self.local = local
        self.alpha = float(alpha) if local is not None else 1.0

    @classmethod
    def from_config(cls, cfg: DictConfig, model_cfg: DictConfig, in_channels: int) -> VICReg:
        """VICReg (with VICRegL's local term if ``method.local`` asks) on a fresh encoder from ``model_cfg``."""
        head = cfg.head
        encoder = build_encoder(model_cfg, in_channels)
        local = local_term(cfg, cast(Sequence[int], encoder.feature_channels))  # initialised before the head
        return cls(
            encoder,
            hidden_dim=int(head.hidden_dim),
            output_dim=int(head.output_dim),
            num_layers=int(head.num_layers),
            lambda_param=float(cfg.lambda_param),
            mu_param=float(cfg.mu_param),
            nu_param=float(cfg.nu_param),
            gather_distributed=bool(cfg.gather_distributed),
            head_norm=str(head.get("norm", "none")),
            local=local,
            alpha=float((cfg.get("local") or {}).get("alpha", 1.0)),
            pooling=str(cfg.get("pooling", "mean")),
            pool_stages=str(cfg.get("pool_stages", "last")),
        )

    @classmethod
    def check_config(cls, cfg: DictConfig, patch: Patch, batch_size: int) -> None:
        """Two samples per batch at least, the pooling, ``head.norm`` and ``local.alpha``."""
        cls.require_batch(batch_size)
        check_pooling_config(cfg)
        if cfg.head.get("norm", "none") not in HEAD_NORMS:
            raise ConfigError("method.head.norm", f"must be one of {', '.join(HEAD_NORMS)}, got {cfg.head.norm!r}")
        alpha = float((cfg.get("local") or {}).get("alpha", 1.0))
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError("method.local.alpha", f"must lie in [0, 1] (1: no local term), got {alpha}")

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Loss of one two-view batch with its three (unweighted, this process's) global terms logged beside it,
        and with a local term ``global`` and ``local`` too. ``generator`` draws the local term's positions."""
        features_a, features_b = self.encoder(batch[IMAGE]), self.encoder(batch[IMAGE_B])
        z_a = self.head(pool_maps(features_a, self.pooling, self.pool_stages)).float()
        z_b = self.head(pool_maps(features_b, self.pooling, self.pool_stages)).float()
        with torch.autocast(z_a.device.type, enabled=False):  # covariance in fp32, also under bf16
            loss = self.loss(z_a, z_b)
        with torch.no_grad():
            terms = {
                "invariance": invariance_loss(z_a, z_b),
                "variance": 0.5 * (variance_loss(z_a, self.loss.eps) + variance_loss(z_b, self.loss.eps)),
                "covariance": covariance_loss(z_a) + covariance_loss(z_b),
            }
        if self.local is None:
            return {"loss": loss, **terms}
        local = self.local(features_a, features_b, generator)
        total = self.alpha * loss + (1.0 - self.alpha) * local
        return {"loss": total, **terms, "global": loss.detach(), "local": local.detach()}
