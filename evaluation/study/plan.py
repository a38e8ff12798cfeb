"""``bssl study study.plan_only=true``: every stage a study would run, its training steps and the device-hours.

The study composes its stages exactly as it would to run them (:meth:`evaluation.study.chain.Study.all_stages`), with
a runner that runs none (:class:`Plan`), and prints one line per stage (name, kind, training steps, devices,
whether a finished run is reused), the steps per stage kind and an estimate of the device-hours of the steps
still to run. A stage counts as reused when its directory holds a complete run and every stage it reads is
reused too: a stage that runs gets a new start time, so whatever reads it gets a new directory.

The seconds per training step of each kind (pretrain, source, target) come from ``study.plan.seconds_per_step``
(measured elsewhere) or, with ``study.plan.measure=true``, from timing ``study.plan.measure_steps`` real steps
of the kind's first stage on this device (after two warm-up steps; median step-to-step time, data loading
included; in a temporary directory, one device, weights from scratch). The output says which. A DDP stage
counts ``trainer.devices × trainer.num_nodes`` devices for each of its steps (per-device step time assumed
unchanged). Predict and evaluate train nothing and are not estimated.

When ``data.root`` is missing and the study would simulate the demo cohort, no stage can be reused, and the
cross-fitted folds are planned over the cohort's ``demo.n_controls + demo.n_patients`` subjects.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, open_dict

from evaluation.study.chain import Study, needs_demo
from evaluation.study.launch import Runner
from evaluation.study.stages import MODULES, Stage
from ssl_pretrain.data.validate import dataset_fingerprint, load_records
from ssl_pretrain.errors import ConfigError, DataError
from ssl_pretrain.run_dir import device_name, is_complete
from ssl_pretrain.training.trainer import added_callbacks

TRAINING_KINDS = ("pretrain", "source", "target")
WARMUP_STEPS = 2


@dataclass
class Planned:
    """One stage of the plan."""

    stage: Stage
    kind: str
    steps: int  # training steps (0: predict, evaluate, a zero-shot target run)
    devices: int
    reused: bool


def training_steps(stage: Stage) -> int:
    """The optimiser steps a stage trains for (``trainer.max_steps``; none for k = 0, predict, evaluate)."""
    if stage.command not in ("pretrain", "finetune"):
        return 0
    if stage.command == "finetune" and str(stage.cfg.labels.k) == "0":
        return 0
    return int(stage.cfg.trainer.max_steps)


def devices_of(stage: Stage) -> int:
    """Devices a stage trains on: ``trainer.devices × trainer.num_nodes`` under DDP, else one."""
    trainer = stage.cfg.get("trainer")
    if trainer is None or not str(trainer.get("strategy")).startswith("ddp"):
        return 1
    devices = trainer.get("devices")
    return (devices if isinstance(devices, int) and devices > 0 else 1) * int(trainer.get("num_nodes", 1))


class Plan(Runner):
    """Records the stages a study composes and runs none (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.stages: list[Planned] = []
        self._reused: set[Path] = set()

    def ready(self, after: Sequence[Stage]) -> None:
        return

    def submit(self, stage: Stage, after: Sequence[Stage], position: str) -> None:
        reused = is_complete(stage.path) and all(s.path in self._reused for s in after)
        if reused:
            self._reused.add(stage.path)
            self.reused += 1
        kind = str(stage.info["kind"])
        self.stages.append(Planned(stage, kind, training_steps(stage), devices_of(stage), reused))

    def finish(self) -> None:
        return


class _Enough(Exception):
    """Raised by :class:`StepTimer` to stop a measuring run once its steps are timed."""


class StepTimer(Callback):
    """Times training steps (end to end, data loading included) and stops the run after ``warmup + steps``."""

    def __init__(self, steps: int) -> None:
        self.steps, self.ends = steps, []  # type: ignore[var-annotated]

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())
        if len(self.ends) > WARMUP_STEPS + self.steps:
            raise _Enough

    def seconds_per_step(self) -> float:
        gaps = [b - a for a, b in zip(self.ends[WARMUP_STEPS:], self.ends[WARMUP_STEPS + 1 :], strict=False)]
        if not gaps:
            raise RuntimeError(f"the run stopped after {len(self.ends)} steps, before any step was timed")
        return statistics.median(gaps)


def measure(stage: Stage, steps: int) -> float:
    """Seconds per training step of ``stage`` on this device (module docstring); writes nothing to its directory."""
    cfg = copy.deepcopy(stage.cfg)
    timer = StepTimer(steps)
    with tempfile.TemporaryDirectory(prefix="bssl-plan-") as tmp, open_dict(cfg):
        cfg.paths.output_dir = str(Path(tmp) / stage.name)
        cfg.resume = None
        cfg.trainer.max_steps = max(int(cfg.trainer.max_steps), WARMUP_STEPS + steps + 1)
        if stage.command == "finetune":
            cfg.init, cfg.init_label = "scratch", "scratch"
        if devices_of(stage) > 1:
            cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes = "auto", 1, 1
        with added_callbacks(timer), contextlib.suppress(_Enough):
            importlib.import_module(MODULES[stage.command]).run(cfg)
    return timer.seconds_per_step()


def step_times(cfg: DictConfig, planned: Sequence[Planned]) -> dict[str, tuple[float, str]]:
    """``kind -> (seconds per step, where it comes from)`` for every training kind with steps to run."""
    given = cfg.study.plan.get("seconds_per_step") or {}
    out: dict[str, tuple[float, str]] = {}
    for kind in TRAINING_KINDS:
        first = next((p for p in planned if p.kind == kind and p.steps > 0), None)
        if first is None:
            continue
        if given.get(kind) is not None:
            out[kind] = (float(given[kind]), f"given (study.plan.seconds_per_step.{kind})")
        elif cfg.study.plan.get("measure"):
            n = int(cfg.study.plan.measure_steps)
            out[kind] = (measure(first.stage, n), f"measured: {n} steps of {first.stage.name} on {device_name()}")
    return out


def table(planned: Sequence[Planned], times: dict[str, tuple[float, str]]) -> list[str]:
    """The plan's lines: one per stage, then the steps and device-hours per kind."""
    width = max(len(p.stage.name) for p in planned)
    lines = [f"  {'#':>4}  {'stage':<{width}}  {'kind':<8}  {'steps':>7}  {'devices':>7}  reused"]
    for i, p in enumerate(planned, 1):
        steps = str(p.steps) if p.steps else "-"
        lines.append(
            f"  {i:>4}  {p.stage.name:<{width}}  {p.kind:<8}  {steps:>7}  {p.devices:>7}  {'yes' if p.reused else 'no'}"
        )
    lines.append("steps per kind (to run / all), device-hours of the steps to run:")
    total, missing = 0.0, []
    for kind in TRAINING_KINDS:
        of_kind = [p for p in planned if p.kind == kind]
        if not of_kind:
            continue
        todo = sum(p.steps * p.devices for p in of_kind if not p.reused)
        every = sum(p.steps * p.devices for p in of_kind)
        head = f"  {kind:<8}  {len(of_kind):>4} stages  {todo:>8} / {every:<8} device-steps"
        if kind in times:
            seconds, where = times[kind]
            hours = todo * seconds / 3600
            total += hours
            lines.append(f"{head}  × {seconds:.3g} s/step = {hours:.2f} device-hours  ({where})")
        elif todo:
            missing.append(kind)
            lines.append(f"{head}  (no step time: study.plan.seconds_per_step.{kind}=S or study.plan.measure=true)")
        else:
            lines.append(head)
    for kind in ("predict", "evaluate"):
        count = sum(p.kind == kind for p in planned)
        lines.append(f"  {kind:<8}  {count:>4} stages  (no training steps; not estimated)")
    unknown = f" (without {', '.join(missing)}: no step time)" if missing else ""
    lines.append(f"total: {total:.2f} device-hours of training steps to run{unknown}")
    return lines


@dataclass
class _Subject:
    """A subject the demo cohort would have (only its key and group matter to the cross-fitted folds)."""

    key: str
    group: str


def _planned_cohort(cfg: DictConfig) -> list[_Subject]:
    n = {"control": int(cfg.demo.n_controls), "patient": int(cfg.demo.n_patients)}
    return [_Subject(f"sub-{group}{i:03d}", group) for group, count in n.items() for i in range(count)]


def plan(cfg: DictConfig) -> list[Planned]:
    """Print the plan of the study of ``cfg`` (module docstring) and return it; runs no stage.

    Raises:
        DataError: ``data.root`` is missing and the study would not simulate it.
        ConfigError: a bad study setting, as the study itself would report it.
    """
    simulated = needs_demo(cfg)
    records: Sequence[Any]
    if simulated:
        if cfg.study.plan.get("measure"):
            raise DataError(cfg.data.root, "study.plan.measure needs the data: simulate it first (bssl demo-data)")
        records, fingerprint = _planned_cohort(cfg), "not simulated yet"
    else:
        records = load_records(cfg.data)
        fingerprint = dataset_fingerprint(records)
    runner = Plan()
    study = Study(cfg, fingerprint, runner)
    study.check_design()
    study.all_stages(records)
    if not runner.stages:
        raise ConfigError("study", "the study has no stages")
    times = step_times(cfg, runner.stages)
    head = f"study plan (preset {cfg.study.preset}, launcher {cfg.study.get('launcher', 'inline')}): "
    head += f"{len(runner.stages)} stages, {runner.reused} reused"
    if simulated:
        head += f"; {cfg.data.root} is missing: the study would first simulate the demo cohort there"
    print("\n".join([head, *table(runner.stages, times)]))
    return runner.stages
