"""The stage ROI (finetune.roi.StageROI): the subcortical source stage never counts a brainstem voxel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from finetune.roi import StageROI, roi_indices
from finetune.train import stage_data_config
from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.datamodule import BrainDataModule
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.errors import ConfigError

SUBCORTICAL = OmegaConf.load(CONFIG_DIR / "stage" / "subcortical.yaml")
BRAINSTEM = roi_indices("brainstem")


def _touching() -> np.ndarray:
    """A thalamus slab directly above a midbrain slab (they touch, as in the brain)."""
    regions = np.zeros((12, 12, 12), np.int16)
    regions[3:9, 3:9, 6:9] = REGION_INDEX["thalamus"]
    regions[3:9, 3:9, 3:6] = REGION_INDEX["midbrain"]
    return regions


def test_the_excluded_region_and_its_margin_leave_the_volume_roi():
    regions = _touching()
    roi = StageROI.from_config(SUBCORTICAL, 2.0)
    mask = roi.volume_mask(regions)
    stem = np.isin(regions, BRAINSTEM)
    assert mask.any() and not (mask & stem).any()
    band = StageROI.from_config({**SUBCORTICAL, "roi_exclude_margin_mm": 0.0}, 2.0).volume_mask(regions)
    assert (band & ~mask).any()  # the margin also removes thalamus voxels next to the midbrain
    unguarded = StageROI.from_config({**SUBCORTICAL, "roi_exclude": None}, 2.0).volume_mask(regions)
    assert (unguarded & stem).any()  # without the exclusion the 4 mm margin reaches into the midbrain


def test_patch_and_volume_masks_agree_inside_one_patch():
    regions = _touching()
    roi = StageROI.from_config(SUBCORTICAL, 2.0)
    patch = roi.patch_mask(torch.as_tensor(regions)[None, None].long())[0, 0].numpy()
    assert np.array_equal(patch, roi.volume_mask(regions))


def test_bad_exclusions_name_their_key():
    with pytest.raises(ConfigError, match=r"stage\.roi_exclude"):
        StageROI.from_config({**SUBCORTICAL, "roi_exclude": "hippocampus"}, 2.0)
    with pytest.raises(ConfigError, match=r"stage\.roi_exclude_margin_mm"):
        StageROI.from_config({**SUBCORTICAL, "roi_exclude_margin_mm": -1}, 2.0)


def test_no_brainstem_voxel_enters_the_subcortical_loss(demo_cohort, tmp_path):
    """Every training patch of the subcortical stage on the demo cohort: loss mask ∩ brainstem = ∅."""
    cfg = OmegaConf.create(
        {
            "data": {**OmegaConf.load(CONFIG_DIR / "data" / "default.yaml"), "root": str(demo_cohort), "spacing": 3.0,
                     "patch_size": 16, "patches_per_epoch": 48, "augment": False},
            "stage": SUBCORTICAL,
        }
    )  # fmt: skip
    dm = BrainDataModule(stage_data_config(cfg), tmp_path / "cache", roi="subcortical", labelled_only=True)
    dm.setup()
    roi = StageROI.from_config(SUBCORTICAL, 3.0)
    unguarded = StageROI.from_config({**SUBCORTICAL, "roi_exclude": None}, 3.0)
    counted = reached = 0
    for i in range(len(dm.train_dataset)):
        regions = dm.train_dataset[(0, i)]["regions"][None]
        stem = torch.isin(regions, torch.as_tensor(BRAINSTEM))
        mask = roi.patch_mask(regions)
        assert not (mask & stem).any()
        counted += int(mask.sum())
        reached += int((unguarded.patch_mask(regions) & stem).sum())
    assert counted > 0 and reached > 0  # the patches do cover both regions, so the check could have failed
    for subject in dm.train_subjects + dm.test_subjects:
        regions = np.asarray(subject.regions)
        assert not (roi.volume_mask(regions) & np.isin(regions, BRAINSTEM)).any()
