"""The training-metrics CSV (``metrics.csv``), kept across resumes, on Lightning's public ``Logger`` API.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` in its directory (and warns whenever the
directory is not empty, which a run directory never is); keeping it would mean overriding its private
``_check_log_dir_exists``. :class:`ResumableCSVLogger` is therefore a small logger of its own, built only
on the public :class:`lightning.pytorch.loggers.Logger` interface (``log_metrics``, ``log_hyperparams``,
``save``, ``finalize``). A run resumed in the same directory drops the rows at and after the step it
resumes from (they were logged after the checkpoint and are about to be logged again;
:class:`MetricsResumeCallback` does this when training starts) and appends the new ones, so the file
holds one continuous curve. Hyperparameters go to ``hparams.yaml`` beside it.

The file has Lightning's layout: one column per metric (sorted) plus ``step``; a row per logging step;
a metric that first appears later rewrites the file with the wider header (atomically).
"""

from __future__ import annotations

import csv
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import yaml
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from ssl_pretrain.atomic import atomic_path, write_text_atomic

METRICS_FILE = "metrics.csv"
HPARAMS_FILE = "hparams.yaml"


def _number(value: Any) -> Any:
    """A plain Python value for a logged metric (tensors and numpy scalars become floats/ints)."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _plain(value: Any) -> Any:
    """``value`` as YAML-safe builtins (containers recursively, anything else as its string)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    value = _number(value)
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


class ResumableCSVLogger(Logger):
    """Write ``<log_dir>/metrics.csv`` (and ``hparams.yaml``) and keep it on resume.

    Args:
        log_dir: directory of ``metrics.csv`` (created if needed).
        flush_logs_every_n_steps: rows are written to disk every this many steps (and at the end).
    """

    def __init__(self, log_dir: str | Path, flush_logs_every_n_steps: int = 50) -> None:
        super().__init__()
        self._dir = Path(log_dir)
        self._flush_every = max(1, int(flush_logs_every_n_steps))
        self._rows: list[dict[str, Any]] = []
        self._hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> str:
        return ""

    @property
    def log_dir(self) -> str:
        return str(self._dir)

    @property
    def save_dir(self) -> str:
        return str(self._dir)

    @property
    def metrics_file_path(self) -> Path:
        """``<log_dir>/metrics.csv``."""
        return self._dir / METRICS_FILE

    @property
    def experiment(self) -> ResumableCSVLogger:
        """This logger itself (it has no separate experiment object)."""
        return self

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Merge ``params`` into ``hparams.yaml`` (written atomically)."""
        values = vars(params) if isinstance(params, Namespace) else dict(params or {})
        self._hparams.update(_plain(values))
        write_text_atomic(self._dir / HPARAMS_FILE, yaml.safe_dump(self._hparams, sort_keys=False))

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer one row (``step`` = the global step); flush every ``flush_logs_every_n_steps`` steps."""
        row = {k: _number(v) for k, v in metrics.items()}
        row["step"] = len(self._rows) if step is None else int(step)
        self._rows.append(row)
        if (row["step"] + 1) % self._flush_every == 0:
            self.save()

    def _header(self) -> list[str] | None:
        """The column names of ``metrics.csv`` on disk, or ``None`` when there is no file."""
        if not self.metrics_file_path.is_file():
            return None
        with self.metrics_file_path.open(newline="") as fh:
            return list(csv.DictReader(fh).fieldnames or [])

    @rank_zero_only
    def save(self) -> None:
        """Append the buffered rows to ``metrics.csv`` (rewriting it when new metrics widen the header)."""
        if not self._rows:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        old = self._header()
        keys = sorted(set(old or []).union(*self._rows))
        if old is not None and keys != old:
            with self.metrics_file_path.open(newline="") as fh:
                kept = list(csv.DictReader(fh))
            self._write_all(keys, kept + self._rows)
        else:
            with self.metrics_file_path.open("a" if old is not None else "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=keys)
                if old is None:
                    writer.writeheader()
                writer.writerows(self._rows)
        self._rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write what is still buffered when training ends (``status``: success, failed, …)."""
        self.save()

    def _write_all(self, keys: list[str], rows: list[dict[str, Any]]) -> None:
        with atomic_path(self.metrics_file_path, suffix=".tmp") as tmp, tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    def drop_rows_from(self, first_step: int) -> None:
        """Remove rows logged at ``step >= first_step`` from ``metrics.csv`` (atomically)."""
        keys = self._header()
        if keys is None:
            return
        with self.metrics_file_path.open(newline="") as fh:
            rows = [
                r for r in csv.DictReader(fh) if r.get("step") not in (None, "") and int(float(r["step"])) < first_step
            ]
        self._write_all(keys, rows)


class MetricsResumeCallback(Callback):
    """When a resumed run starts, drop the rows its :class:`ResumableCSVLogger` holds from the resumed step on."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.drop_rows_from(trainer.global_step)
