"""A stage's region of interest: the region group's voxels, optionally dilated by a margin in mm.

The subcortical stage counts the thalamus, caudate, putamen and pallidum plus a margin (the tissue
boundary around a nucleus belongs to the task); the brainstem stage counts the brainstem label as is.
The margin is a ball of radius ``margin_mm`` on the voxel grid (an ellipsoid in voxels when the spacing is
anisotropic). Whole volumes (evaluation, prediction) are dilated with SciPy; training patches with the
same ball as a 3D convolution, so a patch sees the margin of ROI voxels inside it (ROI voxels just
outside a patch do not extend their margin into it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.errors import ConfigError


def roi_indices(group: str) -> tuple[int, ...]:
    """Canonical region indices of a stage's ``stage.roi`` group.

    Raises:
        ConfigError: unknown group.
    """
    try:
        return region_group_indices(group)
    except KeyError as err:
        raise ConfigError("stage.roi", str(err.args[0])) from None


def ball(margin_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Boolean structuring element: voxel offsets within ``margin_mm`` of the centre, shape ``(2r+1,)*3``."""
    step = np.broadcast_to(np.asarray(spacing, float), (3,))
    radius = np.floor(margin_mm / step + 1e-9).astype(int)
    axes = [np.arange(-r, r + 1) * s for r, s in zip(radius, step, strict=True)]
    grid = np.meshgrid(*axes, indexing="ij")
    return np.asarray(grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2 <= margin_mm**2 + 1e-9, dtype=bool)


def roi_mask(
    regions: np.ndarray, indices: Sequence[int], margin_mm: float = 0.0, spacing: Sequence[float] = (1.0,)
) -> np.ndarray:
    """ROI of a whole volume.

    Args:
        regions: ``(X, Y, Z)`` canonical region indices.
        indices: the region indices that make up the ROI.
        margin_mm: dilate by this many mm (0 = none).
        spacing: voxel size in mm (one value or three).

    Returns:
        ``(X, Y, Z)`` bool, True = inside the ROI.
    """
    mask = np.isin(regions, np.asarray(indices))
    if margin_mm > 0 and mask.any():
        structure = ball(margin_mm, spacing)
        if structure.size > 1:
            mask = ndimage.binary_dilation(mask, structure=structure)
    return mask


def roi_mask_torch(
    regions: torch.Tensor, indices: Sequence[int], margin_mm: float = 0.0, spacing: Sequence[float] = (1.0,)
) -> torch.Tensor:
    """ROI of a batch of patches (same ball as :func:`roi_mask`).

    Args:
        regions: ``(B, 1, X, Y, Z)`` integer region indices.

    Returns:
        ``(B, 1, X, Y, Z)`` bool, True = inside the ROI.
    """
    mask = torch.isin(regions, torch.as_tensor(list(indices), device=regions.device, dtype=regions.dtype))
    if margin_mm <= 0:
        return mask
    structure = ball(margin_mm, spacing)
    if structure.size == 1:
        return mask
    kernel = torch.as_tensor(structure, dtype=torch.float32, device=regions.device)[None, None]
    pad = [r for s in reversed(structure.shape) for r in (s // 2, s // 2)]
    dilated = F.conv3d(F.pad(mask.float(), pad), kernel)
    return dilated > 0.5
