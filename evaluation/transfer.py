"""Region-transfer measurements on frozen encoders: probes, feature shift and cross-encoder CKA.

For each encoder (a random initialisation as the floor, each pretrained encoder, each subcortical
model's encoder) GM/WM voxels are sampled class-balanced in every region of every subject, and the
encoder's multi-scale features are read there (:mod:`ssl_pretrain.models.features`). Then

* ``transfer_matrix[encoder][A][B]``: a GM/WM probe trained on region A of the *probe-training*
  subjects, scored (balanced accuracy) on region B of the *probe-testing* subjects — the two subject
  sets never overlap;
* ``shift[encoder][A][B]``: how well a classifier tells region A's features from region B's
  (cross-validated balanced accuracy, tissue mix matched; 0.5 = indistinguishable);
* ``cka[region][encoder_a][encoder_b]``: debiased linear CKA between two encoders' features on the *same*
  voxels (rows must be paired; voxels of two regions are not, so region-vs-region similarity is the shift),
  with a shuffled-pairing null and a CI over subjects in ``cka_detail``.

Transfer and shift cells carry 95% CIs over the testing subjects (``transfer_ci``, ``shift_ci``); their
chance level is 0.5 and the randomly initialised encoder is the floor an encoder must beat.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from evaluation.probes import transfer_matrix_with_ci
from evaluation.similarity import cka_matrix, shift_matrix_with_ci
from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.errors import DataError
from ssl_pretrain.models.features import RegionFeatures, encoder_features_at, sample_class_balanced

log = logging.getLogger(__name__)


def sample_region_voxels(
    subjects: Sequence[CachedSubject], regions: Sequence[str], n_voxels: int, seed: int
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Class-balanced GM/WM voxel coordinates per region and subject (the same for every encoder).

    Returns:
        ``{region: {subject key: (coords (N, 3), tissue labels (N,))}}``; a subject whose region is empty
        or holds only one tissue class is left out of that region (logged).
    """
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {r: {} for r in regions}
    for i, subject in enumerate(subjects):
        if subject.tissue is None or subject.regions is None:
            continue
        tissue = np.asarray(subject.tissue)
        labels = np.asarray(subject.regions)
        for j, region in enumerate(regions):
            mask = np.isin(labels, region_group_indices(region))
            try:
                out[region][subject.key] = sample_class_balanced(tissue, mask, n_voxels, seed=seed + 1000 * i + j)
            except DataError as err:
                log.info("probe: %s %s left out (%s)", subject.key, region, err.problem)
    return out


def encoder_features(
    encoder: nn.Module,
    subjects: Sequence[CachedSubject],
    voxels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]],
    pad_multiple: int,
) -> dict[str, dict[str, RegionFeatures]]:
    """``{region: {subject key: RegionFeatures}}`` of one encoder at the sampled voxels."""
    out: dict[str, dict[str, RegionFeatures]] = {r: {} for r in voxels}
    for subject in subjects:
        wanted = {r: v[subject.key] for r, v in voxels.items() if subject.key in v}
        if not wanted:
            continue
        volume = torch.from_numpy(np.array(subject.image, dtype=np.float32))
        coords = np.concatenate([c for c, _ in wanted.values()])
        X = encoder_features_at(encoder, volume, coords, pad_multiple=pad_multiple)
        start = 0
        for region, (c, y) in wanted.items():
            rows = slice(start, start + len(c))
            start += len(c)
            out[region][subject.key] = RegionFeatures(
                X=X[rows], y=y, subjects=np.full(len(y), subject.key).astype(str), coords=c
            )
    return out


def _pool(features: Mapping[str, RegionFeatures], keys: Sequence[str]) -> RegionFeatures:
    """The rows of ``keys`` (subjects that all have features: the regions in use were sampled for them)."""
    return RegionFeatures.concat([features[k] for k in keys])


def measure_transfer(
    encoders: Mapping[str, tuple[nn.Module, int]],
    probe_train: Sequence[CachedSubject],
    probe_test: Sequence[CachedSubject],
    regions: Sequence[str],
    n_voxels: int,
    seed: int = 0,
    probe: str = "linear",
    n_boot: int = 1000,
    n_null: int = 100,
) -> dict[str, Any]:
    """Transfer matrices, feature shift and cross-encoder CKA for every encoder, each with its uncertainty.

    Args:
        encoders: label -> (encoder returning multi-scale features, its total stride).
        probe_train / probe_test: disjoint subject sets for training and scoring the probes.
        regions: region groups (``ssl_pretrain.data.labels``) to compare.
        n_voxels: voxels sampled per region and subject (half GM, half WM).
        seed: sampling and probe seed.
        probe: ``linear`` or ``knn``.
        n_boot: bootstrap resamples (over testing subjects) of the transfer and shift CIs.
        n_null: shuffled pairings (the null) and half-samples (the CI) of each CKA.

    Returns:
        ``{"transfer_matrix", "transfer_ci", "shift", "shift_ci", "cka", "cka_detail", "chance",
        "regions_used", "n_subjects"}``: the matrices as numbers, their 95% CIs beside them
        (``[lo, hi]`` per cell), debiased CKA with its CI, null and p in ``cka_detail``.
    """
    overlap = {s.key for s in probe_train} & {s.key for s in probe_test}
    if overlap:
        raise ValueError(f"probe training and testing subjects overlap: {sorted(overlap)}")
    train_vox = sample_region_voxels(probe_train, regions, n_voxels, seed)
    test_vox = sample_region_voxels(probe_test, regions, n_voxels, seed + 7)
    used = [r for r in regions if train_vox[r] and test_vox[r]]
    for r in set(regions) - set(used):
        log.warning("probe: region %s has no subject with both GM and WM on one side; left out", r)
    train_vox = {r: train_vox[r] for r in used}
    test_vox = {r: test_vox[r] for r in used}
    out: dict[str, Any] = {
        key: {} for key in ("transfer_matrix", "transfer_ci", "shift", "shift_ci", "cka", "cka_detail")
    }
    test_features: dict[str, dict[str, dict[str, RegionFeatures]]] = {}
    for label, (encoder, stride) in encoders.items():
        log.info("probe: encoder %s", label)
        tr = encoder_features(encoder, probe_train, train_vox, stride)
        te = encoder_features(encoder, probe_test, test_vox, stride)
        test_features[label] = te
        train_by_region = {r: _pool(tr[r], list(train_vox[r])) for r in used}
        test_by_region = {r: _pool(te[r], list(test_vox[r])) for r in used}
        out["transfer_matrix"][label], out["transfer_ci"][label] = transfer_matrix_with_ci(
            train_by_region, test_by_region, probe=probe, seed=seed, n_boot=n_boot
        )
        out["shift"][label], out["shift_ci"][label] = shift_matrix_with_ci(test_by_region, seed=seed, n_boot=n_boot)
    for region in used:
        keys = list(test_vox[region])
        pooled = {label: _pool(te[region], keys) for label, te in test_features.items()}
        groups = next(iter(pooled.values())).subjects if pooled else None
        out["cka"][region], out["cka_detail"][region] = cka_matrix(
            {label: f.X for label, f in pooled.items()}, groups=groups, seed=seed, n_null=n_null
        )
    return {
        **out,
        "chance": 0.5,
        "regions_used": used,
        "n_subjects": {"probe_train": len(probe_train), "probe_test": len(probe_test)},
    }
