"""Per-subject deformations of the template: head size and pose, smooth non-linear shape, atrophy.

Every map of a subject is sampled from the template through one backward mapping
``output voxel (subject mm) -> template mm`` (:func:`template_coordinates`), so tissue fractions, region
memberships and tract maps stay consistent. Patients' lower-brainstem atrophy is a further local
backward mapping in template space (:func:`atrophy_coordinates`): it shrinks the pons and medulla toward
the brainstem's centre line in each axial plane, so the tissue there keeps its composition and its
volume scales by exactly ``shrink**2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ssl_pretrain.data.demo.anatomy import TemplateGrid


@dataclass(frozen=True)
class SubjectWarp:
    """A subject's random smooth deformation of the template.

    The backward map is ``q = c + R^T (p - c - t) / s + u(p)`` for subject point ``p`` (mm): ``s`` global
    scale (head size), ``R`` rotation, ``t`` translation about the brain centre ``c``, and ``u`` a smooth
    displacement (cubic B-spline of ``control`` on a lattice with ``control_spacing`` mm over the grid).

    Attributes:
        scale: linear head-size factor (subject / template).
        rotation_deg: rotations about x, y, z (degrees).
        translation_mm: translation (mm).
        centre_mm: centre of rotation and scaling (mm).
        control: ``(3, nx, ny, nz)`` control-point displacements (mm).
        control_spacing: lattice spacing (mm).
    """

    scale: float
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    centre_mm: tuple[float, float, float]
    control: np.ndarray
    control_spacing: float


def rotation_matrix(degrees: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` for angles about x, y, z in degrees, ``(3, 3)``."""
    ax, ay, az = np.deg2rad(np.asarray(degrees, np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def draw_warp(
    rng: np.random.Generator,
    grid: TemplateGrid,
    centre_mm: tuple[float, float, float],
    *,
    scale: float,
    rotation_sd_deg: float,
    translation_sd_mm: float,
    displacement_sd_mm: float,
    control_spacing_mm: float,
) -> SubjectWarp:
    """Draw a subject's deformation (always the same number of draws, whatever the values)."""
    rotation = np.clip(rng.normal(0.0, 1.0, 3), -3, 3) * rotation_sd_deg
    translation = np.clip(rng.normal(0.0, 1.0, 3), -3, 3) * translation_sd_mm
    extent = np.asarray(grid.shape) * grid.spacing
    n_ctrl = np.ceil(extent / control_spacing_mm).astype(int) + 1
    control = rng.normal(0.0, displacement_sd_mm, (3, *n_ctrl)).astype(np.float32)
    return SubjectWarp(
        scale=float(scale),
        rotation_deg=tuple(float(v) for v in rotation),  # type: ignore[arg-type]
        translation_mm=tuple(float(v) for v in translation),  # type: ignore[arg-type]
        centre_mm=tuple(float(v) for v in centre_mm),  # type: ignore[arg-type]
        control=control,
        control_spacing=float(control_spacing_mm),
    )


def _bspline_matrix(n_out: int, n_ctrl: int) -> np.ndarray:
    """Cubic B-spline weights ``(n_out, n_ctrl)`` evaluating a control lattice spread over ``n_out`` points."""
    pos = np.linspace(0.0, n_ctrl - 1.0, n_out)
    out = np.zeros((n_out, n_ctrl), np.float64)
    for j in range(n_ctrl):
        d = np.abs(pos - j)
        w = np.where(d < 1, 2 / 3 - d**2 + d**3 / 2, np.where(d < 2, (2 - d) ** 3 / 6, 0.0))
        out[:, j] = w
    return out / out.sum(1, keepdims=True)  # unit partition at the lattice ends too


def smooth_field(control: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Evaluate a ``(K, nx, ny, nz)`` control lattice on a ``shape`` grid: ``(K, X, Y, Z)`` float32."""
    bx, by, bz = (_bspline_matrix(n, m) for n, m in zip(shape, control.shape[1:], strict=True))
    out = np.einsum("xa,kabc->kxbc", bx, control)
    out = np.einsum("yb,kxbc->kxyc", by, out)
    return np.einsum("zc,kxyc->kxyz", bz, out).astype(np.float32)


def grid_points(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of the voxel centres of an axis-aligned grid, ``(X, Y, Z, 3)`` float32."""
    axes = [
        np.arange(n, dtype=np.float32) * np.float32(affine[i, i]) + np.float32(affine[i, 3])
        for i, n in enumerate(shape)
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def template_coordinates(warp: SubjectWarp, shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """Template coordinates (mm) sampled by each voxel of the subject grid, ``(X, Y, Z, 3)`` float32."""
    p = grid_points(shape, affine)
    c = np.asarray(warp.centre_mm, np.float32)
    rot = rotation_matrix(warp.rotation_deg).astype(np.float32)
    q = ((p - c - np.asarray(warp.translation_mm, np.float32)) @ rot) / np.float32(warp.scale) + c
    q += np.moveaxis(smooth_field(warp.control, shape), 0, -1)
    return q


def atrophy_coordinates(q: np.ndarray, grid: TemplateGrid, shrink: float) -> np.ndarray:
    """Compose a lower-brainstem atrophy with template coordinates ``q``.

    In each axial plane, points are pushed away from the brainstem centre line by ``1/shrink`` where the
    atrophy weight is 1 (pons and medulla), fading to no change over a few mm outside: a backward map, so
    the structure there appears shrunk by ``shrink`` in-plane (area ``shrink**2``) and its tissue keeps
    its composition.

    Args:
        q: ``(X, Y, Z, 3)`` template coordinates (mm).
        grid: template grid holding the atrophy weight and the centre line.
        shrink: in-plane linear factor in (0, 1]; ``1 - shrink**2`` is the volume loss.
    """
    if shrink >= 1.0:
        return q
    weight = sample(grid.atrophy_weight[None], grid.affine, q)[0]
    cx = np.interp(q[..., 2], grid.axis_z, grid.axis_xy[:, 0]).astype(np.float32)
    cy = np.interp(q[..., 2], grid.axis_z, grid.axis_xy[:, 1]).astype(np.float32)
    k = np.float32(1.0 / shrink - 1.0) * weight
    out = q.copy()
    out[..., 0] += k * (q[..., 0] - cx)
    out[..., 1] += k * (q[..., 1] - cy)
    return out


def sample(channels: np.ndarray, affine: np.ndarray, coords: np.ndarray, slab: int = 32) -> np.ndarray:
    """Trilinear sampling of ``(C, X, Y, Z)`` maps on an axis-aligned grid at world ``coords`` (mm).

    Zero outside the grid. Works in slabs along the first output axis to bound memory.

    Returns:
        ``(C, X', Y', Z')`` float32 for ``coords`` of shape ``(X', Y', Z', 3)``.
    """
    src = torch.from_numpy(np.ascontiguousarray(channels, np.float32))[None]
    size = np.asarray(channels.shape[1:], np.float32)
    spacing = np.diag(affine)[:3].astype(np.float32)
    origin = affine[:3, 3].astype(np.float32)
    out = np.empty((channels.shape[0], *coords.shape[:3]), np.float32)
    for start in range(0, coords.shape[0], slab):
        idx = (coords[start : start + slab] - origin) / spacing
        norm = 2.0 * idx / (size - 1.0) - 1.0
        grid = torch.from_numpy(np.ascontiguousarray(norm[..., ::-1]))[None]  # grid_sample wants (z, y, x)
        out[:, start : start + slab] = F.grid_sample(src, grid, mode="bilinear", align_corners=True)[0].numpy()
    return out
