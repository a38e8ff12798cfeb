"""Did a fine-tuning run converge? A plateau test on its own training data (DESIGN §10 rule 3).

Measured while a run trains, at ``checkpoints`` evenly spaced steps (1/5, 2/5, …, 5/5 of training by
default), without any held-out label:

* the **fixed-patch loss**: the stage's loss on a fixed set of ``fixed_patches`` unaugmented patches of the
  run's own labelled training subjects (drawn once, the same at every checkpoint). ``loss: tissue`` (the
  default) tests the tissue head's ROI loss, the task whose Dice the study compares; the region head's loss
  is recorded beside it (``total_loss_fall``, the loss the run minimises) but not tested. In the quick
  study's brainstem runs the region term still fell 7-8 % over the last fifth of 600 steps while the tissue
  term was flat, so a test on the sum judged the tissue task by a second head's schedule (``loss: total``
  tests the sum). The per-step training
  loss is recorded too, for the curves, but not tested: at two patches per step it varies by tens of
  percent from one step to the next, so its trend over a fifth of a short run says nothing at a 2 %
  threshold, while the fixed-patch loss changes only when the weights do;
* the ROI **Dice** (mean of GM and WM) on the run's labelled training subjects. ``dice_on: patches`` (the
  default) counts it on the same fixed patches, from the same forward pass as their loss: every labelled ROI
  voxel of the 32 patches together (80 % of them centred in the ROI, which at the brainstem's size covers it
  several times over). ``dice_on: subjects`` predicts at most ``max_subjects`` of the subjects like test
  subjects instead (whole ROI, sliding window, as test subjects are scored), at many times the cost
  (``benchmarks/finetune_stage.py`` reports the monitor's share of a brainstem run).

The test (``finetune.convergence``): from the checkpoint that starts the last ``window`` of training (a
fifth) to the last one, the fixed-patch loss falls by less than ``max_loss_fall`` (2 %) and the
training-subject Dice gains less than ``max_dice_gain`` (0.01). A run passes when both hold. Under a
decaying learning rate the last fifth trains slowly, so passing says "no longer improving at the end of
this schedule", not "no better weights exist"; a run that fails is still improving and is flagged, never
ranked silently. The monitor's state (every curve) is saved in Lightning checkpoints, so a resumed run is
judged on its whole history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from scipy import stats

from ssl_pretrain.errors import ConfigError

Measure = Callable[[L.LightningModule], dict[str, float]]  # module -> {"tissue", "total", "dice"}
DICE_ON = ("patches", "subjects")
LOSSES = ("tissue", "total")  # the fixed-patch losses recorded; rule.loss names the tested one


@dataclass(frozen=True)
class ConvergenceRule:
    """The plateau test's settings (``finetune.convergence``)."""

    window: float = 0.2
    max_loss_fall: float = 0.02
    max_dice_gain: float = 0.01
    checkpoints: int = 5
    max_subjects: int = 8
    fixed_patches: int = 32
    dice_on: str = "patches"
    loss: str = "tissue"

    @classmethod
    def from_config(cls, cfg: Any) -> ConvergenceRule:
        """From a ``finetune.convergence`` node (missing keys keep their defaults).

        Raises:
            ConfigError: a value out of range, naming its key.
        """
        values = {**asdict(cls()), **{k: v for k, v in dict(cfg or {}).items() if v is not None}}
        unknown = sorted(set(values) - set(asdict(cls())))
        if unknown:
            raise ConfigError(f"finetune.convergence.{unknown[0]}", "not a setting of the convergence test")
        rule = cls(
            window=float(values["window"]),
            max_loss_fall=float(values["max_loss_fall"]),
            max_dice_gain=float(values["max_dice_gain"]),
            checkpoints=int(values["checkpoints"]),
            max_subjects=int(values["max_subjects"]),
            fixed_patches=int(values["fixed_patches"]),
            dice_on=str(values["dice_on"]),
            loss=str(values["loss"]),
        )
        if rule.loss not in LOSSES:
            raise ConfigError("finetune.convergence.loss", f"expected one of {list(LOSSES)}, got {rule.loss!r}")
        if rule.dice_on not in DICE_ON:
            raise ConfigError("finetune.convergence.dice_on", f"expected one of {list(DICE_ON)}, got {rule.dice_on!r}")
        if not 0.0 < rule.window < 1.0:
            raise ConfigError("finetune.convergence.window", f"expected a fraction in (0, 1), got {rule.window}")
        if rule.max_loss_fall < 0 or rule.max_dice_gain < 0:
            raise ConfigError("finetune.convergence", "max_loss_fall and max_dice_gain must be >= 0")
        if rule.checkpoints < 2 or rule.max_subjects < 1 or rule.fixed_patches < 1:
            raise ConfigError("finetune.convergence", "checkpoints must be >= 2, max_subjects and fixed_patches >= 1")
        return rule

    def dice_steps(self, total_steps: int) -> list[int]:
        """The steps (1-based counts of optimiser steps) at which training-subject Dice is measured.

        Evenly spaced up to ``total_steps``, always including the window's start and the last step.
        """
        steps = {round(total_steps * (i + 1) / self.checkpoints) for i in range(self.checkpoints)}
        steps.add(self.window_start(total_steps))
        return sorted(s for s in steps if 1 <= s <= total_steps)

    def window_start(self, total_steps: int) -> int:
        """The step at which the last ``window`` of training begins."""
        return max(1, round(total_steps * (1.0 - self.window)))


def loss_fall(steps: Sequence[int], losses: Sequence[float]) -> float:
    """Relative fall of a per-step loss over ``steps`` (positive = falling): ``-slope · span / median``.

    The slope is the Theil–Sen estimate (``scipy.stats.theilslopes``); NaN with fewer than 3 finite points
    or a non-positive median. Used to describe the noisy per-step curve, not to test it.
    """
    x, y = np.asarray(steps, float), np.asarray(losses, float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 3 or np.median(y) <= 0 or x.max() == x.min():
        return float("nan")
    slope = stats.theilslopes(y, x).slope
    return float(-slope * (x.max() - x.min()) / np.median(y))


def _between(curve: Sequence[tuple[int, float]], start: int, end: int) -> tuple[float, float]:
    at = dict(curve)
    return (at[start], at[end]) if start in at and end in at else (float("nan"), float("nan"))


def _fall(curve: Sequence[tuple[int, float]], start: int, end: int) -> float:
    """Relative fall of a checkpoint curve from ``start`` to ``end`` (NaN where either is missing)."""
    before, after = _between(curve, start, end)
    return float((before - after) / before) if before > 0 else float("nan")


def _dice_source(rule: ConvergenceRule) -> str:
    if rule.dice_on == "patches":
        return "subjects' fixed patches"
    return f"subjects (at most {rule.max_subjects}, whole ROI)"


def judge(
    rule: ConvergenceRule,
    fixed_loss: Sequence[tuple[int, float]],
    dice: Sequence[tuple[int, float]],
    total: int,
    step_losses: Sequence[tuple[int, float]] = (),
    total_loss: Sequence[tuple[int, float]] = (),
) -> dict[str, Any]:
    """The test's verdict on recorded curves.

    Args:
        rule: the settings.
        fixed_loss: ``(step, fixed-patch loss)`` at the checkpoints.
        dice: ``(step, training-subject Dice)`` at the checkpoints.
        total: the run's planned steps.
        step_losses: ``(step, loss)`` of every optimiser step (described, not tested).
        total_loss: ``(step, fixed-patch loss of both heads)`` at the checkpoints (described as
            ``total_loss_fall``, not tested unless it is ``fixed_loss``).

    Returns:
        ``{"converged", "loss_fall", "train_dice_gain", "step_loss_fall", "window_start", ...}``;
        ``converged`` is ``False`` when a quantity cannot be computed (a run that stopped early, a NaN loss).
    """
    start = rule.window_start(total)
    fall = _fall(fixed_loss, start, total)
    first, last = _between(dice, start, total)
    gain = float(last - first)
    window = [(s, v) for s, v in step_losses if s >= start]
    converged = bool(
        np.isfinite(fall) and np.isfinite(gain) and fall < rule.max_loss_fall and gain < rule.max_dice_gain
    )
    return {
        "converged": converged,
        "loss_fall": fall,
        "total_loss_fall": _fall(total_loss, start, total),
        "train_dice_gain": gain,
        "step_loss_fall": loss_fall([s for s, _ in window], [v for _, v in window]) if window else float("nan"),
        "window_start": start,
        "steps": total,
        "rule": (
            f"from step {start} to step {total} (the last {rule.window:.0%} of training) the {rule.loss} loss on "
            f"{rule.fixed_patches} fixed training patches falls by less than {rule.max_loss_fall:.0%} and the "
            f"Dice on the labelled training {_dice_source(rule)} gains less than {rule.max_dice_gain:g}"
        ),
        **asdict(rule),
    }


class ConvergenceMonitor(Callback):
    """Records the training loss of every step, and the fixed-patch losses and training-subject Dice at the
    rule's checkpoints.

    Args:
        rule: the settings.
        measure: ``module -> {"tissue", "total", "dice"}``: the fixed-patch loss of the tissue head and of both
            heads, and the training-subject ROI Dice (mean of GM and WM, counted as ``rule.dice_on`` says;
            ``finetune.train`` builds it).
        total_steps: the run's planned optimiser steps.
        subjects: keys of the labelled training subjects the Dice counts (recorded in the summary).
    """

    def __init__(self, rule: ConvergenceRule, measure: Measure, total_steps: int, subjects: Sequence[str]) -> None:
        self.rule = rule
        self.measure = measure
        self.subjects = list(subjects)
        self.total = int(total_steps)
        self.targets = rule.dice_steps(self.total)
        self.losses: list[tuple[int, float]] = []
        self.fixed: dict[str, list[tuple[int, float]]] = {name: [] for name in LOSSES}
        self.dice: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = int(trainer.global_step)
        if loss is not None and (not self.losses or self.losses[-1][0] != step):
            self.losses.append((step, float(loss.detach())))
        if step in self.targets and all(s != step for s, _ in self.dice):
            scores = self.measure(pl_module)
            for name in LOSSES:
                self.fixed[name].append((step, float(scores[name])))
            self.dice.append((step, float(scores["dice"])))

    @property
    def fixed_loss(self) -> list[tuple[int, float]]:
        """The tested fixed-patch loss curve (``rule.loss``)."""
        return self.fixed[self.rule.loss]

    def summary(self) -> dict[str, Any]:
        """The ``convergence`` entry of ``model.json``: the verdict plus every curve."""
        verdict = judge(self.rule, self.fixed_loss, self.dice, self.total, self.losses, self.fixed["total"])
        return {
            **verdict,
            "train_subjects": list(self.subjects),
            "train_dice": [[s, v] for s, v in self.dice],
            "fixed_patch_loss": [[s, v] for s, v in self.fixed_loss],
            **{f"fixed_patch_loss_{name}": [[s, v] for s, v in self.fixed[name]] for name in LOSSES},
            "loss": [[s, v] for s, v in self.losses],
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "losses": list(self.losses),
            "fixed": {k: list(v) for k, v in self.fixed.items()},
            "dice": list(self.dice),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.losses = [(int(s), float(v)) for s, v in state_dict.get("losses", [])]
        fixed = state_dict.get("fixed") or {"total": state_dict.get("fixed_loss", [])}  # older checkpoints: the sum
        self.fixed = {name: [(int(s), float(v)) for s, v in fixed.get(name, [])] for name in LOSSES}
        self.dice = [(int(s), float(v)) for s, v in state_dict.get("dice", [])]
