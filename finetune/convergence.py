"""Did a fine-tuning run converge? A plateau test on its own training curve (DESIGN §10 rule 3).

Two curves are recorded while a run trains, neither of which needs a held-out label:

* the training loss of every optimiser step;
* the ROI Dice (mean of GM and WM) on the run's own labelled training subjects (at most
  ``max_subjects`` of them, the first in selection order), predicted like test subjects — whole ROI,
  sliding window, no augmentation — at ``checkpoints`` evenly spaced steps (1/5, 2/5, …, 5/5 of training
  by default).

The test (``finetune.convergence``): over the last ``window`` of training (a fifth),

* the loss falls by less than ``max_loss_fall`` (2 %) of its level: the fall is ``-slope · span / median``
  of the window's per-step losses, with the robust Theil–Sen slope (Sen 1968) so that a few hard patches do
  not decide it;
* the training-subject Dice gains less than ``max_dice_gain`` (0.01) from the checkpoint at the window's
  start to the last one.

A run passes when both hold. Under a decaying learning rate the last fifth trains slowly, so passing says
"no longer improving at the end of this schedule", not "no better weights exist"; a run that fails is
still improving and is flagged, never ranked silently. The monitor's state (both curves) is saved in
Lightning checkpoints, so a resumed run is judged on its whole curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from scipy import stats

from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.errors import ConfigError

DiceOf = Callable[[L.LightningModule, CachedSubject], float]


@dataclass(frozen=True)
class ConvergenceRule:
    """The plateau test's settings (``finetune.convergence``)."""

    window: float = 0.2
    max_loss_fall: float = 0.02
    max_dice_gain: float = 0.01
    checkpoints: int = 5
    max_subjects: int = 8

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
        )
        if not 0.0 < rule.window < 1.0:
            raise ConfigError("finetune.convergence.window", f"expected a fraction in (0, 1), got {rule.window}")
        if rule.max_loss_fall < 0 or rule.max_dice_gain < 0:
            raise ConfigError("finetune.convergence", "max_loss_fall and max_dice_gain must be >= 0")
        if rule.checkpoints < 2 or rule.max_subjects < 1:
            raise ConfigError("finetune.convergence", "checkpoints must be >= 2 and max_subjects >= 1")
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
    """Relative fall of the loss over ``steps`` (positive = falling): ``-slope · span / median``.

    The slope is the Theil–Sen estimate (``scipy.stats.theilslopes``); NaN with fewer than 3 finite points
    or a non-positive median.
    """
    x, y = np.asarray(steps, float), np.asarray(losses, float)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(y) < 3 or np.median(y) <= 0 or x.max() == x.min():
        return float("nan")
    slope = stats.theilslopes(y, x).slope
    return float(-slope * (x.max() - x.min()) / np.median(y))


def judge(rule: ConvergenceRule, losses: Sequence[tuple[int, float]], dice: Sequence[tuple[int, float]], total: int):
    """The test's verdict on recorded curves.

    Args:
        rule: the settings.
        losses: ``(step, loss)`` of every optimiser step.
        dice: ``(step, training-subject Dice)`` at the checkpoints.
        total: the run's planned steps.

    Returns:
        ``{"converged", "loss_fall", "train_dice_gain", "window_start", ...}``; ``converged`` is ``False``
        when a quantity cannot be computed (a run that stopped early, a NaN loss).
    """
    start = rule.window_start(total)
    window = [(s, v) for s, v in losses if s >= start]
    fall = loss_fall([s for s, _ in window], [v for _, v in window]) if window else float("nan")
    at = dict(dice)
    gain = float(at[total] - at[start]) if start in at and total in at else float("nan")
    converged = bool(
        np.isfinite(fall) and np.isfinite(gain) and fall < rule.max_loss_fall and gain < rule.max_dice_gain
    )
    return {
        "converged": converged,
        "loss_fall": fall,
        "train_dice_gain": gain,
        "window_start": start,
        "steps": total,
        "rule": (
            f"over the last {rule.window:.0%} of training (steps {start}-{total}) the loss falls by less than "
            f"{rule.max_loss_fall:.0%} and the Dice on the labelled training subjects gains less than "
            f"{rule.max_dice_gain:g}"
        ),
        **asdict(rule),
    }


class ConvergenceMonitor(Callback):
    """Records the training loss of every step and the training-subject Dice at the rule's checkpoints.

    Args:
        rule: the settings.
        subjects: the run's labelled training subjects (the first ``rule.max_subjects`` are scored).
        dice_of: ``(module, subject) -> ROI Dice`` (mean of GM and WM) of one subject.
        total_steps: the run's planned optimiser steps.
    """

    def __init__(
        self, rule: ConvergenceRule, subjects: Sequence[CachedSubject], dice_of: DiceOf, total_steps: int
    ) -> None:
        self.rule = rule
        self.subjects = list(subjects)[: rule.max_subjects]
        self.dice_of = dice_of
        self.total = int(total_steps)
        self.targets = rule.dice_steps(self.total)
        self.losses: list[tuple[int, float]] = []
        self.dice: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        step = int(trainer.global_step)
        if loss is not None and (not self.losses or self.losses[-1][0] != step):
            self.losses.append((step, float(loss.detach())))
        if step in self.targets and all(s != step for s, _ in self.dice):
            self.dice.append((step, self.train_dice(pl_module)))

    def train_dice(self, module: L.LightningModule) -> float:
        """Mean ROI Dice over the scored training subjects (NaN without any)."""
        values = [self.dice_of(module, s) for s in self.subjects]
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    def summary(self) -> dict[str, Any]:
        """The ``convergence`` entry of ``model.json``: the verdict plus both curves."""
        verdict = judge(self.rule, self.losses, self.dice, self.total)
        return {
            **verdict,
            "train_subjects": [s.key for s in self.subjects],
            "train_dice": [[s, v] for s, v in self.dice],
            "loss": [[s, v] for s, v in self.losses],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"losses": list(self.losses), "dice": list(self.dice)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.losses = [(int(s), float(v)) for s, v in state_dict.get("losses", [])]
        self.dice = [(int(s), float(v)) for s, v in state_dict.get("dice", [])]
