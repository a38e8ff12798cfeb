"""Random 3D block masking and per-block target normalisation for masked image modelling.

A mask is a ``(B, 1, X, Y, Z)`` float tensor shared by all channels of a sample, with **1 = masked
(hidden from the encoder, counted in the loss) and 0 = visible**, the convention of
facebookresearch/mae (He et al. 2022). The volume is tiled into blocks of ``block`` voxels and exactly
``round(ratio · n_blocks)`` blocks of each sample are masked, chosen uniformly at random.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def as_block(block: int | Sequence[int]) -> tuple[int, int, int]:
    """A block size as three positive ints (an int means a cube)."""
    size = (int(block),) * 3 if isinstance(block, int) else tuple(int(b) for b in block)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"block must be a positive int or three positive ints, got {block!r}")
    return size  # type: ignore[return-value]


def block_grid(spatial_shape: Sequence[int], block: int | Sequence[int]) -> tuple[int, int, int]:
    """Blocks per axis when ``spatial_shape`` is tiled by ``block``; raises ValueError unless it divides."""
    size = as_block(block)
    if len(spatial_shape) != 3 or any(s % b for s, b in zip(spatial_shape, size, strict=True)):
        raise ValueError(f"spatial shape {tuple(spatial_shape)} is not a multiple of the mask block {size}")
    return tuple(s // b for s, b in zip(spatial_shape, size, strict=True))  # type: ignore[return-value]


def n_masked_blocks(n_blocks: int, ratio: float) -> int:
    """How many of ``n_blocks`` blocks a mask of ``ratio`` hides: ``round(ratio · n_blocks)``."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"mask ratio must lie in [0, 1], got {ratio}")
    return round(ratio * n_blocks)


def random_block_mask(
    batch_size: int,
    spatial_shape: Sequence[int],
    block: int | Sequence[int],
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw a random block mask.

    Args:
        batch_size: B.
        spatial_shape: ``(X, Y, Z)``, each a multiple of the block edge.
        block: block edge(s) in voxels.
        ratio: fraction of blocks to mask; each sample gets exactly ``round(ratio · n_blocks)``.
        generator: a CPU generator for reproducible masks (default: torch's global RNG).
        device: where the mask goes.

    Returns:
        ``(B, 1, X, Y, Z)`` float mask, 1 = masked, 0 = visible.
    """
    grid = block_grid(spatial_shape, block)
    n_blocks = grid[0] * grid[1] * grid[2]
    n_masked = n_masked_blocks(n_blocks, ratio)
    noise = torch.rand(batch_size, n_blocks, generator=generator)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # each block's rank in a random order
    coarse = (ranks < n_masked).float().view(batch_size, 1, *grid)
    size = as_block(block)
    mask = coarse.repeat_interleave(size[0], 2).repeat_interleave(size[1], 3).repeat_interleave(size[2], 4)
    return mask.to(device) if device is not None else mask


def apply_mask(image: Tensor, mask: Tensor, token: Tensor | None = None, presence: Tensor | None = None) -> Tensor:
    """The encoder's input: ``image`` with masked voxels replaced by 0 or by a per-channel token.

    The token goes into *present* channels only: a missing or dropped modality stays exactly zero, as it is
    at fine-tuning and inference.

    Args:
        image: ``(B, C, X, Y, Z)``.
        mask: ``(B, 1, X, Y, Z)``, 1 = masked.
        token: ``(C,)`` learned mask value per channel, or None for zeros.
        presence: ``(B, C)``, 1 = the modality is in ``image``; None = every channel is.
    """
    visible = image * (1.0 - mask)
    if token is None:
        return visible
    fill = token.view(1, -1, 1, 1, 1).to(image.dtype)
    if presence is not None:
        fill = fill * presence.to(image.dtype).view(*presence.shape, 1, 1, 1)
    return visible + mask * fill


def to_blocks(x: Tensor, block: int | Sequence[int]) -> Tensor:
    """Reshape ``(B, C, X, Y, Z)`` into ``(B, C, nx, ny, nz, bx·by·bz)``: one row per block and channel."""
    b, c, *spatial = x.shape
    (nx, ny, nz), (bx, by, bz) = block_grid(spatial, block), as_block(block)
    x = x.reshape(b, c, nx, bx, ny, by, nz, bz).permute(0, 1, 2, 4, 6, 3, 5, 7)
    return x.reshape(b, c, nx, ny, nz, bx * by * bz)


def from_blocks(x: Tensor, block: int | Sequence[int]) -> Tensor:
    """Inverse of :func:`to_blocks`: ``(B, C, nx, ny, nz, bx·by·bz)`` back to ``(B, C, X, Y, Z)``."""
    b, c, nx, ny, nz, _ = x.shape
    bx, by, bz = as_block(block)
    x = x.reshape(b, c, nx, ny, nz, bx, by, bz).permute(0, 1, 2, 5, 3, 6, 4, 7)
    return x.reshape(b, c, nx * bx, ny * by, nz * bz)


def normalise_blocks(x: Tensor, block: int | Sequence[int], eps: float = 1e-6) -> Tensor:
    """Normalise each block of each channel by its own mean and standard deviation.

    As MAE's ``norm_pix_loss``: ``(x − mean) / sqrt(var + eps)`` with the unbiased variance of the
    block's voxels. A constant block (e.g. background or a missing modality) becomes 0.

    Args:
        x: ``(B, C, X, Y, Z)``, spatial dims multiples of ``block``.
        block: block edge(s) in voxels.
        eps: added to the variance.

    Returns:
        ``(B, C, X, Y, Z)`` normalised targets.
    """
    blocks = to_blocks(x, block)
    mean = blocks.mean(dim=-1, keepdim=True)
    var = blocks.var(dim=-1, keepdim=True)
    return from_blocks((blocks - mean) / (var + eps).sqrt(), block)


def denormalise_blocks(x: Tensor, reference: Tensor, block: int | Sequence[int], eps: float = 1e-6) -> Tensor:
    """Map block-normalised values back to intensities with ``reference``'s per-block mean and std.

    The inverse of :func:`normalise_blocks` for display: ``x · sqrt(var + eps) + mean``, with the block
    statistics of ``reference`` (the unmasked input), as MAE's visualisations do.

    Args:
        x: ``(B, C, X, Y, Z)`` values in block-normalised units (e.g. an MAE reconstruction).
        reference: ``(B, C, X, Y, Z)`` the input whose block statistics to use.
        block: block edge(s) in voxels.
        eps: as in :func:`normalise_blocks`.
    """
    ref = to_blocks(reference, block)
    mean = ref.mean(dim=-1, keepdim=True)
    std = (ref.var(dim=-1, keepdim=True) + eps).sqrt()
    return from_blocks(to_blocks(x, block) * std + mean, block)
