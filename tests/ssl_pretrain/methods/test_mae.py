"""MAELoss against closed forms on toy tensors."""

from __future__ import annotations

import pytest
import torch

from ssl_pretrain.methods.mae import MAELoss
from ssl_pretrain.methods.masking import normalise_blocks


def _toy() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """B=2, C=2, 4^3 voxels, 2^3 blocks; prediction = target except at four known voxels."""
    target = torch.randn(2, 2, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 1, 4, 4, 4)
    mask[0, 0, :2, :2, :2] = 1  # sample 0: block (0,0,0)
    mask[1, 0, :2, :2, :2] = 1  # sample 1: blocks (0,0,0) and (1,1,1)
    mask[1, 0, 2:, 2:, 2:] = 1
    presence = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # sample 1 lacks channel 1
    pred = target.clone()
    pred[0, 0, 0, 0, 0] += 3.0  # masked, present: counts
    pred[0, 1, 3, 3, 3] += 5.0  # visible: ignored
    pred[1, 1, 0, 0, 0] += 2.0  # masked but modality absent: ignored
    pred[1, 0, 3, 3, 3] -= 4.0  # masked, present: counts
    return pred, target, mask, presence


def test_loss_counts_exactly_the_masked_voxels_of_present_channels() -> None:
    pred, target, mask, presence = _toy()
    loss = MAELoss(2, norm_target=False)(pred, target, mask, presence)
    # counted voxels: sample 0: 8 voxels x 2 channels; sample 1: 16 voxels x 1 channel
    assert loss.item() == pytest.approx((3.0**2 + 4.0**2) / (16 + 16), rel=1e-6)


def test_loss_uses_per_block_normalised_targets() -> None:
    pred, target, mask, presence = _toy()
    norm = normalise_blocks(target, 2)
    loss = MAELoss(2, norm_target=True)(norm + (pred - target), target, mask, presence)
    assert loss.item() == pytest.approx(25.0 / 32, rel=1e-5)
    # a zero prediction costs the mean squared normalised target over counted voxels
    weight = mask * presence[:, :, None, None, None]
    expected = (norm**2 * weight).sum() / weight.sum()
    zero = MAELoss(2)(torch.zeros_like(target), target, mask, presence)
    assert zero.item() == pytest.approx(expected.item(), rel=1e-6)


def test_nothing_to_count_gives_zero_with_a_gradient() -> None:
    pred, target, mask, _ = _toy()
    pred.requires_grad_(True)
    loss = MAELoss(2)(pred, target, mask, torch.zeros(2, 2))
    loss.backward()
    assert loss.item() == 0.0 and pred.grad is not None and pred.grad.abs().sum() == 0


def test_gradient_flows_only_through_counted_voxels() -> None:
    pred, target, mask, presence = _toy()
    pred.requires_grad_(True)
    MAELoss(2, norm_target=False)(pred, target, mask, presence).backward()
    counted = (mask * presence[:, :, None, None, None]).bool()
    assert pred.grad[~counted].abs().sum() == 0
    assert pred.grad[0, 0, 0, 0, 0].item() == pytest.approx(2 * 3.0 / 32)


def test_shape_mismatch_raises() -> None:
    pred, target, mask, presence = _toy()
    with pytest.raises(ValueError, match="shapes disagree"):
        MAELoss(2)(pred[:, :1], target, mask, presence)
