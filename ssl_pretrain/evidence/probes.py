"""Frozen-encoder GM/WM linear probes per region and input condition (:mod:`ssl_pretrain.evidence`, part 1)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.data.grid import read_box
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.errors import ConfigError, DataError
from ssl_pretrain.evidence.intervals import mean_ci
from ssl_pretrain.models.features import encoder_features_at, sample_class_balanced

log = logging.getLogger(__name__)

REGIONS = ("subcortical", "brainstem")
CLASSES = (2, 3)  # GM, WM


def input_channels(name: str, modalities: Sequence[str]) -> list[int]:
    """Channels an input condition shows: ``all`` or ``+``-joined modality names (``evidence.inputs``)."""
    if name == "all":
        return list(range(len(modalities)))
    parts = name.split("+")
    unknown = [p for p in parts if p not in modalities]
    if unknown:
        raise ConfigError("evidence.inputs", f"unknown modality {unknown[0]!r} in {name!r}; known: {list(modalities)}")
    return [modalities.index(p) for p in parts]


def _voxels(
    subjects: Sequence[CachedSubject], region: str, n: int, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Class-balanced GM/WM ``(coords, labels)`` of ``region`` per labelled subject (others left out)."""
    out = {}
    for i, subject in enumerate(subjects):
        if subject.tissue is None or subject.regions is None:
            continue
        mask = np.isin(np.asarray(subject.regions), region_group_indices(region))
        try:
            out[subject.key] = sample_class_balanced(np.asarray(subject.tissue), mask, n, CLASSES, seed + 7919 * i)
        except DataError as err:
            log.info("evidence: %s %s left out of the probe (%s)", subject.key, region, err.problem)
    return out


def roi_box_features(
    encoder: nn.Module,
    subject: CachedSubject,
    channels: Sequence[int],
    coords: np.ndarray,
    stride: int,
    context: int,
) -> np.ndarray | None:
    """Frozen features at ``coords`` from one encoder pass over their bounding box plus ``context`` voxels.

    The box (padded with the subject's background outside its volume, size a multiple of ``stride``) is
    about the size of a training patch around an ROI, so the encoder sees inputs like those it trained on
    and a probe costs one small pass per subject instead of a whole volume. Channels outside ``channels``
    are zero (the input condition).

    Returns:
        ``(N, F)`` features, or ``None`` when the subject has none of ``channels``.
    """
    kept = np.zeros(len(subject.presence), bool)
    kept[list(channels)] = True
    kept &= np.asarray(subject.presence, bool)
    if not kept.any():
        return None
    coords = np.asarray(coords, dtype=np.int64)
    lo = coords.min(axis=0) - context
    size = -(-(coords.max(axis=0) + 1 + context - lo) // stride) * stride
    box = read_box(subject.image, lo, size, fill=subject.background, dtype=np.float32)
    box[~kept] = 0.0
    return encoder_features_at(encoder, torch.from_numpy(box), coords - lo, pad_multiple=stride)


def probe_context(patch_size: Sequence[int], stride: int) -> int:
    """Context voxels around an ROI's box: a quarter of the patch edge, a multiple of the stride (>= stride)."""
    return max(int(min(patch_size)) // 4 // stride * stride, stride)


def _fit_probe(X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(X, y)


def _probe_region(
    encoders: Mapping[str, nn.Module],
    train: Sequence[CachedSubject],
    val: Sequence[CachedSubject],
    region: str,
    inputs: Mapping[str, list[int]],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    n, seed = int(settings["voxels_per_subject"]), int(settings["seed"])
    train_vox = _voxels(train, region, n, seed)
    val_vox = _voxels(val, region, n, seed + 1)
    if not train_vox or not val_vox:
        side = "train" if not train_vox else "validation"
        return {"status": "skipped", "reason": f"no {side}-split subject with GM and WM labels in the {region} ROI"}
    by_key = {s.key: s for s in (*train, *val)}
    stride, context = int(settings["stride"]), int(settings["context"])
    result: dict[str, Any] = {"status": "done", "n_train_subjects": len(train_vox), "n_val_subjects": len(val_vox)}
    result["inputs"] = {}
    for input_name, channels in inputs.items():
        scores: dict[str, dict[str, float]] = {}
        for label, encoder in encoders.items():
            X_parts, y_parts = [], []
            for key, (coords, y) in train_vox.items():
                feats = roi_box_features(encoder, by_key[key], channels, coords, stride, context)
                if feats is not None:
                    X_parts.append(feats)
                    y_parts.append(y)
            if not X_parts:
                break
            probe = _fit_probe(np.concatenate(X_parts), np.concatenate(y_parts), seed)
            result["n_train_voxels"] = int(sum(len(y) for y in y_parts))
            scores[label] = {}
            for key, (coords, y) in val_vox.items():
                feats = roi_box_features(encoder, by_key[key], channels, coords, stride, context)
                if feats is not None:
                    scores[label][key] = float(balanced_accuracy_score(y, probe.predict(feats)))
        if len(scores) < len(encoders) or not all(scores.values()):
            result["inputs"][input_name] = {"status": "skipped", "reason": f"no subject on both sides has {input_name}"}
            continue
        result["inputs"][input_name] = _summarise(scores, settings)
    return result


def _summarise(scores: Mapping[str, Mapping[str, float]], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Per-encoder means with CIs and the paired pretrained − random gap over the subjects both scored."""
    boot, conf, seed = int(settings["bootstrap"]), float(settings["confidence"]), int(settings["seed"])
    out: dict[str, Any] = {}
    for label, per_subject in scores.items():
        out[label] = {**mean_ci(list(per_subject.values()), boot, conf, seed), "per_subject": dict(per_subject)}
    common = sorted(set(scores["pretrained"]) & set(scores["random"]))
    gap = {k: scores["pretrained"][k] - scores["random"][k] for k in common}
    out["gap"] = {**mean_ci(list(gap.values()), boot, conf, seed), "per_subject": gap}
    return out


def probe_evidence(
    encoders: Mapping[str, nn.Module],
    train: Sequence[CachedSubject],
    val: Sequence[CachedSubject],
    modalities: Sequence[str],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """GM/WM linear probes of frozen encoders per region and input condition (see the module docstring).

    Args:
        encoders: ``{"pretrained": encoder, "random": encoder}``, each returning multi-scale feature maps.
        train / val: train- and validation-split subjects (probe training / scoring; labels optional).
        modalities: channel names.
        settings: ``voxels_per_subject``, ``inputs``, ``stride`` (total encoder stride), ``context``,
            ``bootstrap``, ``confidence``, ``seed``.

    Returns:
        The ``"probes"`` entry of the schema.
    """
    labelled = [s for s in val if s.tissue is not None and s.regions is not None]
    if not val:
        return {"status": "skipped", "reason": "no validation-split subjects (data.val_fraction is 0?)"}
    if not labelled:
        return {"status": "skipped", "reason": "no validation-split subject has tissue and region labels"}
    if not any(s.tissue is not None and s.regions is not None for s in train):
        return {"status": "skipped", "reason": "no train-split subject has tissue and region labels"}
    inputs = {name: input_channels(name, modalities) for name in settings["inputs"]}
    regions = {r: _probe_region(encoders, train, val, r, inputs, settings) for r in REGIONS}
    return {"status": "done", "score": "balanced_accuracy", "regions": regions}
