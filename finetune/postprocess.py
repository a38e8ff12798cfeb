"""Post-processing of predicted region maps: a structure that is one connected piece is kept as one piece.

The region head is trained on patches most of which lie in the stage's ROI (``roi_fraction``), so over a whole
brain it also fires in scattered places it rarely saw (cerebral white matter, cortex): in a quick-study predict
run (contrast-0.25 demo cohort, the 21 subjects its model never saw) 37–49 % of the voxels called
midbrain/pons/medulla lay outside the brainstem, in 73–118 separate pieces per subject. The brainstem is one
connected structure, so every predicted voxel of the group that is not connected to its largest piece is an
error; nnU-Net's standard post-processing ("remove all but the largest component", Isensee et al., Nat. Methods
2021) does the same. Groups of paired structures
(thalamus, caudate, putamen, pallidum: one per hemisphere) are *not* one piece and must not be listed.

``predict.largest_component: [brainstem]`` (the default) names the region groups
(:data:`ssl_pretrain.data.labels.REGION_GROUPS`) treated so; ``[]`` turns it off. Voxels removed from a group
become ``other`` (0); tissue labels are not touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.errors import ConfigError

_FULL = np.ones((3, 3, 3), bool)  # 26-connectivity: voxels touching by a face, an edge or a corner


def check_groups(groups: Sequence[str] | None, key: str = "predict.largest_component") -> tuple[str, ...]:
    """The region groups as a tuple, each known.

    Raises:
        ConfigError: naming ``key``, for an unknown group or a value that is not a list.
    """
    if groups is None:
        return ()
    if isinstance(groups, str):
        raise ConfigError(key, f"expected a list of region groups (e.g. [brainstem]), got {groups!r}")
    out = tuple(str(g) for g in groups)
    for group in out:
        try:
            region_group_indices(group)
        except KeyError as err:
            raise ConfigError(key, str(err.args[0])) from None
    return out


def keep_largest_component(regions: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """``regions`` with each group's voxels outside its largest 26-connected piece set to 0.

    Args:
        regions: ``(X, Y, Z)`` canonical region indices (``ssl_pretrain.data.labels.REGIONS``).
        groups: region groups whose union is one connected structure (e.g. ``["brainstem"]``).

    Returns:
        A new array of the same shape and dtype (``regions`` itself is not changed).
    """
    out = np.array(regions, copy=True)
    for group in check_groups(groups):
        member = np.isin(out, region_group_indices(group))
        pieces, n = ndimage.label(member, structure=_FULL)
        if n < 2:
            continue
        sizes = np.bincount(pieces.ravel())[1:]
        out[member & (pieces != int(np.argmax(sizes)) + 1)] = 0
    return out
