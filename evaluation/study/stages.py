"""The stages of ``bssl study``: composed like their commands, keyed by their config, reused when finished.

A stage is one command (``pretrain``, ``finetune``, ``predict``, ``evaluate``, ``demo-data``) on a config
composed from ``configs/<command>.yaml`` exactly as ``bssl <command> overrides…`` would, with the study's
``data`` and ``paths`` in place of the command's own. Its run directory is
``<paths.runs_dir>/study/stages/<name>-<hash>/``, where the hash covers the stage's resolved config (minus
paths and resume settings), the dataset fingerprint and the toolkit version. So:

* a stage whose directory holds a complete ``run.json`` is reused, not re-run (same config → same outputs);
* a stage killed half-way is re-run in the same directory with ``resume=auto`` (its last checkpoint);
* a changed setting, dataset or upstream stage gives a new directory: the hash also covers each upstream
  stage's directory and start time, so a stage re-run upstream (after an interruption) is never followed
  by a downstream result computed from its previous outputs;
* two studies sharing ``runs_dir`` take a lock per stage, so one waits for the other instead of both
  writing the same directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

import ssl_pretrain
from ssl_pretrain.commands import COMMANDS
from ssl_pretrain.config import compose_config
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.run_dir import is_complete, read_run_record

log = logging.getLogger(__name__)

# command -> module with run(cfg), as `bssl <command>` runs it
MODULES = {command: module for command, (module, _) in COMMANDS.items() if command != "study"}
RESUMABLE = ("pretrain", "finetune")  # commands with resume=auto (Lightning checkpoints)
HASH_LEN = 10


@dataclass
class Stage:
    """One planned stage of the study.

    Attributes:
        name: readable name, e.g. ``brainstem-ssl_mae-k2-s1``.
        command: the command whose ``run(cfg)`` runs it.
        cfg: its composed config (``paths.output_dir`` set to :attr:`path`).
        path: its run directory.
        info: what the study needs to know about it (hypothesis, k, seed, …).
    """

    name: str
    command: str
    cfg: DictConfig
    path: Path
    info: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """A summary for ``study.json``: name, command, directory, status and seconds from ``run.json``."""
        run = read_run_record(self.path) or {}
        return {
            "name": self.name,
            "command": self.command,
            "path": str(self.path),
            "status": run.get("status", "missing"),
            "seconds": run.get("seconds"),
            **self.info,
        }


def config_hash(cfg: DictConfig, fingerprint: str) -> str:
    """A short hash of what determines a stage's outputs: its config without ``paths``/``resume`` (and
    without ``method._target_``, which ``method.name`` stands for, and without ``eval.test`` at its default
    ``true``, which every run had before the key existed), the dataset fingerprint and the toolkit version."""
    content = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(content, dict)
    content = {k: v for k, v in content.items() if k not in ("paths", "resume")}
    if isinstance(content.get("method"), dict):  # stages hashed before methods named their class stay reused
        content["method"] = {k: v for k, v in content["method"].items() if k != "_target_"}
    if isinstance(content.get("eval"), dict) and content["eval"].get("test") is True:  # runs scored before eval.test
        content["eval"] = {k: v for k, v in content["eval"].items() if k != "test"}
    text = OmegaConf.to_yaml(OmegaConf.create(content)) + f"\n{fingerprint}\n{ssl_pretrain.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def _split_overrides(name: str, overrides: Sequence[str]) -> tuple[list[str], list[Any]]:
    """A stage's overrides as (those Hydra composes, parsed ``data.*`` overrides applied on the study's data).

    Raises:
        ConfigError: an override of ``paths.*`` (a study's stages share its paths) or one that does not parse.
    """
    parser = OverridesParser.create()
    compose: list[str] = []
    data: list[Any] = []
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except Exception as err:  # Hydra's parse error names the override
            raise ConfigError(f"study.overrides ({name})", f"cannot parse {text!r}: {err}") from err
        key = override.key_or_group
        if key in ("paths", "data") or key.startswith("paths."):
            what = "paths" if key.startswith("paths") else "data"
            raise ConfigError(f"study.overrides ({name})", f"{text!r}: a study's stages share its {what}; set it once")
        if key.startswith("data."):
            data.append(override)
        else:
            compose.append(text)
    return compose, data


def _apply_data_overrides(cfg: DictConfig, name: str, overrides: Sequence[Any]) -> None:
    """Apply parsed ``data.*`` overrides on top of the study's data (a stage's own, e.g. a smaller patch)."""
    for override in overrides:
        key = override.key_or_group
        if override.is_delete():
            raise ConfigError(f"study.overrides ({name})", f"~{key}: the study's data keys cannot be deleted")
        if not override.is_add() and OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise ConfigError(key, f"not in the data config (study.overrides ({name}); +{key}=VALUE adds a new key)")
        OmegaConf.update(cfg, key, override.value(), merge=False, force_add=True)


_MISSING = object()


def compose_stage(
    name: str,
    command: str,
    overrides: Sequence[str],
    study: DictConfig,
    fingerprint: str,
    values: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
    after: Sequence[Stage] = (),
) -> Stage:
    """Compose a stage's config and place it in its run directory.

    Args:
        name: the stage's readable name (prefix of its directory).
        command: ``pretrain`` | ``finetune`` | ``predict`` | ``evaluate`` | ``demo-data``.
        overrides: Hydra overrides of ``configs/<command>.yaml`` (groups and values). ``data.*`` overrides
            apply on top of the study's data for this stage only (e.g. ``data.patch_size=24``).
        study: the study's config; its ``data`` (and ``demo``) replace the stage's, its ``paths`` give the
            cache and runs directories.
        fingerprint: the dataset fingerprint (part of the hash).
        values: dotted keys set after composition (paths and lists that do not survive override syntax).
        info: facts about the stage kept in ``study.json``.
        after: the finished stages whose outputs it reads (their identity is part of the hash).

    Raises:
        ConfigError: an override does not compose or names ``paths.*`` (names the stage and the override list).
    """
    to_compose, data_overrides = _split_overrides(name, overrides)
    try:
        cfg = compose_config(command, to_compose)
    except Exception as err:  # Hydra's own errors name the bad key; say which stage list it came from
        raise ConfigError(f"study.overrides ({name})", f"{list(overrides)} does not compose: {err}") from err
    with open_dict(cfg):
        cfg.data = OmegaConf.create(OmegaConf.to_container(study.data, resolve=True))
        _apply_data_overrides(cfg, name, data_overrides)
        if command == "demo-data":
            cfg.demo = OmegaConf.create(OmegaConf.to_container(study.demo, resolve=True))
        for key, value in (values or {}).items():
            OmegaConf.update(cfg, key, value, force_add=True)
        runs_dir = Path(str(study.paths.runs_dir))
        cfg.paths = OmegaConf.create({"runs_dir": str(runs_dir), "cache_dir": str(study.paths.cache_dir)})
        upstream = "".join(f"\n{s.path}@{(read_run_record(s.path) or {}).get('started')}" for s in after)
        path = runs_dir / "study" / "stages" / f"{name}-{config_hash(cfg, fingerprint + upstream)}"
        cfg.paths.output_dir = str(path)
    return Stage(name, command, cfg, path, dict(info or {}))


@contextmanager
def stage_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``.locks/<stage dir name>`` beside it (another study running the stage waits)."""
    locks = path.parent / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / path.name, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_stage(stage: Stage, position: str = "", lock: bool = True) -> bool:
    """Run ``stage`` unless its directory already holds a complete run.

    Args:
        stage: the stage.
        position: its place in the study, for the log (e.g. ``[12]``).
        lock: take the stage's lock; ``False`` only for the DDP ranks other than 0 of a stage's job, whose rank 0
            holds it (they would wait for it forever).

    Returns:
        ``True`` when the finished run was reused, ``False`` when it ran now.
    """
    with stage_lock(stage.path) if lock else nullcontext():
        if is_complete(stage.path):
            log.info("study %s: reusing %s (%s)", position, stage.name, stage.path)
            return True
        if stage.path.exists() and stage.command in RESUMABLE:
            with open_dict(stage.cfg):
                stage.cfg.resume = "auto"
            log.info("study %s: resuming %s in %s", position, stage.name, stage.path)
        else:
            log.info("study %s: running %s -> %s", position, stage.name, stage.path)
        t0 = time.perf_counter()
        importlib.import_module(MODULES[stage.command]).run(stage.cfg)
        log.info("study %s: %s done in %.0f s", position, stage.name, time.perf_counter() - t0)
    return False
