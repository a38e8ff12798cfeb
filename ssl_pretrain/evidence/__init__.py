"""Evidence that a pretraining run learned something the task needs: ``embedding_quality.json``.

Every ``bssl pretrain`` run measures its encoder after training, against the randomly initialised encoder
it started from (same architecture, same weights before the first step), on subjects of the data split:

1. **Frozen-encoder GM/WM linear probes** in the subcortical ROI and in the brainstem
   (:func:`probe_evidence`). Per region, class-balanced GM/WM voxels are drawn in each labelled subject,
   the frozen encoder's multi-scale features are read there (:mod:`ssl_pretrain.models.features`, one
   pass over the ROI's box plus a quarter patch of context: inputs of about the training patch size, as
   the encoder saw in training), a standardised logistic regression is
   trained on the *train*-split subjects' voxels and scored (balanced accuracy, 0.5 = chance) on each
   *validation*-split subject (never the test split). This is done per input condition: every acquired
   modality (``all``) and T1w alone (``T1w``), the two deployment cases. Confidence intervals are over
   validation subjects (``scipy.stats.bootstrap``, BCa), also for the paired pretrained − random gap.
2. **Cross-modal reconstruction** (methods with an MAE, :func:`reconstruction_evidence`): from T1w-only
   input, the MAE's error on every other acquired modality inside the brain of validation patches,
   against the per-modality mean predictor (the train-split mean inside the brain; 0 in block-normalised
   units with ``method.norm_target``). ``skill = 1 − mse / mean_predictor_mse`` (0: no better than the
   mean; 1: perfect), with a BCa CI over subjects; once with the T1w input whole (the deployment
   condition) and once with its blocks masked as in training (``masked``: the pretext task).
3. For two-view methods, alignment and uniformity of the validation embeddings (Wang & Isola 2020), as
   :func:`ssl_pretrain.pretrain.embedding_report` computes them.

These are measurements, written whatever they show. A part that cannot be measured (no labelled
validation subject, a region without GM and WM, a cohort without T1w) is skipped with the reason.

Schema of ``embedding_quality.json`` (``schema_version`` 1; values are examples)::

    {
      "schema_version": 1,
      "method": "mae",
      "reference": "random: the encoder at initialisation (same architecture and seed), before any step",
      "subjects": {"train": ["sub-01", ...], "validation": ["sub-07", ...]},   # keys used (labelled or not)
      "settings": {"voxels_per_subject": 200, "max_train_subjects": 8, "max_val_subjects": 12,
                   "inputs": ["all", "T1w"], "context": 8, "bootstrap": 2000,
                   "confidence": 0.95, "seed": 0},
      "probes": {
        "status": "done",                        # or "skipped" with "reason": "..."
        "score": "balanced_accuracy",
        "regions": {
          "subcortical": {
            "status": "done",                    # or "skipped" with "reason"
            "n_train_subjects": 8, "n_val_subjects": 2, "n_train_voxels": 1600,
            "inputs": {
              "all": {
                "pretrained": {"mean": 0.86, "ci95": [0.82, 0.90], "per_subject": {"sub-07": 0.85}},
                "random":     {"mean": 0.79, "ci95": [0.74, 0.83], "per_subject": {"sub-07": 0.80}},
                "gap":        {"mean": 0.07, "ci95": [0.03, 0.11], "per_subject": {"sub-07": 0.05}}
              },
              "T1w": {...}
            }
          },
          "brainstem": {...}
        }
      },
      "reconstruction": {                        # methods with an MAE only; else absent
        "status": "done",                        # or "skipped" with "reason"
        "input": "T1w", "mask": "none (the whole input visible)",
        "units": "normalised intensity",         # or "block-normalised"
        "patches_per_subject": 4, "n_subjects": 2,
        "modalities": {
          "T2w": {"mse": 0.031, "mean_predictor_mse": 0.052, "skill": 0.40, "skill_ci95": [0.31, 0.48],
                  "n_subjects": 2, "per_subject": {"sub-07": {"mse": 0.03, "mean_predictor_mse": 0.05}}}
        },
        "masked": {"mask": "0.75 of the input's 8x8x8 blocks hidden, as in training", "modalities": {...}}
      },
      "embeddings": {...}                        # two-view methods only: alignment/uniformity, initial and trained;
                                                 # with a queue, "queue_age": {"cosine_oldest_to_newest": [4 floats],
                                                 # "newest_minus_oldest", "queue_size", "n"} (SimCLR.queue_by_age)
    }

A ``ci95`` is ``null`` with a ``ci_note`` when it cannot be computed (fewer than three subjects, or all
subjects equal).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.evidence.intervals import mean_ci
from ssl_pretrain.evidence.probes import REGIONS, input_channels, probe_context, probe_evidence
from ssl_pretrain.evidence.reconstruction import reconstruction_evidence

if TYPE_CHECKING:
    from ssl_pretrain.methods.base import PretrainMethod

SCHEMA_VERSION = 1
EVIDENCE_FILE = "embedding_quality.json"
__all__ = [
    "EVIDENCE_FILE",
    "REGIONS",
    "SCHEMA_VERSION",
    "evidence_report",
    "evidence_settings",
    "mean_ci",
    "probe_evidence",
    "reconstruction_evidence",
    "summary_lines",
]


def evidence_settings(
    cfg: Mapping[str, Any], patch_size: Sequence[int], stride: int, modalities: Sequence[str]
) -> dict[str, Any]:
    """The ``evidence`` config (configs/pretrain.yaml) checked and completed with the run's geometry.

    Args:
        cfg: the ``evidence`` config group.
        patch_size: ``data.patch_size`` (the probes' context around each ROI box).
        stride: the encoder's total stride.
        modalities: ``data.modalities`` (the input conditions must name them).

    Raises:
        ConfigError: naming the ``evidence.*`` key that is missing or out of range.
    """
    keys = {
        "voxels_per_subject": (2, 1e9),
        "max_train_subjects": (1, 1e9),
        "max_val_subjects": (1, 1e9),
        "patches_per_subject": (1, 1e9),
        "bootstrap": (100, 1e9),
    }
    out: dict[str, Any] = {}
    for key, (lo, hi) in keys.items():
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ConfigError(f"evidence.{key}", f"expected an integer >= {lo:g}, got {value!r}")
        out[key] = int(value)
    confidence = cfg.get("confidence")
    if not isinstance(confidence, float) or not 0 < confidence < 1:
        raise ConfigError("evidence.confidence", f"expected a number in (0, 1), got {confidence!r}")
    inputs = [str(i) for i in (cfg.get("inputs") or [])]
    if not inputs:
        raise ConfigError("evidence.inputs", "name at least one input condition (all, T1w, T1w+T2w, ...)")
    for name in inputs:
        input_channels(name, modalities)
    out.update(
        confidence=float(confidence),
        inputs=inputs,
        reconstruction_input=str(cfg.get("reconstruction_input", "T1w")),
        seed=int(cfg.get("seed", 0)),
        stride=int(stride),
        patch_size=[int(p) for p in patch_size],
        context=probe_context(patch_size, stride),
    )
    return out


def _labelled(subject: CachedSubject) -> bool:
    return subject.tissue is not None and subject.regions is not None


def _draw(subjects: Sequence[CachedSubject], k: int, seed: int, prefer_labelled: bool) -> list[CachedSubject]:
    """Up to ``k`` subjects drawn with ``seed`` (labelled ones first when asked), in key order."""
    pool = [s for s in subjects if _labelled(s)] if prefer_labelled else list(subjects)
    if prefer_labelled and len(pool) < k:
        pool += [s for s in subjects if not _labelled(s)]
    if len(pool) > k:
        index = np.random.default_rng(seed).choice(len(pool), size=k, replace=False)
        pool = [pool[i] for i in sorted(index)]
    return sorted(pool, key=lambda s: s.key)


def evidence_report(
    method: PretrainMethod,
    initial_state: Mapping[str, torch.Tensor],
    train: Sequence[CachedSubject],
    val: Sequence[CachedSubject],
    modalities: Sequence[str],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Probe and (for MAE methods) reconstruction evidence of a trained method, as the module docstring says.

    Args:
        method: the trained pretraining method (its ``encoder``; its ``reconstructor()``, if any, for the
            reconstruction evidence).
        initial_state: ``method.state_dict()`` before the first step (the random-encoder reference).
        train / val: the run's train- and validation-split cached subjects.
        modalities: channel names.
        settings: from :func:`evidence_settings`.

    Returns:
        The JSON payload (without ``embeddings``); ``method`` ends with its trained weights.
    """
    trained = {k: v.detach().clone() for k, v in method.state_dict().items()}
    method.load_state_dict(initial_state)
    encoder = cast(nn.Module, method.encoder)
    random_encoder = _frozen_copy(encoder)
    method.load_state_dict(trained)
    encoders = {"pretrained": encoder, "random": random_encoder}
    seed = int(settings["seed"])
    train_used = _draw(train, int(settings["max_train_subjects"]), seed, prefer_labelled=True)
    val_used = _draw(val, int(settings["max_val_subjects"]), seed + 1, prefer_labelled=True)
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "method": str(getattr(method, "name", type(method).__name__)),
        "reference": "random: the encoder at initialisation (same architecture and seed), before any step",
        "subjects": {"train": [s.key for s in train_used], "validation": [s.key for s in val_used]},
        "settings": {k: v for k, v in settings.items() if k not in ("stride", "patch_size")},
        "probes": probe_evidence(encoders, train_used, val_used, modalities, settings),
    }
    mae = method.reconstructor()
    if mae is not None:
        report["reconstruction"] = reconstruction_evidence(mae, train_used, val_used, modalities, settings)
    return report


def _frozen_copy(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    twin.requires_grad_(False)
    return twin


def _ci(interval: Sequence[float] | None) -> str:
    return "none" if interval is None else f"[{interval[0]:+.3f}, {interval[1]:+.3f}]"


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """One log line per probe (region, input) and per reconstructed modality."""
    lines = []
    probes = report.get("probes", {})
    if probes.get("status") != "done":
        lines.append(f"probes skipped: {probes.get('reason')}")
    for region, entry in probes.get("regions", {}).items():
        if entry.get("status") != "done":
            lines.append(f"probe {region}: skipped ({entry.get('reason')})")
            continue
        for name, res in entry["inputs"].items():
            if "gap" not in res:
                lines.append(f"probe {region} [{name}]: skipped ({res.get('reason')})")
                continue
            lines.append(
                f"probe {region} [{name} input]: balanced accuracy {res['pretrained']['mean']:.3f} "
                f"(random encoder {res['random']['mean']:.3f}; gap {res['gap']['mean']:+.3f}, "
                f"95% CI {_ci(res['gap']['ci95'])})"
            )
    rec: Mapping[str, Any] = report.get("reconstruction") or {}
    if rec and rec.get("status") != "done":
        lines.append(f"reconstruction skipped: {rec.get('reason')}")
    for label, part in (("whole", rec), ("masked", rec.get("masked") or {})):
        for name, res in part.get("modalities", {}).items():
            lines.append(
                f"reconstruction {name} from {rec['input']} alone ({label} input): mse {res['mse']:.4f} vs "
                f"mean predictor {res['mean_predictor_mse']:.4f} (skill {res['skill']:+.3f}, "
                f"95% CI {_ci(res['skill_ci95'])})"
            )
    return lines
