"""Where ``bssl study`` runs its stages (``study.launcher``): in this process, or as jobs through submitit, in waves.

* ``inline`` (default): each stage runs in this process as soon as it is composed (:class:`Inline`).
* ``local`` / ``slurm``: stages run as jobs of submitit's local executor (processes on this machine) or of SLURM
  (:class:`Jobs`), one job per stage, with the resources of its kind (``study.slurm.<kind>``).

A stage's directory is hashed with its upstream stages' start times (:func:`evaluation.study.stages.compose_stage`),
so a stage can be composed only once the stages it reads have finished. The study composes stages in its usual
order and tells its runner first which stages the next one reads (:meth:`Runner.ready`); :class:`Jobs` queues
stages and, when the next one reads a queued stage, submits the queue as one wave and waits for all of it. The
waves follow the dependencies — pretraining (with the source stages trained from scratch) → source stages → the
target sweep (every hypothesis × k × seed at once) → cross-fitted chains → predict → evaluate — and each holds
every stage whose inputs are ready.

Each job runs :func:`evaluation.study.stages.run_stage` — what the inline path runs — on the stage's config, pickled
as a plain dict, in the stage's directory: a finished stage is reused, a killed one resumes (``resume=auto``),
two studies share a stage through its lock. A job that reaches its time limit or is pre-empted is requeued
(submitit's checkpointing, up to ``max_num_timeout`` times) and resumes from its last checkpoint. A failed job
stops the study, after the rest of its wave, with one line naming the stage and its log.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from evaluation.study.stages import Stage, run_stage
from ssl_pretrain.errors import BsslError, ConfigError
from ssl_pretrain.run_dir import is_complete

log = logging.getLogger(__name__)

LAUNCHERS = ("inline", "local", "slurm")
KINDS = ("pretrain", "source", "target", "predict", "evaluate")  # the stage kinds of study.slurm.<kind>
GENERIC = ("timeout_min", "mem_gb", "nodes", "cpus_per_task", "gpus_per_node", "tasks_per_node", "name")
LOCAL = ("timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node")  # what the local executor uses
CONSTRUCTOR = ("max_num_timeout",)  # submitit takes these when the executor is made, not per job


class JobFailed(BsslError):
    """A stage's job failed; the message names the stage, the job and where its log is."""


class Runner(ABC):
    """Runs the stages a study composes; counts those reused."""

    def __init__(self) -> None:
        self.reused = 0

    @abstractmethod
    def ready(self, after: Sequence[Stage]) -> None:
        """Return once every stage of ``after`` has finished (before a stage that reads them is composed)."""

    @abstractmethod
    def submit(self, stage: Stage, after: Sequence[Stage], position: str) -> None:
        """Run ``stage`` (now or in its wave); ``after``: the stages it reads."""

    @abstractmethod
    def finish(self) -> None:
        """Return once every submitted stage has finished."""


class Inline(Runner):
    """Every stage in this process, when it is submitted (so a stage's inputs are always ready)."""

    def ready(self, after: Sequence[Stage]) -> None:
        return

    def finish(self) -> None:
        return

    def submit(self, stage: Stage, after: Sequence[Stage], position: str) -> None:
        self.reused += run_stage(stage, position)


def job_spec(stage: Stage, position: str) -> dict[str, Any]:
    """What a job needs to run a stage, as plain picklable values."""
    return {
        "name": stage.name,
        "command": stage.command,
        "cfg": OmegaConf.to_container(stage.cfg, resolve=False),
        "struct": bool(OmegaConf.is_struct(stage.cfg)),
        "path": str(stage.path),
        "info": dict(stage.info),
        "position": position,
    }


def stage_of(spec: dict[str, Any]) -> Stage:
    """The stage of a :func:`job_spec` (its config as the study composed it, struct flag included)."""
    cfg = OmegaConf.create(spec["cfg"])
    OmegaConf.set_struct(cfg, spec["struct"])
    return Stage(spec["name"], spec["command"], cfg, Path(spec["path"]), dict(spec["info"]))


class StageJob:
    """A submitit job running one stage; requeued with the same stage on a time-out (it then resumes)."""

    def __call__(self, spec: dict[str, Any]) -> bool:
        import submitit

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        env = submitit.JobEnvironment()
        # DDP: every task trains; rank 0 holds the stage's lock and writes its records
        return run_stage(stage_of(spec), spec["position"], lock=env.global_rank == 0)

    def checkpoint(self, spec: dict[str, Any]) -> Any:
        """Called by submitit before a time-out or pre-emption: requeue the same stage."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, spec)


def resources(cfg: DictConfig, kind: str, stage: Stage) -> dict[str, Any]:
    """A stage's job resources: ``study.slurm.common``, then ``study.slurm.<kind>``, then its trainer's DDP.

    A stage whose trainer runs DDP on ``trainer.devices`` = N devices per node gets N tasks and N GPUs per node
    (one process per GPU, as Lightning expects under SLURM) on ``trainer.num_nodes`` nodes.
    """
    settings = cfg.study.slurm
    if kind not in KINDS:
        raise ValueError(f"unknown stage kind {kind!r}")
    merged: dict[str, Any] = {}
    for part in ("common", kind):
        if settings.get(part) is not None:
            merged.update(cast(dict, OmegaConf.to_container(settings[part], resolve=True)))
    trainer = stage.cfg.get("trainer")
    if trainer is not None and str(trainer.get("strategy")).startswith("ddp"):
        devices = trainer.get("devices")
        if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
            raise ConfigError(
                f"study.overrides ({stage.name})",
                f"trainer.devices={devices!r}: a DDP stage run as a job needs a number of devices per node",
            )
        gpu = str(trainer.get("accelerator")) != "cpu"
        merged.update(tasks_per_node=devices, gpus_per_node=devices if gpu else 0, nodes=int(trainer.num_nodes))
    merged["name"] = f"bssl-{stage.name}"
    return {k: v for k, v in merged.items() if v is not None and v != [] and v != {}}


def executor_parameters(cluster: str, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(constructor kwargs, update_parameters kwargs)`` of a submitit ``AutoExecutor`` for ``cluster``.

    SLURM gets every setting (those submitit does not share between clusters prefixed ``slurm_``). The local
    executor runs one task per job (Lightning starts its own DDP processes there) and uses the time limit, CPUs
    and GPUs only.
    """
    if cluster == "local":
        params = {k: v for k, v in settings.items() if k in LOCAL}
        if params.get("tasks_per_node", 1) > 1:
            params["tasks_per_node"] = 1
        return {}, params
    made = {f"slurm_{k}": v for k, v in settings.items() if k in CONSTRUCTOR}
    params = {k if k in GENERIC else f"slurm_{k}": v for k, v in settings.items() if k not in CONSTRUCTOR}
    return made, params


def _log_of(stage: Stage, job: Any) -> str:
    """The stage's own run.log when it got that far, else the job's stderr."""
    run_log = stage.path / "run.log"
    return str(run_log) if run_log.is_file() else str(job.paths.stderr)


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


class Jobs(Runner):
    """Stages as submitit jobs (``cluster`` ``local`` or ``slurm``), submitted wave by wave (module docstring).

    Attributes:
        waves: the names of the stages of each wave submitted so far, in order.
    """

    def __init__(self, cfg: DictConfig, cluster: str, folder: Path) -> None:
        super().__init__()
        try:
            import submitit
        except ImportError as err:
            raise ConfigError("study.launcher", f"{cluster} needs submitit: pip install -e '.[slurm]' ({err})") from err
        self.submitit = submitit
        self.cfg, self.cluster, self.folder = cfg, cluster, folder
        limit = cfg.study.jobs.get("max_parallel")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise ConfigError("study.jobs.max_parallel", f"expected a positive integer or null, got {limit!r}")
        self.max_parallel: int | None = limit
        self.poll_s = float(cfg.study.jobs.poll_s)
        self.pending: list[tuple[Stage, str]] = []
        self.waves: list[list[str]] = []

    def ready(self, after: Sequence[Stage]) -> None:
        queued = {s.path for s, _ in self.pending}
        if any(s.path in queued for s in after):
            self._wave()

    def submit(self, stage: Stage, after: Sequence[Stage], position: str) -> None:
        if is_complete(stage.path):  # finished stays finished: no job just to find that out
            log.info("study %s: reusing %s (%s)", position, stage.name, stage.path)
            self.reused += 1
            return
        self.pending.append((stage, position))

    def finish(self) -> None:
        self._wave()

    def _submit(self, stage: Stage, position: str) -> Any:
        made, params = executor_parameters(self.cluster, resources(self.cfg, str(stage.info["kind"]), stage))
        executor = self.submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster, **made)
        executor.update_parameters(**params)
        job = executor.submit(StageJob(), job_spec(stage, position))
        log.info("study %s: %s submitted as %s job %s", position, stage.name, self.cluster, job.job_id)
        return job

    def _wave(self) -> None:
        """Submit the queued stages (``study.jobs.max_parallel`` at a time) and wait for every one of them."""
        queue, self.pending = self.pending, []
        if not queue:
            return
        self.waves.append([s.name for s, _ in queue])
        log.info("study: wave %d, %d stages as %s jobs", len(self.waves), len(queue), self.cluster)
        running: list[tuple[Stage, Any]] = []
        failed: list[str] = []
        while queue or running:
            while queue and not failed and (self.max_parallel is None or len(running) < self.max_parallel):
                stage, position = queue.pop(0)
                running.append((stage, self._submit(stage, position)))
            if failed:
                queue = []  # submit nothing more; let what runs finish (it is reused on the next run)
            done = [(s, j) for s, j in running if j.done()]
            if not done:
                time.sleep(self.poll_s)
                continue
            for stage, job in done:
                running.remove((stage, job))
                try:
                    self.reused += bool(job.result())
                except Exception as err:  # submitit's FailedJobError carries the job's traceback
                    failed.append(f"{stage.name} ({self.cluster} job {job.job_id}): {_last_line(err)}; log: "
                                  f"{_log_of(stage, job)}")  # fmt: skip
                    log.error("study: stage %s", failed[-1])
        if failed:
            more = f" (and {len(failed) - 1} more stages of the wave)" if len(failed) > 1 else ""
            raise JobFailed(f"stage {failed[0]}{more}; re-run the study to resume")


def make_runner(cfg: DictConfig, run_dir: Path) -> Runner:
    """The runner ``study.launcher`` names; job logs go to ``<run_dir>/jobs/<job id>/``.

    Raises:
        ConfigError: an unknown launcher, or submitit missing for a job launcher.
    """
    launcher = str(cfg.study.get("launcher", "inline"))
    if launcher not in LAUNCHERS:
        raise ConfigError("study.launcher", f"expected one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if launcher == "inline":
        return Inline()
    return Jobs(cfg, launcher, run_dir / "jobs")
