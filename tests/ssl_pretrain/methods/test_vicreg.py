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


def test_head_without_batch_norm_is_not_degenerate_on_a_batch_of_two() -> None:
    """BatchNorm1d over two samples maps every hidden unit to exactly ±1 whatever the input, and makes a
    sample's embedding depend on the other one; without it (and with LayerNorm) neither happens."""
    from ssl_pretrain.methods.vicreg import vicreg_head

    torch.manual_seed(0)
    x0, x1, x2 = torch.randn(3, 1, 12).unbind(0)
    for norm in ("none", "layer", "batch"):
        torch.manual_seed(1)
        head = vicreg_head(12, 16, 8, 3, norm).train()
        first = head.layers[0](torch.cat([x0, x1]))  # the first linear layer
        z01, z02 = head(torch.cat([x0, x1])), head(torch.cat([x0, x2]))
        if norm == "batch":
            normed = head.layers[1](first)
            torch.testing.assert_close(normed.abs(), torch.ones_like(normed), atol=0.05, rtol=0)  # ±1 up to eps
            assert not torch.allclose(z01[0], z02[0])  # x0's embedding depends on its batch partner
        else:
            normed = head.layers[1](first) if norm == "layer" else first
            assert (normed.abs() - 1).abs().max() > 0.3  # values of every size, not ±1
            torch.testing.assert_close(z01[0], z02[0])  # x0's embedding is its own
            assert z01.std(dim=0).min() > 0  # the two samples differ in every output unit
    default = VICReg(TinyEncoder(), hidden_dim=8, output_dim=8)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in default.head.modules())
    with pytest.raises(ValueError, match="head norm"):
        vicreg_head(4, 4, 4, 3, "group")
