"""The plateau test of finetune.convergence: closed-form slopes, verdicts on synthetic curves, resumable state, and
the fixed-patch Dice it follows against a plain numpy count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finetune.convergence import ConvergenceMonitor, ConvergenceRule, judge, loss_fall
from finetune.inference import InferenceSettings
from finetune.module import SegmentationModule
from finetune.roi import StageROI
from finetune.roi_loss import ROIDiceCELoss
from ssl_pretrain.data import batch as B
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.errors import ConfigError


def test_loss_fall_of_a_straight_line_is_its_relative_drop():
    steps = np.arange(80, 101)
    losses = 1.0 - 0.005 * (steps - 80)  # from 1.0 to 0.9 over the window, median 0.95
    assert loss_fall(steps, losses) == pytest.approx(0.1 / 0.95)
    assert loss_fall(steps, np.full(len(steps), 0.5)) == 0.0
    assert np.isnan(loss_fall([1, 2], [1.0, 0.9]))  # too few points


def test_loss_fall_ignores_a_few_outlier_steps():
    rng = np.random.default_rng(0)
    steps = np.arange(200)
    losses = 0.4 + rng.normal(0, 0.01, 200)
    losses[::25] = 3.0  # hard patches
    assert abs(loss_fall(steps, losses)) < 0.02


def _curves(total, dice_gain, noise=0.0, seed=0):
    """A loss ``0.3 + 1 / (1 + 0.05 s)``: per step with optional noise, and at the rule's checkpoints without."""
    rule = ConvergenceRule()
    rng = np.random.default_rng(seed)
    curve = lambda s: 0.3 + 1.0 / (1 + 0.05 * s)  # noqa: E731
    steps = [(s, curve(s) * (1 + noise * rng.normal())) for s in range(1, total + 1)]
    fixed = [(s, curve(s)) for s in rule.dice_steps(total)]
    dice = [(s, 0.8 + dice_gain * (s >= total)) for s in rule.dice_steps(total)]
    return rule, fixed, dice, steps


def test_a_plateaued_run_converges_and_a_falling_one_does_not():
    rule, fixed, dice, steps = _curves(1000, 0.0)
    verdict = judge(rule, fixed, dice, 1000, steps)
    assert verdict["converged"] and verdict["window_start"] == 800 and 0 <= verdict["loss_fall"] < 0.02
    rule, fixed, dice, steps = _curves(100, 0.0)  # 0.3 + 1/(1+0.05 s) still falls ~7 % over steps 80-100
    verdict = judge(rule, fixed, dice, 100, steps)
    assert not verdict["converged"] and verdict["loss_fall"] == pytest.approx((0.3 + 1 / 5 - 0.3 - 1 / 6) / 0.5)
    rule, fixed, dice, steps = _curves(1000, 0.02)  # loss flat, but training-subject Dice still gains
    verdict = judge(rule, fixed, dice, 1000, steps)
    assert not verdict["converged"] and verdict["train_dice_gain"] == pytest.approx(0.02)


def test_per_step_noise_does_not_decide_the_verdict():
    """Two patches per step make the per-step loss vary by tens of percent; the test follows the fixed patches."""
    for seed in range(5):
        rule, fixed, dice, steps = _curves(300, 0.0, noise=0.4, seed=seed)
        verdict = judge(rule, [(s, 0.5) for s, _ in fixed], dice, 300, steps)
        assert verdict["converged"] and np.isfinite(verdict["step_loss_fall"])


def test_a_run_that_stopped_early_is_not_converged():
    rule, fixed, dice, steps = _curves(1000, 0.0)
    assert not judge(rule, fixed[:2], dice[:2], 1000, steps[:500])["converged"]  # its last checkpoint is missing


def test_dice_steps_include_the_window_start_and_the_end():
    assert ConvergenceRule().dice_steps(64) == [13, 26, 38, 51, 64]
    assert ConvergenceRule(checkpoints=2).dice_steps(100) == [50, 80, 100]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("window", 1.0),
        ("max_loss_fall", -0.1),
        ("checkpoints", 1),
        ("max_subjects", 0),
        ("fixed_patches", 0),
        ("dice_on", "voxels"),
        ("loss", "regions"),
        ("nope", 1),
    ],
)
def test_bad_settings_name_their_key(key, value):
    with pytest.raises(ConfigError, match=r"finetune\.convergence"):
        ConvergenceRule.from_config({key: value})


class _Loss:
    def __init__(self, value):
        self.value = value

    def detach(self):
        return self.value


class _Trainer:
    global_step = 0


def test_the_monitor_records_every_step_and_resumes_from_its_state():
    rule = ConvergenceRule(checkpoints=2)
    monitor = ConvergenceMonitor(rule, lambda m: {"tissue": 1.0, "total": 2.0, "dice": 0.6}, 10, ["a", "b"])
    trainer = _Trainer()
    for step in range(1, 7):
        trainer.global_step = step
        monitor.on_train_batch_end(trainer, None, {"loss": _Loss(1.0 / step)}, None, step)
    state = monitor.state_dict()
    resumed = ConvergenceMonitor(rule, lambda m: {"tissue": 0.9, "total": 1.5, "dice": 0.6}, 10, ["a", "b"])
    resumed.load_state_dict(state)
    for step in range(7, 11):
        trainer.global_step = step
        resumed.on_train_batch_end(trainer, None, {"loss": _Loss(0.1)}, None, step)
    summary = resumed.summary()
    assert [s for s, _ in summary["loss"]] == list(range(1, 11))
    assert summary["train_dice"] == [[5, pytest.approx(0.6)], [8, 0.6], [10, 0.6]]  # step 5 before the resume
    assert summary["train_subjects"] == ["a", "b"]
    assert summary["fixed_patch_loss"] == [[5, 1.0], [8, 0.9], [10, 0.9]] and summary["loss_fall"] == pytest.approx(0.0)
    assert summary["fixed_patch_loss_total"] == [[5, 2.0], [8, 1.5], [10, 1.5]] and summary["total_loss_fall"] == 0.0
    assert summary["converged"] and "tissue loss" in summary["rule"]


def test_the_tested_loss_is_the_tissue_heads_unless_asked():
    """A second head still learning (its loss falling) does not decide the tissue task's verdict; loss=total does."""
    curve = {5: (1.0, 3.0), 8: (0.5, 2.0), 10: (0.5, 1.6)}  # step: (tissue loss, both heads' loss)
    for loss, converged in (("tissue", True), ("total", False)):
        trainer = _Trainer()
        scores = lambda m, t=trainer: dict(zip(("tissue", "total"), curve[t.global_step], strict=True), dice=0.8)  # noqa: E731
        monitor = ConvergenceMonitor(ConvergenceRule(checkpoints=2, loss=loss), scores, 10, ["a"])
        for step in range(1, 11):
            trainer.global_step = step
            monitor.on_train_batch_end(trainer, None, {"loss": _Loss(1.0)}, None, step)
        summary = monitor.summary()
        assert summary["converged"] is converged and summary["total_loss_fall"] == pytest.approx(0.2)
        assert summary["loss_fall"] == pytest.approx(0.0 if loss == "tissue" else 0.2)


class _Fixed(torch.nn.Module):
    """A "network" whose logits are one-hot of a fixed label volume per item (ignores its input)."""

    def __init__(self, labels):
        super().__init__()
        self.labels = labels  # (N, X, Y, Z)
        self.encoder = torch.nn.Linear(1, 1)  # what the policy looks for
        self.calls = 0

    def forward(self, x):
        out = self.labels[self.calls : self.calls + len(x)]
        self.calls += len(x)
        return torch.nn.functional.one_hot(out, 4).permute(0, 4, 1, 2, 3).float() * 10


def _patches(rng, n=6, shape=(6, 6, 6)):
    brainstem = REGION_INDEX["brainstem"]
    items = []
    for _ in range(n):
        regions = torch.as_tensor(rng.choice([0, brainstem], size=(1, *shape), p=[0.4, 0.6]))
        tissue = torch.as_tensor(rng.integers(-1, 4, size=(1, *shape)))
        items.append({B.IMAGE: torch.zeros(1, *shape), B.TISSUE: tissue, B.REGIONS: regions})
    return items


def test_fixed_patch_dice_counts_every_labelled_roi_voxel_of_all_patches_together():
    rng = np.random.default_rng(0)
    items = _patches(rng)
    guess = torch.as_tensor(rng.integers(0, 4, size=(len(items), 6, 6, 6)))
    roi = StageROI.from_config({"name": "brainstem", "roi": "brainstem"}, 2.0)
    module = SegmentationModule(
        _Fixed(guess), policy="full", roi=roi, loss=ROIDiceCELoss(4), optim_cfg={}, total_steps=1,
        inference=InferenceSettings((6, 6, 6), 1),
    )  # fmt: skip
    scores = module.fixed_patch_scores(items, batch_size=4)
    truth = np.concatenate([it[B.TISSUE].numpy().ravel() for it in items])
    inside = np.concatenate([(it[B.REGIONS] == REGION_INDEX["brainstem"]).numpy().ravel() for it in items])
    counted = inside & (truth >= 0)
    predicted, truth = guess.numpy().ravel()[counted], truth[counted]
    overlap = [np.sum((predicted == c) & (truth == c)) for c in (2, 3)]  # GM, WM
    reference = [2 * o / (np.sum(predicted == c) + np.sum(truth == c)) for o, c in zip(overlap, (2, 3), strict=True)]
    assert scores["dice"] == pytest.approx(np.mean(reference))
    assert np.isfinite(scores["loss"]) and module.net.calls == len(items)  # one forward pass for loss and Dice
    assert scores["tissue"] == scores["loss"]  # no region head: the loss is the tissue head's
    perfect = torch.stack([it[B.TISSUE][0].clamp(min=0) for it in items])
    module.net = _Fixed(perfect)
    assert module.fixed_patch_scores(items)["dice"] == pytest.approx(1.0)


def test_a_checkpoint_from_before_the_tissue_loss_resumes_with_its_curve_as_the_sum():
    monitor = ConvergenceMonitor(ConvergenceRule(checkpoints=2), lambda m: {}, 10, ["a"])
    monitor.load_state_dict({"losses": [[1, 2.0]], "fixed_loss": [[5, 1.5]], "dice": [[5, 0.7]]})
    assert monitor.fixed == {"tissue": [], "total": [(5, 1.5)]} and not monitor.summary()["converged"]
