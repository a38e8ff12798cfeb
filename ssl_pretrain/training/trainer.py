"""The Lightning ``Trainer`` every training command uses, built from the ``trainer`` config group.

Keys (configs/trainer/default.yaml): ``accelerator`` (auto | cpu | gpu), ``devices``, ``num_nodes``,
``strategy`` (auto | ddp | ddp_spawn | …), ``sync_batchnorm``, ``find_unused_parameters`` (ddp),
``precision`` (auto | 32-true | bf16-mixed | 16-mixed | …; ``auto`` = bf16-mixed on CUDA GPUs that support
it, 16-mixed on older ones, 32-true on CPU), ``max_steps``, ``max_epochs``, ``val_check_interval``,
``check_val_every_n_epoch``, ``limit_val_batches``, ``num_sanity_val_steps``, ``gradient_clip_val``,
``accumulate_grad_batches``, ``log_every_n_steps``, ``deterministic``, ``benchmark``,
``checkpoint_every_n_steps``, ``enable_progress_bar``.

What a run directory gets: ``checkpoints/last.ckpt`` (every ``checkpoint_every_n_steps`` optimiser steps and
when training ends, written atomically, with optimiser, scheduler, loop and random states and the sampler's
position inside its epoch, so a resume continues exactly also from a mid-epoch checkpoint),
``checkpoints/best.ckpt`` when a metric is monitored, ``metrics.csv`` and ``hparams.yaml`` (training curves
incl. the learning rate, and the resolved config; in ``log_dir``; always written: reports and convergence
checks read them).

More loggers come from the ``logger`` config group (``configs/logger/``; ``logger=csv`` adds none,
``logger=tensorboard|wandb|mlflow`` or a list such as ``logger=[tensorboard,mlflow]`` add those): every
entry of ``cfg.logger`` with a ``_target_`` is built with ``hydra.utils.instantiate`` (as in
lightning-hydra-template), and every logger is given the resolved config as its hyperparameters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import DictConfig, OmegaConf

from ssl_pretrain.errors import ConfigError
from ssl_pretrain.training.callbacks import (
    AtomicCheckpointIO,
    RNGStateCallback,
    RunCheckpoint,
    SamplerPositionCallback,
)
from ssl_pretrain.training.logger import MetricsResumeCallback, ResumableCSVLogger

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BEST_CHECKPOINT = "best.ckpt"
_ADDED_CALLBACKS: list[Callback] = []  # see added_callbacks


@contextmanager
def added_callbacks(*callbacks: Callback) -> Iterator[None]:
    """Every trainer :func:`build_trainer` makes while this is open also gets ``callbacks`` (e.g. the study
    planner's step timer, evaluation/study/plan.py, around a command's ``run(cfg)``)."""
    _ADDED_CALLBACKS.extend(callbacks)
    try:
        yield
    finally:
        del _ADDED_CALLBACKS[len(_ADDED_CALLBACKS) - len(callbacks) :]


PRECISION_ALIASES = {"32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed", "64": "64-true"}
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")


def resolve_accelerator(accelerator: str) -> str:
    """``auto`` -> ``gpu`` when CUDA is available, else ``cpu``; ``gpu``/``cuda`` without CUDA is a ConfigError."""
    name = str(accelerator).lower()
    if name == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "trainer.accelerator", f"{name} requested but CUDA is not available; use trainer=cpu (or preset=cpu)"
            )
        return "gpu"
    if name == "cpu":
        return "cpu"
    raise ConfigError("trainer.accelerator", f"unknown accelerator {accelerator!r}; choose auto, cpu or gpu")


def resolve_precision(precision: str | int, accelerator: str) -> str:
    """The Lightning precision string for ``trainer.precision`` on ``accelerator``.

    ``auto`` -> ``bf16-mixed`` on a CUDA GPU with bf16 support, ``16-mixed`` on an older CUDA GPU, ``32-true``
    on CPU. ``32``/``16``/``bf16``/``64`` are accepted as the usual aliases.

    Raises:
        ConfigError: an unknown value, or 16-bit floats on CPU.
    """
    device = resolve_accelerator(accelerator)
    value = str(precision).lower()
    if value == "auto":
        if device == "gpu":
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "32-true"
    value = PRECISION_ALIASES.get(value, value)
    if value not in PRECISIONS:
        raise ConfigError("trainer.precision", f"unknown precision {precision!r}; choose auto or one of {PRECISIONS}")
    if device == "cpu" and value.startswith("16"):
        raise ConfigError("trainer.precision", f"{value} needs a CUDA GPU; on CPU use 32-true or bf16-mixed")
    return value


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python, NumPy, torch (and DataLoader workers) through Lightning; optionally deterministic kernels.

    Args:
        seed: the run's seed.
        deterministic: also select deterministic algorithms (warning, not failing, on ops that have none)
            and the cuBLAS workspace setting they need; ``trainer.deterministic`` does the same inside fit.

    Returns:
        The seed.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return pl.seed_everything(int(seed), workers=True, verbose=False)


def _key(cfg: Mapping[str, Any], name: str) -> Any:
    if name not in cfg:
        raise ConfigError(f"trainer.{name}", "missing from the trainer config (see configs/trainer/default.yaml)")
    return cfg[name]


def _strategy(t: Mapping[str, Any]) -> str | DDPStrategy:
    name = str(_key(t, "strategy"))
    if name == "ddp":
        return DDPStrategy(find_unused_parameters=bool(t.get("find_unused_parameters", False)))
    return name


def _deterministic(value: Any) -> Any:
    if value in (True, False, "warn"):
        return value
    raise ConfigError("trainer.deterministic", f"must be true, false or warn, got {value!r}")


def _extra_loggers(spec: Mapping[str, Any] | None) -> list[Logger]:
    """The loggers of the ``logger`` config group (each entry with a ``_target_``), built by Hydra."""
    loggers: list[Logger] = []
    for name, entry in (spec or {}).items():
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            continue
        try:
            logger = instantiate(entry)
        except Exception as err:  # a missing package (wandb, mlflow, tensorboard) or a bad argument
            cause = err.__cause__ or err
            raise ConfigError(
                f"logger.{name}",
                f"cannot build {entry['_target_']}: {type(cause).__name__}: {str(cause).splitlines()[0][:200]} "
                "(is its package installed? e.g. pip install tensorboard | wandb | mlflow)",
            ) from err
        if not isinstance(logger, Logger):
            raise ConfigError(f"logger.{name}", f"{entry['_target_']} is not a Lightning Logger")
        loggers.append(logger)
    return loggers


def hyperparameters(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run config as plain nested values (resolved where it can be), without Hydra's own settings."""
    if isinstance(cfg, DictConfig):
        try:
            plain = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # e.g. ${hydra:…} outside a Hydra run
            plain = OmegaConf.to_container(cfg, resolve=False)
    else:
        plain = dict(cfg)
    return {str(k): v for k, v in dict(plain).items() if k != "hydra"}  # type: ignore[union-attr,arg-type]


def _loggers(cfg: Mapping[str, Any], log_dir: Path, flush_every: int) -> list[Logger]:
    loggers: list[Logger] = [ResumableCSVLogger(log_dir, flush_logs_every_n_steps=flush_every)]
    loggers += _extra_loggers(cfg.get("logger"))
    params = hyperparameters(cfg)
    for logger in loggers:
        logger.log_hyperparams(params)
    return loggers


def build_trainer(
    cfg: Mapping[str, Any],
    output_dir: str | Path,
    *,
    monitor: str | None = None,
    monitor_mode: str = "min",
    log_dir: str | Path | None = None,
    extra_callbacks: Iterable[Callback] = (),
) -> pl.Trainer:
    """A Lightning ``Trainer`` from ``cfg.trainer`` writing into ``output_dir``.

    Args:
        cfg: the run config (its ``trainer`` group is read).
        output_dir: the run directory (``checkpoints/`` goes there).
        monitor: a logged metric to keep the best checkpoint of (``checkpoints/best.ckpt``), e.g. ``val/dice``.
        monitor_mode: ``min`` or ``max`` for ``monitor``.
        log_dir: where ``metrics.csv`` goes (default ``output_dir``; fine-tuning, whose ``metrics.csv`` is the
            per-subject table, passes a subdirectory).
        extra_callbacks: more callbacks (early stopping, plots, …).

    Raises:
        ConfigError: naming the ``trainer.*`` key that is missing or invalid.
    """
    t = cfg["trainer"]
    out = Path(output_dir)
    accelerator = resolve_accelerator(_key(t, "accelerator"))
    precision = resolve_precision(_key(t, "precision"), accelerator)
    every = _key(t, "checkpoint_every_n_steps")
    if not isinstance(every, int) or every < 1:
        raise ConfigError("trainer.checkpoint_every_n_steps", f"must be a positive int, got {every!r}")
    if monitor_mode not in ("min", "max"):
        raise ValueError(f"monitor_mode must be min or max, got {monitor_mode!r}")
    log_every = int(_key(t, "log_every_n_steps"))
    callbacks: list[Callback] = [
        RunCheckpoint(out / CHECKPOINT_DIR, every),
        RNGStateCallback(),
        SamplerPositionCallback(),
        MetricsResumeCallback(),
        LearningRateMonitor(logging_interval="step"),
    ]
    if monitor is not None:
        callbacks.append(
            ModelCheckpoint(
                dirpath=out / CHECKPOINT_DIR,
                filename=Path(BEST_CHECKPOINT).stem,
                monitor=monitor,
                mode=monitor_mode,
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    callbacks += [*extra_callbacks, *_ADDED_CALLBACKS]
    max_epochs = t.get("max_epochs")
    log.info("trainer: %s, %s precision, strategy %s", accelerator, precision, t["strategy"])
    return pl.Trainer(
        accelerator=accelerator,
        devices=_key(t, "devices"),
        num_nodes=int(_key(t, "num_nodes")),
        strategy=_strategy(t),
        sync_batchnorm=bool(t.get("sync_batchnorm", False)),
        precision=precision,  # type: ignore[arg-type]
        max_steps=int(_key(t, "max_steps")),
        max_epochs=None if max_epochs is None else int(max_epochs),
        val_check_interval=t.get("val_check_interval"),
        check_val_every_n_epoch=t.get("check_val_every_n_epoch", 1),
        limit_val_batches=t.get("limit_val_batches"),
        num_sanity_val_steps=t.get("num_sanity_val_steps"),
        gradient_clip_val=t.get("gradient_clip_val"),
        accumulate_grad_batches=int(t.get("accumulate_grad_batches", 1)),
        log_every_n_steps=log_every,
        deterministic=_deterministic(_key(t, "deterministic")),
        benchmark=t.get("benchmark"),
        enable_progress_bar=bool(_key(t, "enable_progress_bar")),
        default_root_dir=out,
        logger=_loggers(cfg, Path(log_dir) if log_dir is not None else out, max(1, log_every)),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )
