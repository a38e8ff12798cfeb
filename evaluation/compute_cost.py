"""What each initialisation cost in compute: wall-clock seconds of every run it took, from ``run.json``.

An initialisation's brainstem models (every k and seed of the label-efficiency sweep) each name the
checkpoint they started from (``model.json`` → ``init.path``); following those links back gives the
chain of runs behind the initialisation: the pretraining run (``ssl_*``), the subcortical stage
(``*+subcortical``) and the brainstem runs themselves. Each distinct run counts once, however many
brainstem runs start from it (one pretraining run feeding 15 sweep runs is paid for once). A run whose
``run.json`` gives no ``seconds`` is counted in ``runs`` but adds nothing, and is listed in ``missing``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evaluation.runs import Run
from ssl_pretrain.run_dir import read_run_record


def _stage_of(path: Path, sidecar: Mapping[str, Any]) -> str:
    if (path / "encoder.json").is_file():
        return "pretrain"
    return str(sidecar.get("stage") or "finetune")


def _chain(run: Run) -> list[tuple[Path, str]]:
    """``(run dir, stage)`` of ``run`` and every run it was initialised from, nearest first."""
    out = [(run.path.resolve(), _stage_of(run.path, run.sidecar))]
    return out + [(path.resolve(), _stage_of(path, sidecar)) for path, sidecar in run.sources]


def compute_per_init(runs: Sequence[Run], stage: str) -> dict[str, dict[str, Any]]:
    """Wall-clock compute of each initialisation's chain of runs.

    Args:
        runs: the evaluated runs; the fine-tuning runs of ``stage`` define the initialisations.
        stage: the target stage whose runs are grouped by initialisation label.

    Returns:
        ``{init: {"seconds": total, "runs": n distinct runs, "by_stage": {stage: seconds},
        "runs_by_stage": {stage: n}, "missing": [run dirs without seconds]}}``, in the order inits appear.
    """
    seen: dict[str, dict[Path, str]] = {}
    for run in runs:
        if run.kind == "finetune" and run.stage == stage:
            seen.setdefault(run.label, {}).update(dict(_chain(run)))
    known = {r.path.resolve(): r.record for r in runs}
    out: dict[str, dict[str, Any]] = {}
    for init, chain in seen.items():
        by_stage: dict[str, float] = {}
        counts: dict[str, int] = {}
        missing = []
        for path, run_stage in chain.items():
            record = known.get(path) or read_run_record(path) or {}
            seconds = record.get("seconds")
            counts[run_stage] = counts.get(run_stage, 0) + 1
            by_stage.setdefault(run_stage, 0.0)
            if isinstance(seconds, (int, float)):
                by_stage[run_stage] += float(seconds)
            else:
                missing.append(str(path))
        out[init] = {
            "seconds": sum(by_stage.values()),
            "runs": len(chain),
            "by_stage": by_stage,
            "runs_by_stage": counts,
            "missing": missing,
        }
    return out
