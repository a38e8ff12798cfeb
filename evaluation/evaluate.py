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

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from evaluation.baseline_scores import BaselineSettings, baseline_rows, stage_rois
from evaluation.compute import compute_per_init
from evaluation.design import convergence_rows, design_summary, training_curves
from evaluation.figures import figures_from_results, group_png
from evaluation.group_analysis import compare_groups
from evaluation.learning_curves import best_init_per_k, comparisons, learning_curves, segmentation_summary
from evaluation.recorded_split import split_of
from evaluation.report import build_report
from evaluation.runs import Run, collect_runs, finetune_rows
from evaluation.transfer import measure_transfer
from ssl_pretrain.config import to_flat_dict
from ssl_pretrain.errors import ConfigError, DataError
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


TISSUE_MEASURES = ("CSF", "GM", "WM")  # measure suffixes that are model predictions (vs. region volumes)


def _in_model_roi(long: pd.DataFrame) -> pd.Series:
    """The ``in_model_roi`` column as booleans (every row, when an older ``volumes.tsv`` lacks it)."""
    if "in_model_roi" not in long.columns:
        log.warning("volumes.tsv has no in_model_roi column: every region's tissue volumes are taken as valid")
        return pd.Series(True, index=long.index)
    return long["in_model_roi"].astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


HEAD_SIZE = "head_size"  # whole-brain volume without the brainstem: adjusts volumes for head size


def volume_table(run: Run) -> pd.DataFrame:
    """One row per subject from a prediction run's ``volumes.tsv``: ``<region>_volume``, ``_GM``, ``_WM``, ``_CSF``.

    ``<region>_volume`` counts the voxels of the subject's region labels, so it is valid for every region;
    ``head_size`` is ``whole_brain_volume - brainstem_volume`` (a head-size covariate, as intracranial
    volume is in volumetry, that leaves out the region where patients differ).
    ``<region>_GM`` / ``_WM`` / ``_CSF`` are the model's tissue predictions and are kept only where the row
    says ``in_model_roi`` (the model learned tissue only inside its stage's ROI; elsewhere they are
    extrapolations): outside it they are NaN.
    """
    long = pd.read_csv(
        run.path / "volumes.tsv", sep="\t", na_values="n/a", dtype={"participant_id": str, "session": str}
    )
    long["subject"] = long["participant_id"].astype(str) + long["session"].fillna("").map(
        lambda s: f"_ses-{s}" if s else ""
    )
    tissue = [f"{c}_mm3" for c in TISSUE_MEASURES if f"{c}_mm3" in long.columns]
    long.loc[~_in_model_roi(long), tissue] = np.nan
    wide = (
        long.groupby(["subject", "participant_id", "group", "region"], sort=False)[["region_mm3", *tissue]]
        .mean()
        .unstack("region")
    )
    names = {"region_mm3": "volume", **{f"{c}_mm3": c for c in TISSUE_MEASURES}}
    wide.columns = [f"{region}_{names[value]}" for value, region in wide.columns]
    if {"whole_brain_volume", "brainstem_volume"} <= set(wide.columns):
        wide[HEAD_SIZE] = wide["whole_brain_volume"] - wide["brainstem_volume"]
    return wide.reset_index()


TRUTH_WHOLE_BRAIN = {"GM": "gm_volume_mm3", "WM": "wm_volume_mm3", "CSF": "csf_volume_mm3"}


def truth_column(measure: str) -> str:
    """The ``subject_truth.tsv`` column of a measure (``pons_volume`` → ``pons_volume_mm3``, …)."""
    region, kind = measure.rsplit("_", 1)
    if kind == "volume":
        return f"{region}_volume_mm3"
    if region == "whole_brain" and kind in TRUTH_WHOLE_BRAIN:
        return TRUTH_WHOLE_BRAIN[kind]
    return f"{region}_{kind.lower()}_volume_mm3"


def truth_effects(data_root: Path, measures: Sequence[str], control: str) -> dict[str, float]:
    """True group differences (%) of the simulated demo cohort, where the truth table names a measure.

    The demo cohort's ``derivatives/simulation/subject_truth.tsv`` gives brainstem, midbrain, pons and
    medulla volumes, brainstem GM/WM and whole-brain GM/WM/CSF (partial-volume sums, mm³); it has no
    subcortical columns, so subcortical measures get no truth.
    """
    path = data_root / TRUTH_FILE
    if not path.is_file():
        return {}
    truth = pd.read_csv(path, sep="\t")
    out = {}
    for measure in measures:
        column = truth_column(measure)
        if column in truth.columns:
            means = truth.groupby("group")[column].mean()
            patients = [g for g in means.index if g != control]
            if control in means.index and len(patients) == 1:
                out[measure] = float(100.0 * (means[patients[0]] / means[control] - 1.0))
    return out


def excluded_measures(table: pd.DataFrame, measures: Sequence[str]) -> list[dict[str, str]]:
    """The configured measures that cannot be compared, each with the reason."""
    out = []
    for measure in measures:
        region, kind = measure.rsplit("_", 1)
        if measure not in table.columns:
            reason = f"volumes.tsv has no '{kind}' of region '{region}'"
        elif not table[measure].isna().all():
            continue
        elif kind in TISSUE_MEASURES:
            reason = f"{kind} in {region} is outside the region the model was trained in (in_model_roi false)"
        else:
            reason = "no subject has a value"
        out.append({"measure": measure, "reason": reason})
    return out


def group_analysis(runs: Sequence[Run], cfg: DictConfig) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Patients vs controls on the predicted volumes of the (last) prediction run.

    Returns:
        ``({"rows": compare_groups rows, "excluded": [{"measure", "reason"}], "source": volumes.tsv}, figures)``.
    """
    predict = [r for r in runs if r.kind == "predict"]
    if not predict:
        return {"rows": [], "excluded": []}, {}
    source = predict[-1].path / "volumes.tsv"
    table = volume_table(predict[-1])
    participants = Path(cfg.data.root) / "participants.tsv"
    if table.empty or table["group"].isna().all() or (table["group"].astype(str).str.strip() == "").all():
        raise DataError(
            participants if participants.is_file() else source,
            "gives no subject a group, so patients cannot be compared with controls: add a 'group' column "
            f"(e.g. {cfg.group.control}/ALS) and re-run `bssl predict`, or leave prediction runs out of runs=[…]",
        )
    covariates = [c for c in cfg.group.covariates if c != HEAD_SIZE or HEAD_SIZE in table.columns]
    from_participants = [c for c in covariates if c not in table.columns]
    if from_participants:
        extra = pd.read_csv(participants, sep="\t", dtype={"participant_id": str}) if participants.is_file() else None
        absent = [c for c in from_participants if extra is None or c not in extra.columns]
        if absent or extra is None:
            raise ConfigError(
                "group.covariates", f"{absent} are neither volumes.tsv measures nor columns of {participants}"
            )
        table = table.merge(extra[["participant_id", *from_participants]], on="participant_id", how="left")
    excluded = excluded_measures(table, list(cfg.group.measures))
    for e in excluded:
        log.info("group analysis: not comparing %s: %s", e["measure"], e["reason"])
    dropped = {e["measure"] for e in excluded}
    measures = [m for m in cfg.group.measures if m not in dropped]
    truth = truth_effects(Path(cfg.data.root), measures, str(cfg.group.control))
    rows = compare_groups(
        table, measures, covariates, control=str(cfg.group.control), truth=truth or None,
        n_boot=int(cfg.bootstrap.n), seed=int(cfg.seed), source=source,
    ) if measures else []  # fmt: skip
    control = [str(cfg.group.control)]
    figures = {"group_volumes": group_png(table, measures, order=control, ylabel="volume (mm³)")} if measures else {}
    return {"rows": rows, "excluded": excluded, "source": str(source)}, figures


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
        classes, target = list(cfg.curves.classes), str(cfg.curves.get("target", "brainstem"))
        rows = [row for r in runs if r.kind == "finetune" for row in finetune_rows(r) if row["class"] in classes]
        full = [row for row in rows if str(row["k"]) == "all"]
        if full:
            results["segmentation"] = segmentation_summary(full, n_boot=n_boot, seed=seed)
        on_target = [row for row in rows if row["region"] == target]
        if on_target:
            curves = learning_curves(on_target, n_boot=n_boot, seed=seed)
            family = str(cfg.curves.get("holm_family", "all"))
            comps = comparisons(on_target, n_boot=n_boot, seed=seed, holm_family=family)
            results.update(learning_curves=curves, comparisons=comps, best_per_k=best_init_per_k(curves, comps))
        results["design"] = design_summary(runs, target)
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
        group, group_figures = group_analysis(runs, cfg)
        results["group_analysis"], results["group_excluded"] = group["rows"], group["excluded"]
        results["group_source"] = group.get("source")
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
