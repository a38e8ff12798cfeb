"""VICRegL's local term: position sampling, feature-based matching and the loss against lightly's terms."""

from __future__ import annotations

import pytest
import torch
from lightly.loss.vicreg_loss import covariance_loss, variance_loss

from ssl_pretrain.data.batch import IMAGE, IMAGE_B
from ssl_pretrain.methods.local_vicreg import LocalVICRegLoss, nearest_matches, sample_positions
from ssl_pretrain.methods.vicreg import VICReg
from tests.ssl_pretrain.methods.test_simclr import TinyEncoder


def test_positions_are_reproducible_feature_vectors() -> None:
    feature = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 2, 2, 2)
    a = sample_positions(feature, 5, torch.Generator().manual_seed(0))
    b = sample_positions(feature, 5, torch.Generator().manual_seed(0))
    assert a.shape == (2, 5, 3) and torch.equal(a, b)
    flat = feature.flatten(2).transpose(1, 2)  # (B, V, C): every sampled row is one voxel's vector
    for s in range(2):
        assert all(any(torch.equal(row, v) for v in flat[s]) for row in a[s])
        assert len({tuple(r.tolist()) for r in a[s]}) == 5  # without replacement when there are enough
    assert sample_positions(feature, 20, torch.Generator().manual_seed(1)).shape == (2, 20, 3)


def test_nearest_matches_pairs_each_vector_with_its_copy_and_keeps_the_closest() -> None:
    torch.manual_seed(0)
    z_a = torch.randn(2, 6, 4)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    noise = torch.zeros(2, 6, 4)
    noise[:, :, 0] = torch.linspace(0, 0.05, 6)  # vector i of z_b is a copy of z_a[perm[i]] moved by noise[i]
    z_b = z_a[:, perm] + noise
    a, b = nearest_matches(z_a, z_b, 2)
    assert a.shape == (4, 4) and b.shape == (4, 4)
    # the two closest pairs per sample are the two copies with the smallest noise (b rows 0 and 1)
    expected_a = torch.cat([z_a[s, perm[:2]] for s in range(2)])
    assert {tuple(r) for r in a.round(decimals=5).tolist()} == {tuple(r) for r in expected_a.round(decimals=5).tolist()}
    torch.testing.assert_close((a - b).norm(dim=1).max(), noise[0, 1].norm(), atol=1e-6, rtol=0)


def test_identical_views_cost_only_variance_and_covariance_of_all_vectors() -> None:
    torch.manual_seed(0)
    local = LocalVICRegLoss([3], [0], hidden_dim=8, output_dim=4, positions=8, matches=4)
    feature = torch.randn(2, 3, 2, 2, 2)  # 8 voxels = positions: every voxel sampled in both views
    loss = local([feature], [feature.clone()], torch.Generator().manual_seed(1))
    z = local.projectors["0"](feature.flatten(2).transpose(1, 2)).reshape(-1, 4)
    expected = 25.0 * variance_loss(z) + 1.0 * 2 * covariance_loss(z)  # invariance 0: each match is its copy
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_local_term_trains_the_shallow_stage_on_a_batch_of_two() -> None:
    torch.manual_seed(0)
    encoder = TinyEncoder()
    local = LocalVICRegLoss(encoder.feature_channels, [0], hidden_dim=8, output_dim=8, positions=16, matches=4)
    method = VICReg(encoder, hidden_dim=8, output_dim=8, local=local, alpha=0.75)
    image = torch.randn(2, 2, 8, 8, 8)
    out = method({IMAGE: image, IMAGE_B: image.flip(2)}, torch.Generator().manual_seed(0))
    assert out["loss"].item() == pytest.approx(0.75 * out["global"].item() + 0.25 * out["local"].item(), rel=1e-5)
    encoder.zero_grad()
    local_only = VICReg(encoder, hidden_dim=8, output_dim=8, local=local, alpha=0.0)
    local_only({IMAGE: image, IMAGE_B: image.flip(2)}, torch.Generator().manual_seed(0))["loss"].backward()
    assert encoder.a.weight.grad is not None and encoder.a.weight.grad.abs().sum() > 0  # stage 0 learns directly
    assert encoder.b.weight.grad is None or encoder.b.weight.grad.abs().sum() == 0  # stage 1 has no local term


@pytest.mark.parametrize("kwargs", [{"stages": [2]}, {"stages": []}, {"matches": 40}, {"positions": 0}])
def test_bad_local_settings_raise(kwargs: dict) -> None:
    settings = {"stages": [0], "positions": 16, "matches": 4, **kwargs}
    with pytest.raises(ValueError):
        LocalVICRegLoss([4, 8], **settings)
    with pytest.raises(ValueError, match="alpha"):
        VICReg(TinyEncoder(), local=LocalVICRegLoss([4, 8], [0]), alpha=1.0)
