"""``bssl evaluate``: measure transfer between regions over a set of runs, and write the report.

Data flow: the runs named in ``runs`` (:mod:`evaluation.runs`) → per-subject Dice of fine-tuning runs
(segmentation table, label-efficiency curves, paired comparisons) · frozen encoders on the cached
volumes (:mod:`evaluation.transfer`: probes, shift, CKA) · classical baselines on the same test
subjects and ROIs · ``volumes.tsv`` of prediction runs (group analysis, with the simulated truth when
the data are the demo cohort; GM/WM volumes only where ``in_model_roi`` says the model was trained there)
· ``run.json`` of every run and of the runs each initialisation started from (compute per init)
→ ``results.json`` + ``report.html`` in the run directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from evaluation.baseline_scores import BaselineSettings, baseline_rows, stage_rois
from evaluation.compute import compute_per_init
from evaluation.design import convergence_rows, design_summary, training_curves
from evaluation.figures import figures_from_results
from evaluation.groups import TRUTH_FILE, analyse_groups
from evaluation.learning_curves import best_init_per_k, comparisons, learning_curves, segmentation_summary
from evaluation.recorded_split import split_of
from evaluation.report import build_report
from evaluation.report_pretraining import collect_evidence
from evaluation.runs import Run, collect_runs, column_rows, finetune_rows
from evaluation.transfer import measure_transfer
from ssl_pretrain.config import to_flat_dict
from ssl_pretrain.models.checkpoint import load_weights
from ssl_pretrain.models.unet import ResEncoder
from ssl_pretrain.run_dir import run_context

log = logging.getLogger(__name__)

UNET_ONLY_KEYS = ("out_channels", "decoder_res_units", "upsample")


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
        if run.kind == "pretrain" or run.sidecar.get("init_label"):
            label = run.label
        else:
            label = "subcortical" if run.label == "scratch" else f"{run.label}+subcortical"
        if label in encoders:
            label = f"{label}#{run.seed}"
        enc = encoder_from_sidecar(run.sidecar)
        load_weights(enc, run.path, modalities=list(modalities), strict_arch=False)
        encoders[label] = (enc.eval(), enc.total_stride)
    return encoders


def run(cfg: DictConfig) -> Path:
    """Evaluate ``cfg.runs`` on ``cfg.data``; returns the run directory holding ``report.html``."""
    with run_context(cfg, "evaluate") as out:
        collected = collect_runs(list(cfg.runs))
        log.info("evaluating %d runs: %s", len(collected), ", ".join(f"{r.kind}:{r.label}" for r in collected))
        # cross-fitted models exist to predict the group analysis' subjects; the benchmark is the other runs
        runs = [r for r in collected if not (r.kind == "finetune" and r.sidecar.get("crossfit"))]
        seed, n_boot = int(cfg.seed), int(cfg.bootstrap.n)
        simulated = (Path(cfg.data.root) / TRUTH_FILE).is_file()
        results: dict[str, Any] = {
            "config": {"data.root": str(cfg.data.root), "runs": [str(r.path) for r in runs], "seeds": sorted(
                {r.seed for r in runs if r.kind == "finetune"}), "spacing": cfg.data.spacing},
            "dataset": {"root": str(cfg.data.root), "simulated": simulated},
            "evaluate_config": to_flat_dict(cfg),
        }  # fmt: skip
        classes, target = list(cfg.curves.classes), str(cfg.curves.get("target", "brainstem"))
        rows = [row for r in runs if r.kind == "finetune" for row in finetune_rows(r) if row["class"] in classes]
        full = [row for row in rows if str(row["k"]) == "all"]
        if full:
            results["segmentation"] = segmentation_summary(full, n_boot=n_boot, seed=seed)
        tuned_full = [r for r in runs if r.kind == "finetune" and r.k == "all"]
        for key, prefix in (("region_segmentation", "dice_region_"), ("t1w_only", "t1w_only_dice_")):
            extra = [row for r in tuned_full for row in column_rows(r, prefix)]
            if key == "t1w_only":
                extra = [row for row in extra if row["class"] in (*classes, "CSF")]
            if extra:
                results[key] = segmentation_summary(extra, n_boot=n_boot, seed=seed)
        on_target = [row for row in rows if row["region"] == target]
        if on_target:
            curves = learning_curves(on_target, n_boot=n_boot, seed=seed)
            family = str(cfg.curves.get("holm_family", "all"))
            comps = comparisons(on_target, n_boot=n_boot, seed=seed, holm_family=family)
            results.update(learning_curves=curves, comparisons=comps, best_per_k=best_init_per_k(curves, comps))
        results["design"] = design_summary(runs, target)
        results["pretraining_evidence"] = collect_evidence(runs)
        results["convergence"] = convergence_rows(runs, target)
        results["training_curves"] = training_curves(runs, target)
        figures: dict[str, bytes] = {}
        needs_data = cfg.probe.enabled or cfg.baselines.methods
        splits = split_of(cfg, runs) if needs_data else {}
        if cfg.probe.enabled:
            encoders = _encoders(runs, list(cfg.data.modalities), seed, bool(cfg.probe.random_encoder))
            if encoders:
                n = int(cfg.probe.max_subjects)
                results.update(
                    measure_transfer(
                        encoders, splits["train"][:n], splits["test"][:n], list(cfg.probe.regions),
                        int(cfg.probe.voxels_per_subject), seed=seed, probe=str(cfg.probe.probe), n_boot=n_boot,
                        n_null=int(cfg.probe.get("n_null", 100)),
                    )
                )  # fmt: skip
        if cfg.baselines.methods:
            settings = BaselineSettings.from_config(cfg.baselines)
            recorded = {str(r.stage): r.sidecar["stage_config"] for r in runs if r.sidecar.get("stage_config")}
            rois = stage_rois(recorded, settings.stages)
            per_method, setup = baseline_rows(splits["test"], splits["val"], rois, classes, settings, seed)
            results["baselines"] = {
                m: segmentation_summary(r, n_boot=n_boot, seed=seed) for m, r in per_method.items() if r
            }
            results["baselines_setup"] = setup
        group, group_figures = analyse_groups(runs, cfg)
        results["group_analysis"], results["group_excluded"] = group["rows"], group["excluded"]
        results["group_reference_labels"] = group.get("reference_rows") or []
        results["group_sources"] = group.get("sources")
        results["group_left_out"] = group.get("left_out") or []
        results["group_primary"] = group.get("primary")
        figures.update(group_figures)
        results["compute"] = {
            f"{r.kind}/{r.label}/{r.path.name}": {"seconds": r.record.get("seconds"), "device": r.record.get("device")}
            for r in runs
            if r.record
        }
        results["compute_per_init"] = compute_per_init(runs)
        for best in results.get("best_per_k", []):
            best["compute_seconds"] = (results["compute_per_init"].get(best["best"]) or {}).get("seconds")
        figures.update(figures_from_results(results))
        for r in runs:
            if r.kind == "finetune" and r.k == "all" and (r.path / "overlays.png").is_file():
                figures.setdefault(f"overlay_{r.stage}", (r.path / "overlays.png").read_bytes())
        report = build_report(json.loads(json.dumps(results, default=str)), figures, out)
        log.info("report: %s", report)
        print(f"report: {report}")
    return out
