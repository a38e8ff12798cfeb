"""SimCLR: contrastive learning between two augmented views of the same subject.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (https://arxiv.org/abs/2002.05709). The deepest encoder features of each
view are average-pooled, projected by lightly's ``SimCLRProjectionHead`` and compared with lightly's
``NTXentLoss``; under DDP the negatives are gathered from every process (``gather_distributed``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import cast

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import Tensor, nn

from ssl_pretrain.data.batch import IMAGE, IMAGE_B


def pooled_features(encoder: nn.Module, image: Tensor) -> Tensor:
    """Global average of the encoder's deepest feature map: ``(B, C, X, Y, Z) -> (B, F)``."""
    return encoder(image)[-1].float().mean(dim=(2, 3, 4))


class SimCLR(nn.Module):
    """The SimCLR objective around an encoder with multi-scale outputs.

    Args:
        encoder: ``(B, C, X, Y, Z) -> list`` of feature maps, fine to coarse, with ``feature_channels``.
        hidden_dim / output_dim / num_layers / batch_norm: the projection head (lightly's
            ``SimCLRProjectionHead``; ``num_layers=2`` is SimCLR v1).
        temperature: NT-Xent temperature τ.
        gather_distributed: gather negatives from all processes under DDP.
    """

    name = "simclr"
    views = 2

    def __init__(
        self,
        encoder: nn.Module,
        hidden_dim: int = 256,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        temperature: float = 0.1,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if min(hidden_dim, output_dim) < 1 or num_layers < 2:
            raise ValueError("the projection head needs hidden_dim, output_dim >= 1 and num_layers >= 2")
        self.encoder = encoder
        feature_dim = int(cast(Sequence[int], encoder.feature_channels)[-1])
        self.head = SimCLRProjectionHead(feature_dim, hidden_dim, output_dim, num_layers, batch_norm)
        self.loss = NTXentLoss(temperature=temperature, gather_distributed=gather_distributed)

    def embed(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled encoder features (B, F), projection (B, D))`` of a batch of views."""
        features = pooled_features(self.encoder, image)
        return features, self.head(features)

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Loss of one two-view batch: ``{"loss": …, "simclr": …}``. ``generator`` is unused."""
        _, z_a = self.embed(batch[IMAGE])
        _, z_b = self.embed(batch[IMAGE_B])
        with torch.autocast(z_a.device.type, enabled=False):  # similarities / τ in fp32, also under bf16
            loss = self.loss(z_a.float(), z_b.float())
        return {"loss": loss, "simclr": loss.detach()}
