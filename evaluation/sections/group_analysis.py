"""Patients versus controls on the model's measures: cross-fitted, checked against the simulated truth where
there is one (DESIGN §9 ``group_analysis``, §10 rule 6; the analysis itself is :mod:`evaluation.groups`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from evaluation.groups import analyse_groups
from evaluation.report_html import ci, details, e, missing, num, pval, table
from evaluation.sections.base import Context, Section


def _group_source(results: Mapping[str, Any]) -> str:
    rows = results.get("group_analysis") or []
    text = f"volumes.tsv of {results['group_source']}" if results.get("group_source") else ""
    if rows:
        r = rows[0]
        n = f"{r.get('n_control')} {r.get('control', 'controls')} / {r.get('n_patient')} {r.get('patient', 'patients')}"
        text = f"{text}; {n}" if text else n
    return text


def _main_rows(rows: list[Mapping[str, Any]], primary: str) -> list[list[str]]:
    out = []
    for g in rows:
        adjusted = "diff_pct_adjusted" in g
        first = (num(g.get("diff_pct_adjusted"), 1) + ci(g.get("ci95_adjusted"), 1)) if adjusted else "–"
        raw = num(g.get("diff_pct"), 1) + ci(g.get("ci95"), 1)
        lead, second = (first, raw) if primary == "adjusted" else (raw, first)
        p_second = g.get("p") if primary == "adjusted" else g.get("p_adjusted")
        out.append([
            e(g["measure"]), f"{num(g.get('n_control'))} / {num(g.get('n_patient'))}",
            f"{num(g.get('mean_control'), 0)} / {num(g.get('mean_patient'), 0)}",
            f"<b>{lead}</b>", pval(g.get("p_primary")), f"<b>{pval(g.get('p_holm'))}</b>",
            num(g.get("cohens_d"), 2) + ci(g.get("cohens_d_ci95"), 2), second, pval(p_second),
            num(g.get("true_diff_pct"), 1),
        ])  # fmt: skip
    return out


def _check_rows(rows: list[Mapping[str, Any]]) -> list[list[str]]:
    out = []
    for g in rows:
        if "recovery" not in g:
            continue
        agreement = g.get("agreement") or {}
        bias = " · ".join(
            f"{e(group)} {num(a.get('bias_pct'), 1)}{ci(a.get('loa_pct'), 1)}" for group, a in agreement.items()
        )
        rec, floor = g.get("recovery") or {}, g.get("trivial_predictor") or {}
        trivial = "–"
        if floor:
            error = num(floor.get("error_pct"), 1) + ci(floor.get("ci95"), 1)
            trivial = f"{num(floor.get('measured_diff_pct'), 1)} (error {error})"
        out.append([
            e(g["measure"]), bias or "–", num(g.get("ccc"), 3),
            num(rec.get("measured_diff_pct"), 1), num(rec.get("true_diff_pct"), 1),
            num(rec.get("error_pct"), 1) + ci(rec.get("ci95"), 1),
            trivial,
        ])  # fmt: skip
    return out


def _intro(results: Mapping[str, Any], first: Mapping[str, Any]) -> str:
    """Who is compared with whom, on what, cross-fitted or not, and which analysis is primary."""
    control, patient = first.get("control", "controls"), first.get("patient", "patients")
    primary = first.get("primary") or results.get("group_primary") or "raw"
    covariates = ", ".join(str(c) for c in first.get("covariates") or []) or "nothing"
    folds = first.get("crossfit_folds")
    body = f"<p>{e(patient)} relative to {e(control)} (negative = smaller in {e(patient)}), on volumes the models "
    body += "measured from the images: each region inside the model's own outline (its region head), GM/WM "
    body += "inside it where the model learned tissue. "
    if folds:
        body += (
            f"Cross-fitted: {e(folds)} folds, each subject predicted by a model that never trained or selected on it. "
        )
    else:
        body += "<b>Not cross-fitted</b>: the model trained on some of the subjects it measures. "
    body += f"The pre-specified primary analysis is <b>{e(primary)}</b>"
    body += f" (adjusted for {e(covariates)} by least squares)" if primary == "adjusted" else ""
    body += "; its p values are Holm-corrected across the measures, the other analysis is secondary.</p>"
    body += '<p class="note"><code>head_size</code> is the subject\'s brain-mask volume (tissue &gt; 0 of its '
    body += "reference labels, else an intensity threshold): it stands in for intracranial volume and does not come "
    body += "from the brainstem model.</p>"
    left = results.get("group_left_out") or []
    if left:
        body += f'<p class="note">{len(left)} subject(s) left out: every model that predicted them had seen them.</p>'
    return body


def _main_table(rows: list[Mapping[str, Any]], control: str, patient: str, primary: str) -> str:
    header = ["measure", f"n {e(control)} / {e(patient)}", f"mean {e(control)} / {e(patient)} (mm³)"]
    header += [f"primary ({e(primary)}): difference % [95% CI]", "p", "p (Holm)", "Cohen's d [95% CI]"]
    header += ["secondary: difference % [95% CI]", "p", "true difference % (simulation)"]
    return table(header, _main_rows(rows, primary)) if rows else ""


def _checks_table(rows: list[Mapping[str, Any]]) -> str:
    checks = _check_rows(rows)
    if not checks:
        return ""
    body = "<h3>Can these measures be trusted? (simulation truth, same subjects)</h3>"
    body += "<p>Per subject: bias of the measured volume in % of the true one, with 95 % limits of agreement "
    body += "(Bland–Altman), per group, and Lin's concordance. The effect: measured minus true difference, with "
    body += "a joint bootstrap CI. The trivial floor calls a constant share of each predicted outline GM (or WM): "
    body += "a tissue measure that does not beat it has not separated the tissues.</p>"
    header = ["measure", "bias % [LoA] per group", "Lin's CCC", "measured difference %", "true difference %"]
    header += ["error % [95% CI]", "trivial floor: difference % (error [95% CI])"]
    return body + table(header, checks)


def _region_dice_table(results: Mapping[str, Any]) -> str:
    rows = results.get("group_region_dice") or []
    if not rows:
        return ""
    body = "<h3>The outlines these volumes were counted in: region Dice of the written maps</h3>"
    body += "<p>Dice of each region map <code>bssl predict</code> wrote, over the whole volume (false positives "
    body += "far from the structure count), against the subject's reference labels, on the subjects the "
    body += "predicting model never saw; mean [95% BCa CI over subjects]. Post-processing: largest connected "
    body += f"piece kept for {e(rows[0].get('largest_component') or 'none')}. The per-run region Dice in "
    body += "Segmentation accuracy is scored inside the stage ROI's box only (from the reference labels). A region "
    body += "outside the ROI the predicting model was last trained in is its extrapolation (no label of that region "
    body += "trained its last stage), shown for completeness, not as a result.</p>"
    inside = {True: "yes", False: "no: extrapolated", None: "not recorded"}
    cells = [[e(r["region"]), num(r.get("n_subjects")), num(r.get("dice"), 3) + ci(r.get("ci95"), 3),
              num(r.get("predicted_mm3"), 0), num(r.get("reference_mm3"), 0), inside[r.get("in_model_roi")]]
             for r in rows]  # fmt: skip
    header = ["region", "n", "Dice [95% CI]", "predicted mm³ (mean)", "reference mm³ (mean)", "in the model's ROI"]
    return body + table(header, cells)


def _reference_and_excluded(results: Mapping[str, Any]) -> str:
    body = ""
    reference = results.get("group_reference_labels") or []
    if reference:
        ref_rows = [[e(g["measure"]), num(g.get("diff_pct"), 1) + ci(g.get("ci95"), 1), pval(g.get("p"))]
                    for g in reference]  # fmt: skip
        body += details(
            "Reference labels (no model): volumes inside each subject's own region labels",
            table(["measure", "difference % [95% CI]", "p"], ref_rows),
        )
    excluded = results.get("group_excluded") or []
    if excluded:
        items = "".join(f"<li><b>{e(x['measure'])}</b>: {e(x['reason'])}</li>" for x in excluded)
        body += f"<p>Not compared:</p><ul>{items}</ul>"
    return body


class GroupAnalysis(Section):
    """Patients versus controls on the model's volumes, with the checks that could have failed."""

    id = "group_analysis"
    anchor = "group"
    title = "Patients versus controls"
    captions: ClassVar[Mapping[str, str]] = {
        "group": "Per-subject volumes (mm³) from the predicted segmentations, patients vs controls; boxes show "
        "quartiles, dots are subjects.",
    }

    def compute(self, ctx: Context) -> dict[str, Any]:
        group, figures = analyse_groups(ctx.runs, ctx.cfg)
        ctx.figures.update(figures)
        return {
            "group_analysis": group["rows"],
            "group_excluded": group["excluded"],
            "group_reference_labels": group.get("reference_rows") or [],
            "group_sources": group.get("sources"),
            "group_left_out": group.get("left_out") or [],
            "group_primary": group.get("primary"),
            "group_region_dice": group.get("region_dice") or [],
        }

    def provenance(self, family: str, results: Mapping[str, Any]) -> str:
        return _group_source(results)

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        rows = results.get("group_analysis") or []
        if not rows and not results.get("group_excluded"):
            return missing("group analysis") + figures
        first = rows[0] if rows else {}
        control, patient = first.get("control", "controls"), first.get("patient", "patients")
        primary = first.get("primary") or results.get("group_primary") or "raw"
        body = _intro(results, first) + _main_table(rows, control, patient, primary) + _checks_table(rows)
        return body + _region_dice_table(results) + _reference_and_excluded(results) + figures
