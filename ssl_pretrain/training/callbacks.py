"""Checkpointing pieces that make interrupted runs resumable: atomic writes, a final save, RNG states.

Lightning 2.6 saves checkpoints through ``fsspec`` transactions that write a temporary file in the
system temp directory and then ``shutil.move`` it onto the target; when the temp directory is on another
filesystem than the run (usual on clusters: local ``/tmp``, shared run directory) that move is a copy, and
a job killed during it leaves a truncated ``last.ckpt``. :class:`AtomicCheckpointIO` writes beside the
target instead, fsyncs, and ``os.replace``-s it, which is atomic on POSIX filesystems.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

RNG_KEY = "bssl_rng_states"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save checkpoints to a temporary file in the target's directory, fsync, then ``os.replace`` it.

    A crash at any point leaves either the previous checkpoint or the new one, never a partial file.
    Local filesystems only (run directories are local or mounted paths).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint does not take storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every N optimiser steps (Lightning's ``ModelCheckpoint``) **and** when training ends.

    Lightning's own end-of-training save only happens if no checkpoint was written before, so a run of 7
    steps that checkpoints every 5 would end with step 5 on disk; this one writes step 7.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int) -> None:
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(trainer, "fast_dev_run", False) or trainer.sanity_checking:
            return
        if self._last_global_step_saved != trainer.global_step or not self._last_checkpoint_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _collect() -> dict[str, Any]:
    """This process's random states, in types a ``weights_only=True`` load accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    keys = np.asarray(keys)
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class RNGStateCallback(Callback):
    """Store every rank's torch/numpy/python (and CUDA) random states in checkpoints and restore them on resume.

    With them, a run resumed from a checkpoint taken at an epoch boundary draws the same shuffles,
    augmentations, masks and dropout as the uninterrupted run (Lightning saves model, optimiser, scheduler
    and loop state but not the global random states). From a mid-epoch checkpoint Lightning restarts the
    epoch's data iterator, so only exact epoch-boundary resumes are reproducible: make
    ``trainer.checkpoint_every_n_steps`` a multiple of the steps per epoch where that matters. Under DDP
    the states of all ranks are gathered; a resume with another world size keeps the fresh seeds and warns.
    """

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        states = _collect()
        if torch.distributed.is_available() and torch.distributed.is_initialized() and trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states)
        else:
            gathered = [states]
        checkpoint[RNG_KEY] = gathered

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Lightning calls this after the model is built and before it creates the training data iterator
        # (which draws the shuffle of the epoch the run resumes in), as the uninterrupted run did right
        # after saving; the sanity check in between runs with isolated random states.
        gathered = checkpoint.get(RNG_KEY)
        if not gathered:
            return
        if len(gathered) != trainer.world_size:
            rank_zero_warn(
                f"checkpoint holds random states of {len(gathered)} processes, this run has {trainer.world_size}: "
                "random streams restart from the seed"
            )
            return
        _restore(gathered[trainer.global_rank])
