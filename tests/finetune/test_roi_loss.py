"""ROIDiceCELoss: closed form on a toy tensor, and indifference to everything outside the ROI."""

from __future__ import annotations

import math

import pytest
import torch

from finetune.roi_loss import ROIDiceCELoss
from ssl_pretrain.data.batch import IGNORE_INDEX


def _toy():
    # 4 voxels in a row; the ROI is the first two (GM, WM); outside lie GM and CSF.
    target = torch.tensor([2, 3, 2, 1]).view(1, 1, 4, 1, 1)
    roi = torch.tensor([1, 1, 0, 0], dtype=torch.bool).view(1, 1, 4, 1, 1)
    return target, roi


def test_closed_form_uniform_logits():
    target, roi = _toy()
    logits = torch.zeros(1, 4, 4, 1, 1)  # softmax = 1/4 everywhere
    loss = ROIDiceCELoss(num_classes=4, smooth=1e-5)(logits, target, roi)
    # CE over the 2 ROI voxels: log 4. Dice (no background, batch-summed) per class:
    # CSF: tp 0, sum p 0.5, sum y 0 -> 1 - s/(0.5+s) ~ 1; GM and WM: 1 - 2*0.25/(0.5+1) = 2/3.
    s = 1e-5
    dice = ((1 - s / (0.5 + s)) + 2 * (1 - (0.5 + s) / (1.5 + s))) / 3
    assert loss.item() == pytest.approx(math.log(4) + dice, rel=1e-6)


def test_closed_form_weights_and_background():
    target, roi = _toy()
    logits = torch.zeros(1, 4, 4, 1, 1)
    logits[0, 2, 0] = math.log(3.0)  # voxel 0: p(GM) = 3/6 = 0.5, others 1/6
    p = torch.tensor([1 / 6, 1 / 6, 0.5, 1 / 6])
    fn = ROIDiceCELoss(num_classes=4, lambda_dice=0.0, lambda_ce=1.0)
    ce = (-math.log(0.5) + math.log(4)) / 2
    assert fn(logits, target, roi).item() == pytest.approx(ce, rel=1e-6)
    fn = ROIDiceCELoss(num_classes=4, lambda_dice=1.0, lambda_ce=0.0, include_background=True, smooth=0.0)
    # per class c: 1 - 2 tp / (sum p + sum y) over voxels 0 (p) and 1 (uniform 1/4)
    y = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.float)
    probs = torch.stack([p, torch.full((4,), 0.25)])
    expected = (1 - 2 * (probs * y).sum(0) / (probs.sum(0) + y.sum(0))).mean()
    assert fn(logits, target, roi).item() == pytest.approx(expected.item(), rel=1e-6)


def test_outside_roi_changes_nothing():
    torch.manual_seed(0)
    target = torch.randint(0, 4, (2, 1, 6, 5, 4))
    roi = torch.rand(2, 1, 6, 5, 4) > 0.6
    logits = torch.randn(2, 4, 6, 5, 4, requires_grad=True)
    fn = ROIDiceCELoss()
    base = fn(logits, target, roi)
    base.backward()
    outside = ~roi.expand_as(logits)
    assert torch.all(logits.grad[outside] == 0)
    assert logits.grad[~outside].abs().sum() > 0
    changed = logits.detach().clone()
    changed[outside] = torch.randn(int(outside.sum())) * 10
    other_target = torch.where(roi, target, torch.randint(0, 4, target.shape))
    assert fn(changed, other_target, roi).item() == pytest.approx(base.item(), rel=1e-6, abs=1e-7)


def test_ignore_index_inside_roi_is_excluded():
    target, roi = _toy()
    logits = torch.randn(1, 4, 4, 1, 1)
    fn = ROIDiceCELoss()
    ignored = target.clone()
    ignored[0, 0, 1] = IGNORE_INDEX
    only_first = roi.clone()
    only_first[0, 0, 1] = False
    assert fn(logits, ignored, roi).item() == pytest.approx(fn(logits, target, only_first).item(), rel=1e-6)


def test_empty_roi_costs_nothing():
    target, _ = _toy()
    logits = torch.randn(1, 4, 4, 1, 1)
    assert fn_value(logits, target) == 0.0


def fn_value(logits, target):
    return ROIDiceCELoss()(logits, target, torch.zeros_like(target, dtype=torch.bool)).item()


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        ROIDiceCELoss(num_classes=1)
    with pytest.raises(ValueError, match="lambda"):
        ROIDiceCELoss(lambda_dice=0, lambda_ce=0)
    target, roi = _toy()
    with pytest.raises(ValueError, match="channels"):
        ROIDiceCELoss()(torch.zeros(1, 3, 4, 1, 1), target, roi)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ROIDiceCELoss()(torch.zeros(1, 4, 4, 1, 1), target + 3, roi)
