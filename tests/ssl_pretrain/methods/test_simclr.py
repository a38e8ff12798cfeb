"""NT-Xent of the SimCLR objective against its closed form; the method on a tiny encoder."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ssl_pretrain.data.batch import IMAGE, IMAGE_B, PRESENCE, PRESENCE_B
from ssl_pretrain.methods.simclr import SimCLR, pooled_features


class TinyEncoder(nn.Module):
    """Two-scale conv encoder with the ResEncoder contract (list of maps fine->coarse, feature_channels)."""

    def __init__(self, in_channels: int = 2) -> None:
        super().__init__()
        self.feature_channels = (4, 8)
        self.a = nn.Conv3d(in_channels, 4, 3, padding=1)
        self.b = nn.Conv3d(4, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = torch.relu(self.a(x))
        return [a, self.b(a)]


@pytest.mark.parametrize(("n", "tau"), [(2, 0.1), (4, 0.5), (8, 1.0)])
def test_ntxent_on_identical_orthonormal_views_matches_closed_form(n: int, tau: float) -> None:
    method = SimCLR(TinyEncoder(), temperature=tau, gather_distributed=True)
    z = torch.eye(n, 16, dtype=torch.float64)  # unit-norm rows, orthogonal across the batch
    loss = method.loss(z, z.clone())
    # each of the 2N anchors: positive logit 1/τ, 2N-2 negatives at logit 0
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + (2 * n - 2)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ntxent_is_scale_invariant_and_punishes_swapped_pairs() -> None:
    method = SimCLR(TinyEncoder(), temperature=0.2)
    z = torch.eye(3, 5)
    assert method.loss(3 * z, 0.5 * z).item() == pytest.approx(method.loss(z, z).item(), rel=1e-6)
    swapped = z[[1, 0, 2]]
    assert method.loss(z, swapped).item() > method.loss(z, z).item() + 1.0


def test_simclr_forward_gives_finite_loss_and_gradients() -> None:
    torch.manual_seed(0)
    method = SimCLR(TinyEncoder(), hidden_dim=16, output_dim=8)
    image = torch.randn(4, 2, 8, 8, 8)
    batch = {IMAGE: image, IMAGE_B: image + 0.1 * torch.randn_like(image), PRESENCE: torch.ones(4, 2)}
    batch[PRESENCE_B] = torch.ones(4, 2)
    out = method(batch)
    assert set(out) == {"loss", "simclr"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert method.encoder.a.weight.grad is not None and method.encoder.a.weight.grad.abs().sum() > 0
    features, projection = method.embed(image)
    assert features.shape == (4, 8) and projection.shape == (4, 8)
    torch.testing.assert_close(features, pooled_features(method.encoder, image))


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="temperature"):
        SimCLR(TinyEncoder(), temperature=0.0)
    with pytest.raises(ValueError, match="projection head"):
        SimCLR(TinyEncoder(), num_layers=1)
