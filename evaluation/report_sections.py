"""Sections of ``report.html`` beyond the label-efficiency answer: compute, region transfer, similarity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.report_html import ci, details, duration, e, missing, num, pval, section, table

STAGES = ("pretrain", "subcortical", "brainstem")


def compute_section(results: Mapping[str, Any]) -> str:
    """Wall-clock compute of each initialisation's chain of runs (``results["compute_per_init"]``)."""
    costs = results.get("compute_per_init") or {}
    if not costs:
        return section("compute", "Compute per initialisation", missing("compute per initialisation"))
    stages = [s for s in STAGES if any(s in (c.get("by_stage") or {}) for c in costs.values())]
    stages += sorted({s for c in costs.values() for s in (c.get("by_stage") or {})} - set(stages))
    rows = []
    for init, c in costs.items():
        by_stage, counts = c.get("by_stage") or {}, c.get("runs_by_stage") or {}
        cells = [e(init), f"<b>{duration(c.get('seconds'))}</b>", num(c.get("runs"))]
        for s in stages:
            n = counts.get(s)
            cells.append(
                duration(by_stage.get(s)) + (f" ({n} run{'s' if n != 1 else ''})" if n else "")
                if s in by_stage
                else "–"
            )
        rows.append(cells)
    header = ["initialisation", "total wall-clock time", "runs", *(f"{e(s)} stage" for s in stages)]
    body = "<p>Wall-clock time (from each run's <code>run.json</code>) of every run an initialisation took: its "
    body += "pretraining and subcortical runs, found through the checkpoints its brainstem models started from, "
    body += "and the brainstem runs of every k and seed. Each run counts once per initialisation, so a pretraining "
    body += "run shared by two initialisations is part of both totals.</p>"
    unknown = [p for c in costs.values() for p in c.get("missing") or []]
    if unknown:
        body += f'<p class="note">{len(unknown)} run(s) recorded no time and add nothing to the totals.</p>'
    return section("compute", "Compute per initialisation", body + table(header, rows))


def _matrix_tables(
    matrices: Mapping[str, Mapping[str, Mapping[str, Any]]],
    corner: str,
    cis: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> str:
    out = ""
    for name, matrix in matrices.items():
        cols = list(dict.fromkeys(c for r in matrix.values() for c in r))
        bounds = (cis or {}).get(name) or {}
        rows = (
            [f"<b>{e(r)}</b>", *(num(matrix[r].get(c)) + ci((bounds.get(r) or {}).get(c)) for c in cols)]
            for r in matrix
        )
        out += f"<h4>{e(name)}</h4>" + table([e(corner), *(e(c) for c in cols)], rows)
    return out


def transfer_section(results: Mapping[str, Any], figs: str) -> str:
    """Region-to-region probe transfer: the heatmaps, with their numbers and CIs behind a click."""
    tm = results.get("transfer_matrix") or {}
    if not tm:
        return section("transfer", "Transfer between regions", missing("region-transfer probes") + figs)
    body = "<p>Does what a frozen encoder learned separate GM from WM in a region it was not probed in? A high "
    body += "off-diagonal cell means a probe trained in one region (row) still works in another (column). Chance is "
    body += f"{num(results.get('chance', 0.5), 2)}; the randomly initialised encoder (<code>random_init</code>) is the "
    body += "floor an encoder has to beat. Intervals resample the testing subjects.</p>"
    numbers = details("Numbers [95% CI]", _matrix_tables(tm, "trained in ↓ / tested in →", results.get("transfer_ci")))
    return section("transfer", "Transfer between regions", body + figs + numbers)


def _cka_tables(results: Mapping[str, Any]) -> str:
    detail = results.get("cka_detail") or {}
    out = ""
    for region, pairs in (results.get("cka") or {}).items():
        rows = []
        seen = set()
        for a, row in pairs.items():
            for b, value in row.items():
                if a == b or (b, a) in seen:
                    continue
                seen.add((a, b))
                d = (detail.get(region) or {}).get(a, {}).get(b) or {}
                rows.append([e(a), e(b), num(value) + ci(d.get("ci95")), num(d.get("null_q95")), pval(d.get("p")),
                             num(d.get("biased"))])  # fmt: skip
        header = ["encoder", "encoder", "debiased CKA [95% CI]", "null 95th pct.", "p (shuffled pairing)", "plain CKA"]
        out += f"<h4>{e(region)}</h4>" + table(header, rows)
    return out


def similarity_section(results: Mapping[str, Any], figs: str) -> str:
    """Cross-encoder CKA and between-region shift: the heatmaps, with their numbers behind a click."""
    tables = ""
    if results.get("cka"):
        tables += "<h3>Debiased linear CKA (per region, encoder × encoder)</h3>"
        tables += "<p>The plain estimator is biased upward for unrelated features at these sizes; the debiased one is "
        tables += "≈0 for them. The null shuffles which voxel is paired with which.</p>" + _cka_tables(results)
    if results.get("shift"):
        tables += "<h3>Shift between regions (per encoder; chance 0.5)</h3>"
        tables += _matrix_tables(results["shift"], "", results.get("shift_ci"))
    if not tables:
        return section("similarity", "Representation similarity", missing("similarity") + figs)
    return section("similarity", "Representation similarity", figs + details("Numbers [95% CI]", tables))
