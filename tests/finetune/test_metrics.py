"""ROI masks and the per-subject metrics (Dice, HD95, volumes) against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from finetune.metrics import dice, hd95, mean_dice, metric_columns, roi_metrics
from finetune.roi import ball, roi_indices, roi_mask, roi_mask_torch
from ssl_pretrain.data.batch import IGNORE_INDEX
from ssl_pretrain.errors import ConfigError


def test_ball_counts():
    assert ball(0.0, [2.0]).sum() == 1
    assert ball(2.0, [2.0]).sum() == 7  # centre + 6 face neighbours
    assert ball(2.0 * math.sqrt(2), [2.0]).sum() == 19
    assert ball(2.0, [1.0, 1.0, 2.0]).shape == (5, 5, 3)


def test_roi_mask_margin_and_torch_agree():
    regions = np.zeros((9, 9, 9), np.int16)
    regions[4, 4, 4] = 1  # thalamus
    regions[0, 0, 0] = 5  # brainstem: not subcortical
    idx = roi_indices("subcortical")
    assert roi_mask(regions, idx).sum() == 1
    grown = roi_mask(regions, idx, margin_mm=4.0, spacing=[2.0])
    assert grown.sum() == 33  # voxels within 2 voxels (Euclidean) of the centre
    t = roi_mask_torch(torch.as_tensor(regions)[None, None].long(), idx, margin_mm=4.0, spacing=[2.0])
    assert np.array_equal(t[0, 0].numpy(), grown)
    assert roi_mask(regions, roi_indices("brainstem")).sum() == 1


def test_unknown_roi_group():
    with pytest.raises(ConfigError, match=r"stage\.roi"):
        roi_indices("hippocampus")


def test_metrics_hand_computed():
    truth = np.zeros((10, 10, 10), np.int16)
    pred = np.zeros_like(truth)
    roi = np.zeros(truth.shape, bool)
    roi[2:8, 2:8, 2:8] = True
    truth[2:8, 2:8, 2:5] = 2  # GM: 108 voxels
    truth[2:8, 2:8, 5:8] = 3  # WM: 108 voxels
    pred[2:8, 2:8, 2:6] = 2  # GM 144, overlapping 108
    pred[2:8, 2:8, 6:8] = 3  # WM 72, all correct
    pred[0, 0, 0] = 2  # outside the ROI: ignored
    truth[9, 9, 9] = 1
    m = roi_metrics(pred, truth, roi, spacing=[2.0])
    assert m["dice_GM"] == pytest.approx(2 * 108 / (144 + 108))
    assert m["dice_WM"] == pytest.approx(2 * 72 / (72 + 108))
    assert math.isnan(m["dice_CSF"])  # absent from both inside the ROI
    assert m["vol_pred_GM_mm3"] == 144 * 8 and m["vol_true_WM_mm3"] == 108 * 8
    # GM boundary is off by one slab of 2 mm: the extra slab's surface lies 2 mm from the true surface.
    assert m["hd95_GM_mm"] == pytest.approx(2.0)
    assert m["hd95_WM_mm"] == pytest.approx(2.0)
    assert math.isnan(m["hd95_CSF_mm"])
    assert list(m) == metric_columns()


def test_metrics_perfect_and_ignore():
    truth = np.zeros((6, 6, 6), np.int16)
    truth[1:5, 1:5, 1:3] = 2
    truth[1:5, 1:5, 3:5] = 3
    roi = truth > 0
    m = roi_metrics(truth.copy(), truth, roi, spacing=[1.0])
    assert m["dice_GM"] == 1.0 and m["dice_WM"] == 1.0 and m["hd95_GM_mm"] == 0.0
    pred = truth.copy()
    pred[1, 1, 1] = 3  # wrong, but that voxel's label is unknown
    truth_ign = truth.copy()
    truth_ign[1, 1, 1] = IGNORE_INDEX
    assert roi_metrics(pred, truth_ign, roi, spacing=[1.0])["dice_GM"] == 1.0
    pred[2, 2, 1] = 1  # a CSF voxel where there is none: CSF Dice 0, HD95 unbounded (inf)
    m = roi_metrics(pred, truth, roi, spacing=[1.0])
    assert m["dice_CSF"] == 0.0 and math.isinf(m["hd95_CSF_mm"])
    assert math.isnan(roi_metrics(pred, truth, roi, spacing=[1.0], hd95=False)["hd95_GM_mm"])  # not computed


def test_roi_metrics_agree_with_the_per_class_functions():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (12, 10, 8))
    pred = np.where(rng.random(truth.shape) < 0.8, truth, rng.integers(0, 4, truth.shape))
    truth[0] = IGNORE_INDEX
    roi = np.zeros(truth.shape, bool)
    roi[1:10, 2:9, 1:7] = True
    spacing = (1.5, 1.0, 2.0)
    m = roi_metrics(pred, truth, roi, spacing)
    d = dice(pred, truth, [1, 2, 3], roi=roi)
    for name, c in (("CSF", 1), ("GM", 2), ("WM", 3)):
        assert m[f"dice_{name}"] == pytest.approx(d[c])
        assert m[f"hd95_{name}_mm"] == pytest.approx(hd95(pred, truth, c, spacing, roi=roi))
        counted = roi & (truth >= 0)
        assert m[f"vol_pred_{name}_mm3"] == pytest.approx(((pred == c) & counted).sum() * 3.0)


def test_mean_dice():
    rows = [{"dice_GM": 0.8, "dice_WM": 0.6}, {"dice_GM": float("nan"), "dice_WM": 1.0}]
    assert mean_dice(rows) == pytest.approx(0.8)
    assert math.isnan(mean_dice([]))
