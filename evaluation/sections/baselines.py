"""Classical baselines: tissue classifiers that use no training labels (the trivial ``all_wm``, a Gaussian
mixture, dipy's HMRF), scored on the same test subjects and ROIs as the deep models (DESIGN §9 ``baselines``).

Their Dice stands beside the deep models' in :mod:`evaluation.sections.segmentation`; this section says how
they were set up (bias-field correction, HMRF's β chosen on validation subjects).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.baseline_scores import BaselineSettings, baseline_rows, stage_rois
from evaluation.learning_curves import segmentation_summary
from evaluation.report_html import e, missing, num, table
from evaluation.sections.base import Context, Section


def _beta_rows(setup: Mapping[str, Any]) -> list[list[str]]:
    chosen = setup.get("hmrf_beta")
    rows = []
    for beta, dice in (setup.get("hmrf_beta_scores") or {}).items():
        mark = chosen is not None and float(beta) == float(chosen)
        rows.append([f"<b>{e(beta)}</b>" if mark else e(beta), num(dice)])
    return rows


class Baselines(Section):
    """The classifiers of ``baselines.methods`` on the test subjects, inside each stage's recorded ROI."""

    id = "baselines"
    title = "Classical baselines"

    def compute(self, ctx: Context) -> dict[str, Any]:
        if not ctx.cfg.baselines.methods:
            return {}
        settings = BaselineSettings.from_config(ctx.cfg.baselines)
        recorded = {str(r.stage): r.sidecar["stage_config"] for r in ctx.runs if r.sidecar.get("stage_config")}
        rois = stage_rois(recorded, settings.stages)
        test, val = ctx.splits["test"], ctx.splits["val"]
        per_method, setup = baseline_rows(test, val, rois, ctx.classes, settings, ctx.seed)
        scores = {m: segmentation_summary(r, n_boot=ctx.n_boot, seed=ctx.seed) for m, r in per_method.items() if r}
        return {"baselines": scores, "baselines_setup": setup}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        if "baselines" not in results:
            return missing("classical baselines")
        setup = results.get("baselines_setup") or {}
        methods = ", ".join(f"<code>{e(m)}</code>" for m in results["baselines"]) or "none scored a subject"
        body = f"<p>Scored ({methods}) on the test subjects of the deep models, inside the same ROIs, beside them in "
        body += "Segmentation accuracy. <code>all_wm</code> calls every brain voxel WM (the trivial floor); GMM and "
        body += f"HMRF ran after {e(setup.get('bias_correction') or 'no')} bias-field correction, their standard "
        body += "preprocessing.</p>"
        rows = _beta_rows(setup)
        if rows:
            body += f"<p>HMRF's smoothing β (bold: chosen) by mean GM/WM Dice on {e(setup.get('tuned_on'))}, never "
            body += "on test subjects:</p>" + table(["β", "mean GM/WM Dice"], rows)
        return body
