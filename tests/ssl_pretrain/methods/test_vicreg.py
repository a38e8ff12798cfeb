"""VICReg loss of the method against hand-computed reference values."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_pretrain.data.batch import IMAGE, IMAGE_B
from ssl_pretrain.methods.vicreg import VICReg
from tests.ssl_pretrain.methods.test_simclr import TinyEncoder


def test_constant_identical_embeddings_cost_only_the_variance_term() -> None:
    method = VICReg(TinyEncoder(), hidden_dim=8, output_dim=8)
    z = torch.full((4, 3), 2.0)
    # invariance 0; std = sqrt(0 + eps) per dim, variance term = 1 - sqrt(1e-4) = 0.99; covariance 0
    assert method.loss(z, z.clone()).item() == pytest.approx(25.0 * (1 - math.sqrt(1e-4)), rel=1e-6)


def test_toy_input_matches_hand_computation() -> None:
    method = VICReg(TinyEncoder(), hidden_dim=8, output_dim=8, lambda_param=25.0, mu_param=25.0, nu_param=1.0)
    z_a = torch.tensor([[1.0, 2.0], [-1.0, -2.0]])
    z_b = z_a + 0.5
    # invariance: MSE = 0.25. variance: unbiased var [2, 8] -> std > 1 -> 0.
    # covariance per view: C = [[2, 4], [4, 8]], off-diagonal squares 2 * 16 / dim 2 = 16; two views -> 32.
    assert method.loss(z_a, z_b).item() == pytest.approx(25 * 0.25 + 0.0 + 32.0, rel=1e-5)


def test_forward_logs_the_three_terms() -> None:
    torch.manual_seed(0)
    method = VICReg(TinyEncoder(), hidden_dim=16, output_dim=8)
    image = torch.randn(4, 2, 8, 8, 8)
    out = method({IMAGE: image, IMAGE_B: image.flip(2)})
    assert set(out) == {"loss", "invariance", "variance", "covariance"}
    recombined = 25 * out["invariance"] + 25 * out["variance"] + out["covariance"]
    assert out["loss"].item() == pytest.approx(recombined.item(), rel=1e-5)
    out["loss"].backward()
    assert method.encoder.a.weight.grad.abs().sum() > 0
