"""Checkpointing pieces that make interrupted runs resumable: atomic writes, a final save, RNG states,
the sampler's position inside an epoch.

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
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

from ssl_pretrain.atomic import file_mode

RNG_KEY = "bssl_rng_states"
POSITION_KEY = "bssl_sampler_position"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save checkpoints to a temporary file in the target's directory, fsync, then ``os.replace`` it.

    A crash at any point leaves either the previous checkpoint or the new one, never a partial file; the
    temporary file of a process killed mid-write is removed by the next save to the same target (one
    process writes a run's checkpoints: the run directory is locked, see :mod:`ssl_pretrain.run_dir`).
    Local filesystems only (run directories are local or mounted paths).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint does not take storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f".{target.name}.*.tmp"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, file_mode())  # as the umask says (mkstemp made it 0600)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every N optimiser steps (Lightning's ``ModelCheckpoint``) **and** when training ends.

    Lightning's own end-of-training save only happens if no checkpoint was written before, so a run of 7
    steps that checkpoints every 5 would end with step 5 on disk; this one writes step 7, through the
    public ``Trainer.save_checkpoint`` (so through :class:`AtomicCheckpointIO`, on every rank as DDP needs).
    A run whose last step was just saved is saved once more at the end (same state; the cost of staying
    off ``ModelCheckpoint``'s private bookkeeping).
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int) -> None:
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,
        )
        self.final_path = Path(dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(trainer, "fast_dev_run", False) or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.final_path, weights_only=False)  # the whole state, to resume from
        self.last_model_path = str(self.final_path)


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


def resumes_mid_epoch(checkpoint: dict[str, Any]) -> bool:
    """Whether ``checkpoint`` was taken inside an epoch (some, not all, of the epoch's batches done)."""
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
        return int(progress["current"]["ready"]) > 0 and not bool(progress["is_last_batch"])
    except (KeyError, TypeError, ValueError):
        return False


class RNGStateCallback(Callback):
    """Store every rank's torch/numpy/python (and CUDA) random states in checkpoints and restore them on resume.

    With them (and :class:`SamplerPositionCallback`), a resumed run draws the same shuffles, augmentations,
    masks and dropout as the uninterrupted run (Lightning saves model, optimiser, scheduler and loop state
    but not the global random states). The states are put back where the uninterrupted run stood when it
    saved: from an epoch-boundary checkpoint before the next epoch's data iterator is created (which draws
    from the torch stream, as the uninterrupted run did right after saving), from a mid-epoch checkpoint
    when training starts, after the resumed run created its iterator (the uninterrupted run went straight
    on to the next batch). Under DDP the states of all ranks are gathered; a resume with another world
    size keeps the fresh seeds and warns.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

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
        # Lightning calls this after the model is built and before it creates the training data iterator;
        # the sanity check that may follow runs with isolated random states.
        gathered = checkpoint.get(RNG_KEY)
        if not gathered:
            return
        if len(gathered) != trainer.world_size:
            rank_zero_warn(
                f"checkpoint holds random states of {len(gathered)} processes, this run has {trainer.world_size}: "
                "random streams restart from the seed"
            )
            return
        if resumes_mid_epoch(checkpoint):
            self._pending = gathered[trainer.global_rank]
        else:
            _restore(gathered[trainer.global_rank])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._pending is not None:
            _restore(self._pending)
            self._pending = None


class SamplerPositionCallback(Callback):
    """Record in checkpoints how far into its epoch the training sampler was, and resume there.

    Saved: ``{"epoch", "items"}`` with ``items`` = batches done in the epoch x batch size (per rank: every
    rank has done as many batches, and :class:`~ssl_pretrain.data.sampler.EpochSampler` splits the epoch
    between ranks itself). On load, a training dataset with a
    ``resume_at(epoch, items)`` method (:class:`~ssl_pretrain.data.sampler.PatchDataset`, found as the
    datamodule's ``train_dataset`` or as the dataset of the loader given to ``fit``) is told where the
    resumed run continues: inside the epoch, so that it sees the batches the uninterrupted run saw
    (Lightning alone restarts the epoch's iterator from its first batch), or at the start of the next
    epoch after an epoch-boundary checkpoint (DataLoader workers prefetch before Lightning's
    ``set_epoch``). Other datasets are left alone.
    """

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        loader = trainer.train_dataloader
        batch_size = getattr(loader, "batch_size", None)
        if not isinstance(batch_size, int):
            return
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.ready)
        checkpoint[POSITION_KEY] = {"epoch": int(trainer.current_epoch), "items": done * batch_size}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        position = checkpoint.get(POSITION_KEY)
        resume_at = getattr(_train_dataset(trainer), "resume_at", None)
        if not position or not callable(resume_at):
            return
        epoch, items = int(position["epoch"]), int(position["items"])
        if not resumes_mid_epoch(checkpoint):  # the epoch was finished: the next one starts at its first item
            epoch, items = (epoch + 1 if items > 0 else epoch), 0
        resume_at(epoch, items)


def _train_dataset(trainer: pl.Trainer) -> Any:
    """The training dataset, from the datamodule or from the loader given to ``fit`` (before it is set up)."""
    dataset = getattr(getattr(trainer, "datamodule", None), "train_dataset", None)
    if dataset is None:  # fit(train_dataloaders=…): Lightning keeps the loader in the fit loop's data source
        source = getattr(getattr(trainer.fit_loop, "_data_source", None), "instance", None)
        dataset = getattr(source, "dataset", None)
    return dataset
