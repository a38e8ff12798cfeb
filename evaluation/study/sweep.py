"""Under which conditions does an initialisation help? One report over a sweep of studies (DESIGN §9 ``sweep``).

``bssl study -m demo.brainstem_contrast=0.25,0.5,1.0 'data.root=data/demo-c${demo.brainstem_contrast}'`` (or
``make study-sweep``) runs one whole study per value, each on its own simulated cohort. When the multirun ends,
:class:`SweepReport` (a Hydra callback, registered in ``configs/study.yaml``) reads every job's
``results.json`` and writes ``results.json`` + ``report.html`` into the multirun directory: for each value of
the swept setting, each initialisation and each k, the benefit over ``scratch`` and over ``scratch_matched``
(the compute-matched control) with its CI and Holm p, taken from that study's own paired comparisons
(:func:`evaluation.learning_curves.comparisons`; at k = 0 against their k = 1, ``b_k``). ``scratch_matched`` has
rows of its own, its benefit over ``scratch``: scratch trained longer, the budget check of each study
(:mod:`evaluation.sections.budget_check`), so the table shows where the target budget is short of the plateau.

The swept settings are found from the jobs' overrides (those whose value differs between jobs).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from omegaconf import DictConfig

from evaluation.figures import figure_png
from evaluation.learning_curves import k_order, normalise_k, paired_difference
from evaluation.report_html import ci, e, num, pval, section, table
from evaluation.results_file import write_results
from ssl_pretrain.atomic import write_text_atomic

log = logging.getLogger(__name__)

REFERENCES = ("scratch", "scratch_matched")
SWEEP_KS = (0, 1, 2, "all")


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.is_file() else []
    return dict(str(o).split("=", 1) for o in items or [] if "=" in str(o))


def swept_settings(jobs: Sequence[Mapping[str, str]]) -> list[str]:
    """Override keys whose values differ between the jobs (the sweep's variables)."""
    keys = list(dict.fromkeys(k for job in jobs for k in job))
    return [k for k in keys if len({job.get(k) for job in jobs}) > 1]


def _value(text: str | None) -> Any:
    try:
        return yaml.safe_load(text) if text is not None else None
    except yaml.YAMLError:
        return text


def sweep_rows(jobs: Sequence[tuple[Mapping[str, Any], Mapping[str, Any]]], ks: Sequence[Any] = SWEEP_KS) -> list[dict]:
    """One row per (job, initialisation, k): its benefit over each reference arm (``scratch_matched``: over scratch).

    Args:
        jobs: ``(swept settings of the job, its results.json)``.
        ks: the k of the table (those a study ran).

    Returns:
        Dicts with the swept settings, ``init``, ``k``, ``dice_mean``, ``converged``, and per reference
        ``delta_vs_<ref>``, ``ci95`` / ``ci95_vs_<ref>``, ``p_holm_vs_<ref>`` (``None`` where the study lacks it).
    """
    rows = []
    wanted = [normalise_k(k) for k in ks]
    for settings, results in jobs:
        curves = results.get("learning_curves") or []
        comps = results.get("comparisons") or []
        for c in sorted(curves, key=lambda c: (str(c["init"]), k_order(c["k"]))):
            if c["init"] == REFERENCES[0] or c["k"] not in wanted:
                continue
            row: dict[str, Any] = {**settings, "init": c["init"], "k": c["k"], "dice_mean": c.get("dice_mean"),
                                   "converged": c.get("converged")}  # fmt: skip
            for ref in REFERENCES:
                pair = paired_difference(comps, c["k"], c["init"], ref)
                row[f"delta_vs_{ref}"] = pair["delta"] if pair else None
                row[f"ci95_vs_{ref}"] = pair["ci95"] if pair else None
                row[f"p_holm_vs_{ref}"] = pair["p_holm"] if pair else None
            row["ci95"] = row["ci95_vs_scratch"]
            rows.append(row)
    return rows


def sweep_png(rows: Sequence[Mapping[str, Any]], variable: str) -> bytes:
    """Benefit over scratch (top) and over scratch_matched (bottom) against the swept value, one panel per k."""
    ks = sorted({r["k"] for r in rows}, key=k_order)
    fig = Figure(figsize=(3.2 * max(len(ks), 1), 6.0))
    axes = np.atleast_2d(fig.subplots(2, max(len(ks), 1), squeeze=False))
    for j, k in enumerate(ks):
        for i, ref in enumerate(REFERENCES):
            ax = axes[i, j]
            for init in dict.fromkeys(r["init"] for r in rows):
                mine = [r for r in rows if r["init"] == init and r["k"] == k and r[f"delta_vs_{ref}"] is not None]
                pts = sorted(mine, key=lambda r: float(r[variable]))
                if not pts:
                    continue
                x = [float(r[variable]) for r in pts]
                y = [float(r[f"delta_vs_{ref}"]) for r in pts]
                lo = [y_ - float((r[f"ci95_vs_{ref}"] or [y_, y_])[0]) for y_, r in zip(y, pts, strict=True)]
                hi = [float((r[f"ci95_vs_{ref}"] or [y_, y_])[1]) - y_ for y_, r in zip(y, pts, strict=True)]
                ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=init)
            ax.axhline(0.0, color="#888", linewidth=0.8)
            ax.set_title(f"k = {k}: vs {ref}", fontsize=9)
            ax.set_xlabel(variable, fontsize=8)
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("Dice benefit [95% CI]")
    axes[1, 0].set_ylabel("Dice benefit [95% CI]")
    axes[0, -1].legend(fontsize=7)
    return figure_png(fig)


def render_sweep(results: Mapping[str, Any], figure: bytes | None) -> str:
    """The sweep report as one self-contained HTML page."""
    import base64

    rows, variables = results.get("sweep") or [], results.get("variables") or []
    header = [*(e(v) for v in variables), "initialisation", "k", "Dice", "− scratch [95% CI]", "p (Holm)"]
    header += ["− scratch_matched [95% CI]", "p (Holm)", "converged"]
    body_rows = [
        [*(e(r.get(v)) for v in variables), e(r["init"]), e(r["k"]), num(r.get("dice_mean")),
         num(r.get("delta_vs_scratch")) + ci(r.get("ci95_vs_scratch")), pval(r.get("p_holm_vs_scratch")),
         num(r.get("delta_vs_scratch_matched")) + ci(r.get("ci95_vs_scratch_matched")),
         pval(r.get("p_holm_vs_scratch_matched")), e({True: "yes", False: "NO"}.get(r.get("converged"), "–"))]
        for r in rows
    ]  # fmt: skip
    img = ""
    if figure:
        img = f'<figure><img src="data:image/png;base64,{base64.b64encode(figure).decode()}" alt="sweep"></figure>'
    intro = "<p>One whole transfer study per value of the swept setting, each on its own simulated cohort. A benefit "
    intro += "over <code>scratch</code> that vanishes against <code>scratch_matched</code> is explained by more "
    intro += "supervised training as well as by transfer. The <code>scratch_matched</code> rows are scratch trained "
    intro += "longer against scratch (the budget check): where that benefit is above 0, the target budget is short "
    intro += "of the plateau. At k = 0 (no target label) an arm is compared with the "
    intro += "reference trained on one label. Intervals and Holm p come from each study's own paired comparisons "
    intro += f"(subjects × seeds). Wall time of the sweep: {num(results.get('seconds'), 0)} s.</p>"
    jobs = "".join(f"<li>{e(j.get('settings'))}: {e(j.get('report'))}</li>" for j in results.get("jobs") or [])
    content = section("sweep", "Benefit of each initialisation against the swept setting", intro + img)
    content += section("sweep-table", "Numbers", table(header, body_rows)) + section(
        "jobs", "Studies", f"<ul>{jobs}</ul>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>brainstem-ssl sweep</title></head><body>'
        '<h1>brainstem-ssl sweep report</h1><p style="background:#fff3cd;padding:.6em"><b>SIMULATED DATA</b> when '
        f"the studies ran on the demo cohort.</p>{content}</body></html>"
    )


def write_sweep(sweep_dir: Path, seconds: float | None = None) -> Path:
    """Collect the studies of a multirun directory and write its ``results.json`` + ``report.html``."""
    studies = sorted(p for p in sweep_dir.glob("*/study.json"))
    if not studies:
        raise FileNotFoundError(f"{sweep_dir} holds no finished study (no */study.json)")
    overrides = [_overrides(p.parent) for p in studies]
    variables = swept_settings(overrides)
    jobs, collected = [], []
    for path, ov in zip(studies, overrides, strict=True):
        study = json.loads(path.read_text())
        results = json.loads(Path(study["results"]).read_text())
        settings = {v: _value(ov.get(v)) for v in variables}
        collected.append((settings, results))
        jobs.append({"settings": settings, "study": str(path), "report": study.get("report")})
    rows = sweep_rows(collected)
    results = {"sweep": rows, "variables": variables, "jobs": jobs, "seconds": seconds}
    write_results(results, sweep_dir / "results.json")
    numeric = [v for v in variables if all(isinstance(r.get(v), int | float) for r in rows)]
    figure = sweep_png(rows, numeric[0]) if rows and numeric else None
    report = sweep_dir / "report.html"
    write_text_atomic(report, render_sweep(results, figure))
    log.info("sweep report: %s", report)
    return report


class SweepReport(Callback):
    """Hydra callback: after a ``bssl study -m …`` multirun, the sweep's results.json and report.html."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.perf_counter()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = write_sweep(sweep_dir, time.perf_counter() - self.started)
        except FileNotFoundError as err:
            log.warning("no sweep report: %s", err)
            return
        print(f"sweep report: {report}")
