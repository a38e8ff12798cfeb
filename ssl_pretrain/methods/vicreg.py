"""VICReg: variance-invariance-covariance regularisation, a non-contrastive method to compare against.

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised
Learning", ICLR 2022 (https://arxiv.org/abs/2105.04906). Pooled deepest encoder features of two views
go through lightly's ``VICRegProjectionHead``; lightly's ``VICRegLoss`` pulls the two embeddings
together (invariance, MSE), keeps each embedding dimension's standard deviation above 1 over the batch
(variance) and decorrelates dimensions (covariance). No negatives are needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from lightly.loss import VICRegLoss
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import Tensor, nn

from ssl_pretrain.data.batch import IMAGE, IMAGE_B
from ssl_pretrain.methods.simclr import pooled_features


class VICReg(nn.Module):
    """The VICReg objective around an encoder with multi-scale outputs.

    Args:
        encoder: ``(B, C, X, Y, Z) -> list`` of feature maps, fine to coarse, with ``feature_channels``.
        hidden_dim / output_dim / num_layers: lightly's ``VICRegProjectionHead`` (paper: 8192, 8192, 3).
        lambda_param / mu_param / nu_param: weights of the invariance, variance and covariance terms
            (paper: 25, 25, 1).
        gather_distributed: compute variance/covariance over the batches of all processes under DDP.
    """

    name = "vicreg"
    views = 2

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
    ) -> None:
        super().__init__()
        if min(hidden_dim, output_dim) < 1 or num_layers < 2:
            raise ValueError("the projection head needs hidden_dim, output_dim >= 1 and num_layers >= 2")
        self.encoder = encoder
        feature_dim = int(cast(Sequence[int], encoder.feature_channels)[-1])
        self.head = VICRegProjectionHead(feature_dim, hidden_dim, output_dim, num_layers)
        self.loss = VICRegLoss(lambda_param, mu_param, nu_param, gather_distributed=gather_distributed)

    def embed(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled encoder features (B, F), projection (B, D))`` of a batch of views."""
        features = pooled_features(self.encoder, image)
        return features, self.head(features)

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Loss of one two-view batch with its three (unweighted, this process's) terms logged beside it."""
        _, z_a = self.embed(batch[IMAGE])
        _, z_b = self.embed(batch[IMAGE_B])
        z_a, z_b = z_a.float(), z_b.float()
        with torch.autocast(z_a.device.type, enabled=False):  # covariance in fp32, also under bf16
            loss = self.loss(z_a, z_b)
        with torch.no_grad():
            terms = {
                "invariance": invariance_loss(z_a, z_b),
                "variance": 0.5 * (variance_loss(z_a, self.loss.eps) + variance_loss(z_b, self.loss.eps)),
                "covariance": covariance_loss(z_a) + covariance_loss(z_b),
            }
        return {"loss": loss, **terms}
