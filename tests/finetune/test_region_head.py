"""The region head: targets from canonical labels, its loss, region Dice, and that it learns the brainstem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from finetune.inference import InferenceSettings, head_labels, head_softmax, mask_to_brain, predict_cached
from finetune.region_head import REGION_HEAD, RegionHeadLoss, head_target, head_to_canonical, region_dice
from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.batch import IGNORE_INDEX
from ssl_pretrain.data.datamodule import BrainDataModule
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.models.unet import build_unet


def test_targets_and_their_way_back():
    canonical = torch.tensor([0, REGION_INDEX["pons"], REGION_INDEX["cortex"], REGION_INDEX["brainstem"], 1])
    target = head_target(canonical[None, None])[0, 0].tolist()
    assert target == [0, REGION_HEAD.index("pons"), 0, IGNORE_INDEX, REGION_HEAD.index("thalamus")]
    head = np.arange(len(REGION_HEAD))
    back = head_to_canonical(head)
    assert back[0] == 0 and [REGION_INDEX[n] for n in REGION_HEAD[1:]] == back[1:].tolist()


def test_region_dice_per_part_and_for_the_whole_brainstem():
    regions = np.zeros((4, 4, 4), np.uint8)
    regions[0] = REGION_INDEX["pons"]
    regions[1] = REGION_INDEX["medulla"]
    pred = np.zeros_like(regions)
    pred[0] = REGION_HEAD.index("pons")
    pred[1] = REGION_HEAD.index("pons")  # the medulla called pons: the whole brainstem is still right
    d = region_dice(pred, regions)
    assert d["dice_region_brainstem"] == 1.0 and d["dice_region_pons"] == pytest.approx(2 * 16 / (32 + 16))
    assert d["dice_region_medulla"] == 0.0 and np.isnan(d["dice_region_thalamus"])
    undivided = np.full((4, 4, 4), REGION_INDEX["brainstem"], np.uint8)
    assert region_dice(pred, undivided)["dice_region_brainstem"] == pytest.approx(2 * 32 / (32 + 64))


def test_the_loss_ignores_excluded_and_undivided_voxels():
    torch.manual_seed(0)
    logits = torch.randn(1, len(REGION_HEAD), 4, 4, 4, requires_grad=True)
    regions = torch.full((1, 1, 4, 4, 4), REGION_INDEX["pons"])
    regions[..., 0] = REGION_INDEX["brainstem"]  # undivided: ignored
    counted = torch.ones_like(regions, dtype=torch.bool)
    counted[..., 1] = False  # excluded zone
    RegionHeadLoss()(logits, regions, counted).backward()
    assert logits.grad[..., 0].abs().sum() == 0 and logits.grad[..., 1].abs().sum() == 0
    assert logits.grad[..., 2].abs().sum() > 0


def test_per_head_softmax_and_background_outside_the_brain():
    probs = head_softmax(torch.randn(1, 4 + 8, 2, 2, 2), (4, 8))[0]
    assert torch.allclose(probs[:4].sum(0), torch.ones(2, 2, 2)) and torch.allclose(
        probs[4:].sum(0), torch.ones(2, 2, 2)
    )
    brain = np.zeros((2, 2, 2), bool)
    masked = mask_to_brain(probs.clone(), brain, (4, 8))
    assert (masked[0] == 1).all() and (masked[4] == 1).all() and masked[[1, 2, 3, 5]].sum() == 0


@pytest.mark.slow
def test_a_region_head_trained_on_the_tiny_cohort_separates_the_brainstem_from_the_rest(demo_cohort, tmp_path):
    data = OmegaConf.create({**OmegaConf.load(CONFIG_DIR / "data" / "default.yaml"), "root": str(demo_cohort),
                             "spacing": 3.0, "patch_size": 16, "patches_per_epoch": 800, "augment": False,
                             "batch_size": 4, "roi": "brainstem", "roi_fraction": 0.6})  # fmt: skip
    dm = BrainDataModule(data, tmp_path / "cache", labelled_only=True)
    dm.setup()
    model = OmegaConf.load(CONFIG_DIR / "model" / "cpu.yaml")
    model.channels, model.strides, model.num_res_units = [8, 16, 32], [1, 2, 2], 1
    torch.manual_seed(0)
    net = build_unet(model, 4, 4 + len(REGION_HEAD))
    settings = InferenceSettings((16, 16, 16), total_stride=4, overlap=0.5, heads=(4, len(REGION_HEAD)))
    subject = dm.train_subjects[0]

    def brainstem_dice() -> float:
        probs = mask_to_brain(predict_cached(net, subject, settings, "cpu"), subject.brain, settings.heads)
        return region_dice(head_labels(probs, settings.heads, 1), np.asarray(subject.regions))["dice_region_brainstem"]

    before = brainstem_dice()
    opt = torch.optim.AdamW(net.parameters(), 3e-3)
    loss_fn = RegionHeadLoss()
    for batch in dm.train_dataloader():
        loss = loss_fn(net(batch["image"])[:, 4:], batch["regions"], batch["tissue"] != IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = brainstem_dice()
    assert after > 0.6 and after > before + 0.3
