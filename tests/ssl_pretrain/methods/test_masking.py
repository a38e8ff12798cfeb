"""Block masks and per-block normalisation against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_pretrain.methods.masking import (
    apply_mask,
    from_blocks,
    n_masked_blocks,
    normalise_blocks,
    random_block_mask,
    to_blocks,
)


def test_mask_ratio_is_exact_and_blocks_are_whole() -> None:
    mask = random_block_mask(3, (16, 16, 8), 4, 0.75, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, 1, 16, 16, 8)
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    # 4 x 4 x 2 = 32 blocks, exactly 24 masked in every sample
    assert mask.mean(dim=(1, 2, 3, 4)).tolist() == [0.75, 0.75, 0.75]
    blocks = to_blocks(mask, 4)
    assert torch.equal(blocks.amin(-1), blocks.amax(-1))  # each block wholly masked or wholly visible
    assert blocks.amax(-1).sum(dim=(1, 2, 3, 4)).tolist() == [24.0, 24.0, 24.0]
    assert not torch.equal(mask[0], mask[1])


def test_mask_is_reproducible_with_a_generator_and_anisotropic_blocks() -> None:
    a = random_block_mask(2, (8, 12, 4), (4, 6, 2), 0.6, generator=torch.Generator().manual_seed(3))
    b = random_block_mask(2, (8, 12, 4), (4, 6, 2), 0.6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.mean(dim=(1, 2, 3, 4)).tolist() == [5 / 8, 5 / 8]  # round(0.6 * 8) = 5 of 8 blocks


def test_bad_mask_arguments_raise() -> None:
    with pytest.raises(ValueError, match="multiple of the mask block"):
        random_block_mask(1, (10, 16, 16), 4, 0.5)
    with pytest.raises(ValueError, match="ratio"):
        n_masked_blocks(8, 1.5)
    with pytest.raises(ValueError, match="block"):
        random_block_mask(1, (8, 8, 8), 0, 0.5)


def test_block_roundtrip_and_layout() -> None:
    x = torch.arange(2 * 3 * 4 * 6 * 2, dtype=torch.float32).view(2, 3, 4, 6, 2)
    blocks = to_blocks(x, (2, 3, 2))
    assert blocks.shape == (2, 3, 2, 2, 1, 12)
    assert torch.equal(blocks[1, 2, 1, 0, 0], x[1, 2, 2:4, 0:3, 0:2].reshape(-1))
    assert torch.equal(from_blocks(blocks, (2, 3, 2)), x)


def test_normalisation_per_block_matches_hand_computation() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, (1, 2, 4, 4, 4)).astype(np.float64)
    x[0, 1, :2, :2, :2] = 7.0  # a constant block normalises to 0
    out = normalise_blocks(torch.from_numpy(x), 2, eps=1e-6).numpy()
    for c, (i, j, k) in [(0, (0, 0, 0)), (0, (2, 2, 0)), (1, (2, 0, 2))]:
        v = x[0, c, i : i + 2, j : j + 2, k : k + 2]
        expected = (v - v.mean()) / np.sqrt(v.var(ddof=1) + 1e-6)
        np.testing.assert_allclose(out[0, c, i : i + 2, j : j + 2, k : k + 2], expected, rtol=1e-10)
    np.testing.assert_allclose(out[0, 1, :2, :2, :2], 0.0)


def test_apply_mask_zeroes_or_fills_with_the_channel_token() -> None:
    image = torch.ones(1, 2, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[..., :2, :, :] = 1
    zeroed = apply_mask(image, mask)
    assert zeroed[:, :, :2].abs().sum() == 0 and torch.equal(zeroed[:, :, 2:], image[:, :, 2:])
    filled = apply_mask(image, mask, torch.tensor([-3.0, 4.0]))
    assert torch.all(filled[0, 0, :2] == -3.0) and torch.all(filled[0, 1, :2] == 4.0)
    assert torch.equal(filled[:, :, 2:], image[:, :, 2:])


def test_denormalise_inverts_normalise() -> None:
    x = torch.randn(2, 3, 8, 4, 4, dtype=torch.float64)
    from ssl_pretrain.methods.masking import denormalise_blocks

    torch.testing.assert_close(denormalise_blocks(normalise_blocks(x, (4, 2, 2)), x, (4, 2, 2)), x)


def test_apply_mask_puts_the_token_in_present_channels_only() -> None:
    image = torch.ones(2, 3, 2, 2, 2) * torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])[:, :, None, None, None]
    mask = torch.ones(2, 1, 2, 2, 2)
    presence = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    filled = apply_mask(image, mask, torch.tensor([5.0, 6.0, 7.0]), presence)
    expected = torch.tensor([[5.0, 0.0, 7.0], [0.0, 6.0, 0.0]])[:, :, None, None, None].expand_as(image)
    assert torch.equal(filled, expected)
