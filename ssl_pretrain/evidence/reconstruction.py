"""Cross-modal MAE reconstruction against the per-modality mean predictor (:mod:`ssl_pretrain.evidence`, part 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.data.grid import read_box
from ssl_pretrain.evidence.intervals import mean_ci
from ssl_pretrain.methods.mae import MAE


def _brain_means(subjects: Sequence[CachedSubject], n_channels: int) -> np.ndarray:
    """``(C,)`` mean intensity inside the brain over the subjects that acquired each modality (NaN if none)."""
    sums, counts = np.zeros(n_channels), np.zeros(n_channels)
    for subject in subjects:
        brain = np.asarray(subject.brain) > 0
        for c in np.flatnonzero(subject.presence):
            values = np.asarray(subject.image[c])[brain]
            sums[c] += float(values.sum(dtype=np.float64))
            counts[c] += values.size
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts


def _patch_centres(subject: CachedSubject, k: int, rng: np.random.Generator) -> np.ndarray:
    voxels = np.flatnonzero(np.asarray(subject.brain))
    if len(voxels) == 0:
        return np.zeros((0, 3), int)
    chosen = voxels[rng.choice(len(voxels), size=min(k, len(voxels)), replace=False)]
    return np.stack(np.unravel_index(chosen, subject.brain.shape), 1)


def _squared_errors(
    mae: MAE,
    subjects: Sequence[CachedSubject],
    src: int,
    means: np.ndarray,
    settings: Mapping[str, Any],
    masked: bool,
) -> dict[int, dict[str, list[float]]]:
    """``{channel: {subject: [mse, mean-predictor mse]}}`` inside the brain of each subject's patches.

    The input shows channel ``src`` alone; with ``masked`` its blocks are hidden as in training (masks drawn
    from the evidence seed), else it is whole. Patch centres depend on the seed only, so both conditions
    score the same patches.
    """
    patch = np.asarray(settings["patch_size"], int)
    rng = np.random.default_rng(int(settings["seed"]))
    masks = torch.Generator().manual_seed(int(settings["seed"]))
    device = next(mae.parameters()).device
    presence = torch.zeros(1, len(means), device=device)
    presence[0, src] = 1.0
    sums: dict[int, dict[str, list[float]]] = {}
    for subject in subjects:
        totals: dict[int, list[float]] = {}
        for centre in _patch_centres(subject, int(settings["patches_per_subject"]), rng):
            lo = centre - patch // 2
            image = torch.from_numpy(read_box(subject.image, lo, patch, fill=subject.background, dtype=np.float32))
            brain = torch.from_numpy(read_box(subject.brain, lo, patch, fill=0) > 0)
            shown = torch.zeros_like(image)
            shown[src] = image[src]
            shown = shown[None].to(device)
            mask = mae.draw_mask(shown, masks) if masked else torch.zeros_like(shown[:, :1])
            _, pred = mae.reconstruct(shown, mask, presence)
            target = mae.loss.prepare_target(image[None])[0]
            for c in (int(i) for i in np.flatnonzero(subject.presence)):
                if c == src or not np.isfinite(means[c]):
                    continue
                t = target[c][brain]
                acc = totals.setdefault(c, [0.0, 0.0, 0.0])
                acc[0] += float(((pred[0, c].float().cpu()[brain] - t) ** 2).sum())
                acc[1] += float(((float(means[c]) - t) ** 2).sum())
                acc[2] += int(brain.sum())
        for c, (err, base, n) in totals.items():
            if n:
                sums.setdefault(c, {})[subject.key] = [err / n, base / n]
    return sums


def _summarise(
    sums: Mapping[int, Mapping[str, list[float]]], modalities: Sequence[str], settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Per modality: mean mse, mean-predictor mse, skill ``1 − mse / mean-predictor mse`` with its CI."""
    boot, conf, seed = int(settings["bootstrap"]), float(settings["confidence"]), int(settings["seed"])
    out: dict[str, Any] = {}
    for c, per_subject in sorted(sums.items()):
        mse_s = np.array([v[0] for v in per_subject.values()])
        base_s = np.array([v[1] for v in per_subject.values()])
        skill = 1.0 - mse_s / np.maximum(base_s, 1e-12)
        ci = mean_ci(skill.tolist(), boot, conf, seed)
        entry = {
            "mse": float(mse_s.mean()),
            "mean_predictor_mse": float(base_s.mean()),
            "skill": ci["mean"],
            "skill_ci95": ci["ci95"],
            "n_subjects": len(per_subject),
            "per_subject": {k: {"mse": v[0], "mean_predictor_mse": v[1]} for k, v in per_subject.items()},
        }
        if "ci_note" in ci:
            entry["ci_note"] = ci["ci_note"]
        out[modalities[c]] = entry
    return out


@torch.no_grad()
def reconstruction_evidence(
    mae: MAE,
    train: Sequence[CachedSubject],
    val: Sequence[CachedSubject],
    modalities: Sequence[str],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Cross-modal reconstruction error from one input modality against the per-modality mean predictor.

    Measured twice on the same validation patches: with the input whole (``modalities``: the deployment
    condition, an input the MAE never saw unmasked in training) and with its blocks masked as in training
    (``masked``: the pretext task itself). The other modalities are hidden entirely in both.

    Args:
        mae: an :class:`~ssl_pretrain.methods.mae.MAE` (its ``reconstruct``, ``draw_mask``,
            ``loss.prepare_target`` and ``loss.norm_target`` are used).
        train: train-split subjects (the mean predictor's intensities).
        val: validation-split subjects (where the error is measured).
        modalities: channel names.
        settings: ``reconstruction_input``, ``patches_per_subject``, ``patch_size``, ``bootstrap``,
            ``confidence``, ``seed``.

    Returns:
        The ``"reconstruction"`` entry of the schema.
    """
    source = str(settings["reconstruction_input"])
    if source not in modalities:
        return {"status": "skipped", "reason": f"{source} is not one of data.modalities {list(modalities)}"}
    src = list(modalities).index(source)
    subjects = [s for s in val if s.presence[src]]
    if not subjects:
        return {"status": "skipped", "reason": f"no validation-split subject has {source}"}
    norm_target = bool(mae.loss.norm_target)
    means = np.zeros(len(modalities)) if norm_target else _brain_means(train, len(modalities))
    was_training = mae.training
    mae.eval()
    try:
        whole = _squared_errors(mae, subjects, src, means, settings, masked=False)
        hidden = _squared_errors(mae, subjects, src, means, settings, masked=True)
    finally:
        mae.train(was_training)
    if not whole:
        return {"status": "skipped", "reason": f"no validation subject with {source} has another modality"}
    block = "x".join(str(b) for b in mae.mask_block)
    return {
        "status": "done",
        "input": source,
        "mask": "none (the whole input visible)",
        "units": "block-normalised" if norm_target else "normalised intensity",
        "patches_per_subject": int(settings["patches_per_subject"]),
        "n_subjects": len(subjects),
        "modalities": _summarise(whole, modalities, settings),
        "masked": {
            "mask": f"{mae.mask_ratio:g} of the input's {block} blocks hidden, as in training",
            "modalities": _summarise(hidden, modalities, settings),
        },
    }
