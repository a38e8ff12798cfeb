"""Which weights a fine-tuning run keeps, and how many labelled subjects that choice saw (DESIGN §10 rule 4).

A k-label run must not use more labelled subjects than k for anything: training, checkpoint selection,
early stopping. Two rules (``finetune.selection``):

* ``last`` (the default): a fixed schedule, and the weights after its last step. No validation subject is
  read, so the run has seen exactly its ``labels.k`` labelled training subjects.
* ``val``: the checkpoint with the best ``val/dice`` over ``finetune.val_subjects`` labelled subjects of
  the validation split (``k``: as many as the run's labelled training subjects; an int; or ``all``), which
  may also drive early stopping. Those subjects are labelled subjects the run used, so they are counted:
  ``labels.seen = k + n_val`` in ``model.json``. Asking for ``val`` is allowed; hiding it is not.

The validation subjects are drawn like the training ones (:func:`finetune.selection.select_labelled`,
balanced across groups, nested in their number, fixed by ``labels.seed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping

from finetune.module import VAL_METRIC
from finetune.selection import select_labelled
from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.errors import ConfigError

LAST = "last"
VAL = "val"
RULES = (LAST, VAL)
AS_MANY_AS_K = "k"


@dataclass(frozen=True)
class WeightSelection:
    """How a run chooses its weights.

    Attributes:
        rule: ``last`` or ``val``.
        val_subjects: the labelled validation subjects that select (empty under ``last``).
        patience: validations without a better ``val/dice`` before stopping (``val`` only; ``None``: never).
    """

    rule: str
    val_subjects: tuple[CachedSubject, ...] = ()
    patience: int | None = None

    @property
    def uses_validation(self) -> bool:
        """Whether validation subjects are read at all."""
        return bool(self.val_subjects)

    def callbacks(self) -> list[EarlyStopping]:
        """Early stopping on ``val/dice`` when asked for (``val`` with a patience)."""
        if not self.uses_validation or self.patience is None:
            return []
        return [EarlyStopping(monitor=VAL_METRIC, mode="max", patience=self.patience, check_on_train_epoch_end=False)]

    def record(self) -> dict[str, Any]:
        """The ``selection`` entry of ``model.json``."""
        text = (
            "fixed schedule, last weights"
            if self.rule == LAST
            else f"best {VAL_METRIC} on {len(self.val_subjects)} labelled validation subject(s)"
        )
        return {
            "rule": self.rule,
            "description": text,
            "val_subjects": [s.key for s in self.val_subjects],
            "early_stopping_patience": self.patience,
        }


def _patience(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("finetune.early_stopping_patience", f"expected a positive int or null, got {value!r}")
    return value


def plan_selection(finetune_cfg: Any, candidates: Sequence[CachedSubject], k: int, seed: int) -> WeightSelection:
    """The weight selection of a run from its ``finetune`` config.

    Args:
        finetune_cfg: ``finetune.selection``, ``finetune.val_subjects``, ``finetune.early_stopping_patience``.
        candidates: the labelled subjects of the validation split.
        k: the run's number of labelled training subjects.
        seed: ``labels.seed`` (which validation subjects, when fewer than all are used).

    Raises:
        ConfigError: an unknown rule, a bad ``val_subjects`` count, early stopping without validation, or
            ``val`` with no labelled validation subject.
    """
    rule = str(finetune_cfg.get("selection", LAST))
    if rule not in RULES:
        raise ConfigError("finetune.selection", f"expected one of {', '.join(RULES)}, got {rule!r}")
    patience = _patience(finetune_cfg.get("early_stopping_patience"))
    if rule == LAST:
        if patience is not None:
            raise ConfigError(
                "finetune.early_stopping_patience",
                "early stopping needs validation labels: set finetune.selection=val (they are then counted) or null",
            )
        return WeightSelection(LAST)
    if not candidates:
        raise ConfigError("finetune.selection", "selection=val but the validation split has no labelled subject")
    wanted = finetune_cfg.get("val_subjects", AS_MANY_AS_K)
    if str(wanted) == AS_MANY_AS_K:
        n: int | None = min(k, len(candidates))
    elif str(wanted).lower() == "all":
        n = None
    else:
        try:
            n = int(wanted)
        except (TypeError, ValueError):
            n = -1
        if isinstance(wanted, bool) or not 1 <= n <= len(candidates):
            raise ConfigError(
                "finetune.val_subjects",
                f"expected k, all or an int in [1, {len(candidates)}] (labelled validation subjects), got {wanted!r}",
            )
    keys = select_labelled([(s.key, s.group) for s in candidates], n, seed)
    by_key = {s.key: s for s in candidates}
    return WeightSelection(VAL, tuple(by_key[key] for key in keys), patience)


def best_weights(trainer: L.Trainer, module: L.LightningModule) -> tuple[str, float | None]:
    """Load the best validation checkpoint's weights into ``module`` if there is one.

    Returns:
        Which weights were kept, in words, and their validation Dice (``None`` when no checkpoint was kept).
    """
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == VAL_METRIC]
    callback = monitored[0] if monitored else None
    best = getattr(callback, "best_model_path", "") if callback is not None else ""
    if not best or not Path(best).is_file():
        return "last", None
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    raw = getattr(callback, "best_model_score", None)
    score = float(raw) if raw is not None else float("nan")
    return f"best {VAL_METRIC}={score:.4f} ({Path(best).name})", score
