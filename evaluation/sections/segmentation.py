"""Segmentation accuracy with all labels: the deep models' Dice (k = all; DESIGN §9 ``segmentation``) beside
the classical baselines that use no training labels, on the same test subjects and ROIs (computed by
:mod:`evaluation.sections.baselines`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.learning_curves import segmentation_summary
from evaluation.report_html import ci, e, missing, num, table
from evaluation.runs import column_rows
from evaluation.sections.base import Context, Section

REGION_ANCHORS = (
    "Dedicated deep brainstem tools reach whole-brainstem Dice 0.95–0.97 and 0.95–0.98 for midbrain, pons and "
    "medulla (MD-GRU 2019: brainstem 0.97, midbrain 0.95, pons 0.98, medulla 0.95; MARS-brainstem 2025: ≥ 0.95)."
)
# results key -> the metrics.csv column prefix of fine-tuning runs with all labels that it summarises
EXTRA_COLUMNS = {"region_segmentation": "dice_region_", "t1w_only": "t1w_only_dice_"}


def _classes(seg: Mapping[str, Any], baselines: Mapping[str, Any], region: str) -> list[str]:
    return list(dict.fromkeys([*(seg.get(region) or {}), *(c for b in baselines.values() for c in b.get(region, {}))]))


def _regions(results: Mapping[str, Any]) -> str:
    """Region-head Dice (the model's outline of the brainstem, its parts and the nuclei) beside the anchors."""
    found = results.get("region_segmentation") or {}
    if not found:
        return ""
    rows = [[e(stage), e(name), num(v.get("dice")) + ci(v.get("ci95")), num(v.get("n_subjects"))]
            for stage, per in found.items() for name, v in per.items()]  # fmt: skip
    body = "<h3>Regions from images (the model's region head)</h3><p>Dice of the predicted regions against the "
    body += f"reference region labels over test subjects, inside the box each stage predicts. {e(REGION_ANCHORS)}</p>"
    return body + table(["stage", "region", "Dice [95% CI]", "test subjects"], rows)


def _rows(seg: Mapping[str, Any], t1w: Mapping[str, Any], baselines: Mapping[str, Any]) -> list[list[str]]:
    regions = list(dict.fromkeys([*seg, *(r for b in baselines.values() for r in b)]))
    rows = []
    for region in regions:
        for cls in _classes(seg, baselines, region):
            cells = [e(region), e(cls)]
            for source in (seg, *([t1w] if t1w else []), *baselines.values()):
                entry = (source.get(region) or {}).get(cls) or {}
                cells.append(num(entry.get("dice")) + ci(entry.get("ci95")) if entry else "–")
            rows.append(cells)
    return rows


def _setup(setup: Mapping[str, Any]) -> str:
    if not setup:
        return ""
    text = f". GMM and HMRF ran after {e(setup.get('bias_correction') or 'no')} bias-field correction"
    if setup.get("hmrf_beta") is not None:
        text += f"; HMRF's β = {num(setup['hmrf_beta'], 2)} was chosen on {e(setup.get('tuned_on') or 'a default')}"
    return text


class Segmentation(Section):
    """Deep-model Dice with all labels (also from T1w alone, and of the region head) beside the classical floor."""

    id = "segmentation"
    title = "Segmentation accuracy with all labels"

    def compute(self, ctx: Context) -> dict[str, Any]:
        """Dice of the runs with all labels: tissue classes, region heads and T1w-only inference."""
        out: dict[str, Any] = {}
        summary = {"n_boot": ctx.n_boot, "seed": ctx.seed}
        full = [row for row in ctx.rows if str(row["k"]) == "all"]
        if full:
            out["segmentation"] = segmentation_summary(full, **summary)
        tuned_full = [r for r in ctx.runs if r.kind == "finetune" and r.k == "all"]
        for key, prefix in EXTRA_COLUMNS.items():
            extra = [row for r in tuned_full for row in column_rows(r, prefix)]
            if key == "t1w_only":
                extra = [row for row in extra if row["class"] in (*ctx.classes, "CSF")]
            if extra:
                out[key] = segmentation_summary(extra, **summary)
        return out

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        seg = results.get("segmentation") or {}
        baselines = {m: v for m, v in (results.get("baselines") or {}).items() if v}
        if not seg and not baselines:
            return missing("segmentation")
        t1w = results.get("t1w_only") or {}
        header = ["region", "class", "deep model Dice [95% CI]"] + (["deep model, T1w only [95% CI]"] if t1w else [])
        header += [f"{e(m)} (classical) Dice" for m in baselines]
        body = "<p>Dice overlap with the reference labels inside each region (1 = perfect), over test subjects, for "
        body += "the models trained with every labelled subject (k = all), pooled over their initialisations and seeds "
        body += "(each initialisation's own Dice at k = all is in Label efficiency), beside classical tissue "
        body += "classifiers that use no training labels: <code>all_wm</code> calls every brain voxel WM (the trivial "
        body += "floor: inside the mostly-white brainstem it already scores a high WM Dice, and 0 for GM)"
        body += _setup(results.get("baselines_setup") or {})
        return body + ".</p>" + table(header, _rows(seg, t1w, baselines)) + _regions(results)
