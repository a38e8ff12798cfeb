"""``results.json`` and a self-contained ``report.html`` a neurologist can read.

``results.json`` is written by :mod:`evaluation.results_file`.

The report states what was run (config, seeds, compute), shows a banner when the data are simulated
(``results["dataset"]["simulated"]`` or ``results["simulated"]`` true), gives every number with its 95%
CI beside the classical baselines, and embeds each figure as a base64 PNG with a caption saying what was
run to make it. No external CSS, JavaScript or image files: the HTML file is the whole report.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.learning_curves import best_init_per_k
from evaluation.results_file import RESULTS_FILE, to_jsonable, write_results
from ssl_pretrain.atomic import write_text_atomic

REPORT_FILE = "report.html"

CAPTIONS = {
    "transfer_matrix": "Linear probes (GM vs WM) trained on frozen-encoder features of voxels in the row region "
    "and tested in the column region on a disjoint set of subjects; cells give balanced accuracy (0.5 = chance).",
    "cka": "Linear CKA (Kornblith et al. 2019) between representations of the same voxels "
    "(1 = the same up to rotation and scale, 0 = unrelated).",
    "shift": "Cross-validated balanced accuracy of a linear classifier telling one region's features from "
    "another's, with GM/WM proportions matched (0.5 = the regions look the same to the encoder, 1 = fully distinct).",
    "learning_curves": "Brainstem fine-tuning from each initialisation with k labelled subjects; mean GM/WM Dice over "
    "test subjects (seeds averaged per subject first); bands are 95% bootstrap CIs over test subjects.",
    "group": "Per-subject measures from the predicted segmentations, patients vs controls; boxes show quartiles, "
    "dots are subjects.",
    "overlay": "Predicted tissue labels (CSF blue, GM orange, WM yellow) over the T1w image.",
}
SECTION_OF = {"transfer_matrix": "transfer", "cka": "similarity", "shift": "similarity", "learning_curves": "curves"}


# ---------------------------------------------------------------- formatting


def _num(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(x)
    return f"{float(x):.{digits}f}"


def _ci(ci: Any, digits: int = 3) -> str:
    if not ci or len(ci) != 2 or any(v is None for v in ci):
        return ""
    return f" [{_num(ci[0], digits)}, {_num(ci[1], digits)}]"


def _p(p: Any) -> str:
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "–"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table; cells are already-escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def is_simulated(results: Mapping[str, Any]) -> bool:
    """Whether the results come from the simulated demo cohort."""
    dataset = results.get("dataset") or {}
    return bool(results.get("simulated") or (isinstance(dataset, Mapping) and dataset.get("simulated")))


def run_summary(results: Mapping[str, Any]) -> str:
    """One line saying what was run (preset, seeds, data), appended to every caption."""
    flat = _flatten(results.get("config") or {})
    wanted = [k for k in flat if k.split(".")[-1] in ("preset", "seeds", "seed", "root", "probe", "n_voxels")]
    parts = [f"{k}={flat[k]}" for k in wanted[:6]]
    return "; ".join(parts) if parts else "configuration in the 'What was run' section"


# ---------------------------------------------------------------- sections


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


def _missing(what: str) -> str:
    return f'<p class="missing">Not part of this evaluation ({_e(what)} not run or not configured).</p>'


def _what_was_run(results: Mapping[str, Any]) -> str:
    flat = _flatten(results.get("config") or {})
    body = "<p>Every number below comes from the runs listed here; re-running with other seeds gives other numbers, "
    body += "which is why each carries its 95% confidence interval.</p>"
    body += _table(["setting", "value"], ([_e(k), _e(v)] for k, v in flat.items())) if flat else _missing("config")
    compute = results.get("compute") or {}
    if compute:
        rows = ([_e(k), _num(v.get("seconds"), 0), _e(v.get("device", ""))] for k, v in compute.items())
        body += "<h3>Compute</h3>" + _table(["stage", "seconds", "device"], rows)
    return _section("what-was-run", "What was run", body)


def _segmentation(results: Mapping[str, Any]) -> str:
    seg = results.get("segmentation") or {}
    baselines = {m: v for m, v in (results.get("baselines") or {}).items() if v}
    if not seg and not baselines:
        return _section("segmentation", "Segmentation accuracy", _missing("segmentation"))
    regions = list(dict.fromkeys([*seg, *(r for b in baselines.values() for r in b)]))
    rows = []
    for region in regions:
        classes = dict.fromkeys([*(seg.get(region) or {}), *(c for b in baselines.values() for c in b.get(region, {}))])
        for cls in classes:
            cells = [_e(region), _e(cls)]
            for source in (seg, *baselines.values()):
                entry = (source.get(region) or {}).get(cls) or {}
                cells.append(_num(entry.get("dice")) + _ci(entry.get("ci95")) if entry else "–")
            rows.append(cells)
    header = ["region", "class", "deep model Dice [95% CI]", *(f"{_e(m)} (classical)" for m in baselines)]
    body = "<p>Dice overlap with the reference labels inside each region (1 = perfect), over test subjects.</p>"
    return _section("segmentation", "Segmentation accuracy", body + _table(header, rows))


def _verdict(b: Mapping[str, Any]) -> str:
    """One sentence on the best initialisation at one k."""
    text = f"k = {_e(b['k'])}: <b>{_e(b['best'])}</b> reaches Dice {_num(b.get('dice_mean'))}{_ci(b.get('ci95'))}"
    if b.get("runner_up") is None or b.get("delta") is None:
        return text + "."
    ci, p = b.get("delta_ci95") or [None, None], b.get("p_holm")
    supported = None not in ci and (ci[0] > 0 or ci[1] < 0) and p is not None and p < 0.05
    text += f", {_num(b['delta'])}{_ci(ci)} above {_e(b['runner_up'])} (p Holm {_p(p)}): "
    return text + ("a difference these data support." if supported else "not a difference these data can confirm.")


def _best(results: Mapping[str, Any]) -> str:
    curves, comps = results.get("learning_curves") or [], results.get("comparisons") or []
    best = results.get("best_per_k") or (best_init_per_k(curves, comps) if curves else [])
    if not best:
        return _section("best-per-k", "Which initialisation is best", _missing("label-efficiency sweep"))
    with_cost = any(b.get("compute_seconds") is not None for b in best)
    rows = []
    for b in best:
        frac = b.get("fraction_of_full")
        row = [
            _e(b["k"]),
            f"<b>{_e(b['best'])}</b>",
            _num(b.get("dice_mean")) + _ci(b.get("ci95")),
            _num(None if frac is None else 100 * frac, 1) + ("%" if frac is not None else ""),
            _e(b.get("runner_up") or "–"),
            _num(b.get("delta")) + _ci(b.get("delta_ci95")),
            _p(b.get("p_holm")),
        ]
        rows.append([*row, _num(b.get("compute_seconds"), 0)] if with_cost else row)
    header = ["k", "best", "Dice [95% CI]", "of full-label Dice", "runner-up", "difference [95% CI]", "p (Holm)"]
    header += ["compute of best (s)"] if with_cost else []
    body = "<p>For each number of labelled brainstems k, the initialisation with the highest mean Dice and its margin "
    body += "over the next best (paired over test subjects). A CI that includes 0 or p (Holm) ≥ 0.05 means the data "
    body += "do not show a difference.</p>"
    body += "<ul>" + "".join(f"<li>{_verdict(b)}</li>" for b in best) + "</ul>"
    return _section("best-per-k", "Which initialisation is best", body + _table(header, rows))


def _curves(results: Mapping[str, Any], figs: str) -> str:
    curves = results.get("learning_curves") or []
    if not curves:
        return _section("learning-curves", "Label efficiency", _missing("label-efficiency sweep") + figs)
    rows = [
        [
            _e(c["init"]),
            _e(c["k"]),
            _num(c.get("dice_mean")) + _ci(c.get("ci95")),
            _num(c.get("fraction_of_full")) + _ci(c.get("fraction_ci95")),
            _num(c.get("n_seeds")),
            _num(c.get("n_subjects")),
        ]
        for c in curves
    ]
    header = ["initialisation", "k", "Dice [95% CI]", "fraction of full [95% CI]", "seeds", "test subjects"]
    return _section("learning-curves", "Label efficiency", _table(header, rows) + figs)


def _comparisons(results: Mapping[str, Any]) -> str:
    comps = results.get("comparisons") or []
    if not comps:
        return _section("comparisons", "Paired comparisons", _missing("comparisons"))
    rows = [
        [
            _e(c["k"]),
            f"{_e(c['a'])} − {_e(c['b'])}",
            _num(c.get("delta")) + _ci(c.get("ci95")),
            _p(c.get("p")),
            _p(c.get("p_holm")),
            _num(c.get("n_subjects")),
        ]
        for c in comps
    ]
    body = "<p>Difference in mean Dice, paired over test subjects; Wilcoxon signed-rank p, Holm-corrected over all "
    body += "comparisons in this table. With fewer than 6 test subjects no p-value can fall below 0.05.</p>"
    header = ["k", "a − b", "difference [95% CI]", "p", "p (Holm)", "subjects"]
    return _section("comparisons", "Paired comparisons", body + _table(header, rows))


def _matrix_tables(matrices: Mapping[str, Mapping[str, Mapping[str, Any]]], corner: str) -> str:
    out = ""
    for name, matrix in matrices.items():
        cols = list(dict.fromkeys(c for r in matrix.values() for c in r))
        rows = ([f"<b>{_e(r)}</b>", *(_num(matrix[r].get(c)) for c in cols)] for r in matrix)
        out += f"<h3>{_e(name)}</h3>" + _table([_e(corner), *(_e(c) for c in cols)], rows)
    return out


def _transfer(results: Mapping[str, Any], figs: str) -> str:
    tm = results.get("transfer_matrix") or {}
    body = _matrix_tables(tm, "trained in ↓ / tested in →") if tm else _missing("region-transfer probes")
    return _section("transfer", "Transfer between regions", body + figs)


def _similarity(results: Mapping[str, Any], figs: str) -> str:
    body = ""
    if results.get("cka"):
        body += "<h3>Linear CKA</h3>" + _matrix_tables(results["cka"], "")
    if results.get("shift"):
        body += "<h3>Shift between regions</h3>" + _matrix_tables(results["shift"], "")
    return _section("similarity", "Representation similarity", (body or _missing("similarity")) + figs)


def _group(results: Mapping[str, Any], figs: str) -> str:
    rows_in = results.get("group_analysis") or []
    if not rows_in:
        return _section("group", "Patients versus controls", _missing("group analysis") + figs)
    rows = []
    for g in rows_in:
        adjusted = _num(g.get("diff_pct_adjusted"), 1) + _ci(g.get("ci95_adjusted"), 1) if "p_adjusted" in g else "–"
        rows.append(
            [
                _e(g["measure"]),
                f"{_num(g.get('n_control'))} / {_num(g.get('n_patient'))}",
                _num(g.get("diff_pct"), 1) + _ci(g.get("ci95"), 1),
                _num(g.get("true_diff_pct"), 1),
                _num(g.get("cohens_d"), 2) + _ci(g.get("cohens_d_ci95"), 2),
                _p(g.get("p")),
                _p(g.get("p_holm")),
                _p(g.get("p_mannwhitney")),
                adjusted,
            ]
        )
    header = ["measure", "n controls / patients", "difference % [95% CI]", "true difference %", "Cohen's d [95% CI]"]
    header += ["p (Welch)", "p (Holm)", "p (Mann–Whitney)", "adjusted difference % [95% CI]"]
    body = "<p>Patients relative to controls (negative = smaller in patients). 'True difference' is the effect the "
    body += "simulation put in, where known.</p>"
    return _section("group", "Patients versus controls", body + _table(header, rows) + figs)


def _figure_html(key: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{_e(key)}"><img src="data:image/png;base64,{data}" alt="{_e(key)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _caption(key: str, captions: Mapping[str, str], run: str) -> str:
    if key in captions:
        text = captions[key]
    else:
        family = next((f for f in CAPTIONS if key.startswith(f)), None)
        text = CAPTIONS.get(family or "", key.replace("_", " ").capitalize() + ".")
    return f"{text} Run: {run}."


STYLE = """body{font-family:system-ui,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f0f0f0}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.9em;color:#444}
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.8em;font-weight:bold}.missing{color:#777}"""


def render_html(
    results: Mapping[str, Any], figures: Mapping[str, bytes], captions: Mapping[str, str] | None = None
) -> str:
    """The report as one HTML string (see module docstring)."""
    captions = captions or {}
    run = run_summary(results)
    placed: dict[str, str] = {}
    for key, png in figures.items():
        section = SECTION_OF.get(key) or next((v for f, v in SECTION_OF.items() if key.startswith(f)), None)
        if section is None:
            section = "group" if key.startswith("group") else "overlays" if key.startswith("overlay") else "other"
        placed[section] = placed.get(section, "") + _figure_html(key, png, _caption(key, captions, run))
    banner = ""
    if is_simulated(results):
        banner = (
            '<p class="banner" id="simulated-banner">SIMULATED DATA: these results come from the demo cohort, '
            "a simulation built from MRI templates with known effects. They test the toolkit, not the brain.</p>"
        )
    parts = [
        _what_was_run(results),
        _segmentation(results),
        _best(results),
        _curves(results, placed.get("curves", "")),
        _comparisons(results),
        _transfer(results, placed.get("transfer", "")),
        _similarity(results, placed.get("similarity", "")),
        _group(results, placed.get("group", "")),
        _section("overlays", "Example segmentations", placed.get("overlays") or _missing("overlays")),
    ]
    if placed.get("other"):
        parts.append(_section("other-figures", "Other figures", placed["other"]))
    notes = (
        "<ul><li>Intervals are 95% bootstrap confidence intervals over test subjects (seeds averaged per subject "
        "first); a difference whose interval contains 0 is not shown by these data.</li>"
        "<li>p-values from many comparisons are Holm-corrected; read the corrected column.</li>"
        "<li>Classical baselines (no training labels) sit beside the deep models: a deep model is only useful "
        "where it beats them.</li>"
        "<li>Dice inside the brainstem measures agreement with the reference labels, which are themselves uncertain "
        "there.</li></ul>"
    )
    parts.append(_section("reading-notes", "How to read this report", notes))
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = "brainstem-ssl evaluation report"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body><h1>{title}</h1><p>Generated {stamp}.</p>{banner}"
        + "".join(parts)
        + "</body></html>"
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
        captions: figure key -> caption (default: a standard caption for the key's family); the run
            summary (preset, seeds, data) is appended to every caption.

    Returns:
        The path of ``report.html``.
    """
    out = Path(out_dir)
    write_results(results, out / RESULTS_FILE)
    path = out / REPORT_FILE
    write_text_atomic(path, render_html(to_jsonable(results), figures, captions))
    return path
