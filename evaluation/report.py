"""``results.json`` and a self-contained ``report.html`` a neurologist can read.

``results.json`` is written by :mod:`evaluation.results_file`.

The report opens with a banner when the data are simulated (``results["dataset"]["simulated"]`` or
``results["simulated"]`` true) and with its answer: for each number of labelled brainstems k, which
initialisation is best, by how much (difference with its 95% CI) and the Holm-corrected p, and what that
initialisation cost in compute. The evidence follows (label-efficiency curves, paired comparisons,
compute per initialisation, segmentation accuracy beside the classical baselines, region transfer,
representation similarity, patients versus controls, example segmentations), then what was run. Each
figure is a base64 PNG whose caption says what was run to make it (:mod:`evaluation.captions`). No
external CSS, JavaScript or image files: the HTML file is the whole report.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evaluation.captions import caption, flatten, run_summary
from evaluation.learning_curves import best_init_per_k
from evaluation.report_design import convergence_section, design_section
from evaluation.report_groups import group_section
from evaluation.report_html import ci, details, duration, e, missing, num, pval, section, table
from evaluation.report_pretraining import pretraining_section
from evaluation.report_sections import compute_section, similarity_section, transfer_section
from evaluation.results_file import RESULTS_FILE, to_jsonable, write_results
from ssl_pretrain.atomic import write_text_atomic

__all__ = ["REPORT_FILE", "build_report", "is_simulated", "render_html", "run_summary"]

REPORT_FILE = "report.html"
SECTION_OF = {
    "transfer_matrix": "transfer",
    "cka": "similarity",
    "shift": "similarity",
    "learning_curves": "curves",
    "training_curves": "convergence",
}


def is_simulated(results: Mapping[str, Any]) -> bool:
    """Whether the results come from the simulated demo cohort."""
    dataset = results.get("dataset") or {}
    return bool(results.get("simulated") or (isinstance(dataset, Mapping) and dataset.get("simulated")))


def _supported(ci95: Any, p: Any) -> bool:
    """A difference the data support: its CI excludes 0 and its Holm p is below 0.05."""
    return bool(ci95) and None not in ci95 and (ci95[0] > 0 or ci95[1] < 0) and p is not None and p < 0.05


def _unranked(b: Mapping[str, Any]) -> str:
    names = b.get("unranked") or []
    return f" Not ranked (not converged): {e(', '.join(names))}." if names else ""


def _verdict(b: Mapping[str, Any], cost: Mapping[str, Any]) -> str:
    """One sentence on the best initialisation at one k."""
    if b.get("best") is None:
        return f"k = {e(b['k'])}: no initialisation converged, so none is ranked.{_unranked(b)}"
    text = f"k = {e(b['k'])}: <b>{e(b['best'])}</b> reaches Dice {num(b.get('dice_mean'))}{ci(b.get('ci95'))}"
    if b.get("runner_up") is not None and b.get("delta") is not None:
        bounds, p = b.get("delta_ci95") or [None, None], b.get("p_holm")
        text += f", {num(b['delta'])}{ci(bounds)} above {e(b['runner_up'])} (p Holm {pval(p)}): "
        text += (
            "a difference these data support" if _supported(bounds, p) else "not a difference these data can confirm"
        )
    ref = b.get("vs_reference")
    if ref and ref.get("init") != b.get("runner_up") and ref.get("delta") is not None:
        text += f"; {num(ref['delta'])}{ci(ref.get('ci95'))} above {e(ref['init'])} (p Holm {pval(ref.get('p_holm'))})"
    seconds = b.get("compute_seconds", (cost.get(str(b["best"])) or {}).get("seconds"))
    if seconds is not None:
        text += f". It cost {duration(seconds)} of compute"
    return text + "." + _unranked(b)


def _best(results: Mapping[str, Any]) -> str:
    curves, comps = results.get("learning_curves") or [], results.get("comparisons") or []
    best = results.get("best_per_k") or (best_init_per_k(curves, comps) if curves else [])
    title = "Which initialisation is best"
    if not best:
        return section("best-per-k", title, missing("label-efficiency sweep"))
    cost = results.get("compute_per_init") or {}
    rows = []
    for b in best:
        frac, ref = b.get("fraction_of_full"), b.get("vs_reference") or {}
        seconds = b.get("compute_seconds", (cost.get(str(b["best"])) or {}).get("seconds"))
        rows.append(
            [
                e(b["k"]),
                f"<b>{e(b['best'])}</b>" if b.get("best") is not None else "none converged",
                num(b.get("dice_mean")) + ci(b.get("ci95")),
                num(None if frac is None else 100 * frac, 1) + ("%" if frac is not None else ""),
                e(b.get("runner_up") or "–"),
                num(b.get("delta")) + ci(b.get("delta_ci95")),
                pval(b.get("p_holm")),
                num(ref.get("delta")) + ci(ref.get("ci95")) if ref else "–",
                pval(ref.get("p_holm")) if ref else "–",
                duration(seconds),
            ]
        )
    header = ["k", "best", "Dice [95% CI]", "of its full-label Dice", "runner-up", "best − runner-up [95% CI]"]
    header += ["p (Holm)", "best − scratch [95% CI]", "p (Holm)", "compute of best"]
    body = "<p>For each number of labelled brainstems k: the initialisation with the highest mean GM/WM Dice over "
    body += "test subjects, its margin over the next best and over training from scratch (paired over test "
    body += "subjects), and the compute its whole chain of runs took (see <a href='#compute'>Compute</a>). A "
    body += "difference whose CI includes 0, or whose p (Holm) is ≥ 0.05, is not shown by these data."
    body += _holm_note(comps) + "</p><ul>" + "".join(f"<li>{_verdict(b, cost)}</li>" for b in best) + "</ul>"
    return section("best-per-k", title, body + table(header, rows))


def _converged(flag: Any) -> str:
    return {True: "yes", False: "<b style='color:#b00'>no</b>"}.get(flag, "–")


def _curves(results: Mapping[str, Any], figs: str) -> str:
    curves = results.get("learning_curves") or []
    if not curves:
        return section("learning-curves", "Label efficiency", missing("label-efficiency sweep") + figs)
    rows = [
        [
            e(c["init"]),
            e(c["k"]),
            num(c.get("dice_mean")) + ci(c.get("ci95")),
            num(c.get("between_seed_sd")),
            " · ".join(f"{e(k)} {num(v.get('dice'))}" for k, v in (c.get("per_class") or {}).items()) or "–",
            num(c.get("fraction_of_full")) + ci(c.get("fraction_ci95")),
            f"{num(c.get('n_seeds'))}"
            + (f" × {num(c['n_pretrain_seeds'])}" if c.get("n_pretrain_seeds", 1) > 1 else ""),
            num(c.get("n_subjects")),
            _converged(c.get("converged")),
        ]
        for c in curves
    ]
    header = ["initialisation", "k", "mean Dice [95% CI]", "between-seed SD", "Dice per class"]
    header += ["fraction of full-label Dice [95% CI]", "seeds (× pretraining)", "test subjects", "converged"]
    body = "<p>k = 0 is zero-shot transfer: the source stage's own segmentation head on the brainstem, before any "
    body += "brainstem label. Intervals resample test subjects, training seeds (which also drew the labelled "
    body += "subjects) and pretraining seeds; the between-seed SD shows how much one training run varies.</p>"
    return section("learning-curves", "Label efficiency", body + figs + details("Numbers", table(header, rows)))


def _holm_note(comps: list[Mapping[str, Any]]) -> str:
    """Why a corrected p may not reach 0.05: the family size and the smallest exact Wilcoxon p."""
    per_k = any(c.get("holm_family") == "k" for c in comps)
    m = max((int(c["holm_m"]) for c in comps if c.get("holm_m")), default=0) if per_k else 0
    m = m or sum(1 for c in comps if c.get("p") is not None)
    n = min((int(c["n_subjects"]) for c in comps if c.get("n_subjects")), default=0)
    if not m or not n:
        return ""
    floor = min(1.0, m * 2.0 / 2**n)
    family = f"up to m = {m} comparisons at the same k" if per_k else f"all m = {m} comparisons of this table"
    text = f" Holm's correction runs over {family}. With n = {n} test subjects the "
    text += f"smallest exact Wilcoxon p is {pval(2.0 / 2**n)}, so no corrected p can fall below {pval(floor)} here"
    return text + (": more test subjects are needed to show any difference." if floor >= 0.05 else ".")


def _comparisons(results: Mapping[str, Any]) -> str:
    comps = results.get("comparisons") or []
    if not comps:
        return section("comparisons", "Paired comparisons", missing("comparisons"))
    rows = [
        [
            e(c["k"]),
            f"{e(c['a'])} − {e(c['b'])}",
            num(c.get("delta")) + ci(c.get("ci95")),
            pval(c.get("p")),
            pval(c.get("p_holm")),
            num(c.get("n_subjects")),
        ]
        for c in comps
    ]
    body = "<p>Difference in mean Dice (a − b; positive = a better), paired over test subjects; two-sided Wilcoxon "
    body += f"signed-rank p and its Holm-corrected value.{_holm_note(comps)}</p>"
    header = ["k", "a − b", "difference [95% CI]", "p", "p (Holm)", "test subjects"]
    return section("comparisons", "Paired comparisons", body + details(f"{len(rows)} comparisons", table(header, rows)))


def _classes(seg: Mapping[str, Any], baselines: Mapping[str, Any], region: str) -> list[str]:
    return list(dict.fromkeys([*(seg.get(region) or {}), *(c for b in baselines.values() for c in b.get(region, {}))]))


REGION_ANCHORS = (
    "Dedicated deep brainstem tools reach whole-brainstem Dice 0.95–0.97 and 0.95–0.98 for midbrain, pons and "
    "medulla (MD-GRU 2019: brainstem 0.97, midbrain 0.95, pons 0.98, medulla 0.95; MARS-brainstem 2025: ≥ 0.95)."
)


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


def _segmentation(results: Mapping[str, Any]) -> str:
    seg = results.get("segmentation") or {}
    baselines = {m: v for m, v in (results.get("baselines") or {}).items() if v}
    title = "Segmentation accuracy with all labels"
    if not seg and not baselines:
        return section("segmentation", title, missing("segmentation"))
    regions = list(dict.fromkeys([*seg, *(r for b in baselines.values() for r in b)]))
    t1w = results.get("t1w_only") or {}
    rows = []
    for region in regions:
        for cls in _classes(seg, baselines, region):
            cells = [e(region), e(cls)]
            for source in (seg, *([t1w] if t1w else []), *baselines.values()):
                entry = (source.get(region) or {}).get(cls) or {}
                cells.append(num(entry.get("dice")) + ci(entry.get("ci95")) if entry else "–")
            rows.append(cells)
    header = ["region", "class", "deep model Dice [95% CI]"] + (["deep model, T1w only [95% CI]"] if t1w else [])
    header += [f"{e(m)} (classical) Dice" for m in baselines]
    body = "<p>Dice overlap with the reference labels inside each region (1 = perfect), over test subjects, for the "
    body += "models trained with every labelled subject (k = all), pooled over their initialisations and seeds (each "
    body += "initialisation's own Dice at k = all is in Label efficiency), beside classical tissue classifiers that "
    body += "use no training labels: <code>all_wm</code> calls every brain voxel WM (the trivial floor: inside the "
    body += "mostly-white brainstem it already scores a high WM Dice, and 0 for GM)"
    setup = results.get("baselines_setup") or {}
    if setup:
        body += f". GMM and HMRF ran after {e(setup.get('bias_correction') or 'no')} bias-field correction"
        if setup.get("hmrf_beta") is not None:
            body += f"; HMRF's β = {num(setup['hmrf_beta'], 2)} was chosen on {e(setup.get('tuned_on') or 'a default')}"
    return section("segmentation", title, body + ".</p>" + table(header, rows) + _regions(results))


# Settings of the evaluation itself shown in "What was run" (the full config is in results.json).
EVALUATE_SETTINGS = (
    "data.split_seed", "data.test_fraction", "data.modalities", "curves.classes", "bootstrap.n", "probe.probe",
    "probe.voxels_per_subject", "probe.max_subjects", "baselines.methods", "group.control", "group.covariates",
)  # fmt: skip


def _what_was_run(results: Mapping[str, Any]) -> str:
    flat = flatten(results.get("config") or {})
    runs = flat.pop("runs", None)
    body = "<p>Every number above comes from the runs listed here; re-running with other seeds gives other numbers, "
    body += "which is why each carries its 95% confidence interval.</p>"
    settings = flatten(results.get("evaluate_config") or {})
    flat.update({k: settings[k] for k in EVALUATE_SETTINGS if k in settings and k not in flat})
    body += table(["setting", "value"], ([e(k), e(v)] for k, v in flat.items())) if flat else missing("config")
    if runs:
        items = "".join(f"<li>{e(r)}</li>" for r in runs)
        body += details(f"{len(runs)} run directories", f"<ul>{items}</ul>")
    compute = results.get("compute") or {}
    if compute:
        rows = ([e(k), duration(v.get("seconds")), e(v.get("device", ""))] for k, v in compute.items())
        body += details(f"Wall-clock time of each of the {len(compute)} runs", table(["run", "time", "device"], rows))
    return section("what-was-run", "What was run", body)


def _figure_html(key: str, png: bytes, text: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{e(key)}"><img src="data:image/png;base64,{data}" alt="{e(key)}">'
        f"<figcaption>{e(text)}</figcaption></figure>"
    )


STYLE = """body{font-family:system-ui,Arial,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td{white-space:nowrap}th{vertical-align:bottom}
th{background:#f0f0f0}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.9em;color:#444}
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.8em;font-weight:bold}.missing{color:#777}
.note{background:#eef4fb;border-left:4px solid #4a7fb5;padding:.5em .8em}details{margin:.4em 0 1em}
summary{cursor:pointer;color:#2a5d8f}nav{font-size:.9em}.tw{overflow-x:auto;max-width:100%}"""
ORDER = [
    ("best-per-k", "Which initialisation is best"),
    ("design", "Design"),
    ("convergence", "Convergence"),
    ("learning-curves", "Label efficiency"),
    ("comparisons", "Paired comparisons"),
    ("compute", "Compute"),
    ("pretraining", "Pretraining"),
    ("segmentation", "Segmentation accuracy"),
    ("transfer", "Transfer between regions"),
    ("similarity", "Representation similarity"),
    ("group", "Patients versus controls"),
    ("overlays", "Example segmentations"),
    ("what-was-run", "What was run"),
    ("reading-notes", "How to read"),
]
NOTES = (
    "<ul><li>Learning-curve and comparison intervals are 95% hierarchical bootstrap intervals over test subjects, "
    "training seeds and pretraining seeds; segmentation and baseline intervals are BCa intervals over test "
    "subjects. A difference whose interval contains 0 is not shown by these data. With about a dozen test "
    "subjects any bootstrap interval is somewhat too narrow (about 90 % coverage for a nominal 95 %).</li>"
    "<li>p-values from many comparisons are Holm-corrected; read the corrected column.</li>"
    "<li>Dice is NaN (left out of means) for a class absent from both prediction and reference in a region, and 0 "
    "when absent from only one; HD95 is then undefined (both absent) or infinite (one absent).</li>"
    "<li>Classical baselines (no training labels) sit beside the deep models: a deep model is only useful "
    "where it beats them.</li>"
    "<li>Dice inside the brainstem measures agreement with the reference labels, which are themselves uncertain "
    "there.</li></ul>"
)


def _place(figures: Mapping[str, bytes], captions: Mapping[str, str], results: Mapping[str, Any]) -> dict[str, str]:
    """Section id -> the HTML of its figures."""
    placed: dict[str, str] = {}
    for key, png in figures.items():
        where = SECTION_OF.get(key) or next((v for f, v in SECTION_OF.items() if key.startswith(f)), None)
        if where is None:
            where = "group" if key.startswith("group") else "overlays" if key.startswith("overlay") else "other"
        placed[where] = placed.get(where, "") + _figure_html(key, png, caption(key, captions, results))
    return placed


def render_html(
    results: Mapping[str, Any], figures: Mapping[str, bytes], captions: Mapping[str, str] | None = None
) -> str:
    """The report as one HTML string (see module docstring)."""
    placed = _place(figures, captions or {}, results)
    banner = ""
    if is_simulated(results):
        banner = (
            '<p class="banner" id="simulated-banner">SIMULATED DATA: these results come from the demo cohort, '
            "a simulation built from MRI templates with known effects. They test the toolkit, not the brain.</p>"
        )
    parts = [
        _best(results),
        design_section(results),
        convergence_section(results, placed.get("convergence", "")),
        _curves(results, placed.get("curves", "")),
        _comparisons(results),
        compute_section(results),
        pretraining_section(results),
        _segmentation(results),
        transfer_section(results, placed.get("transfer", "")),
        similarity_section(results, placed.get("similarity", "")),
        group_section(results, placed.get("group", "")),
        section("overlays", "Example segmentations", placed.get("overlays") or missing("overlays")),
        _what_was_run(results),
        section("reading-notes", "How to read this report", NOTES),
    ]
    if placed.get("other"):
        parts.append(section("other-figures", "Other figures", placed["other"]))
    nav = "<nav>" + " · ".join(f'<a href="#{sid}">{title}</a>' for sid, title in ORDER) + "</nav>"
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = "brainstem-ssl evaluation report"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body><h1>{title}</h1>{banner}<p>Generated {stamp}. "
        f"{e(run_summary(results))}.</p>{nav}" + "".join(parts) + "</body></html>"
    )


def build_report(
    results: Mapping[str, Any],
    figures: Mapping[str, bytes],
    out_dir: str | Path,
    captions: Mapping[str, str] | None = None,
) -> Path:
    """Write ``results.json`` and ``report.html`` into ``out_dir`` (both atomically).

    Args:
        results: the evaluation's results (DESIGN §9 keys; see module docstring).
        figures: figure key -> PNG bytes. Keys place figures: ``transfer_matrix``, ``cka``, ``shift``,
            ``learning_curves``, ``group*``, ``overlay*``; any other key goes to "Other figures".
        out_dir: output directory (created).
        captions: figure key -> caption (default: a standard caption for the key's family); what the
            figure was made from and the run summary (data, seeds) are appended to every caption.

    Returns:
        The path of ``report.html``.
    """
    out = Path(out_dir)
    write_results(results, out / RESULTS_FILE)
    path = out / REPORT_FILE
    write_text_atomic(path, render_html(to_jsonable(results), figures, captions))
    return path
