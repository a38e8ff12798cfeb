"""Frozen-encoder features at chosen voxels: what probes and similarity measures consume.

Used by each pretraining run's evidence (:mod:`ssl_pretrain.evidence`) and by :mod:`evaluation` (which
imports from here: imports flow evaluation -> finetune -> ssl_pretrain).

An encoder is any ``nn.Module`` that maps an image batch ``(1, C, X, Y, Z)`` to a list (or tuple) of
feature maps ``(1, C_s, X_s, Y_s, Z_s)``, one per scale, each tiling the input evenly (stride
``X / X_s`` per axis). A voxel's feature vector is the concatenation over scales of each map
trilinearly interpolated at the voxel's centre (:func:`sample_voxel_features`).

Voxel centres and ``grid_sample``: with ``align_corners=False`` a normalised coordinate ``g`` in
[-1, 1] addresses the *edges* of the map, so input voxel ``i`` of ``X`` (its centre at ``i + 0.5`` in
edge units) is ``g = (2i + 1) / X - 1`` whatever the scale, provided the map covers exactly the input
extent. At scale stride ``f`` this lands at map coordinate ``(i + 0.5) / f - 0.5``, the centre of voxel
``i`` in that map's units. Near the volume border (within half a map voxel) values are clamped to the
edge map voxel (``padding_mode="border"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_pretrain.errors import DataError


@dataclass
class RegionFeatures:
    """Features of sampled voxels of one region.

    Attributes:
        X: ``(N, F)`` float32 features.
        y: ``(N,)`` int tissue classes of the voxels (e.g. 2 GM, 3 WM).
        subjects: ``(N,)`` str subject key of each row (probes use it to keep train and test subjects apart).
        coords: ``(N, 3)`` int voxel indices in the subject's volume (``None`` once concatenated).
    """

    X: np.ndarray
    y: np.ndarray
    subjects: np.ndarray
    coords: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.X)
        if len(self.y) != n or len(self.subjects) != n:
            raise ValueError(f"X, y and subjects need one row each: {n}, {len(self.y)}, {len(self.subjects)}")

    @classmethod
    def concat(cls, parts: Sequence[RegionFeatures]) -> RegionFeatures:
        """Stack the rows of several subjects' features (same encoder, same columns)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls(
            X=np.concatenate([p.X for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            subjects=np.concatenate([np.asarray(p.subjects, dtype=str) for p in parts]),
        )


def sample_voxel_features(
    features: Sequence[torch.Tensor], coords: np.ndarray | torch.Tensor, input_shape: Sequence[int]
) -> np.ndarray:
    """Multi-scale features trilinearly interpolated at voxel centres.

    Args:
        features: feature maps ``(1, C_s, X_s, Y_s, Z_s)``; each must tile ``input_shape`` evenly
            (``input_shape[d] % X_s[d] == 0``).
        coords: ``(N, 3)`` integer voxel indices in the input grid.
        input_shape: ``(X, Y, Z)`` of the encoder's input.

    Returns:
        ``(N, sum_s C_s)`` float32, scales in list order.
    """
    shape = torch.as_tensor([int(s) for s in input_shape], dtype=torch.float32)
    c = torch.as_tensor(np.asarray(coords), dtype=torch.float32)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"coords must have shape (N, 3), got {tuple(c.shape)}")
    if len(c) and (c.min() < 0 or bool((c >= shape).any())):
        raise ValueError(f"coords fall outside the input grid {tuple(input_shape)}")
    grid = (2.0 * c + 1.0) / shape - 1.0  # (N, 3) in (x, y, z) order, align_corners=False
    grid = grid.flip(-1).reshape(1, -1, 1, 1, 3)  # grid_sample wants (W, H, D) = (z, y, x) last
    out = []
    for fmap in features:
        if fmap.ndim != 5 or fmap.shape[0] != 1:
            raise ValueError(f"feature maps must have shape (1, C, X, Y, Z), got {tuple(fmap.shape)}")
        if any(int(s) % int(m) for s, m in zip(input_shape, fmap.shape[2:], strict=True)):
            raise ValueError(
                f"feature map of spatial shape {tuple(fmap.shape[2:])} does not tile the input {tuple(input_shape)}; "
                "pad the input to a multiple of the encoder's total stride"
            )
        g = grid.to(device=fmap.device, dtype=fmap.dtype)
        sampled = F.grid_sample(fmap, g, mode="bilinear", padding_mode="border", align_corners=False)
        out.append(sampled.reshape(fmap.shape[1], -1).T.float().cpu())
    return torch.cat(out, 1).numpy().astype(np.float32) if out else np.zeros((len(c), 0), np.float32)


def sample_class_balanced(
    labels: np.ndarray,
    region_mask: np.ndarray,
    n_voxels: int,
    classes: Sequence[int] = (2, 3),
    seed: int = 0,
    source: str | Path = "volume",
) -> tuple[np.ndarray, np.ndarray]:
    """Voxels of ``region_mask`` drawn at random, the same number from each tissue class.

    Each class gets ``min(n_voxels // len(classes), smallest class count in the region)`` voxels, so the
    sample is exactly balanced (and smaller than ``n_voxels`` when a class is scarce).

    Args:
        labels: ``(X, Y, Z)`` tissue classes.
        region_mask: ``(X, Y, Z)`` bool, True = inside the region.
        n_voxels: requested total.
        classes: tissue classes to sample.
        seed: sampling seed.
        source: file or subject named in errors.

    Returns:
        ``coords (N, 3)`` int64 and ``y (N,)`` int64.

    Raises:
        DataError: the region is empty or lacks one of ``classes``.
    """
    lab, mask = np.asarray(labels), np.asarray(region_mask, dtype=bool)
    if lab.shape != mask.shape:
        raise ValueError(f"labels {lab.shape} and region mask {mask.shape} differ in shape")
    if n_voxels < len(classes):
        raise ValueError(f"n_voxels ({n_voxels}) must be at least the number of classes ({len(classes)})")
    if not mask.any():
        raise DataError(source, "the region is empty (no voxel of the region mask)")
    pools = {c: np.flatnonzero(mask.reshape(-1) & (lab.reshape(-1) == c)) for c in classes}
    absent = [c for c, idx in pools.items() if idx.size == 0]
    if absent:
        raise DataError(source, f"the region holds no voxel of tissue class(es) {absent}")
    per_class = min(n_voxels // len(classes), min(idx.size for idx in pools.values()))
    rng = np.random.default_rng(seed)
    flat = np.concatenate([rng.choice(pools[c], per_class, replace=False) for c in classes])
    y = np.repeat(np.asarray(classes, dtype=np.int64), per_class)
    coords = np.stack(np.unravel_index(flat, lab.shape), 1).astype(np.int64)
    return coords, y


def _pad_to(x: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """The window ``[start, start + size)`` of ``x`` (C, X, Y, Z), zero outside the volume."""
    out = x.new_zeros((x.shape[0], *size))
    src, dst = [], []
    for s0, n, dim in zip(start, size, x.shape[1:], strict=True):
        a, b = max(s0, 0), min(s0 + n, dim)
        src.append(slice(a, b))
        dst.append(slice(a - s0, b - s0))
    out[(slice(None), *dst)] = x[(slice(None), *src)]
    return out


def _encode(encoder: nn.Module, window: torch.Tensor) -> list[torch.Tensor]:
    feats = encoder(window[None])
    if isinstance(feats, torch.Tensor):
        feats = [feats]
    return list(feats)


@torch.no_grad()
def encoder_features_at(
    encoder: nn.Module,
    volume: torch.Tensor,
    coords: np.ndarray,
    pad_multiple: int = 16,
    roi_size: Sequence[int] | None = None,
    margin: int | None = None,
) -> np.ndarray:
    """Run a frozen encoder over a volume and sample its multi-scale features at ``coords``.

    Whole volume (``roi_size=None``): the volume is zero-padded by ``pad_multiple`` voxels (or a few more
    at the far end, to reach a multiple of ``pad_multiple``) on every side and encoded once; the padding
    gives border voxels the same zero context as in window mode, so no sample is clamped to a map edge.

    Windows (``roi_size`` given, each a multiple of ``pad_multiple``): the grid is cut into tiles of
    ``roi_size - 2·margin`` voxels; each tile holding a sample is encoded inside a window of ``roi_size``
    centred on it (zero outside the volume), so every sampled voxel sits at least ``margin`` voxels from
    its window's edge and sees that much context. Windows start at multiples of ``pad_multiple``, on the
    same stride grid as the whole-volume pass, so an encoder whose receptive field fits in the margin
    gives the same features either way.

    Args:
        encoder: frozen encoder (see module docstring); evaluated in eval mode on its own device.
        volume: ``(C, X, Y, Z)`` float image.
        coords: ``(N, 3)`` voxel indices.
        pad_multiple: the encoder's total stride (or a multiple of it).
        roi_size: window size for large volumes, or ``None`` for one pass.
        margin: context kept around each tile in window mode, a multiple of ``pad_multiple`` (default
            ``roi_size // 4`` rounded down to one, at least ``pad_multiple``).

    Returns:
        ``(N, sum_s C_s)`` float32 features, rows in ``coords`` order.
    """
    if volume.ndim != 4:
        raise ValueError(f"volume must have shape (C, X, Y, Z), got {tuple(volume.shape)}")
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    param = next(encoder.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = volume.to(device=device, dtype=torch.float32)
    was_training = encoder.training
    encoder.eval()
    try:
        if roi_size is None:
            size = [-(-(int(n) + 2 * pad_multiple) // pad_multiple) * pad_multiple for n in x.shape[1:]]
            start = [-pad_multiple] * 3
            window = _pad_to(x, start, size)
            return sample_voxel_features(_encode(encoder, window), coords + pad_multiple, size)
        roi = np.asarray([int(r) for r in roi_size])
        if roi.shape != (3,) or np.any(roi % pad_multiple):
            raise ValueError(f"roi_size must be three multiples of {pad_multiple}, got {tuple(roi_size)}")
        if margin is None:
            m = np.maximum(roi // 4 // pad_multiple * pad_multiple, pad_multiple)
        else:
            m = np.full(3, int(margin))
        step = roi - 2 * m
        if np.any(m % pad_multiple) or np.any(step <= 0):
            raise ValueError(
                f"margin {m.tolist()} must be a multiple of {pad_multiple} that leaves a tile inside "
                f"windows of {tuple(roi)}"
            )
        tiles = coords // step
        out: np.ndarray | None = None
        for tile in np.unique(tiles, axis=0):
            rows = np.flatnonzero(np.all(tiles == tile, axis=1))
            start = tile * step - m
            feats = sample_voxel_features(
                _encode(encoder, _pad_to(x, start.tolist(), roi.tolist())), coords[rows] - start, roi.tolist()
            )
            if out is None:
                out = np.zeros((len(coords), feats.shape[1]), np.float32)
            out[rows] = feats
        return out if out is not None else np.zeros((0, 0), np.float32)
    finally:
        encoder.train(was_training)


def extract_region_features(
    encoder: nn.Module,
    volume: torch.Tensor,
    labels: np.ndarray,
    region_mask: np.ndarray,
    n_voxels: int,
    seed: int = 0,
    classes: Sequence[int] = (2, 3),
    subject: str = "",
    pad_multiple: int = 16,
    roi_size: Sequence[int] | None = None,
) -> RegionFeatures:
    """Sample class-balanced voxels of one region of one subject and read a frozen encoder's features there.

    Args:
        encoder: frozen encoder returning a list of ``(1, C_s, X_s, Y_s, Z_s)`` maps.
        volume: ``(C, X, Y, Z)`` preprocessed image (channels in ``data.modalities`` order).
        labels: ``(X, Y, Z)`` tissue classes.
        region_mask: ``(X, Y, Z)`` bool, True = inside the region.
        n_voxels: voxels to sample (split equally over ``classes``, see :func:`sample_class_balanced`).
        seed: sampling seed.
        classes: tissue classes (default GM 2, WM 3).
        subject: subject key, recorded per row and named in errors.
        pad_multiple: the encoder's total stride.
        roi_size: window size for volumes too large to encode at once (``None``: whole volume).

    Returns:
        :class:`RegionFeatures` with ``coords``.
    """
    if tuple(volume.shape[1:]) != tuple(np.shape(labels)):
        raise DataError(subject or "volume", f"image grid {tuple(volume.shape[1:])} != label grid {np.shape(labels)}")
    coords, y = sample_class_balanced(labels, region_mask, n_voxels, classes, seed, source=subject or "volume")
    X = encoder_features_at(encoder, volume, coords, pad_multiple=pad_multiple, roi_size=roi_size)
    return RegionFeatures(X=X, y=y, subjects=np.full(len(y), subject, dtype=object).astype(str), coords=coords)
