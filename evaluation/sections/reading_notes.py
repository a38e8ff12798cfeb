"""How to read this report: what the intervals, p-values, Dice values and baselines mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.sections.base import Section

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


class ReadingNotes(Section):
    """Notes on reading the numbers; computes nothing."""

    id = "reading_notes"
    title = "How to read this report"

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        return NOTES
