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
from finetune.inference import (
    InferenceSettings,
    brain_box,
    head_labels,
    mask_to_brain,
    predict_cached,
    predict_labels,
)
from finetune.metrics import REPORTED_CLASSES, metric_columns, roi_metrics
from finetune.region_head import region_dice
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
    t1w_only: bool = False,
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
        t1w_only: also score each subject from its T1w alone (the other channels zero, as at deployment on a
            T1w-only scan): ``t1w_only_dice_<class>``.

    Returns:
        ``(rows, overlay cases)``; a row has ``subject``, ``group``, ``roi_voxels``, the
        :func:`finetune.metrics.metric_columns`, with a region head the :func:`finetune.region_head.region_columns`
        (inside the box that was predicted), and with ``t1w_only`` the T1w-only Dice.
    """
    rows: list[dict[str, object]] = []
    cases: list[OverlayCase] = []
    heads = settings.heads
    t1w = _t1w_only(subjects[0].modalities) if t1w_only and subjects else None
    for subject in tqdm(subjects, desc="test", unit="subject", disable=None):
        mask = roi.volume_mask(np.asarray(subject.regions))
        probs = mask_to_brain(predict_cached(net, subject, settings, device, focus=mask), subject.brain, heads)
        pred = predict_labels(probs, heads)
        truth = np.asarray(subject.tissue).astype(np.int64)
        metrics = roi_metrics(pred, truth, mask, roi.spacing, hd95=hd95)
        row: dict[str, object] = {"subject": subject.key, "group": subject.group, "roi_voxels": int(mask.sum())}
        row.update(metrics)
        if len(heads) == 2:
            box = _predicted_box(mask, settings)
            row.update(region_dice(head_labels(probs, heads, 1), np.asarray(subject.regions), box))
        if t1w is not None:
            only = mask_to_brain(
                predict_cached(net, subject, settings, device, use=t1w, focus=mask), subject.brain, heads
            )
            t1 = roi_metrics(predict_labels(only, heads), truth, mask, roi.spacing, hd95=False)
            row.update({f"t1w_only_dice_{c}": t1[f"dice_{c}"] for c in REPORTED_CLASSES})
        rows.append(row)
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


def _t1w_only(modalities: Sequence[str]) -> list[bool] | None:
    """Which channels to feed for the T1w-only score (``None`` when the model reads no T1w)."""
    return [m == "T1w" for m in modalities] if "T1w" in modalities else None


def _predicted_box(mask: np.ndarray, settings: InferenceSettings) -> np.ndarray | None:
    """The box :func:`predict_cached` predicted for a focus ``mask`` (``None``: the whole volume)."""
    if settings.focus_margin is None or not mask.any():
        return None
    box = np.zeros(mask.shape, bool)
    box[brain_box(mask, settings.focus_margin)] = True
    return box


def write_metrics(path: str | Path, rows: Sequence[dict[str, object]]) -> Path:
    """Write ``metrics.csv`` (one row per test subject) atomically."""
    first = ["subject", "group", "roi_voxels", *metric_columns()]
    extra = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in first]
    frame = pd.DataFrame(list(rows), columns=[*first, *extra])
    write_text(path, frame.to_csv(index=False, float_format="%.6g"))
    return Path(path)
