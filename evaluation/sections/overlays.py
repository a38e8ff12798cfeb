"""Example segmentations: the slices each fine-tuning run with all labels drew of a test subject."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from evaluation.report_html import missing
from evaluation.sections.base import Context, Section

OVERLAY_FILE = "overlays.png"


class Overlays(Section):
    """Reference and predicted tissue over the image, one figure per stage (``overlay_<stage>``)."""

    id = "overlays"
    title = "Example segmentations"
    captions: ClassVar[Mapping[str, str]] = {
        "overlay": "Reference and predicted tissue labels (CSF, GM, WM; colours as in the legend) of a test subject "
        "over its image, the stage's ROI outlined; the panel title names the fine-tuning run (k = all labels).",
    }

    def compute(self, ctx: Context) -> dict[str, Any]:
        for r in ctx.runs:
            if r.kind == "finetune" and r.k == "all" and (r.path / OVERLAY_FILE).is_file():
                ctx.figures.setdefault(f"overlay_{r.stage}", (r.path / OVERLAY_FILE).read_bytes())
        return {}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        return figures or missing("overlays")
