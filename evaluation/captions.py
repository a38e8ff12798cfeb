"""Figure captions for ``report.html``: what each figure shows, and what it was made from.

Every caption has three parts: what the figure shows (:data:`CAPTIONS`), what it was made from (the runs,
seeds, subjects and settings behind it, read from ``results.json``: :func:`provenance`), and the run
summary of the whole evaluation (data, seeds: :func:`run_summary`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.learning_curves import k_order

CAPTIONS = {
    "transfer_matrix": "Linear probes (GM vs WM) trained on frozen-encoder features of voxels in the row region "
    "and tested in the column region on a disjoint set of subjects; cells give balanced accuracy (0.5 = chance).",
    "cka": "Debiased linear CKA (Kornblith et al. 2019 with the unbiased HSIC of Song et al. 2012) between "
    "representations of the same voxels (1 = the same up to rotation and scale, 0 = unrelated); its CI over "
    "subjects and a shuffled-pairing null are in the numbers below.",
    "shift": "Cross-validated balanced accuracy of a linear classifier telling one region's features from "
    "another's, with GM/WM proportions matched (0.5 = the regions look the same to the encoder, 1 = fully distinct).",
    "learning_curves": "Brainstem fine-tuning from each initialisation with k labelled subjects (k = 0: the source "
    "stage's own head, no brainstem label); mean GM/WM Dice over test subjects and seeds; bands are 95% CIs of a "
    "bootstrap that resamples test subjects, training seeds and pretraining seeds.",
    "training_curves": "Training loss (left) and Dice on the run's own labelled training subjects (right) of each "
    "arm's full-label target run (first seed) and of each source-stage run; dashed lines did not pass the plateau "
    "test (loss falling by 2 % or more, or Dice gaining 0.01 or more, over the last fifth of training).",
    "group": "Per-subject volumes (mm³) from the predicted segmentations, patients vs controls; boxes show quartiles, "
    "dots are subjects.",
    "overlay": "Reference and predicted tissue labels (CSF, GM, WM; colours as in the legend) of a test subject "
    "over its image, the stage's ROI outlined; the panel title names the fine-tuning run (k = all labels).",
}


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (empty mappings stay as values)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_summary(results: Mapping[str, Any]) -> str:
    """One line saying what was run (preset, seeds, data), appended to every caption."""
    flat = flatten(results.get("config") or {})
    wanted = [k for k in flat if k.split(".")[-1] in ("preset", "seeds", "seed", "root", "probe", "n_voxels")]
    parts = [f"{k}={flat[k]}" for k in wanted[:6]]
    return "; ".join(parts) if parts else "configuration in the 'What was run' section"


def _setting(results: Mapping[str, Any], key: str) -> Any:
    """A setting of the evaluation's own config (``evaluate_config``), by dotted key."""
    return flatten(results.get("evaluate_config") or {}).get(key)


def _join(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def _curves_source(results: Mapping[str, Any]) -> str:
    curves = results.get("learning_curves") or []
    if not curves:
        return ""
    inits = list(dict.fromkeys(c["init"] for c in curves))
    ks = sorted({c["k"] for c in curves}, key=k_order)
    seeds = sorted({int(c["n_seeds"]) for c in curves if c.get("n_seeds") is not None})
    subjects = sorted({int(c["n_subjects"]) for c in curves if c.get("n_subjects") is not None})
    text = f"{len(inits)} initialisations ({_join(inits)}) × k ∈ {{{_join(ks)}}}"
    if seeds:
        text += f" × {'/'.join(map(str, seeds))} seeds"
    if subjects:
        text += f", {'/'.join(map(str, subjects))} test subjects"
    boot = _setting(results, "bootstrap.n")
    return text + (f", {boot} bootstrap resamples" if boot else "")


def _probe_source(results: Mapping[str, Any], key: str) -> str:
    panels = list(results.get(key) or {})
    text = f"encoders: {_join(panels)}" if key != "cka" else f"regions: {_join(panels)}"
    regions = results.get("regions_used")
    if regions and key != "cka":
        text += f"; regions: {_join(regions)}"
    n = results.get("n_subjects")
    if isinstance(n, Mapping):
        text += "; subjects: " + ", ".join(f"{k} {v}" for k, v in n.items())
    probe, voxels = _setting(results, "probe.probe"), _setting(results, "probe.voxels_per_subject")
    if probe:
        text += f"; {probe} probe"
    if voxels:
        text += f"; {voxels} voxels per region and subject (half GM, half WM)"
    return text


def _group_source(results: Mapping[str, Any]) -> str:
    rows = results.get("group_analysis") or []
    text = f"volumes.tsv of {results['group_source']}" if results.get("group_source") else ""
    if rows:
        r = rows[0]
        n = f"{r.get('n_control')} {r.get('control', 'controls')} / {r.get('n_patient')} {r.get('patient', 'patients')}"
        text = f"{text}; {n}" if text else n
    return text


def provenance(key: str, results: Mapping[str, Any]) -> str:
    """What a figure was made from, in words ('' when ``results`` does not say)."""
    if key.startswith("learning_curves"):
        return _curves_source(results)
    for family in ("transfer_matrix", "cka", "shift"):
        if key.startswith(family):
            return _probe_source(results, family)
    if key.startswith("group"):
        return _group_source(results)
    return ""


def caption(key: str, captions: Mapping[str, str], results: Mapping[str, Any]) -> str:
    """The full caption of figure ``key``: ``captions[key]`` or the family's text, its sources, the run."""
    if key in captions:
        text = captions[key]
    else:
        family = next((f for f in CAPTIONS if key.startswith(f)), None)
        text = CAPTIONS.get(family or "", key.replace("_", " ").capitalize() + ".")
    source = provenance(key, results)
    made = f" Made from: {source}." if source else ""
    return f"{text}{made} Run: {run_summary(results)}."
