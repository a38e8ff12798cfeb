"""Atomic writes leave files with the mode the umask gives (``0o666 & ~umask``), checkpoints included."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_pretrain.atomic import atomic_path, current_umask, dir_mode, file_mode, write_text_atomic
from ssl_pretrain.data.manifest import SubjectRecord, write_manifest
from ssl_pretrain.models.checkpoint import save_weights
from ssl_pretrain.run_dir import run_context
from ssl_pretrain.training.callbacks import AtomicCheckpointIO
from ssl_pretrain.training.logger import ResumableCSVLogger


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Run the test under this umask (the process's own is restored after)."""
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_current_umask_and_modes(umask: int) -> None:
    assert current_umask() == umask
    assert file_mode() == 0o666 & ~umask and dir_mode() == 0o777 & ~umask


def test_every_atomic_writer_gives_the_umask_mode(tmp_path: Path, umask: int) -> None:
    expected = 0o666 & ~umask  # 0644 under 022 (group- and world-readable), 0600 under 077
    write_text_atomic(tmp_path / "a.txt", "x")
    with atomic_path(tmp_path / "b.nii.gz", suffix=".nii.gz") as tmp:
        tmp.unlink()  # a writer that replaces the temporary file (as nibabel and savefig may)
        tmp.write_bytes(b"y")
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "checkpoints" / "last.ckpt")
    save_weights(nn.Linear(2, 2), tmp_path / "model.pt", {"modalities": ["T1w"]})
    write_manifest([SubjectRecord(subject="01", images={"T1w": tmp_path / "a.txt"})], tmp_path / "manifest.tsv")
    logger = ResumableCSVLogger(tmp_path / "log")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams({"seed": 0})
    logger.save()
    logger.drop_rows_from(5)  # rewrites metrics.csv atomically, as a resumed run does
    cfg = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}})
    with run_context(cfg, "predict"):
        pass
    written = [
        "a.txt",
        "b.nii.gz",
        "checkpoints/last.ckpt",
        "model.pt",
        "model.json",
        "manifest.tsv",
        "log/metrics.csv",
        "log/hparams.yaml",
        "run/config.yaml",
        "run/run.json",
        "run/run.log",
    ]
    assert {name: oct(_mode(tmp_path / name)) for name in written} == {name: oct(expected) for name in written}
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True) == {"state_dict": {}}
