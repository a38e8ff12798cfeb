"""``bssl evaluate``: measure transfer between regions over a set of runs, and write the report.

Data flow: the runs named in ``runs`` (:mod:`evaluation.runs`) → per-subject Dice of fine-tuning runs
(segmentation table, label-efficiency curves, paired comparisons) · frozen encoders on the cached
volumes (:mod:`evaluation.transfer`: probes, shift, CKA) · classical baselines on the same test
subjects and ROIs · ``volumes.tsv`` of prediction runs (group analysis, with the simulated truth when
the data are the demo cohort) → ``results.json`` + ``report.html`` in the run directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from evaluation.baselines import gmm_segment, hmrf_segment
from evaluation.figures import figures_from_results, group_png
from evaluation.group_analysis import compare_groups
from evaluation.learning_curves import best_init_per_k, comparisons, learning_curves, segmentation_summary
from evaluation.report import build_report
from evaluation.runs import Run, collect_runs, finetune_rows
from evaluation.transfer import measure_transfer
from finetune.metrics import roi_metrics
from finetune.roi import roi_mask
from ssl_pretrain.config import CONFIG_DIR, to_flat_dict
from ssl_pretrain.data.cache import CachedSubject, preprocess
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.data.split import split_subjects
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.models.checkpoint import load_weights
from ssl_pretrain.models.unet import ResEncoder
from ssl_pretrain.run_dir import run_context

log = logging.getLogger(__name__)

UNET_ONLY_KEYS = ("out_channels", "decoder_res_units", "upsample")
TRUTH_FILE = Path("derivatives") / "simulation" / "subject_truth.tsv"


def encoder_from_sidecar(sidecar: dict[str, Any]) -> ResEncoder:
    """A :class:`ResEncoder` of the architecture a sidecar describes (an encoder's, or a UNet's encoder)."""
    config = {k: v for k, v in sidecar["architecture"]["config"].items() if k not in UNET_ONLY_KEYS}
    return ResEncoder(**config)


def _encoders(runs: Sequence[Run], modalities: Sequence[str], seed: int, random_encoder: bool) -> dict:
    """label -> (frozen encoder, total stride) for every pretrain run and subcortical model (+ a random one)."""
    sources = [r for r in runs if r.kind == "pretrain" or (r.kind == "finetune" and r.stage == "subcortical")]
    encoders: dict[str, tuple[ResEncoder, int]] = {}
    if random_encoder and sources:
        torch.manual_seed(seed)
        enc = encoder_from_sidecar(sources[0].sidecar)
        encoders["random_init"] = (enc.eval(), enc.total_stride)
    for run in sources:
        if run.kind == "pretrain":
            label = run.label
        else:
            label = "subcortical" if run.label == "scratch" else f"{run.label}+subcortical"
        if label in encoders:
            label = f"{label}#{run.seed}"
        enc = encoder_from_sidecar(run.sidecar)
        load_weights(enc, run.path, modalities=list(modalities), strict_arch=False)
        encoders[label] = (enc.eval(), enc.total_stride)
    return encoders


def _stage_roi(stage: str, subject: CachedSubject) -> np.ndarray:
    """The ROI of ``configs/stage/<stage>.yaml`` on a cached subject's grid."""
    cfg = OmegaConf.load(CONFIG_DIR / "stage" / f"{stage}.yaml")
    spacing = np.linalg.norm(subject.affine[:3, :3], axis=0)
    return roi_mask(np.asarray(subject.regions), region_group_indices(str(cfg.roi)), float(cfg.roi_margin_mm), spacing)


def baseline_rows(
    subjects: Sequence[CachedSubject], methods: Sequence[str], stages: Sequence[str], classes: Sequence[str], seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Per-subject Dice of the classical tissue classifiers inside each stage's ROI."""
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for subject in subjects:
        if subject.tissue is None or subject.regions is None:
            continue
        image = np.asarray(subject.image, dtype=np.float32)
        brain = np.asarray(subject.brain) > 0
        t1 = subject.modalities.index("T1w") if "T1w" in subject.modalities else 0
        truth = np.asarray(subject.tissue).astype(np.int64)
        spacing = np.linalg.norm(subject.affine[:3, :3], axis=0)
        for method in methods:
            if method == "gmm":
                pred = gmm_segment(image[subject.presence], brain, seed=seed, source=subject.key)
            elif method == "hmrf":
                pred = hmrf_segment(image[t1], brain, source=subject.key)
            else:
                raise ValueError(f"unknown baseline '{method}' (known: gmm, hmrf)")
            for stage in stages:
                metrics = roi_metrics(pred, truth, _stage_roi(stage, subject), spacing, hd95=False)
                for cls in classes:
                    rows[method].append(
                        {"region": stage, "subject": subject.key, "class": cls, "dice": metrics[f"dice_{cls}"]}
                    )
    return rows


def volume_table(run: Run) -> pd.DataFrame:
    """One row per subject from a prediction run's ``volumes.tsv``: ``<region>_volume``, ``_GM``, ``_WM``."""
    long = pd.read_csv(run.path / "volumes.tsv", sep="\t", na_values="n/a")
    long["subject"] = long["participant_id"].astype(str) + long["session"].fillna("").map(
        lambda s: f"_ses-{s}" if s else ""
    )
    wide = long.pivot_table(index=["subject", "group"], columns="region", values=["region_mm3", "GM_mm3", "WM_mm3"])
    names = {"region_mm3": "volume", "GM_mm3": "GM", "WM_mm3": "WM"}
    wide.columns = [f"{region}_{names[value]}" for value, region in wide.columns]
    return wide.reset_index()


def truth_effects(data_root: Path, measures: Sequence[str], control: str) -> dict[str, float]:
    """True group differences (%) of the simulated demo cohort, where the truth table names a measure."""
    path = data_root / TRUTH_FILE
    if not path.is_file():
        return {}
    truth = pd.read_csv(path, sep="\t")
    out = {}
    for measure in measures:
        region, kind = measure.rsplit("_", 1)
        column = f"{region}_volume_mm3" if kind == "volume" else f"{region}_{kind.lower()}_volume_mm3"
        if column in truth.columns:
            means = truth.groupby("group")[column].mean()
            patients = [g for g in means.index if g != control]
            if control in means.index and len(patients) == 1:
                out[measure] = float(100.0 * (means[patients[0]] / means[control] - 1.0))
    return out


def group_analysis(runs: Sequence[Run], cfg: DictConfig) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Patients vs controls on the predicted volumes of the (last) prediction run."""
    predict = [r for r in runs if r.kind == "predict"]
    if not predict:
        return [], {}
    table = volume_table(predict[-1])
    participants = Path(cfg.data.root) / "participants.tsv"
    covariates = list(cfg.group.covariates)
    if covariates and participants.is_file():
        extra = pd.read_csv(participants, sep="\t").rename(columns={"participant_id": "subject"})
        table = table.merge(extra[["subject", *covariates]], on="subject", how="left")
    measures = [m for m in cfg.group.measures if m in table.columns]
    truth = truth_effects(Path(cfg.data.root), measures, str(cfg.group.control))
    rows = compare_groups(
        table, measures, covariates, control=str(cfg.group.control), truth=truth or None,
        n_boot=int(cfg.bootstrap.n), seed=int(cfg.seed), source=predict[-1].path / "volumes.tsv",
    )  # fmt: skip
    return rows, {"group_volumes": group_png(table, measures, order=[str(cfg.group.control)])}


def _subjects(cfg: DictConfig) -> dict[str, list[CachedSubject]]:
    records = load_records(cfg.data)
    cached = preprocess(records, cfg.data, cfg.paths.cache_dir)
    data = cfg.data
    return split_subjects(cached, float(data.val_fraction), float(data.test_fraction), int(data.split_seed))


def run(cfg: DictConfig) -> Path:
    """Evaluate ``cfg.runs`` on ``cfg.data``; returns the run directory holding ``report.html``."""
    with run_context(cfg, "evaluate") as out:
        runs = collect_runs(list(cfg.runs))
        log.info("evaluating %d runs: %s", len(runs), ", ".join(f"{r.kind}:{r.label}" for r in runs))
        seed, n_boot = int(cfg.seed), int(cfg.bootstrap.n)
        simulated = (Path(cfg.data.root) / TRUTH_FILE).is_file()
        results: dict[str, Any] = {
            "config": {"data.root": str(cfg.data.root), "runs": [str(r.path) for r in runs], "seeds": sorted(
                {r.seed for r in runs if r.kind == "finetune"}), "spacing": cfg.data.spacing},
            "dataset": {"root": str(cfg.data.root), "simulated": simulated},
            "evaluate_config": to_flat_dict(cfg),
        }  # fmt: skip
        classes = list(cfg.curves.classes)
        rows = [row for r in runs if r.kind == "finetune" for row in finetune_rows(r) if row["class"] in classes]
        full = [row for row in rows if str(row["k"]) == "all"]
        if full:
            results["segmentation"] = segmentation_summary(full, n_boot=n_boot, seed=seed)
        brainstem = [row for row in rows if row["region"] == "brainstem"]
        if brainstem:
            curves = learning_curves(brainstem, n_boot=n_boot, seed=seed)
            comps = comparisons(brainstem, n_boot=n_boot, seed=seed)
            results.update(learning_curves=curves, comparisons=comps, best_per_k=best_init_per_k(curves, comps))
        figures: dict[str, bytes] = {}
        needs_data = cfg.probe.enabled or cfg.baselines.methods
        splits = _subjects(cfg) if needs_data else {}
        if cfg.probe.enabled:
            encoders = _encoders(runs, list(cfg.data.modalities), seed, bool(cfg.probe.random_encoder))
            if encoders:
                n = int(cfg.probe.max_subjects)
                results.update(
                    measure_transfer(
                        encoders, splits["train"][:n], splits["test"][:n], list(cfg.probe.regions),
                        int(cfg.probe.voxels_per_subject), seed=seed, probe=str(cfg.probe.probe),
                    )
                )  # fmt: skip
        if cfg.baselines.methods:
            test = splits["test"][: cfg.baselines.max_subjects or None]
            per_method = baseline_rows(test, list(cfg.baselines.methods), list(cfg.baselines.stages), classes, seed)
            results["baselines"] = {
                m: segmentation_summary(r, n_boot=n_boot, seed=seed) for m, r in per_method.items() if r
            }
        results["group_analysis"], group_figures = group_analysis(runs, cfg)
        figures.update(group_figures)
        results["compute"] = {
            f"{r.kind}/{r.label}/{r.path.name}": {"seconds": r.record.get("seconds"), "device": r.record.get("device")}
            for r in runs
            if r.record
        }
        figures.update(figures_from_results(results))
        for r in runs:
            if r.kind == "finetune" and r.k == "all" and (r.path / "overlays.png").is_file():
                figures.setdefault(f"overlay_{r.stage}", (r.path / "overlays.png").read_bytes())
        report = build_report(json.loads(json.dumps(results, default=str)), figures, out)
        log.info("report: %s", report)
        print(f"report: {report}")
    return out
