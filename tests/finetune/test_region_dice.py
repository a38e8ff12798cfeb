"""Region Dice of a written region map against reference labels (finetune/region_dice.py)."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.region_dice import region_dice_rows
from ssl_pretrain.data.labels import REGION_INDEX

MID, PONS, STEM = REGION_INDEX["midbrain"], REGION_INDEX["pons"], REGION_INDEX["brainstem"]


def test_dice_per_part_and_of_the_whole_brainstem_by_hand():
    reference = np.zeros((4, 4, 4), np.uint8)
    reference[0, :2] = MID  # 8 midbrain voxels
    reference[1, :2] = PONS  # 8 pons voxels
    predicted = np.zeros_like(reference)
    predicted[0, :1] = MID  # 4 midbrain voxels, all right
    predicted[1, :2] = MID  # 8 pons voxels called midbrain
    predicted[3, 3] = PONS  # 4 pons voxels in the wrong place
    rows = {r["region"]: r for r in region_dice_rows(predicted, reference, voxel_mm3=8.0)}
    assert set(rows) == {"brainstem", "midbrain", "pons"}  # nothing else is in either map
    assert rows["midbrain"]["dice"] == pytest.approx(2 * 4 / (12 + 8))
    assert rows["pons"]["dice"] == 0.0
    assert rows["brainstem"]["dice"] == pytest.approx(2 * 12 / (16 + 16))
    assert rows["brainstem"]["predicted_mm3"] == 16 * 8.0 and rows["pons"]["reference_mm3"] == 8 * 8.0


def test_an_undivided_reference_brainstem_scores_only_the_whole():
    reference = np.zeros((3, 3, 3), np.uint8)
    reference[1] = STEM
    predicted = np.zeros_like(reference)
    predicted[1, :, :2] = PONS
    rows = region_dice_rows(predicted, reference, 1.0)
    assert [r["region"] for r in rows] == ["brainstem"]
    assert rows[0]["dice"] == pytest.approx(2 * 6 / (6 + 9))


def test_maps_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        region_dice_rows(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), 1.0)


def test_regions_outside_the_models_last_roi_are_marked_as_its_extrapolation():
    reference = np.zeros((3, 3, 3), np.uint8)
    reference[0] = PONS
    reference[2] = REGION_INDEX["caudate"]
    predicted = reference.copy()
    rows = {r["region"]: r["in_model_roi"] for r in region_dice_rows(predicted, reference, 1.0, "brainstem")}
    assert rows == {"brainstem": True, "pons": True, "caudate": False}
    assert not any(r["in_model_roi"] for r in region_dice_rows(predicted, reference, 1.0))  # ROI not known
