"""Patients versus controls on what the models measured, and whether those measures can be trusted.

Data flow: the ``volumes.tsv`` of every prediction run (cross-fitted: one per fold) → one row per subject of
*model* measures — region volumes inside the model's own outline, tissue volumes inside it where the model
learned tissue (``in_model_roi``) — and ``head_size`` (the brain-mask volume, which no brainstem model
produces); rows whose model trained or selected on the subject (``model_saw_subject``) are left out and
counted. Then :func:`evaluation.group_analysis.compare_groups` with one pre-specified primary analysis
(``group.primary``: ``adjusted`` for ``group.covariates`` by default, Holm over its measures; the other shown
as secondary), and, where the simulation's truth is known, per-subject agreement, the recovery of the effect
and the trivial floor (:mod:`evaluation.agreement`). Volumes inside the *reference* region labels
(``reference_volumes.tsv``, no model outline) are compared in a separate table titled as such.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from evaluation.agreement import bland_altman, constant_fraction, lin_ccc, recovery
from evaluation.figures import group_png
from evaluation.group_analysis import compare_groups
from evaluation.runs import Run
from evaluation.statistics import bootstrap_ci
from finetune.bids_output import REFERENCE_VOLUMES_FILE, VOLUMES_FILE
from finetune.region_dice import FILE as REGION_DICE_FILE
from ssl_pretrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TISSUE_MEASURES = ("CSF", "GM", "WM")  # measure suffixes that are tissue (vs. region volumes)
HEAD_SIZE = "head_size"  # the brain-mask volume: not a brainstem model's output
TRUTH_FILE = Path("derivatives") / "simulation" / "subject_truth.tsv"
TRUTH_WHOLE_BRAIN = {"GM": "gm_volume_mm3", "WM": "wm_volume_mm3", "CSF": "csf_volume_mm3"}


def _flag(column: pd.Series) -> pd.Series:
    return column.astype(str).str.strip().str.lower().isin(("true", "1", "yes"))


def _read(path: Path) -> pd.DataFrame:
    long = pd.read_csv(path, sep="\t", na_values="n/a", dtype={"participant_id": str, "session": str})
    long["subject"] = long["participant_id"].astype(str) + long["session"].fillna("").map(
        lambda s: f"_ses-{s}" if s else ""
    )
    return long


def volume_table(paths: Sequence[Path]) -> tuple[pd.DataFrame, list[str]]:
    """One row per subject: ``<region>_volume``, ``<region>_GM|WM|CSF`` (NaN outside ``in_model_roi``),
    ``head_size``, ``crossfit_fold``, ``model``; and the subjects left out because every model that predicted
    them had seen them.
    """
    long = pd.concat([_read(p) for p in paths], ignore_index=True)
    seen = _flag(long["model_saw_subject"]) if "model_saw_subject" in long.columns else pd.Series(False, long.index)
    clean = set(long.loc[~seen, "subject"])
    left_out = sorted(set(long["subject"]) - clean)
    long = long[~seen].copy()
    tissue = [f"{c}_mm3" for c in TISSUE_MEASURES if f"{c}_mm3" in long.columns]
    if "in_model_roi" in long.columns:
        long.loc[~_flag(long["in_model_roi"]), tissue] = np.nan
    keys = ["subject", "participant_id", "group"]
    wide = long.groupby([*keys, "region"], sort=False)[["region_mm3", *tissue]].mean().unstack("region")
    names = {"region_mm3": "volume", **{f"{c}_mm3": c for c in TISSUE_MEASURES}}
    wide.columns = [f"{region}_{names[value]}" for value, region in wide.columns]
    extra = [c for c in ("brain_mask_mm3", "crossfit_fold", "model") if c in long.columns]
    per_subject = long.groupby(keys, sort=False)[extra].first()
    wide = wide.join(per_subject).reset_index()
    if "brain_mask_mm3" in wide.columns:
        wide[HEAD_SIZE] = wide.pop("brain_mask_mm3")
    return wide, left_out


def truth_column(measure: str) -> str:
    """The ``subject_truth.tsv`` column of a measure (``pons_volume`` → ``pons_volume_mm3``, …)."""
    region, kind = measure.rsplit("_", 1)
    if kind == "volume":
        return f"{region}_volume_mm3"
    if region == "whole_brain" and kind in TRUTH_WHOLE_BRAIN:
        return TRUTH_WHOLE_BRAIN[kind]
    return f"{region}_{kind.lower()}_volume_mm3"


def truth_table(data_root: Path) -> pd.DataFrame | None:
    """The simulation's per-subject truth (``participant_id`` and the truth columns), or ``None`` (real data)."""
    path = data_root / TRUTH_FILE
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str}) if path.is_file() else None


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


def _with_covariates(table: pd.DataFrame, covariates: Sequence[str], participants: Path) -> pd.DataFrame:
    from_participants = [c for c in covariates if c not in table.columns]
    if not from_participants:
        return table
    extra = pd.read_csv(participants, sep="\t", dtype={"participant_id": str}) if participants.is_file() else None
    absent = [c for c in from_participants if extra is None or c not in extra.columns]
    if absent or extra is None:
        raise ConfigError(
            "group.covariates", f"{absent} are neither volumes.tsv measures nor columns of {participants}"
        )
    return table.merge(extra[["participant_id", *from_participants]], on="participant_id", how="left")


def _checks(table: pd.DataFrame, truth: pd.DataFrame, measure: str, control: str, n_boot: int, seed: int) -> dict:
    """Agreement with the truth, recovery of the effect and the trivial floor of one measure."""
    column = truth_column(measure)
    if column not in truth.columns:
        return {}
    merged = table[["participant_id", "group", measure]].merge(truth[["participant_id", column]], on="participant_id")
    x, y = merged[measure].to_numpy(float), merged[column].to_numpy(float)
    patient = (merged["group"].astype(str) != control).to_numpy()
    out: dict[str, Any] = {
        "agreement": {
            str(g): bland_altman(x[merged["group"] == g], y[merged["group"] == g]) for g in merged["group"].unique()
        },
        "ccc": lin_ccc(x, y),
        "recovery": recovery(x, y, patient, n_boot, seed),
    }
    out["true_diff_pct"] = out["recovery"]["true_diff_pct"]
    region, kind = measure.rsplit("_", 1)
    outline = f"{region}_volume"
    if kind in TISSUE_MEASURES and outline in table.columns:
        trivial = constant_fraction(table[measure].to_numpy(float), table[outline].to_numpy(float))
        frame = pd.DataFrame({"participant_id": table["participant_id"], "trivial": trivial})
        frame = frame.merge(merged[["participant_id", column]], on="participant_id")
        floor = recovery(frame["trivial"].to_numpy(float), frame[column].to_numpy(float), patient, n_boot, seed)
        out["trivial_predictor"] = floor
        out["trivial_predictor_diff_pct"] = floor["measured_diff_pct"]
    return out


def region_dice_summary(paths: Sequence[Path], n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Per region, the Dice of the region maps the prediction runs wrote (whole volume) on the subjects whose
    model never saw them: ``[{region, n_subjects, dice, ci95, predicted_mm3, reference_mm3, largest_component,
    in_model_roi}]`` (``in_model_roi``: inside the ROI every predicting model was last trained in; ``None`` when
    the files do not say).
    """
    frames = [_read(p) for p in paths if p.is_file()]
    if not frames:
        return []
    long = pd.concat(frames, ignore_index=True)
    if "model_saw_subject" in long.columns:
        long = long[~_flag(long["model_saw_subject"])]
    rows = []
    for region, part in long.groupby("region", sort=False):
        dice, lo, hi = bootstrap_ci(part["dice"].to_numpy(float), n_boot=n_boot, seed=seed)
        rows.append({
            "region": str(region), "n_subjects": int(part["subject"].nunique()), "dice": dice, "ci95": [lo, hi],
            "predicted_mm3": float(part["predicted_mm3"].mean()), "reference_mm3": float(part["reference_mm3"].mean()),
            "largest_component": ", ".join(sorted(set(part.get("largest_component", pd.Series(["n/a"])).astype(str)))),
            "in_model_roi": bool(_flag(part["in_model_roi"]).all()) if "in_model_roi" in part else None,
        })  # fmt: skip
    return rows


def analyse_groups(runs: Sequence[Run], cfg: DictConfig) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Patients vs controls on the model measures of every prediction run (module docstring).

    Returns:
        ``({"rows", "excluded", "left_out", "sources", "reference_rows", "primary", "region_dice"}, figures)``.
    """
    predict = [r for r in runs if r.kind == "predict"]
    if not predict:
        return {"rows": [], "excluded": []}, {}
    region_dice = region_dice_summary([r.path / REGION_DICE_FILE for r in predict], int(cfg.bootstrap.n), int(cfg.seed))
    paths = [r.path / VOLUMES_FILE for r in predict]
    table, left_out = volume_table(paths)
    for key in left_out:
        log.warning("group analysis: %s left out: every model that predicted it had trained or selected on it", key)
    participants = Path(cfg.data.root) / "participants.tsv"
    if table.empty or table["group"].isna().all() or (table["group"].astype(str).str.strip() == "").all():
        raise DataError(
            participants if participants.is_file() else paths[-1],
            "gives no subject a group, so patients cannot be compared with controls: add a 'group' column "
            f"(e.g. {cfg.group.control}/ALS) and re-run `bssl predict`, or leave prediction runs out of runs=[…]",
        )
    present = set(table["group"].dropna().astype(str))
    if str(cfg.group.control) not in present or len(present) < 2:
        reason = f"after leaving out {len(left_out)} subject(s) measured by a model that had seen them, the groups "
        reason += f"left are {sorted(present)}: cross-fit the predictions (bssl study does) to compare groups"
        log.warning("group analysis: %s", reason)
        excluded = [{"measure": m, "reason": reason} for m in cfg.group.measures]
        out = {"rows": [], "excluded": excluded, "left_out": left_out, "sources": [str(p) for p in paths]}
        return {**out, "region_dice": region_dice}, {}
    covariates = [c for c in cfg.group.covariates if c != HEAD_SIZE or HEAD_SIZE in table.columns]
    table = _with_covariates(table, covariates, participants)
    excluded = excluded_measures(table, list(cfg.group.measures))
    measures = [m for m in cfg.group.measures if m not in {e["measure"] for e in excluded}]
    control, n_boot, seed = str(cfg.group.control), int(cfg.bootstrap.n), int(cfg.seed)
    primary = str(cfg.group.get("primary", "adjusted")) if covariates else "raw"
    rows = compare_groups(table, measures, covariates, control=control, n_boot=n_boot, seed=seed, source=paths[-1],
                          primary=primary) if measures else []  # fmt: skip
    truth = truth_table(Path(cfg.data.root))
    folds = sorted({str(f) for f in table.get("crossfit_fold", pd.Series(dtype=str)).dropna()} - {"n/a"})
    for row in rows:
        row.update(source="model", crossfit_folds=len(folds) or None)
        if truth is not None:
            row.update(_checks(table, truth, row["measure"], control, n_boot, seed))
    references = [r.path / REFERENCE_VOLUMES_FILE for r in predict if (r.path / REFERENCE_VOLUMES_FILE).is_file()]
    reference_rows: list[dict[str, Any]] = []
    if references:
        ref_table, _ = volume_table(references)
        volumes = [m for m in measures if m.endswith("_volume") and m in ref_table.columns]
        reference_rows = compare_groups(ref_table, volumes, [], control=control, n_boot=n_boot, seed=seed,
                                        source=references[-1]) if volumes else []  # fmt: skip
        for row in reference_rows:
            row["source"] = "reference labels (no model)"
    figures = {"group_volumes": group_png(table, measures, order=[control], ylabel="volume (mm³)")} if measures else {}
    out = {"rows": rows, "excluded": excluded, "left_out": left_out, "sources": [str(p) for p in paths],
           "reference_rows": reference_rows, "primary": primary, "region_dice": region_dice}  # fmt: skip
    return out, figures
