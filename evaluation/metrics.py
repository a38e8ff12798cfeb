"""Dice, HD95 and class volumes for the evaluation: the fine-tuning stage's implementation, re-exported.

There is one implementation of the segmentation metrics, :mod:`finetune.metrics` (imports flow
evaluation → finetune → ssl_pretrain), so a Dice in a run's ``metrics.csv`` and one computed here are
the same number under the same conventions: Dice is NaN for a class absent from both prediction and
reference (excluded from means) and 0 for one absent from exactly one; HD95 is NaN when absent from
both and ``inf`` when absent from exactly one. See :mod:`finetune.metrics` for the details.
"""

from __future__ import annotations

from finetune.metrics import REPORTED_CLASSES, class_volumes, dice, hd95, mean_dice, roi_metrics

__all__ = ["REPORTED_CLASSES", "class_volumes", "dice", "hd95", "mean_dice", "roi_metrics"]
