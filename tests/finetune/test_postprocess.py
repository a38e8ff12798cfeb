"""Largest-connected-piece post-processing of predicted region maps (finetune/postprocess.py)."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.postprocess import check_groups, keep_largest_component
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.errors import ConfigError

MID, PONS, THAL = REGION_INDEX["midbrain"], REGION_INDEX["pons"], REGION_INDEX["thalamus"]


def _map() -> np.ndarray:
    regions = np.zeros((12, 12, 12), np.uint8)
    regions[2:5, 2:5, 2:5] = MID  # the brainstem: midbrain on top of the pons, one piece of 54 voxels
    regions[2:5, 2:5, 5:8] = PONS
    regions[9, 9, 9] = PONS  # a stray island, far away
    regions[5, 5, 8] = MID  # touches the pons only by a corner: part of the piece under 26-connectivity
    regions[8:10, 1:3, 1:3] = THAL  # two thalami, one per hemisphere: not a brainstem group
    regions[8:10, 9:11, 1:3] = THAL
    return regions


def test_only_the_largest_piece_of_the_group_stays_and_other_groups_are_untouched():
    regions = _map()
    out = keep_largest_component(regions, ["brainstem"])
    assert out[9, 9, 9] == 0 and out[5, 5, 8] == MID
    assert np.count_nonzero(np.isin(out, [MID, PONS])) == 27 + 27 + 1
    assert np.array_equal(out == THAL, regions == THAL)  # both thalami kept
    assert regions[9, 9, 9] == PONS  # the input is not changed
    assert np.array_equal(keep_largest_component(regions, []), regions)


def test_a_group_of_paired_nuclei_would_lose_a_hemisphere():
    """Why the default lists only the brainstem: the subcortical group has two pieces by anatomy."""
    out = keep_largest_component(_map(), ["subcortical"])
    assert np.count_nonzero(out == THAL) == 8  # one thalamus of two


def test_groups_are_checked_by_name():
    assert check_groups(None) == () and check_groups(["brainstem"]) == ("brainstem",)
    with pytest.raises(ConfigError, match=r"predict\.largest_component.*unknown region group"):
        check_groups(["brainstm"])
    with pytest.raises(ConfigError, match="expected a list"):
        check_groups("brainstem")
