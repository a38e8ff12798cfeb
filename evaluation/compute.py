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
from ssl_pretrain.errors import CheckpointError
from ssl_pretrain.models.checkpoint import read_sidecar
from ssl_pretrain.run_dir import read_run_record

MAX_CHAIN = 5  # links followed back from a brainstem run (brainstem ← subcortical ← pretrain in practice)
SIDECARS = ("model.json", "encoder.json")


def _source_dir(sidecar: Mapping[str, Any]) -> Path | None:
    """The run directory of the checkpoint a fine-tuning run started from (None: scratch)."""
    init = sidecar.get("init") or {}
    if not isinstance(init, Mapping) or not init.get("path") or init.get("init", "scratch") == "scratch":
        return None
    path = Path(str(init["path"]))
    return path if path.is_dir() else path.parent


def _stage_of(path: Path, sidecar: Mapping[str, Any]) -> str:
    if (path / "encoder.json").is_file():
        return "pretrain"
    return str(sidecar.get("stage") or "finetune")


def _chain(run: Run) -> list[tuple[Path, str]]:
    """``(run dir, stage)`` of ``run`` and every run it was initialised from, nearest first."""
    out = [(run.path.resolve(), _stage_of(run.path, run.sidecar))]
    sidecar: Mapping[str, Any] = run.sidecar
    for _ in range(MAX_CHAIN):
        source = _source_dir(sidecar)
        if source is None:
            break
        marker = next((source / s for s in SIDECARS if (source / s).is_file()), None)
        try:
            sidecar = read_sidecar(marker) if marker is not None else {}
        except CheckpointError:  # a moved or foreign checkpoint: its run still counts, the chain stops there
            sidecar = {}
        out.append((source.resolve(), _stage_of(source, sidecar)))
        if not sidecar:
            break
    return out


def compute_per_init(runs: Sequence[Run], stage: str = "brainstem") -> dict[str, dict[str, Any]]:
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
