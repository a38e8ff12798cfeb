"""Finding the runs to evaluate and naming them.

``bssl evaluate runs=[…]`` takes run directories of ``bssl pretrain``, ``bssl finetune`` and
``bssl predict`` (or any directory holding them, such as a Hydra multirun directory). A run is
recognised by what it wrote: ``encoder.json`` (pretraining), ``model.json`` (fine-tuning) or
``volumes.tsv`` (prediction). Runs whose ``run.json`` does not say ``complete`` are skipped with a
warning, so a run killed half-way never feeds the statistics.

Initialisations get readable labels from the sidecars: ``scratch``, ``ssl_<method>`` for a pretrained
encoder, ``<init>+subcortical`` for a model first trained on the subcortical stage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from finetune.metrics import REPORTED_CLASSES
from ssl_pretrain.errors import CheckpointError, ConfigError
from ssl_pretrain.models.checkpoint import read_sidecar
from ssl_pretrain.run_dir import read_run_record

log = logging.getLogger(__name__)

MARKERS = {"encoder.json": "pretrain", "model.json": "finetune", "volumes.tsv": "predict"}
MAX_DEPTH = 3  # how far below a given directory runs are looked for (multirun/<time>/<n>/)


@dataclass
class Run:
    """One finished run.

    Attributes:
        path: the run directory.
        kind: ``pretrain`` | ``finetune`` | ``predict``.
        sidecar: ``encoder.json`` / ``model.json`` contents (empty for predict runs).
        record: ``run.json`` contents (wall time, device), or empty.
        label: a readable name (see the module docstring).
    """

    path: Path
    kind: str
    sidecar: dict[str, Any] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def stage(self) -> str | None:
        return self.sidecar.get("stage")

    @property
    def k(self) -> str:
        return str((self.sidecar.get("labels") or {}).get("k", "all"))

    @property
    def seed(self) -> int:
        return int((self.sidecar.get("seeds") or {}).get("seed", 0))

    @property
    def steps(self) -> int | None:
        """Optimiser steps the run trained (``None`` when its sidecar does not say)."""
        steps = (self.sidecar.get("result") or {}).get("steps")
        return None if steps is None else int(steps)

    @property
    def sources(self) -> list[tuple[Path, dict[str, Any]]]:
        """``(run dir, sidecar)`` of every run this one was initialised from, nearest first."""
        return source_chain(self.sidecar)

    @property
    def pretrain_seed(self) -> int | None:
        """The seed of the pretraining run at the root of the run's chain (``None``: no pretraining)."""
        for path, sidecar in self.sources:
            if (path / "encoder.json").is_file():
                return int((sidecar.get("pretrain") or {}).get("seed", 0))
        return None

    @property
    def convergence(self) -> dict[str, Any] | None:
        """The run's plateau test; for a zero-shot run (no training), that of the model it scores."""
        own = self.sidecar.get("convergence")
        if own is None and self.k == "0" and self.sources:
            return self.sources[0][1].get("convergence")
        return own

    @property
    def supervised_steps(self) -> int | None:
        """Supervised steps of the whole chain: this run's and every fine-tuning run it started from."""
        steps = [self.steps] + [
            ((s.get("result") or {}).get("steps")) for _, s in self.sources if s.get("task") == "segmentation"
        ]
        return None if any(v is None for v in steps) else int(sum(steps))  # type: ignore[arg-type]


def method_name(method: Any) -> str:
    """The method name of a sidecar's ``method`` entry (a dict with ``name`` or a string)."""
    if isinstance(method, Mapping):
        return str(method.get("name", "ssl"))
    return str(method)


def encoder_label(sidecar: Mapping[str, Any]) -> str:
    """``ssl_<method>`` for a pretrained encoder's sidecar."""
    return f"ssl_{method_name(sidecar.get('method'))}"


def init_label(sidecar: Mapping[str, Any], _depth: int = 0) -> str:
    """The initialisation of a fine-tuning run, in words (``scratch``, ``ssl_mae``, ``ssl_mae+subcortical``)."""
    if sidecar.get("init_label"):
        return str(sidecar["init_label"])
    init = sidecar.get("init") or {}
    if not isinstance(init, Mapping) or init.get("init", "scratch") == "scratch" or not init.get("path"):
        return "scratch"
    stage = init.get("source_stage")
    if not stage:
        return f"ssl_{method_name(init.get('source_method'))}"
    try:
        source = read_sidecar(init["path"])
    except Exception:  # the source run may have moved; its stage is still known
        return f"unknown+{stage}"
    base = init_label(source, _depth + 1) if _depth < 5 else "unknown"
    return stage if base == "scratch" else f"{base}+{stage}"


MAX_CHAIN = 5  # links followed back from a run (brainstem ← subcortical ← pretrain in practice)
SIDECARS = ("model.json", "encoder.json")


def source_dir(sidecar: Mapping[str, Any]) -> Path | None:
    """The run directory of the checkpoint a fine-tuning run started from (``None``: scratch)."""
    init = sidecar.get("init") or {}
    if not isinstance(init, Mapping) or not init.get("path") or init.get("init", "scratch") == "scratch":
        return None
    path = Path(str(init["path"]))
    return path if path.is_dir() else path.parent


def source_chain(sidecar: Mapping[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """``(run dir, sidecar)`` of the runs a fine-tuning run was initialised from, nearest first.

    A source whose sidecar is gone or unreadable still appears (with ``{}``) and ends the chain.
    """
    out: list[tuple[Path, dict[str, Any]]] = []
    current: Mapping[str, Any] = sidecar
    for _ in range(MAX_CHAIN):
        source = source_dir(current)
        if source is None:
            break
        marker = next((source / s for s in SIDECARS if (source / s).is_file()), None)
        try:
            found = read_sidecar(marker) if marker is not None else {}
        except CheckpointError:  # a moved or foreign checkpoint: its run still counts, the chain stops there
            found = {}
        out.append((source, found))
        if not found:
            break
        current = found
    return out


def _classify(path: Path) -> Run | None:
    for marker, kind in MARKERS.items():
        if (path / marker).is_file():
            record = read_run_record(path) or {}
            if record and record.get("status") != "complete":
                log.warning("skipping %s: its run.json says '%s', not complete", path, record.get("status"))
                return None
            sidecar = read_sidecar(path / marker) if marker.endswith(".json") else {}
            run = Run(path=path, kind=kind, sidecar=sidecar, record=record)
            run.label = encoder_label(sidecar) if kind == "pretrain" else init_label(sidecar) if sidecar else path.name
            return run
    return None


def _walk(path: Path, depth: int) -> Iterable[Run]:
    run = _classify(path)
    if run is not None:
        yield run
        return
    if depth >= MAX_DEPTH:
        return
    for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield from _walk(child, depth + 1)


def collect_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every finished run in or below ``paths``.

    Raises:
        ConfigError: a path does not exist or holds no run.
    """
    runs: list[Run] = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            raise ConfigError("runs", f"{path} is not a directory; give run directories or a multirun directory")
        found = list(_walk(path, 0))
        if not found:
            raise ConfigError("runs", f"{path} holds no finished pretrain/finetune/predict run")
        runs += found
    return runs


def finetune_rows(run: Run) -> list[dict[str, Any]]:
    """Per-test-subject Dice rows of a fine-tuning run (``init, k, seed, pretrain_seed, subject, group, region,
    class, dice, converged``).

    Raises:
        ConfigError: the run's ``metrics.csv`` is missing or lacks the Dice columns.
    """
    table = run.path / "metrics.csv"
    if not table.is_file():
        raise ConfigError("runs", f"{table}: the fine-tuning run has no per-subject metrics.csv")
    frame = pd.read_csv(table)
    missing = [f"dice_{c}" for c in REPORTED_CLASSES if f"dice_{c}" not in frame.columns]
    if "subject" not in frame.columns or missing:
        raise ConfigError("runs", f"{table}: expected columns subject and {missing or 'dice_*'}")
    converged = (run.convergence or {}).get("converged")
    rows = []
    for _, r in frame.iterrows():
        for cls in REPORTED_CLASSES:
            rows.append(
                {
                    "init": run.label,
                    "k": run.k,
                    "seed": run.seed,
                    "pretrain_seed": run.pretrain_seed or 0,
                    "subject": str(r["subject"]),
                    "group": str(r.get("group", "")),
                    "region": run.stage,
                    "class": cls,
                    "dice": float(r[f"dice_{cls}"]),
                    "converged": converged,
                }
            )
    return rows


def column_rows(run: Run, prefix: str) -> list[dict[str, Any]]:
    """Per-test-subject rows of every ``metrics.csv`` column starting with ``prefix`` (e.g. ``dice_region_``,
    ``t1w_only_dice_``): ``{init, k, seed, subject, region, class, dice}`` with ``class`` the column's remainder.
    Empty when the run wrote no such column."""
    table = run.path / "metrics.csv"
    if not table.is_file():
        return []
    frame = pd.read_csv(table)
    columns = [c for c in frame.columns if c.startswith(prefix)]
    return [
        {"init": run.label, "k": run.k, "seed": run.seed, "subject": str(r["subject"]), "region": run.stage,
         "class": c[len(prefix):], "dice": float(r[c])}
        for _, r in frame.iterrows() for c in columns
    ]  # fmt: skip
