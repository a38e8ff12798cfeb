"""Voxel-centre feature sampling, class-balanced voxel draws and whole-volume vs windowed encoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssl_pretrain.errors import DataError
from ssl_pretrain.models.features import (
    RegionFeatures,
    encoder_features_at,
    extract_region_features,
    sample_class_balanced,
    sample_voxel_features,
)


def _centre_map(shape, stride):
    """(1, 3, X/f, Y/f, Z/f) map whose values are the input-space coordinates of each map voxel's centre."""
    axes = [(torch.arange(n // f, dtype=torch.float64) + 0.5) * f - 0.5 for n, f in zip(shape, stride, strict=True)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


def test_full_resolution_sampling_is_exact():
    shape = (6, 7, 5)
    fmap = _centre_map(shape, (1, 1, 1))
    coords = np.array([[0, 0, 0], [5, 6, 4], [2, 3, 1], [5, 0, 4]])
    np.testing.assert_allclose(sample_voxel_features([fmap], coords, shape), coords, atol=1e-5)


def test_coarse_scales_land_on_voxel_centres():
    shape = (16, 8, 12)
    stride = (4, 2, 4)  # anisotropic strides
    maps = [_centre_map(shape, (1, 1, 1)), _centre_map(shape, (2, 2, 2)), _centre_map(shape, stride)]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    out = sample_voxel_features(maps, grid, shape)
    assert out.shape == (len(grid), 9)
    np.testing.assert_allclose(out[:, 0:3], grid, atol=1e-5)
    # a linear function is reproduced exactly by trilinear interpolation wherever no clamping happens:
    # at least half a coarse voxel (f/2 - 0.5 input voxels) from the border
    for cols, f in ((slice(3, 6), np.array([2, 2, 2])), (slice(6, 9), np.array(stride))):
        inner = np.all((grid >= f / 2 - 0.5) & (grid <= np.array(shape) - f / 2 - 0.5), axis=1)
        np.testing.assert_allclose(out[inner, cols], grid[inner], atol=1e-5)
        # near the border the value is clamped to the edge voxel's centre
        edge = grid[:, 0] == 0
        np.testing.assert_allclose(out[edge, cols][:, 0], f[0] / 2 - 0.5, atol=1e-5)


def test_sampling_rejects_bad_inputs():
    fmap = torch.zeros(1, 2, 3, 4, 4)
    with pytest.raises(ValueError, match="tile"):
        sample_voxel_features([fmap], np.zeros((1, 3), int), (7, 8, 8))
    with pytest.raises(ValueError, match="outside"):
        sample_voxel_features([fmap], np.array([[6, 0, 8]]), (6, 8, 8))
    with pytest.raises(ValueError, match="N, 3"):
        sample_voxel_features([fmap], np.zeros((2, 2), int), (6, 8, 8))


def test_class_balanced_sampling():
    labels = np.zeros((10, 10, 10), int)
    labels[:5] = 2
    labels[5:] = 3
    mask = np.zeros_like(labels, bool)
    mask[3:6, :2, :2] = True  # 8 GM (x=3,4) and 4 WM (x=5) voxels in the region
    coords, y = sample_class_balanced(labels, mask, n_voxels=100, seed=1)
    assert np.bincount(y).tolist()[2:] == [4, 4]  # limited by the scarcer class, exactly balanced
    assert mask[tuple(coords.T)].all() and (labels[tuple(coords.T)] == y).all()
    assert len({tuple(c) for c in coords}) == 8  # no voxel drawn twice
    again, _ = sample_class_balanced(labels, mask, n_voxels=100, seed=1)
    np.testing.assert_array_equal(coords, again)
    with pytest.raises(DataError, match=r"sub-01.*empty"):
        sample_class_balanced(labels, np.zeros_like(mask), 10, source="sub-01")
    with pytest.raises(DataError, match=r"tissue class\(es\) \[3\]"):
        sample_class_balanced(labels, labels == 2, 10)


class _ToyEncoder(nn.Module):
    """Translation-equivariant two-scale encoder: a 3³ convolution, then 2× average pooling."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv3d(channels, 3, 3, padding=1)
        self.pool = nn.AvgPool3d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.conv(x)
        return [h, self.pool(h)]


def test_windowed_encoding_matches_whole_volume():
    rng = np.random.default_rng(0)
    volume = torch.from_numpy(rng.normal(size=(2, 30, 22, 26)).astype(np.float32))
    coords = np.stack([rng.integers(0, n, 60) for n in volume.shape[1:]], 1)
    encoder = _ToyEncoder().train()
    whole = encoder_features_at(encoder, volume, coords, pad_multiple=4)
    windows = encoder_features_at(encoder, volume, coords, pad_multiple=4, roi_size=(24, 24, 24), margin=8)
    assert whole.shape == (60, 6)
    np.testing.assert_allclose(windows, whole, atol=1e-5)
    assert encoder.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="multiples"):
        encoder_features_at(encoder, volume, coords, pad_multiple=4, roi_size=(18, 24, 24))
    with pytest.raises(ValueError, match="margin"):
        encoder_features_at(encoder, volume, coords, pad_multiple=4, roi_size=(24, 24, 24), margin=6)


def test_extract_region_features():
    labels = np.zeros((12, 12, 12), int)
    labels[:, :6] = 2
    labels[:, 6:] = 3
    region = np.zeros_like(labels, bool)
    region[2:10, 2:10, 2:10] = True
    volume = torch.from_numpy(labels[None].astype(np.float32)).repeat(2, 1, 1, 1)
    feats = extract_region_features(_ToyEncoder(), volume, labels, region, n_voxels=40, seed=0, subject="sub-02")
    assert feats.X.shape == (40, 6) and feats.X.dtype == np.float32
    assert np.bincount(feats.y).tolist()[2:] == [20, 20]
    assert set(feats.subjects) == {"sub-02"} and feats.coords.shape == (40, 3)
    with pytest.raises(DataError, match=r"sub-02.*grid"):
        extract_region_features(_ToyEncoder(), volume[:, :10], labels, region, 40, subject="sub-02")
    both = RegionFeatures.concat([feats, feats])
    assert both.X.shape == (80, 6) and both.coords is None
    with pytest.raises(ValueError, match="one row each"):
        RegionFeatures(X=np.zeros((3, 2)), y=np.zeros(2), subjects=np.array(["a"] * 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_features_on_cuda_match_cpu():
    rng = np.random.default_rng(1)
    volume = torch.from_numpy(rng.normal(size=(2, 16, 16, 16)).astype(np.float32))
    coords = np.stack([rng.integers(0, 16, 30) for _ in range(3)], 1)
    cpu = encoder_features_at(_ToyEncoder(), volume, coords, pad_multiple=4)
    gpu = encoder_features_at(_ToyEncoder().cuda(), volume, coords, pad_multiple=4)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)
