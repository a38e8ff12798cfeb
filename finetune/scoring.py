"""Scoring a trained model on whole test volumes: the rows of a run's ``metrics.csv`` and its overlays.

Each test subject's whole cached volume is predicted with sliding-window inference (as ``bssl predict``
does, background outside the brain mask) and compared with its tissue labels inside the stage's ROI on
the cache grid (Dice, HD95 in mm, predicted and true volumes in mm³; :func:`finetune.metrics.roi_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from finetune.bids_output import write_text
from finetune.figures import OverlayCase
from finetune.inference import InferenceSettings, mask_to_brain, predict_cached, predict_labels
from finetune.metrics import metric_columns, roi_metrics
from finetune.roi import StageROI
from ssl_pretrain.data.cache import CachedSubject

METRICS_FILE = "metrics.csv"


def score_subjects(
    net: nn.Module,
    subjects: Sequence[CachedSubject],
    roi: StageROI,
    settings: InferenceSettings,
    device: torch.device | str,
    *,
    hd95: bool = True,
    n_overlays: int = 3,
) -> tuple[list[dict[str, object]], list[OverlayCase]]:
    """Predict and score each subject.

    Args:
        net: the trained network.
        subjects: labelled test subjects.
        roi: the stage's ROI.
        settings: sliding-window settings.
        device: where the network runs.
        hd95: compute HD95.
        n_overlays: how many subjects (the first ones) to keep for the overlay figure.

    Returns:
        ``(rows, overlay cases)``; a row has ``subject``, ``group``, ``roi_voxels`` and the
        :func:`finetune.metrics.metric_columns`.
    """
    rows: list[dict[str, object]] = []
    cases: list[OverlayCase] = []
    for subject in tqdm(subjects, desc="test", unit="subject", disable=None):
        mask = roi.volume_mask(np.asarray(subject.regions))
        probs = mask_to_brain(predict_cached(net, subject, settings, device, focus=mask), subject.brain)
        pred = predict_labels(probs)
        truth = np.asarray(subject.tissue).astype(np.int64)
        metrics = roi_metrics(pred, truth, mask, roi.spacing, hd95=hd95)
        rows.append({"subject": subject.key, "group": subject.group, "roi_voxels": int(mask.sum()), **metrics})
        if len(cases) < n_overlays:
            channel = int(np.flatnonzero(subject.presence)[0])
            dice = ", ".join(f"{c} {metrics[f'dice_{c}']:.2f}" for c in ("GM", "WM"))
            cases.append(
                OverlayCase(
                    f"{subject.key} ({subject.group or 'n/a'})\nDice {dice}",
                    np.asarray(subject.image[channel], np.float32),
                    pred,
                    truth.astype(np.uint8),
                    mask,
                    affine=np.asarray(subject.affine),
                )
            )
    return rows, cases


def write_metrics(path: str | Path, rows: Sequence[dict[str, object]]) -> Path:
    """Write ``metrics.csv`` (one row per test subject) atomically."""
    frame = pd.DataFrame(list(rows), columns=["subject", "group", "roi_voxels", *metric_columns()])
    write_text(path, frame.to_csv(index=False, float_format="%.6g"))
    return Path(path)
