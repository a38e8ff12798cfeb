"""A stage's region of interest: the region group's voxels, optionally dilated by a margin in mm, minus an
excluded region group and its own margin.

The subcortical stage counts the thalamus, caudate, putamen and pallidum plus a margin (the tissue
boundary around a nucleus belongs to the task) but never the brainstem or the band around it: a source
stage must not see the target region's labels (DESIGN §10 rule 4; the thalamus borders the midbrain, and
a 4 mm margin alone reaches 3–4 % of the brainstem). The brainstem stage counts the brainstem label as is.
The margin is a ball of radius ``margin_mm`` on the voxel grid (an ellipsoid in voxels when the spacing is
anisotropic). Whole volumes (evaluation, prediction) are dilated with SciPy; training patches with the
same ball as a 3D convolution, so a patch sees the margin of ROI voxels inside it (ROI voxels just
outside a patch do not extend their margin into it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


def _margin(stage: Mapping[str, Any], key: str) -> float:
    value = stage.get(key, 0.0)
    try:
        margin = float(value or 0.0)
    except (TypeError, ValueError):
        margin = float("nan")
    if not np.isfinite(margin) or margin < 0:
        raise ConfigError(f"stage.{key}", f"expected a margin >= 0 mm, got {value!r}")
    return margin


@dataclass(frozen=True)
class StageROI:
    """Where a stage's loss and metrics count.

    Attributes:
        name: stage name (``subcortical`` | ``brainstem``).
        group: region group of the ROI (``stage.roi``).
        indices: its canonical region indices.
        margin_mm: dilation of the ROI (``stage.roi_margin_mm``).
        spacing: voxel size of the cache grid in mm.
        exclude: canonical region indices taken out of the ROI (``stage.roi_exclude``), with
        exclude_margin_mm: their own dilation (``stage.roi_exclude_margin_mm``).
    """

    name: str
    group: str
    indices: tuple[int, ...]
    margin_mm: float
    spacing: tuple[float, float, float]
    exclude: tuple[int, ...] = ()
    exclude_margin_mm: float = 0.0

    @classmethod
    def from_config(cls, stage: Mapping[str, Any], spacing: float | Sequence[float]) -> StageROI:
        """From a ``stage`` config (or a model's recorded ``stage_config``) on a grid of ``spacing`` mm.

        Raises:
            ConfigError: an unknown region group or a negative margin, naming the ``stage.*`` key.
        """
        exclude = stage.get("roi_exclude")
        step = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (3,)))
        return cls(
            name=str(stage["name"]),
            group=str(stage["roi"]),
            indices=roi_indices(str(stage["roi"])),
            margin_mm=_margin(stage, "roi_margin_mm"),
            spacing=step,  # type: ignore[arg-type]
            exclude=_exclude_indices(exclude),
            exclude_margin_mm=_margin(stage, "roi_exclude_margin_mm") if exclude else 0.0,
        )

    def volume_mask(self, regions: np.ndarray) -> np.ndarray:
        """``(X, Y, Z)`` bool ROI of a whole volume (True = counted)."""
        mask = roi_mask(regions, self.indices, self.margin_mm, self.spacing)
        if self.exclude:
            mask &= ~roi_mask(regions, self.exclude, self.exclude_margin_mm, self.spacing)
        return mask

    def excluded_patch(self, regions: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` bool: the excluded region and its margin as far as a patch shows it (none: all False)."""
        if not self.exclude:
            return torch.zeros(regions.shape, dtype=torch.bool, device=regions.device)
        return roi_mask_torch(regions, self.exclude, self.exclude_margin_mm, self.spacing)

    def patch_mask(self, regions: torch.Tensor) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` bool ROI of a batch of patches (True = counted).

        The excluded region is removed with its margin as far as the patch shows it: an excluded voxel is
        never counted; a voxel within the margin of excluded voxels that lie outside the patch may be.
        """
        mask = roi_mask_torch(regions, self.indices, self.margin_mm, self.spacing)
        if self.exclude:
            mask &= ~roi_mask_torch(regions, self.exclude, self.exclude_margin_mm, self.spacing)
        return mask


def _exclude_indices(exclude: Any) -> tuple[int, ...]:
    if not exclude:
        return ()
    try:
        return region_group_indices(str(exclude))
    except KeyError as err:
        raise ConfigError("stage.roi_exclude", str(err.args[0])) from None
