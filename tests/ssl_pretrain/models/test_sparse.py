"""SparK-style sparse encoding: statistics on visible voxels, masked voxels empty, dense outside the block."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from ssl_pretrain.models.sparse import SparseMasking, sparse_instance_norm
from ssl_pretrain.models.unet import ResEncoder


def encoder() -> ResEncoder:
    torch.manual_seed(0)
    return ResEncoder(3, 2, channels=(4, 8), strides=(1, 2), num_res_units=1, subunits=2)


def block_mask(n: int = 8, seed: int = 0) -> torch.Tensor:
    """(2, 1, n, n, n) visible mask (1 = visible) of 2^3 blocks, about half visible."""
    g = torch.Generator().manual_seed(seed)
    coarse = (torch.rand(2, 1, n // 2, n // 2, n // 2, generator=g) < 0.5).float()
    coarse[:, :, 0, 0, 0] = 1.0
    return coarse.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)


def test_sparse_instance_norm_uses_visible_statistics_only() -> None:
    torch.manual_seed(1)
    norm = nn.InstanceNorm3d(3, affine=True, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        norm.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    x = torch.randn(2, 3, 4, 4, 4, dtype=torch.float64)
    visible = block_mask(4).double()
    out = sparse_instance_norm(x, visible, norm).detach().numpy()
    xs, m = x.numpy(), visible.numpy().astype(bool)
    for b in range(2):
        for c in range(3):
            v = xs[b, c][m[b, 0]]
            expected = (xs[b, c] - v.mean()) / np.sqrt(v.var() + 1e-5) * norm.weight[c].item() + norm.bias[c].item()
            np.testing.assert_allclose(out[b, c][m[b, 0]], expected[m[b, 0]], rtol=1e-6)
            assert np.all(out[b, c][~m[b, 0]] == 0)


def test_all_visible_is_the_dense_encoder_and_outside_the_block_nothing_changes() -> None:
    dense = encoder()
    sparse = copy.deepcopy(dense)
    masking = SparseMasking(sparse)
    x = torch.randn(2, 2, 8, 8, 8)
    with torch.no_grad():
        reference = dense(x)
        with masking.visible(torch.ones(2, 1, 8, 8, 8)):
            inside = sparse(x)
        outside = sparse(x)
    for r, a, b in zip(reference, inside, outside, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-5)
        assert torch.equal(b, r)
    assert sparse.state_dict().keys() == dense.state_dict().keys()  # the saved encoder is the dense one


def test_masked_voxels_stay_empty_and_never_reach_visible_ones() -> None:
    enc = encoder()
    masking = SparseMasking(enc)
    visible = block_mask(8)
    x = torch.randn(2, 2, 8, 8, 8)
    junk = x + 50.0 * (1 - visible) * torch.randn_like(x)  # anything in masked voxels
    with torch.no_grad(), masking.visible(visible):
        a, b = enc(x), enc(junk)
    for level, (fa, fb) in enumerate(zip(a, b, strict=True)):
        m = masking_at(visible, fa.shape)
        assert torch.all(fa * (1 - m) == 0), level  # masked positions are empty at every stage
        torch.testing.assert_close(fa, fb, rtol=1e-5, atol=1e-5)  # visible outputs ignore masked inputs
    with torch.no_grad():
        dense_a, dense_b = enc(x), enc(junk)
    assert not torch.allclose(dense_a[0], dense_b[0])  # the dense encoder does see them


def masking_at(visible: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    factor = visible.shape[-1] // shape[-1]
    return torch.nn.functional.max_pool3d(visible, factor) if factor > 1 else visible


def test_batch_norm_encoders_are_refused_and_hooks_can_be_removed() -> None:
    with pytest.raises(ValueError, match="instance norm"):
        SparseMasking(ResEncoder(3, 1, channels=(4,), strides=(1,), num_res_units=1, norm="batch"))
    enc = encoder()
    masking = SparseMasking(enc)
    masking.remove()
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad(), masking.visible(torch.zeros(1, 1, 8, 8, 8)):
        out = enc(x)
    assert out[0].abs().sum() > 0  # no hooks left: a fully masked input is not emptied
