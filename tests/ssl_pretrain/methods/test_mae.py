"""MAELoss and the MAE objective against closed forms on toy tensors: masked and cross-modal terms, mask token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssl_pretrain.data.batch import ACQUIRED, IMAGE, PRESENCE, TARGET
from ssl_pretrain.methods.mae import MAE, MAELoss, loss_weights
from ssl_pretrain.methods.masking import normalise_blocks
from ssl_pretrain.models.unet import UNet


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
    # channel 0: 8 + 16 counted voxels, errors 3 and -4; channel 1: 8 counted voxels (sample 0), no error
    assert loss.item() == pytest.approx(((3.0**2 + 4.0**2) / 24 + 0.0 / 8) / 2, rel=1e-6)


def test_plain_targets_are_the_default_and_block_normalised_ones_an_option() -> None:
    pred, target, mask, presence = _toy()
    assert MAELoss(2).norm_target is False
    norm = normalise_blocks(target, 2)
    loss = MAELoss(2, norm_target=True)(norm + (pred - target), target, mask, presence)
    assert loss.item() == pytest.approx(25.0 / 24 / 2, rel=1e-5)
    # a zero prediction costs, per channel, the mean squared normalised target over its counted voxels
    weight = mask * presence[:, :, None, None, None]
    per_channel = (norm**2 * weight).sum(dim=(0, 2, 3, 4)) / weight.sum(dim=(0, 2, 3, 4))
    zero = MAELoss(2, norm_target=True)(torch.zeros_like(target), target, mask, presence)
    assert zero.item() == pytest.approx(per_channel.mean().item(), rel=1e-6)


def test_cross_modal_mse_by_hand() -> None:
    """Shown channels count at masked voxels, dropped-but-acquired channels everywhere, absent ones nowhere."""
    rng = np.random.default_rng(2)
    pred, target = rng.normal(size=(2, 3, 4, 4, 4)), rng.normal(size=(2, 3, 4, 4, 4))
    mask = np.zeros((2, 1, 4, 4, 4))
    mask[:, :, :2] = 1.0  # half of every sample masked
    presence = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # sample 0: T1w only; sample 1: T1w + T2w shown
    acquired = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # sample 0 lacks channel 2; sample 1 has it, dropped
    sq = (pred - target) ** 2
    masked = sq[:, :, :2]  # the masked half
    ch0 = (masked[0, 0].sum() + masked[1, 0].sum()) / (32 + 32)
    ch1 = (sq[0, 1].sum() + masked[1, 1].sum()) / (64 + 32)  # dropped in sample 0: all 64 voxels count
    ch2 = sq[1, 2].sum() / 64  # sample 1 only (sample 0 never acquired it)
    expected = (ch0 + ch1 + ch2) / 3
    t = [torch.from_numpy(a) for a in (pred, target, mask, presence, acquired)]
    assert MAELoss(2)(*t).item() == pytest.approx(expected, rel=1e-6)
    weights = loss_weights(t[2], t[3], t[4])
    assert weights[0, 2].sum() == 0 and weights[0, 1].sum() == 64 and weights[1, 1].sum() == 32
    # without acquired (no cross-modal targets) dropped channels do not count
    shown_only = ((masked[0, 0].sum() + masked[1, 0].sum()) / 64 + masked[1, 1].sum() / 32) / 2
    assert MAELoss(2)(*t[:4]).item() == pytest.approx(shown_only, rel=1e-6)


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
    assert pred.grad[0, 0, 0, 0, 0].item() == pytest.approx(0.5 * 2 * 3.0 / 24)  # mean of 2 channels, 24 voxels


def test_shape_mismatch_raises() -> None:
    pred, target, mask, presence = _toy()
    with pytest.raises(ValueError, match="shapes disagree"):
        MAELoss(2)(pred[:, :1], target, mask, presence)


class Recorder(nn.Module):
    """A U-Net stand-in that records its input and returns zeros of its shape."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return torch.zeros_like(x)


def tiny_unet(channels: int = 4) -> UNet:
    torch.manual_seed(0)
    return UNet(3, channels, channels, channels=(4, 8), strides=(1, 2), num_res_units=1, subunits=1)


def test_mask_token_never_touches_an_absent_or_dropped_channel() -> None:
    unet = tiny_unet()
    recorder = Recorder(unet.encoder)
    mae = MAE(recorder, 4, mask_ratio=0.5, mask_block=2)
    with torch.no_grad():
        mae.mask_token.copy_(torch.tensor([7.0, 8.0, 9.0, 10.0]))
    image = torch.randn(2, 4, 4, 4, 4)
    presence = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    image = image * presence[:, :, None, None, None]
    mae({IMAGE: image, PRESENCE: presence}, torch.Generator().manual_seed(0))
    seen = recorder.seen
    assert seen is not None
    for b in range(2):
        for c in range(4):
            if presence[b, c] == 0:
                assert torch.all(seen[b, c] == 0), (b, c)  # exactly zero, as at fine-tuning and inference
            else:
                assert (seen[b, c] == mae.mask_token[c]).float().mean() == pytest.approx(0.5)  # the masked half


def test_forward_reconstructs_acquired_modalities_from_the_clean_target() -> None:
    unet = tiny_unet()
    mae = MAE(unet, 4, mask_ratio=0.5, mask_block=2)
    g = torch.Generator().manual_seed(3)
    target = torch.randn(2, 4, 4, 4, 4, generator=g)
    acquired = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    target = target * acquired[:, :, None, None, None]
    presence = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])  # sample 0: T1w only
    image = (target + 0.3 * torch.randn(target.shape, generator=g)) * presence[:, :, None, None, None]
    batch = {IMAGE: image, PRESENCE: presence, ACQUIRED: acquired, TARGET: target}
    out = mae(batch, torch.Generator().manual_seed(4))
    mask = mae.draw_mask(image, torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, pred = mae.reconstruct(image, mask, presence)
    expected = MAELoss(2)(pred, target, mask, presence, acquired)
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert {"mae_shown", "mae_cross"} <= set(out)
    mae.cross_modal = False
    shown_only = MAELoss(2)(pred, target, mask, presence)
    assert mae(batch, torch.Generator().manual_seed(4))["loss"].item() == pytest.approx(shown_only.item(), rel=1e-5)


def test_sparse_norm_has_no_mask_token_and_empties_masked_features() -> None:
    dense = MAE(tiny_unet(), 4, mask_block=2, mask_token=False)
    sparse = MAE(tiny_unet(), 4, mask_block=2, sparse_norm=True)
    assert sparse.mask_token is None and sparse.sparse is not None
    assert sparse.state_dict().keys() == dense.state_dict().keys()  # same weights, same files
    image = torch.randn(1, 4, 8, 8, 8)
    mask = sparse.draw_mask(image, torch.Generator().manual_seed(0))
    features: dict[str, list[torch.Tensor]] = {}
    for name, mae in (("dense", dense), ("sparse", sparse)):
        handle = mae.encoder.register_forward_hook(lambda m, i, out, name=name: features.setdefault(name, out))
        with torch.no_grad():
            mae.reconstruct(image, mask)
        handle.remove()
    hidden = mask.bool().expand(1, 4, 8, 8, 8)
    assert torch.all(features["sparse"][0][hidden] == 0)  # the finest stage: masked voxels stay empty
    assert features["dense"][0][hidden].abs().sum() > 0
    with torch.no_grad():
        unmasked = [m.reconstruct(image, torch.zeros_like(mask))[1] for m in (dense, sparse)]
    torch.testing.assert_close(unmasked[0], unmasked[1], rtol=1e-4, atol=1e-5)  # unmasked: one network
