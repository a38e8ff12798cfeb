"""VICRegL's local term: VICReg on matched feature vectors of several encoder stages.

Bardes, Ponce, LeCun, "VICRegL: Self-Supervised Learning of Local Visual Features", NeurIPS 2022
(https://arxiv.org/abs/2210.01571). A global objective on pooled deepest features trains the shallow
stages only through the deep ones; the U-Net decoder reads those shallow stages directly through its
skips. The local term gives them their own objective: at each chosen stage, ``positions`` feature vectors
are sampled per view (uniformly, from the step's generator), projected by a small per-stage MLP, and each
vector of one view is matched to its nearest neighbour in the other view (VICRegL's feature-based
matching; the location-based matching of the paper needs the views' geometric correspondence, which the
augmentation pipeline does not return). Per sample the ``matches`` closest pairs in each direction enter
the invariance term (MSE); the variance and covariance terms use every sampled vector of the batch, so
they are estimated over ``batch × positions`` vectors and stay meaningful at batch 2.

``loss = alpha · L_global + (1 − alpha) · L_local`` (the paper's alpha = 0.75), with ``L_local`` the mean
over stages of ``λ·inv + μ·var + ν·cov`` (lightly's term functions, the paper's weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightly.loss.vicreg_loss import covariance_loss, invariance_loss, variance_loss
from torch import Tensor, nn


def sample_positions(feature: Tensor, n: int, generator: torch.Generator | None) -> Tensor:
    """``(B, n, C)`` feature vectors at ``n`` positions drawn uniformly per sample (with replacement when fewer).

    Args:
        feature: ``(B, C, X, Y, Z)``.
        n: positions per sample.
        generator: a CPU generator (reproducible draws) or None (torch's global one).
    """
    b, c = feature.shape[:2]
    flat = feature.flatten(2)  # (B, C, V)
    v = flat.shape[-1]
    if v >= n:
        index = torch.stack([torch.randperm(v, generator=generator)[:n] for _ in range(b)])
    else:
        index = torch.randint(0, v, (b, n), generator=generator)
    index = index.to(feature.device)
    return flat.gather(2, index[:, None, :].expand(b, c, n)).transpose(1, 2)


def nearest_matches(z_a: Tensor, z_b: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Feature-based matching: for each sample, the ``k`` vectors of ``z_a`` closest to their nearest ``z_b`` vector.

    Args:
        z_a, z_b: ``(B, N, D)``.
        k: pairs kept per sample (at most N).

    Returns:
        ``(a, b)`` each ``(B·k, D)``: matched pairs (``b`` is ``a``'s nearest neighbour in the other view).
    """
    distance = torch.cdist(z_a.detach().float(), z_b.detach().float())  # (B, N, N); matching is not trained
    nearest, which = distance.min(dim=2)  # for each a-vector its nearest b-vector
    keep = nearest.topk(min(k, nearest.shape[1]), dim=1, largest=False).indices  # (B, k)
    a = z_a.gather(1, keep[..., None].expand(-1, -1, z_a.shape[2]))
    partner = which.gather(1, keep)
    b = z_b.gather(1, partner[..., None].expand(-1, -1, z_b.shape[2]))
    return a.reshape(-1, z_a.shape[2]), b.reshape(-1, z_b.shape[2])


class LocalVICRegLoss(nn.Module):
    """VICRegL's feature-matched local term over encoder stages.

    Args:
        feature_channels: the encoder's channels per stage (fine to coarse).
        stages: indices of the stages with a local term.
        hidden_dim / output_dim: each stage's projector (Linear–ReLU–Linear on feature vectors).
        positions: feature vectors sampled per view and sample.
        matches: nearest-neighbour pairs kept per sample and direction.
        lambda_param / mu_param / nu_param: term weights (VICReg's 25, 25, 1).
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        stages: Sequence[int],
        hidden_dim: int = 128,
        output_dim: int = 128,
        positions: int = 128,
        matches: int = 32,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
    ) -> None:
        super().__init__()
        channels = [int(c) for c in feature_channels]
        bad = [s for s in stages if not 0 <= int(s) < len(channels)]
        if not stages or bad:
            raise ValueError(
                f"local stages must be indices of the encoder's {len(channels)} stages, got {list(stages)}"
            )
        if min(hidden_dim, output_dim, positions, matches) < 1 or matches > positions:
            raise ValueError("local hidden_dim, output_dim, positions >= 1 and 1 <= matches <= positions")
        self.stages = [int(s) for s in stages]
        self.projectors = nn.ModuleDict(
            {
                str(s): nn.Sequential(nn.Linear(channels[s], hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, output_dim))
                for s in self.stages
            }
        )
        self.positions, self.matches = int(positions), int(matches)
        self.weights = (float(lambda_param), float(mu_param), float(nu_param))

    def forward(
        self, features_a: Sequence[Tensor], features_b: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """The mean over stages of the local VICReg loss of two views' feature maps (lists, fine to coarse)."""
        lam, mu, nu = self.weights
        losses = []
        for s in self.stages:
            project = self.projectors[str(s)]
            z_a = project(sample_positions(features_a[s].float(), self.positions, generator))  # (B, N, D)
            z_b = project(sample_positions(features_b[s].float(), self.positions, generator))
            with torch.autocast(z_a.device.type, enabled=False):
                z_a, z_b = z_a.float(), z_b.float()
                a1, b1 = nearest_matches(z_a, z_b, self.matches)
                b2, a2 = nearest_matches(z_b, z_a, self.matches)
                inv = 0.5 * (invariance_loss(a1, b1) + invariance_loss(a2, b2))
                flat_a, flat_b = z_a.reshape(-1, z_a.shape[2]), z_b.reshape(-1, z_b.shape[2])
                var = 0.5 * (variance_loss(flat_a) + variance_loss(flat_b))
                cov = covariance_loss(flat_a) + covariance_loss(flat_b)
                losses.append(lam * inv + mu * var + nu * cov)
        return torch.stack(losses).mean()
