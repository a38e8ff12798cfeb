"""The training-metrics CSV (``metrics.csv``): Lightning's CSVLogger, kept across resumes.

Lightning's writer deletes an existing ``metrics.csv`` in its directory (and warns whenever the
directory is not empty, which a run directory never is). This one keeps it: a run resumed in the same
directory drops the rows at and after the step it resumes from (they were logged after the checkpoint
and are about to be logged again; :class:`MetricsResumeCallback` does this when training starts) and
appends the new ones, so the file holds one continuous curve.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only


class _KeepingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:  # keep what is there
        path = Path(self.metrics_file_path)
        if path.is_file():
            with path.open(newline="") as fh:
                self.metrics_keys = sorted(csv.DictReader(fh).fieldnames or [])

    def drop_rows_from(self, first_step: int) -> None:
        """Remove rows logged at ``step >= first_step`` from ``metrics.csv`` (atomically)."""
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with path.open(newline="") as fh:
            rows = [
                r for r in csv.DictReader(fh) if r.get("step") not in (None, "") and int(float(r["step"])) < first_step
            ]
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class ResumableCSVLogger(CSVLogger):
    """A :class:`~lightning.pytorch.loggers.CSVLogger` writing ``<log_dir>/metrics.csv`` and keeping it on resume.

    Args:
        log_dir: directory of ``metrics.csv`` (created if needed).
        flush_logs_every_n_steps: how often rows are written to disk.
    """

    def __init__(self, log_dir: str | Path, flush_logs_every_n_steps: int = 50) -> None:
        super().__init__(save_dir=log_dir, name="", version="", flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    @rank_zero_experiment
    def experiment(self) -> _KeepingWriter:
        if not isinstance(self._experiment, _KeepingWriter):
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment  # type: ignore[return-value]

    @rank_zero_only
    def log_hyperparams(self, params: Any = None) -> None:
        """Not written: the run directory's ``config.yaml`` is the record of the settings."""


class MetricsResumeCallback(Callback):
    """When a resumed run starts, drop the rows its :class:`ResumableCSVLogger` holds from the resumed step on."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.experiment.drop_rows_from(trainer.global_step)
