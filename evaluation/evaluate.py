"""``bssl evaluate``: measure transfer between regions over a set of runs, and write the report.

Data flow: the runs named in ``runs`` (:mod:`evaluation.runs`) → each section of ``report.sections``
(:mod:`evaluation.sections`; by default: per-subject Dice of fine-tuning runs for the segmentation table,
label-efficiency curves and paired comparisons · frozen encoders on the cached volumes for probes, shift and
CKA · classical baselines on the same test subjects and ROIs · ``volumes.tsv`` of prediction runs for the
group analysis · ``run.json`` of every run for compute) adds its keys to ``results.json`` and draws its figures
→ ``results.json`` + ``report.html`` in the run directory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from evaluation.groups import TRUTH_FILE
from evaluation.report import build_report
from evaluation.runs import Run, collect_runs
from evaluation.sections.base import Context
from evaluation.sections.instantiate import computation_order, draw_figures, instantiate_sections
from ssl_pretrain.config import to_flat_dict
from ssl_pretrain.run_dir import run_context

log = logging.getLogger(__name__)


def _header(cfg: DictConfig, runs: Sequence[Run]) -> dict[str, Any]:
    """What every section's numbers come from: the data, the runs and their seeds, the evaluation's config."""
    simulated = (Path(cfg.data.root) / TRUTH_FILE).is_file()
    seeds = sorted({r.seed for r in runs if r.kind == "finetune"})
    return {
        "config": {"data.root": str(cfg.data.root), "runs": [str(r.path) for r in runs], "seeds": seeds,
                   "spacing": cfg.data.spacing},
        "dataset": {"root": str(cfg.data.root), "simulated": simulated},
        "evaluate_config": to_flat_dict(cfg),
    }  # fmt: skip


def run(cfg: DictConfig) -> Path:
    """Evaluate ``cfg.runs`` on ``cfg.data``; returns the run directory holding ``report.html``."""
    with run_context(cfg, "evaluate") as out:
        sections = instantiate_sections(cfg.report.sections)
        collected = collect_runs(list(cfg.runs))
        log.info("evaluating %d runs: %s", len(collected), ", ".join(f"{r.kind}:{r.label}" for r in collected))
        # cross-fitted models exist to predict the group analysis' subjects; the benchmark is the other runs
        runs = [r for r in collected if not (r.kind == "finetune" and r.sidecar.get("crossfit"))]
        ctx = Context(cfg, runs, results=_header(cfg, runs))
        for s in computation_order(sections):
            log.info("section %s", s.id)
            ctx.results.update(s.compute(ctx))
        figures = {**ctx.figures, **draw_figures(sections, ctx.results)}
        report = build_report(json.loads(json.dumps(ctx.results, default=str)), figures, out, sections=sections)
        log.info("report: %s", report)
        print(f"report: {report}")
    return out
