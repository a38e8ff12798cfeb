"""``results.json`` and a self-contained ``report.html`` a neurologist can read.

``results.json`` is written by :mod:`evaluation.results_file`.

The report opens with a banner when the data are simulated (``results["dataset"]["simulated"]`` or
``results["simulated"]`` true), then shows its sections (:mod:`evaluation.sections`) in the order
``report.sections`` of ``configs/evaluate.yaml`` lists them: by default the answer first (for each number of
labelled brainstems k, which initialisation is best, by how much and what it cost), then the evidence and what
was run. Each section's title is both its heading and its entry in the navigation. Each figure is a base64 PNG
placed in the section that owns its key, whose caption says what was run to make it (:mod:`evaluation.captions`).
No external CSS, JavaScript or image files: the HTML file is the whole report.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evaluation.captions import figure_caption, run_summary
from evaluation.report_html import e, section
from evaluation.results_file import RESULTS_FILE, to_jsonable, write_results
from evaluation.sections.base import Section
from evaluation.sections.instantiate import default_sections
from ssl_pretrain.atomic import write_text_atomic

__all__ = ["REPORT_FILE", "build_report", "is_simulated", "render_html", "run_summary"]

REPORT_FILE = "report.html"
OTHER = "other-figures"  # the section of figures no listed section owns

STYLE = """body{font-family:system-ui,Arial,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td{white-space:nowrap}th{vertical-align:bottom}
th{background:#f0f0f0}figure{margin:1em 0}img{max-width:100%}figcaption{font-size:.9em;color:#444}
.banner{background:#fff3cd;border:2px solid #d39e00;padding:.8em;font-weight:bold}.missing{color:#777}
.note{background:#eef4fb;border-left:4px solid #4a7fb5;padding:.5em .8em}details{margin:.4em 0 1em}
summary{cursor:pointer;color:#2a5d8f}nav{font-size:.9em}.tw{overflow-x:auto;max-width:100%}"""
BANNER = (
    '<p class="banner" id="simulated-banner">SIMULATED DATA: these results come from the demo cohort, '
    "a simulation built from MRI templates with known effects. They test the toolkit, not the brain.</p>"
)


def is_simulated(results: Mapping[str, Any]) -> bool:
    """Whether the results come from the simulated demo cohort."""
    dataset = results.get("dataset") or {}
    return bool(results.get("simulated") or (isinstance(dataset, Mapping) and dataset.get("simulated")))


def _figure_html(key: str, png: bytes, text: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{e(key)}"><img src="data:image/png;base64,{data}" alt="{e(key)}">'
        f"<figcaption>{e(text)}</figcaption></figure>"
    )


def _caption(key: str, owner: Section | None, captions: Mapping[str, str], results: Mapping[str, Any]) -> str:
    """Figure ``key``'s caption: ``captions[key]`` or its section's text, what it was made from, the run."""
    family = owner.family(key) if owner else None
    if key in captions:
        shows = captions[key]
    else:
        shows = owner.caption(family, results) if owner and family else key.replace("_", " ").capitalize() + "."
    source = owner.provenance(family, results) if owner and family else ""
    return figure_caption(shows, source, results)


def _place(
    figures: Mapping[str, bytes], captions: Mapping[str, str], results: Mapping[str, Any], sections: Sequence[Section]
) -> dict[str, str]:
    """Section id (or :data:`OTHER`) -> the HTML of its figures."""
    placed: dict[str, str] = {}
    for key, png in figures.items():
        owner = next((s for s in sections if s.family(key)), None)
        where = owner.id if owner else OTHER
        placed[where] = placed.get(where, "") + _figure_html(key, png, _caption(key, owner, captions, results))
    return placed


def render_html(
    results: Mapping[str, Any],
    figures: Mapping[str, bytes],
    captions: Mapping[str, str] | None = None,
    sections: Sequence[Section] | None = None,
) -> str:
    """The report as one HTML string (see module docstring); ``sections`` default to ``configs/evaluate.yaml``'s."""
    sections = default_sections() if sections is None else sections
    placed = _place(figures, captions or {}, results, sections)
    parts = [section(s.html_id, s.title, s.render(results, placed.get(s.id, ""))) for s in sections]
    if placed.get(OTHER):
        parts.append(section(OTHER, "Other figures", placed[OTHER]))
    nav = "<nav>" + " · ".join(f'<a href="#{s.html_id}">{e(s.title)}</a>' for s in sections) + "</nav>"
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    title = "brainstem-ssl evaluation report"
    banner = BANNER if is_simulated(results) else ""
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
    sections: Sequence[Section] | None = None,
) -> Path:
    """Write ``results.json`` and ``report.html`` into ``out_dir`` (both atomically).

    Args:
        results: the evaluation's results (DESIGN §9 keys, one per section; see module docstring).
        figures: figure key -> PNG bytes. A figure goes to the section whose ``captions`` a key starts with
            (``transfer_matrix``, ``cka``, ``shift``, ``learning_curves``, ``training_curves``, ``group*``,
            ``overlay*`` by default); any other key goes to "Other figures".
        out_dir: output directory (created).
        captions: figure key -> caption (default: its section's caption for the key); what the figure was made
            from and the run summary (data, seeds) are appended to every caption.
        sections: the report's sections in order (default: ``report.sections`` of ``configs/evaluate.yaml``).

    Returns:
        The path of ``report.html``.
    """
    out = Path(out_dir)
    write_results(results, out / RESULTS_FILE)
    path = out / REPORT_FILE
    write_text_atomic(path, render_html(to_jsonable(results), figures, captions, sections))
    return path
