"""What the reliability tests share: tiny command settings and a way to run ``bssl`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
KILLED = -9  # returncode of a process ended by SIGKILL

# A 2-level U-Net on 16³ patches; 6 patches of 2 per epoch = 3 optimiser steps per epoch.
PRETRAIN = [
    "model.channels=[8,16]",
    "model.strides=[1,2]",
    "model.num_res_units=[1,1]",
    "model.subunits=1",
    "data.patch_size=16",
    "data.batch_size=2",
    "data.patches_per_epoch=6",
    "data.val_patches=2",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "method=mae",
    "method.mask_block=4",
]
# 6 steps, checkpoints at steps 2, 4 and 6: steps 2 and 4 fall inside an epoch.
PRETRAIN_STEPS = ["trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2"]
# The same network for fine-tuning; 4 patches of 2 per epoch = 2 optimiser steps per epoch.
FINETUNE = [
    "model.channels=[8,16]",
    "model.strides=[1,2]",
    "model.num_res_units=1",
    "model.subunits=1",
    "data.patch_size=16",
    "data.batch_size=2",
    "data.patches_per_epoch=4",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "inference.overlap=0.0",
    "eval.hd95=false",
    "eval.n_overlays=1",
]


def data_overrides(root: Path, cache: Path, runs: Path) -> list[str]:
    """Where the data, the cache and the runs are."""
    return [f"data.root={root}", f"paths.cache_dir={cache}", f"paths.runs_dir={runs}"]


def bssl(
    where: str, command: str, overrides: Sequence[str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``bssl COMMAND OVERRIDES`` in a fresh interpreter, killed at ``where`` (see :mod:`.kill_switch`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "tests.reliability.kill_switch", where, command, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_bssl(command: str, overrides: Sequence[str], cwd: Path) -> subprocess.Popen:
    """Start ``bssl COMMAND OVERRIDES`` in a fresh interpreter without waiting for it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.kill_switch", "none", command, *overrides],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread (as ``OMP_NUM_THREADS=1`` gives the subprocesses), deterministic-algorithm flags restored.

    Results are compared bit for bit with runs in subprocesses, so the reductions must run in the same order.
    """
    threads = torch.get_num_threads()
    flags = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
