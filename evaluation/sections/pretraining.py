"""What pretraining learned: what each pretraining run's ``embedding_quality.json`` measured.

Every ``bssl pretrain`` run writes frozen-encoder GM/WM probe accuracy against its own random initialisation
(subcortical ROI and brainstem, all modalities and T1w alone) and, for MAE methods, how well it predicts the
other modalities from T1w against a per-modality mean (:mod:`ssl_pretrain.evidence`). This section collects them
per run (:func:`collect_evidence`) and shows them whatever they say.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from evaluation.report_html import ci, e, missing, num, table
from evaluation.runs import Run
from evaluation.sections.base import Context, Section

EVIDENCE_FILE = "embedding_quality.json"


def collect_evidence(runs: Sequence[Run]) -> dict[str, Any]:
    """``{run label (dir name when repeated): embedding_quality.json}`` of the pretraining runs that wrote one."""
    out: dict[str, Any] = {}
    for run in runs:
        path = run.path / EVIDENCE_FILE
        if run.kind == "pretrain" and path.is_file():
            label = run.label if run.label not in out else f"{run.label} ({run.path.name})"
            out[label] = json.loads(path.read_text())
    return out


def _probe_rows(evidence: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for label, ev in evidence.items():
        probes = ev.get("probes") or {}
        for region, r in (probes.get("regions") or {}).items():
            for condition, v in (r.get("inputs") or {}).items():
                gap, pre, rnd = v.get("gap") or {}, v.get("pretrained") or {}, v.get("random") or {}
                rows.append([e(label), e(region), e(condition), num(pre.get("mean")) + ci(pre.get("ci95")),
                             num(rnd.get("mean")) + ci(rnd.get("ci95")), num(gap.get("mean")) + ci(gap.get("ci95")),
                             num(r.get("n_val_subjects"))])  # fmt: skip
            if r.get("status") == "skipped":
                rows.append([e(label), e(region), "–", e(r.get("reason", "skipped")), "", "", ""])
        if probes.get("status") == "skipped":
            rows.append([e(label), "–", "–", e(probes.get("reason", "skipped")), "", "", ""])
    return rows


def _reconstruction_rows(evidence: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for label, ev in evidence.items():
        rec = ev.get("reconstruction") or {}
        for variant, part in (("whole T1w", rec), ("masked T1w", rec.get("masked") or {})):
            for modality, m in (part.get("modalities") or {}).items():
                errors = [num(m.get("mse"), 4), num(m.get("mean_predictor_mse"), 4)]
                rows.append([e(label), e(variant), e(modality), *errors, num(m.get("skill")) + ci(m.get("skill_ci95"))])
    return rows


class Pretraining(Section):
    """Probe gaps over the random encoder and cross-modal reconstruction skill of each pretraining run."""

    id = "pretraining_evidence"
    anchor = "pretraining"
    title = "What pretraining learned"

    def compute(self, ctx: Context) -> dict[str, Any]:
        return {"pretraining_evidence": collect_evidence(ctx.runs)}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        evidence = results.get("pretraining_evidence") or {}
        if not evidence:
            return missing("pretraining evidence")
        body = "<p>Frozen-encoder GM/WM linear probes (balanced accuracy, 0.5 = chance) trained on train-split "
        body += "subjects and scored on validation subjects, for the pretrained encoder and for the same encoder at "
        body += "initialisation; the gap is what pretraining added. For MAE, the skill of predicting each other "
        body += "modality from T1w alone (1 − MSE / the per-modality mean predictor's MSE; 0 = no better than the "
        body += "mean). Intervals are over validation subjects (none with fewer than three).</p>"
        header = ["run", "region", "input", "pretrained [95% CI]", "random init [95% CI]", "gap [95% CI]", "subjects"]
        body += table(header, _probe_rows(evidence))
        recon = _reconstruction_rows(evidence)
        if recon:
            body += table(["run", "input", "modality", "MSE", "mean-predictor MSE", "skill [95% CI]"], recon)
        return body
