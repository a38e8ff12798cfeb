"""Compute: the wall-clock time of every run (DESIGN §9 ``compute``) and of each initialisation's chain of runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.compute_cost import compute_per_init
from evaluation.report_html import duration, e, missing, num, table
from evaluation.sections.base import Context, Section


def _stages(costs: Mapping[str, Any]) -> list[str]:
    """The stages any initialisation ran, in chain order: pretraining, the source stages, the target.

    Each initialisation's ``by_stage`` lists its chain nearest the target first, so a stage's depth is its
    position there; the deepest (pretraining) comes first, ties in the order they appear.
    """
    depth: dict[str, int] = {}
    for c in costs.values():
        for i, stage in enumerate(c.get("by_stage") or {}):
            depth[stage] = max(depth.get(stage, i), i)
    return sorted(depth, key=lambda s: -depth[s])


def _row(init: str, c: Mapping[str, Any], stages: list[str]) -> list[str]:
    by_stage, counts = c.get("by_stage") or {}, c.get("runs_by_stage") or {}
    cells = [e(init), f"<b>{duration(c.get('seconds'))}</b>", num(c.get("runs"))]
    for s in stages:
        n = counts.get(s)
        runs = f" ({n} run{'s' if n != 1 else ''})" if n else ""
        cells.append(duration(by_stage.get(s)) + runs if s in by_stage else "–")
    return cells


class Compute(Section):
    """Per run (shown in What was run) and per initialisation: pretraining, source and target runs it took."""

    id = "compute"
    title = "Compute per initialisation"

    def compute(self, ctx: Context) -> dict[str, Any]:
        per_run = {
            f"{r.kind}/{r.label}/{r.path.name}": {"seconds": r.record.get("seconds"), "device": r.record.get("device")}
            for r in ctx.runs
            if r.record
        }
        return {"compute": per_run, "compute_per_init": compute_per_init(ctx.runs, ctx.target)}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        costs = results.get("compute_per_init") or {}
        if not costs:
            return missing("compute per initialisation")
        stages = _stages(costs)
        header = ["initialisation", "total wall-clock time", "runs", *(f"{e(s)} stage" for s in stages)]
        body = "<p>Wall-clock time (from each run's <code>run.json</code>) of every run an initialisation took: its "
        body += "pretraining and source-stage runs, found through the checkpoints its target-stage models started "
        body += "from, and the target runs of every k and seed. Each run counts once per initialisation, so a "
        body += "pretraining run shared by two initialisations is part of both totals.</p>"
        unknown = [p for c in costs.values() for p in c.get("missing") or []]
        if unknown:
            body += f'<p class="note">{len(unknown)} run(s) recorded no time and add nothing to the totals.</p>'
        return body + table(header, [_row(init, c, stages) for init, c in costs.items()])
