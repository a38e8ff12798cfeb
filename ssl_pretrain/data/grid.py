"""Grid geometry: the cache grid, resampling through affines, and the way back to a subject's native grid.

Every array in the preprocessing cache lives on one grid per subject: the reference modality's field of
view, reoriented to the closest canonical RAS orientation (axes 0, 1, 2 point Right, Anterior, Superior),
resampled to an isotropic ``data.spacing`` and cropped to the brain. Inputs on other grids (diffusion
maps at 2.5 mm with a small misregistration, label maps) are resampled onto it *through their affines*
(voxel -> world -> cache voxel), linear for images and nearest-neighbour for labels.

:func:`to_native` inverts the whole chain for predictions: an array on the cache grid is resampled onto
the reference image's native voxel grid, so it has exactly the input's shape and affine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from numpy.typing import DTypeLike
from scipy import ndimage

from ssl_pretrain.errors import ConfigError

if TYPE_CHECKING:
    from ssl_pretrain.data.cache import CachedSubject


def parse_patch_size(value: Any, key: str = "data.patch_size") -> tuple[int, int, int]:
    """A patch size as 3 positive ints: an int ``n`` means ``(n, n, n)``.

    Raises:
        ConfigError: naming ``key``, when the value is not a positive int or a list of 3 of them.
    """
    if isinstance(value, bool):
        raise ConfigError(key, f"expected a positive int or a list of 3, got {value!r}")
    if isinstance(value, int | np.integer):
        value = [int(value)] * 3
    try:
        size = tuple(int(v) for v in value)
        ok = len(size) == 3 and all(float(v) == int(v) and int(v) > 0 for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(key, f"expected a positive int or a list of 3 positive ints, got {value!r}")
    return size  # type: ignore[return-value]


def parse_spacing(value: object, key: str = "data.spacing") -> float:
    """The target isotropic spacing in mm (a positive number).

    Raises:
        ConfigError: naming ``key``, when the value is not a positive finite number.
    """
    try:
        spacing = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        spacing = float("nan")
    if isinstance(value, bool) or not np.isfinite(spacing) or spacing <= 0:
        raise ConfigError(key, f"expected a positive isotropic voxel size in mm, got {value!r}")
    return spacing


def translate(offset: Sequence[float]) -> np.ndarray:
    """The 4x4 homogeneous translation by ``offset`` (voxels)."""
    out = np.eye(4)
    out[:3, 3] = np.asarray(offset, dtype=np.float64)
    return out


def canonical_grid(affine: np.ndarray, shape: Sequence[int], spacing: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """The canonical-RAS isotropic grid that covers a volume's field of view.

    The axes are those of ``nibabel.as_closest_canonical`` (the volume's own axes permuted and flipped so
    they point R, A, S; an oblique acquisition stays oblique, so no rotation blurs the reference image),
    rescaled to ``spacing`` mm, with the same field-of-view centre and at least the same extent.

    Args:
        affine: 4x4 voxel-to-world affine of the volume.
        shape: its 3D shape.
        spacing: target voxel edge in mm.

    Returns:
        ``(affine, shape)`` of the new grid.
    """
    shape = tuple(int(n) for n in shape[:3])
    ornt = nib.io_orientation(affine)
    can_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    can_shape = [0, 0, 0]
    for axis, (new_axis, _) in enumerate(ornt):
        can_shape[int(new_axis)] = shape[axis]
    zooms = np.linalg.norm(can_affine[:3, :3], axis=0)
    directions = can_affine[:3, :3] / zooms
    extent = np.asarray(can_shape) * zooms
    new_shape = np.maximum(1, np.ceil(extent / spacing - 1e-6)).astype(int)
    centre = can_affine @ np.append((np.asarray(can_shape) - 1) / 2.0, 1.0)
    out = np.eye(4)
    out[:3, :3] = directions * spacing
    out[:3, 3] = centre[:3] - out[:3, :3] @ ((new_shape - 1) / 2.0)
    return out, tuple(int(n) for n in new_shape)


def voxel_map(src_affine: np.ndarray, dst_affine: np.ndarray) -> np.ndarray:
    """The 4x4 map from destination voxel indices to source voxel indices: ``inv(src) @ dst``."""
    return np.linalg.solve(np.asarray(src_affine, np.float64), np.asarray(dst_affine, np.float64))


def resample_to_grid(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
    *,
    order: int,
    cval: float = 0.0,
    antialias: bool = False,
) -> np.ndarray:
    """Resample a 3D array onto another grid through both affines (world coordinates in mm).

    Args:
        data: ``(X, Y, Z)`` source array (images: float; labels: integer with ``order=0``).
        src_affine / dst_affine: 4x4 voxel-to-world affines of the source and destination grids.
        dst_shape: destination shape ``(X', Y', Z')``.
        order: 0 nearest neighbour (labels), 1 trilinear (images).
        cval: value of destination voxels outside the source field of view.
        antialias: Gaussian-smooth the source first where the destination is coarser (sigma =
            ``(factor - 1) / 2`` source voxels per axis, as scikit-image does).

    Returns:
        ``(X', Y', Z')`` array of ``data``'s dtype.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1, got {order}")
    matrix = voxel_map(src_affine, dst_affine)
    if antialias and order > 0:
        factors = np.abs(matrix[:3, :3]).max(axis=1)
        sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
        if np.any(sigma > 0.05):
            data = ndimage.gaussian_filter(np.asarray(data, np.float32), sigma=sigma, mode="constant", cval=cval)
    return ndimage.affine_transform(
        np.asarray(data),
        matrix[:3, :3],
        offset=matrix[:3, 3],
        output_shape=tuple(int(n) for n in dst_shape),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )


def coverage(src_shape: Sequence[int], src_affine: np.ndarray, dst_affine: np.ndarray, dst_mask: np.ndarray) -> float:
    """Fraction of the ``True`` voxels of ``dst_mask`` (on the destination grid) inside the source volume.

    Used to reject inputs whose grids do not overlap the reference grid (wrong affine, another subject).
    Counted on every second voxel per axis when the mask is large (an eighth of the work, same answer
    to well under a percent).
    """
    step = 2 if dst_mask.size > 64**3 else 1
    idx = np.argwhere(dst_mask[::step, ::step, ::step]) * step
    if len(idx) == 0:
        return 0.0
    matrix = voxel_map(src_affine, dst_affine)
    coords = idx @ matrix[:3, :3].T + matrix[:3, 3]
    inside = np.all((coords >= -0.5) & (coords <= np.asarray(src_shape[:3]) - 0.5), axis=1)
    return float(inside.mean())


def crop_box(
    mask: np.ndarray, margin: int, min_shape: Sequence[int]
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The bounding box of ``mask`` grown by ``margin`` voxels and to at least ``min_shape``.

    Returns:
        ``(lo, hi)``: inclusive start and exclusive stop per axis; they may lie outside the array
        (:func:`read_box` pads there).

    Raises:
        ValueError: the mask is empty.
    """
    idx = np.argwhere(mask)
    if len(idx) == 0:
        raise ValueError("empty mask")
    lo = idx.min(axis=0) - margin
    hi = idx.max(axis=0) + 1 + margin
    short = np.maximum(0, np.asarray(min_shape) - (hi - lo))
    lo = lo - short // 2
    hi = hi + short - short // 2
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)  # type: ignore[return-value]


def read_box(
    array: np.ndarray,
    lo: Sequence[int] | np.ndarray,
    size: Sequence[int] | np.ndarray,
    fill: float | np.ndarray = 0,
    dtype: DTypeLike | None = None,
) -> np.ndarray:
    """Copy the box ``[lo, lo + size)`` of the last three axes of ``array``, padding outside it.

    Works on memory maps: only the overlapping part is read.

    Args:
        array: ``(..., X, Y, Z)``.
        lo: box start per spatial axis (may be negative).
        size: box size per spatial axis.
        fill: pad value; a 1D array gives one value per leading channel of a ``(C, X, Y, Z)`` array.
        dtype: output dtype (default: ``array``'s).

    Returns:
        ``(..., *size)`` array.
    """
    lead = array.shape[:-3]
    spatial = np.asarray(array.shape[-3:])
    lo_arr, size_arr = np.asarray(lo, dtype=int), np.asarray(size, dtype=int)
    out = np.empty((*lead, *size_arr), dtype=dtype or array.dtype)
    fill_arr = np.asarray(fill, dtype=out.dtype)
    out[...] = fill_arr.reshape((*fill_arr.shape, 1, 1, 1)) if fill_arr.ndim == 1 else fill_arr
    src_lo = np.clip(lo_arr, 0, spatial)
    src_hi = np.clip(lo_arr + size_arr, 0, spatial)
    if np.any(src_hi <= src_lo):
        return out
    dst_lo = src_lo - lo_arr
    dst_hi = dst_lo + (src_hi - src_lo)
    src: tuple[Any, ...] = (..., *(slice(a, b) for a, b in zip(src_lo, src_hi, strict=True)))
    dst: tuple[Any, ...] = (..., *(slice(a, b) for a, b in zip(dst_lo, dst_hi, strict=True)))
    out[dst] = array[src]
    return out


def to_native(
    volume: np.ndarray, cached: CachedSubject, order: int = 0, cval: float | Sequence[float] = 0.0
) -> nib.Nifti1Image:
    """Map an array on a subject's cache grid back to its reference image's native grid.

    Undoes the brain crop, the resampling to ``data.spacing`` and the reorientation in one resampling
    through the affines, so the result has exactly the shape and affine of the reference input
    (``meta["native_shape"]``, ``meta["native_affine"]``) and overlays it in any viewer.

    Args:
        volume: ``(X, Y, Z)`` labels (``order=0``) or ``(C, X, Y, Z)`` probabilities/maps (``order=1``)
            on the cache grid of ``cached`` (``cached.image.shape[1:]``).
        cached: the subject (:class:`~ssl_pretrain.data.cache.CachedSubject`).
        order: 0 nearest neighbour (labels), 1 trilinear.
        cval: value outside the cached box (per channel for ``(C, ...)``), e.g. 1 for a background
            probability channel.

    Returns:
        NIfTI image ``(X_n, Y_n, Z_n)`` or ``(X_n, Y_n, Z_n, C)`` (NIfTI keeps channels last), labels as
        ``uint8``/``int16``, maps as ``float32``, with the native affine as sform and qform.
    """
    volume = np.asarray(volume)
    grid_shape = tuple(cached.image.shape[1:])
    if volume.shape[-3:] != grid_shape or volume.ndim not in (3, 4):
        raise ValueError(f"expected (X, Y, Z) or (C, X, Y, Z) with X, Y, Z = {grid_shape}, got {volume.shape}")
    native_affine = np.asarray(cached.meta["native_affine"], dtype=np.float64)
    native_shape = tuple(int(n) for n in cached.meta["native_shape"])
    if volume.ndim == 3:
        if order == 0 and volume.dtype.kind in "iub":
            src = volume.astype(np.int16 if volume.max(initial=0) > 255 or volume.min(initial=0) < 0 else np.uint8)
        else:
            src = volume.astype(np.float32)
        data = resample_to_grid(src, cached.affine, native_affine, native_shape, order=order, cval=float(cval))  # type: ignore[arg-type]
    else:
        cvals = np.broadcast_to(np.asarray(cval, dtype=np.float64), (volume.shape[0],))
        data = np.stack(
            [
                resample_to_grid(
                    channel.astype(np.float32), cached.affine, native_affine, native_shape, order=order, cval=float(c)
                )
                for channel, c in zip(volume, cvals, strict=True)
            ],
            axis=-1,
        )
    img = nib.Nifti1Image(data, native_affine)
    img.set_sform(native_affine, code=1)
    img.set_qform(native_affine, code=1)
    return img
