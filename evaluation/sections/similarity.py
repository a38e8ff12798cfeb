"""Representation similarity: debiased linear CKA between encoders per region (DESIGN §9 ``cka``) and how far
apart each encoder places two regions (``shift``), measured with the probes of
:mod:`evaluation.sections.transfer_matrix`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from evaluation.figures import similarity_png
from evaluation.report_html import ci, details, e, matrix_tables, missing, num, pval, table
from evaluation.sections.base import Context, Section
from evaluation.sections.transfer_matrix import probe_measures, probe_source

# figure key (the results key it draws) -> the measure it names
FIGURES = {"cka": "linear CKA", "shift": "domain shift (balanced accuracy)"}


def _cka_rows(pairs: Mapping[str, Mapping[str, Any]], detail: Mapping[str, Any]) -> list[list[str]]:
    """Each unordered pair of different encoders once, with its CI, null and p."""
    rows, seen = [], set()
    for a, row in pairs.items():
        for b, value in row.items():
            if a == b or (b, a) in seen:
                continue
            seen.add((a, b))
            d = detail.get(a, {}).get(b) or {}
            rows.append([e(a), e(b), num(value) + ci(d.get("ci95")), num(d.get("null_q95")), pval(d.get("p")),
                         num(d.get("biased"))])  # fmt: skip
    return rows


def _cka_tables(results: Mapping[str, Any]) -> str:
    detail = results.get("cka_detail") or {}
    header = ["encoder", "encoder", "debiased CKA [95% CI]", "null 95th pct.", "p (shuffled pairing)", "plain CKA"]
    return "".join(
        f"<h4>{e(region)}</h4>" + table(header, _cka_rows(pairs, detail.get(region) or {}))
        for region, pairs in (results.get("cka") or {}).items()
    )


class Similarity(Section):
    """Cross-encoder CKA and between-region shift: the heatmaps, with their numbers behind a click."""

    id = "cka"
    anchor = "similarity"
    title = "Representation similarity"
    captions: ClassVar[Mapping[str, str]] = {
        "cka": "Debiased linear CKA (Kornblith et al. 2019 with the unbiased HSIC of Song et al. 2012) between "
        "representations of the same voxels (1 = the same up to rotation and scale, 0 = unrelated); its CI over "
        "subjects and a shuffled-pairing null are in the numbers below.",
        "shift": "Cross-validated balanced accuracy of a linear classifier telling one region's features from "
        "another's, with GM/WM proportions matched (0.5 = the regions look the same to the encoder, 1 = fully "
        "distinct).",
    }

    def compute(self, ctx: Context) -> dict[str, Any]:
        return probe_measures(ctx, ("shift", "shift_ci", "cka", "cka_detail"))

    def draw(self, results: Mapping[str, Any]) -> dict[str, bytes]:
        return {key: similarity_png(results[key], measure) for key, measure in FIGURES.items() if results.get(key)}

    def provenance(self, family: str, results: Mapping[str, Any]) -> str:
        return probe_source(results, family)

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        tables = ""
        if results.get("cka"):
            tables += "<h3>Debiased linear CKA (per region, encoder × encoder)</h3>"
            tables += "<p>The plain estimator is biased upward for unrelated features at these sizes; the debiased one "
            tables += "is ≈0 for them. The null shuffles which voxel is paired with which.</p>" + _cka_tables(results)
        if results.get("shift"):
            tables += "<h3>Shift between regions (per encoder; chance 0.5)</h3>"
            tables += matrix_tables(results["shift"], "", results.get("shift_ci"))
        if not tables:
            return missing("similarity") + figures
        return figures + details("Numbers [95% CI]", tables)
