"""Dice, HD95 and volumes against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.metrics import class_volumes, dice, hd95


def _cube(shape, lo, hi, value=1):
    a = np.zeros(shape, np.int64)
    a[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    return a


def test_dice_two_overlapping_cubes():
    a = _cube((12, 12, 12), (2, 2, 2), (8, 8, 8))  # 6³ = 216 voxels
    b = _cube((12, 12, 12), (4, 4, 4), (10, 10, 10))  # 216 voxels, overlap 4³ = 64
    assert dice(a, b, [1])[1] == pytest.approx(2 * 64 / 432)


def test_dice_classes_absent_roi_and_torch():
    pred = _cube((10, 10, 10), (0, 0, 0), (5, 10, 10), 2) + _cube((10, 10, 10), (5, 0, 0), (10, 10, 10), 3)
    target = pred.copy()
    target[4] = 3  # one slab of GM called WM in the reference
    d = dice(pred, target, [1, 2, 3])
    assert math.isnan(d[1])  # absent from both: NaN, not 0 or 1
    assert d[2] == pytest.approx(2 * 400 / (500 + 400))
    assert d[3] == pytest.approx(2 * 500 / (500 + 600))
    roi = np.zeros_like(pred, bool)
    roi[6:] = True  # only WM voxels that agree
    assert dice(pred, target, [2, 3], roi=roi) == {2: pytest.approx(float("nan"), nan_ok=True), 3: 1.0}
    assert dice(torch.from_numpy(pred), torch.from_numpy(target), [2, 3]) == pytest.approx({2: d[2], 3: d[3]})
    only_pred = dice(pred, np.zeros_like(pred), [2])
    assert only_pred[2] == 0.0


def test_dice_ignores_unlabelled_reference_voxels():
    pred = np.full((4, 4, 4), 2)
    target = np.full((4, 4, 4), 2)
    target[0] = -1  # IGNORE_INDEX: unlabelled, neither agreement nor error
    pred[0] = 3
    assert dice(pred, target, [2, 3]) == {2: 1.0, 3: pytest.approx(float("nan"), nan_ok=True)}


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_hd95_shifted_cubes_closed_form(shift):
    spacing = (1.5, 1.0, 0.8)
    a = _cube((24, 20, 20), (5, 5, 5), (13, 13, 13))
    b = _cube((24, 20, 20), (5 + shift, 5, 5), (13 + shift, 13, 13))
    # every surface voxel is within `shift` voxels along x of the other surface; the x-faces (1/6 of the
    # surface, > 5%) are exactly that far, so the 95th percentile is the shift itself
    assert hd95(a, b, 1, spacing) == pytest.approx(shift * spacing[0])
    assert hd95(b, a, 1, spacing) == pytest.approx(shift * spacing[0])


def test_hd95_identical_empty_and_roi():
    a = _cube((16, 16, 16), (4, 4, 4), (12, 12, 12))
    assert hd95(a, a, 1, 2.0) == 0.0
    assert math.isnan(hd95(a, a, 2, 1.0))  # absent from both
    assert math.isinf(hd95(a, np.zeros_like(a), 1, 1.0))  # absent from one
    b = a.copy()
    b[4:12, 4:12, 12:15] = 1  # the reference extends further in z, outside the ROI
    roi = np.zeros_like(a, bool)
    roi[:, :, :12] = True
    assert hd95(a, b, 1, 1.0) > 0
    assert hd95(a, b, 1, 1.0, roi=roi) == 0.0


def test_class_volumes_mm3():
    labels = _cube((10, 10, 10), (0, 0, 0), (6, 6, 6), 2)  # 216 voxels of GM
    labels[8:, 8:, 8:] = 3  # 8 voxels of WM
    assert class_volumes(labels, (1.0, 2.0, 3.0)) == {2: 216 * 6.0, 3: 8 * 6.0}
    roi = np.zeros_like(labels, bool)
    roi[:3] = True
    assert class_volumes(labels, 1.0, roi=roi, classes=[1, 2]) == {1: 0.0, 2: 3 * 36.0}


def test_bad_shapes_and_spacing():
    a = np.zeros((4, 4, 4), int)
    with pytest.raises(ValueError, match="shape"):
        dice(a, np.zeros((4, 4, 5), int), [1])
    with pytest.raises(ValueError, match="ROI shape"):
        dice(a, a, [1], roi=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="spacing"):
        class_volumes(a, (1.0, -1.0, 1.0))


def test_one_implementation_for_training_and_evaluation():
    """bssl evaluate and a fine-tuning run's metrics.csv use the same code, hence the same conventions."""
    import finetune.metrics as ft

    assert (dice, hd95, class_volumes) == (ft.dice, ft.hd95, ft.class_volumes)
    pred = np.zeros((4, 4, 4), int)
    pred[1, 1, 1] = 1  # a class only in the prediction: Dice 0, HD95 inf, in both APIs
    row = ft.roi_metrics(pred, np.zeros_like(pred), np.ones(pred.shape, bool), [1.0])
    assert row["dice_CSF"] == dice(pred, np.zeros_like(pred), [1])[1] == 0.0
    assert math.isinf(row["hd95_CSF_mm"]) and math.isinf(hd95(pred, np.zeros_like(pred), 1, 1.0))
    assert math.isnan(row["dice_GM"]) and math.isnan(row["hd95_GM_mm"])
