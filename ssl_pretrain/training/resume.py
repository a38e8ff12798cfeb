"""``resume=auto|PATH``: which Lightning checkpoint a run continues from.

Rule for ``resume=auto``:

1. this run directory's own ``checkpoints/last.ckpt`` (a re-run with the same ``hydra.run.dir``, or a
   requeued cluster job);
2. otherwise the newest (by modification time) ``checkpoints/last.ckpt`` of another run of the **same
   command with the same config**: any directory under ``<paths.runs_dir>/<task_name>/`` (single runs and
   multirun jobs alike; the run directory's parent when those keys are absent) whose ``config.yaml`` equals
   this run's config once the keys in :data:`RESUME_IGNORED_KEYS` are removed (where the run is written,
   how long it trains, how it logs). Extending ``trainer.max_steps`` therefore continues a finished run.
   Runs still in progress (another process holds their run lock, :func:`ssl_pretrain.run_dir.is_live`)
   are skipped: two jobs started at once never continue each other's checkpoints;
3. otherwise nothing: training starts fresh.

A checkpoint that cannot be read (truncated, not a zip archive, needs unsafe unpickling, lacks the
training state) is never trusted: with ``resume=PATH`` it is a :class:`CheckpointError`; with
``resume=auto`` it is skipped with a warning and the next candidate is tried.

``resume=PATH`` takes a ``.ckpt`` file or a run directory (its ``checkpoints/last.ckpt``).
"""

from __future__ import annotations

import copy
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ssl_pretrain.errors import CheckpointError
from ssl_pretrain.run_dir import is_live
from ssl_pretrain.training.trainer import CHECKPOINT_DIR, LAST_CHECKPOINT

log = logging.getLogger(__name__)

RESUME_IGNORED_KEYS = (
    "resume",
    "paths",
    "hydra",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "data.num_workers",
    "method._target_",  # configs written before methods named their class; method.name still tells them apart
)
CONFIG_FILES = ("config.yaml", ".hydra/config.yaml")
OFF_VALUES = (None, False, "", "none", "null", "false", "never")
REQUIRED_STATE = ("state_dict", "optimizer_states", "loops", "global_step")


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a resumable Lightning checkpoint, or ``None`` when it is one.

    The file is loaded with ``weights_only=True`` (the LightningModule's hyperparameters must therefore be
    plain containers, not OmegaConf objects) and must hold the model, optimiser and loop state.
    """
    path = Path(path)
    if not path.is_file():
        return "does not exist"
    if not zipfile.is_zipfile(path):
        return "not a checkpoint or truncated (not the zip archive torch.save writes)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # damaged archives raise RuntimeError, KeyError, EOFError, UnpicklingError, …
        return f"cannot be read with weights_only=True ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a Lightning checkpoint"
    missing = [k for k in REQUIRED_STATE if k not in state]
    if missing:
        return f"not a training checkpoint: no {', '.join(missing)} (weights files resume nothing; use init=)"
    return None


def _drop(container: dict[str, Any], dotted: str) -> None:
    """Remove ``a.b.c`` from nested dicts, and parents it leaves empty."""
    head, _, rest = dotted.partition(".")
    if head not in container:
        return
    if not rest:
        del container[head]
    elif isinstance(container[head], dict):
        _drop(container[head], rest)
        if not container[head]:
            del container[head]


def comparable_config(cfg: Mapping[str, Any] | DictConfig) -> dict[str, Any] | None:
    """The resolved config without :data:`RESUME_IGNORED_KEYS` (``None`` if it cannot be resolved)."""
    if not isinstance(cfg, DictConfig):
        container = copy.deepcopy(dict(cfg))
    else:
        try:
            container = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
        except Exception:  # e.g. ${hydra:…} outside a Hydra run: resolve what is left without the ignored keys
            raw = OmegaConf.to_container(cfg, resolve=False)
            for key in RESUME_IGNORED_KEYS:
                _drop(raw, key)  # type: ignore[arg-type]
            try:
                container = OmegaConf.to_container(OmegaConf.create(raw), resolve=True)  # type: ignore[assignment]
            except Exception:
                return None
    for key in RESUME_IGNORED_KEYS:
        _drop(container, key)  # type: ignore[arg-type]
    return container  # type: ignore[return-value]


def _run_config(run_dir: Path) -> dict[str, Any] | None:
    for name in CONFIG_FILES:
        path = run_dir / name
        if path.is_file():
            try:
                loaded = OmegaConf.load(path)
                return comparable_config(loaded) if isinstance(loaded, DictConfig) else None
            except Exception:
                return None
    return None


def _search_root(output_dir: Path, cfg: Mapping[str, Any] | None) -> Path:
    if cfg is not None:
        try:
            runs_dir, task = cfg["paths"]["runs_dir"], cfg["task_name"]
        except (KeyError, TypeError, AttributeError):
            runs_dir = task = None
        if runs_dir and task and (Path(runs_dir) / task).is_dir():
            return Path(runs_dir) / task
    return output_dir.parent


def _last_in(path: Path) -> Path:
    if path.is_dir():
        for candidate in (path / CHECKPOINT_DIR / LAST_CHECKPOINT, path / LAST_CHECKPOINT):
            if candidate.is_file():
                return candidate
        return path / CHECKPOINT_DIR / LAST_CHECKPOINT
    return path


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def resolve_resume(
    resume: str | Path | None, output_dir: str | Path, cfg: Mapping[str, Any] | DictConfig | None = None
) -> str | None:
    """The checkpoint to pass to ``trainer.fit(ckpt_path=...)``, or ``None`` to start fresh.

    Args:
        resume: ``None``/``"none"`` (start fresh), ``"auto"`` (see the module docstring), or a path to a
            ``.ckpt`` file or a run directory.
        output_dir: this run's directory.
        cfg: this run's config, to find earlier runs with the same config (default: the ``config.yaml``
            already written in ``output_dir``; without either only ``output_dir`` itself is searched).

    Raises:
        CheckpointError: an explicit path that does not exist or is not a valid checkpoint.
    """
    if resume in OFF_VALUES or (isinstance(resume, str) and resume.lower() in OFF_VALUES):
        return None
    out = Path(output_dir)
    if str(resume).lower() != "auto":
        path = _last_in(Path(str(resume)))
        problem = checkpoint_problem(path)
        if problem:
            raise CheckpointError(path, f"cannot resume from it: {problem}")
        log.info("resuming from %s", path)
        return str(path)

    own = out / CHECKPOINT_DIR / LAST_CHECKPOINT
    if own.is_file():
        problem = checkpoint_problem(own)
        if problem is None:
            log.info("resume=auto: continuing this run from %s", own)
            return str(own)
        log.warning("resume=auto: skipping %s: %s", own, problem)
    current = comparable_config(cfg) if cfg is not None else _run_config(out)
    if current is None:
        log.info("resume=auto: no config to match other runs against; starting fresh")
        return None
    root = _search_root(out, cfg)
    candidates = [
        p
        for p in root.rglob(LAST_CHECKPOINT)
        if p.parent.name == CHECKPOINT_DIR and p.parent.parent.resolve() != out.resolve()
    ]
    for path in sorted(candidates, key=_mtime, reverse=True):
        if _run_config(path.parent.parent) != current:
            continue
        if is_live(path.parent.parent):
            log.info("resume=auto: skipping %s: that run is still in progress", path.parent.parent)
            continue
        problem = checkpoint_problem(path)
        if problem:
            log.warning("resume=auto: skipping %s: %s", path, problem)
            continue
        log.info("resume=auto: continuing the run in %s", path.parent.parent)
        return str(path)
    log.info("resume=auto: no earlier run of this config under %s; starting fresh", root)
    return None
