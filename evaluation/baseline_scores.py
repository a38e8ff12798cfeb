"""Classical baselines scored like the deep models: the same test subjects, ROIs and Dice (DESIGN §10 rule 6).

Methods (``baselines.methods``):

* ``all_wm``: every brain voxel called white matter — the trivial floor. Inside the brainstem, which is
  mostly white matter, it already scores a high WM Dice; a method that does not beat it on GM *and* WM has
  not separated the tissues.
* ``gmm``: a Gaussian mixture on the subject's intensities (:func:`evaluation.baselines.gmm_segment`);
* ``hmrf``: dipy's HMRF on T1w (:func:`evaluation.baselines.hmrf_segment`), with its smoothing β chosen
  on validation subjects (``baselines.hmrf.beta_grid``, ``baselines.tune_subjects``): the β with the best
  mean GM/WM Dice over the stages' ROIs there, never on the test subjects.

Both learned baselines get their standard preprocessing first: N4 bias-field correction of the anatomical
channels (``baselines.bias_correction: n4``; :mod:`evaluation.bias_correction`). The ROI of each stage is
the one its fine-tuning runs recorded (``stage_config`` in ``model.json``), else ``configs/stage/<name>.yaml``.

Subjects are independent, so they are scored in ``baselines.n_jobs`` worker processes (joblib; ``null``: one per
CPU core, at most one per subject; ``1``: in this process). Each subject's numbers do not depend on it: N4 keeps
its own thread count in a worker and the mixtures are seeded, so the rows equal the one-process rows.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from joblib import Parallel, delayed
from omegaconf import OmegaConf

from evaluation.baselines import gmm_segment, hmrf_segment
from evaluation.bias_correction import n4_correct, raw_channel
from finetune.metrics import roi_metrics
from finetune.roi import StageROI
from ssl_pretrain.config import load_option
from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.errors import ConfigError

log = logging.getLogger(__name__)

METHODS = ("all_wm", "gmm", "hmrf")
ANATOMICAL = ("T1w", "T2w")  # channels a receive field multiplies; FA/MD are ratios of diffusion images
WM = 3


@dataclass(frozen=True)
class BaselineSettings:
    """The ``baselines`` config group."""

    methods: tuple[str, ...] = METHODS
    stages: tuple[str, ...] = ()  # configs/evaluate.yaml's baselines.stages (a study adds its own stages)
    bias_correction: str | None = "n4"
    n4_shrink: int = 2
    n4_iterations: tuple[int, ...] = (50, 50, 30)
    beta_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    tune_subjects: int = 4
    max_subjects: int | None = None
    n_jobs: int | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> BaselineSettings:
        """From the ``baselines`` node of ``configs/evaluate.yaml``.

        Raises:
            ConfigError: an unknown method or bias correction, or an empty β grid.
        """
        c = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else dict(cfg)
        c = cast(dict, c)
        methods = tuple(str(m) for m in c.get("methods") or ())
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ConfigError("baselines.methods", f"unknown {unknown}; known: {', '.join(METHODS)}")
        correction = c.get("bias_correction")
        if correction not in (None, "n4"):
            raise ConfigError("baselines.bias_correction", f"expected n4 or null, got {correction!r}")
        n4, hmrf = c.get("n4") or {}, c.get("hmrf") or {}
        grid = tuple(float(b) for b in hmrf.get("beta_grid", cls.beta_grid))
        if not grid or min(grid) < 0:
            raise ConfigError("baselines.hmrf.beta_grid", f"expected non-negative β values, got {list(grid)}")
        return cls(
            methods=methods,
            stages=tuple(str(s) for s in c.get("stages") or ()),
            bias_correction=correction,
            n4_shrink=int(n4.get("shrink", cls.n4_shrink)),
            n4_iterations=tuple(int(i) for i in n4.get("iterations", cls.n4_iterations)),
            beta_grid=grid,
            tune_subjects=int(c.get("tune_subjects", cls.tune_subjects)),
            max_subjects=c.get("max_subjects"),
            n_jobs=_n_jobs(c.get("n_jobs")),
        )

    def parallel(self, tasks: int) -> Parallel:
        """A joblib pool of at most ``n_jobs`` workers (``None``: the CPU cores) and never more than ``tasks``."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return Parallel(n_jobs=max(1, min(self.n_jobs or cores, tasks)))


def _n_jobs(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError("baselines.n_jobs", f"expected a positive number of worker processes or null, got {value!r}")
    return int(value)


def stage_rois(recorded: Mapping[str, Mapping[str, Any]], stages: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each stage's ROI config: the one its runs recorded, else ``configs/stage/<stage>.yaml`` (or the same file in
    a ``hydra.searchpath`` folder)."""
    out = {}
    for stage in stages:
        if stage in recorded:
            out[stage] = dict(recorded[stage])
        else:
            out[stage] = cast(dict, OmegaConf.to_container(load_option("stage", stage)))
    return out


def _prepared(subject: CachedSubject, settings: BaselineSettings) -> tuple[np.ndarray, np.ndarray]:
    """``(channels for the mixture (C', X, Y, Z), T1w (X, Y, Z))``, N4-corrected where asked."""
    brain = np.asarray(subject.brain) > 0
    channels = []
    for c, modality in enumerate(subject.modalities):
        if not subject.presence[c]:
            continue
        if settings.bias_correction == "n4" and modality in ANATOMICAL:
            raw = raw_channel(subject, modality)
            channels.append(n4_correct(raw, brain, settings.n4_shrink, settings.n4_iterations))
        else:
            channels.append(np.asarray(subject.image[c], np.float32))
    present = [m for c, m in enumerate(subject.modalities) if subject.presence[c]]
    t1 = channels[present.index("T1w")] if "T1w" in present else channels[0]
    return np.stack(channels), t1


def _segment(method: str, subject: CachedSubject, prepared: tuple[np.ndarray, np.ndarray], beta: float, seed: int):
    brain = np.asarray(subject.brain) > 0
    if method == "all_wm":
        return np.where(brain, WM, 0).astype(np.int16)
    if method == "gmm":
        return gmm_segment(prepared[0], brain, seed=seed, source=subject.key)
    return hmrf_segment(prepared[1], brain, beta=beta, source=subject.key)


def _scores(pred: np.ndarray, subject: CachedSubject, rois: Mapping[str, Mapping[str, Any]], classes: Sequence[str]):
    truth = np.asarray(subject.tissue).astype(np.int64)
    spacing = np.linalg.norm(subject.affine[:3, :3], axis=0)
    for stage, roi_cfg in rois.items():
        mask = StageROI.from_config(roi_cfg, spacing).volume_mask(np.asarray(subject.regions))
        metrics = roi_metrics(pred, truth, mask, spacing, hd95=False)
        for cls in classes:
            yield {"region": stage, "subject": subject.key, "class": cls, "dice": metrics[f"dice_{cls}"]}


def _labelled(subjects: Sequence[CachedSubject]) -> list[CachedSubject]:
    return [s for s in subjects if s.tissue is not None and s.regions is not None]


def _beta_dice(
    subject: CachedSubject, rois: Mapping[str, Mapping[str, Any]], settings: BaselineSettings
) -> dict[float, list[float]]:
    """``{β: GM/WM Dice in every ROI}`` of HMRF on one validation subject, for each β of the grid."""
    prepared = _prepared(subject, settings)
    return {
        beta: [r["dice"] for r in _scores(_segment("hmrf", subject, prepared, beta, 0), subject, rois, ("GM", "WM"))]
        for beta in settings.beta_grid
    }


def _subject_rows(
    subject: CachedSubject,
    rois: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str],
    settings: BaselineSettings,
    beta: float,
    seed: int,
) -> dict[str, list[dict[str, Any]]]:
    """``{method: rows}`` of one test subject."""
    prepared = _prepared(subject, settings) if set(settings.methods) - {"all_wm"} else (np.empty(0), np.empty(0))
    out = {}
    for method in settings.methods:
        out[method] = list(_scores(_segment(method, subject, prepared, beta, seed), subject, rois, classes))
    return out


def tune_hmrf_beta(
    subjects: Sequence[CachedSubject],
    rois: Mapping[str, Mapping[str, Any]],
    settings: BaselineSettings,
) -> tuple[float, dict[str, float]]:
    """The β of ``settings.beta_grid`` with the best mean GM/WM Dice on validation ``subjects``.

    Returns:
        ``(β, {β: mean Dice})``; the grid's middle value when there is no labelled validation subject.
    """
    chosen = _labelled(subjects)[: settings.tune_subjects]
    if not chosen:
        middle = settings.beta_grid[len(settings.beta_grid) // 2]
        log.warning("baselines: no labelled validation subject to choose the HMRF β; using %s", middle)
        return middle, {}
    per_subject = settings.parallel(len(chosen))(delayed(_beta_dice)(s, rois, settings) for s in chosen)
    scores = {}
    for beta in settings.beta_grid:
        scores[f"{beta:g}"] = float(np.nanmean([d for subject in per_subject for d in subject[beta]]))
    best = max(settings.beta_grid, key=lambda b: scores[f"{b:g}"])
    log.info("baselines: HMRF β=%g chosen on %d validation subjects (%s)", best, len(chosen), scores)
    return best, scores


def baseline_rows(
    test: Sequence[CachedSubject],
    validation: Sequence[CachedSubject],
    rois: Mapping[str, Mapping[str, Any]],
    classes: Sequence[str],
    settings: BaselineSettings,
    seed: int = 0,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Per-subject Dice of every baseline inside each stage's ROI, and how they were set up.

    Returns:
        ``({method: rows with region, subject, class, dice}, {"bias_correction", "hmrf_beta",
        "hmrf_beta_scores", "tuned_on"})``.
    """
    beta, beta_scores = 0.0, cast(dict[str, float], {})
    if "hmrf" in settings.methods:
        beta, beta_scores = tune_hmrf_beta(validation, rois, settings)
    subjects = _labelled(test)[: settings.max_subjects or None]
    scored = settings.parallel(len(subjects))(
        delayed(_subject_rows)(s, rois, classes, settings, beta, seed) for s in subjects
    )
    rows: dict[str, list[dict[str, Any]]] = {m: [r for subject in scored for r in subject[m]] for m in settings.methods}
    info = {
        "bias_correction": settings.bias_correction,
        "hmrf_beta": beta if "hmrf" in settings.methods else None,
        "hmrf_beta_scores": beta_scores,
        "tuned_on": "validation subjects" if beta_scores else None,
    }
    return rows, info
