"""Resources through ``bssl``: a full disk or a read-only directory gives one line naming the path and what
to do, leaves nothing half-written; cached volumes stay on disk (memory-mapped), not in RAM.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.datamodule import BrainDataModule
from ssl_pretrain.errors import resource_error
from tests.cli.bssl_runner import assert_one_clear_error, permissions_enforced, run_dirs, run_in_process, run_subprocess
from tests.synthetic import write_synthetic_bids

SHAPE = (16, 20, 16)
PATCH = 16


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid BIDS cohort (read only by these tests)."""
    return write_synthetic_bids(tmp_path_factory.mktemp("resources") / "bids", n_subjects=4, shape=SHAPE)


def _finetune(root: Path, runs: Path, cache: Path) -> list[str]:
    return [
        "finetune",
        f"data.root={root}",
        f"data.patch_size={PATCH}",
        "trainer.max_steps=1",
        f"paths.runs_dir={runs}",
        f"paths.cache_dir={cache}",
    ]


def _refuse_mkdir_under(monkeypatch: pytest.MonkeyPatch, directory: Path, code: int) -> None:
    """Make ``os.mkdir`` fail with ``code`` below ``directory``, as a read-only mount or a foreign owner would."""
    real_mkdir = os.mkdir

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(os.fsdecode(path)).is_relative_to(directory):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


# --- read-only or forbidden directories ----------------------------------------------------------------


@pytest.mark.skipif(not permissions_enforced(), reason="this user (root) writes into a chmod 555 directory anyway")
def test_runs_dir_without_write_permission(cohort: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        result = run_subprocess(_finetune(cohort, locked / "runs", tmp_path / "cache"))
    finally:
        locked.chmod(0o755)
    assert_one_clear_error(result, locked / "runs", "paths.runs_dir=", problem="permission denied")
    assert not any(locked.iterdir())


def test_read_only_runs_dir(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "read-only" / "runs"
    _refuse_mkdir_under(monkeypatch, runs, errno.EROFS)
    result = run_in_process(_finetune(cohort, runs, tmp_path / "cache"), capsys)
    line = assert_one_clear_error(result, runs, "paths.runs_dir=", problem="read-only file system")
    assert "paths.cache_dir" not in line  # the hint names the setting that moves this directory
    assert not runs.exists() and not (tmp_path / "cache").exists()  # it stopped before any work


def test_cache_dir_without_permission(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "shared" / "cache"
    _refuse_mkdir_under(monkeypatch, cache, errno.EACCES)
    result = run_in_process(_finetune(cohort, tmp_path / "runs", cache), capsys)
    line = assert_one_clear_error(result, cache, "paths.cache_dir=", problem="permission denied")
    assert "paths.runs_dir" not in line
    (run,) = run_dirs(tmp_path / "runs", "finetune")
    assert '"status": "failed"' in (run / "run.json").read_text()


# --- a full disk ---------------------------------------------------------------------------------------


def test_disk_full_while_caching_leaves_no_partial_entry(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    real_save = np.save
    saved: list[Path] = []

    def save_until_full(file: Any, arr: Any, *args: Any, **kwargs: Any) -> None:
        if saved:  # the second array fills the disk half-way, as write(2) reports it: no file name
            Path(file).write_bytes(b"\x93NUMPY" + bytes(64))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        saved.append(Path(file))
        real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_until_full)
    result = run_in_process(_finetune(cohort, runs, cache), capsys)
    (run,) = run_dirs(runs, "finetune")
    line = assert_one_clear_error(result, run, cache, problem="no space left on the device")
    assert "free some space" in line and "paths.runs_dir=" in line and "paths.cache_dir=" in line
    assert saved and saved[0].parent.parent == cache  # it did fail while writing a cache entry
    assert sorted(p.name for p in cache.iterdir()) == [".locks"]  # no entry, no temporary directory
    assert '"status": "failed"' in (run / "run.json").read_text()


@pytest.mark.parametrize(
    ("code", "filename", "places", "expected"),
    [
        (errno.ENOSPC, "/data/runs/x/model.pt", {"paths.runs_dir": "/data/runs/x"}, "/data/runs/x/model.pt: no space"),
        (errno.EDQUOT, None, {"paths.cache_dir": "/c"}, "disk quota exceeded while writing under /c (paths.cache_dir)"),
        (errno.EACCES, "/in/sub-01_T1w.nii.gz", {"paths.runs_dir": "/r"}, "permission denied; check its permissions"),
        (errno.EROFS, "/r/x", None, "paths.runs_dir=<another directory> / paths.cache_dir=<another directory>"),
    ],
    ids=["no-space", "quota-no-filename", "input-not-readable", "places-unknown"],
)
def test_resource_error_wording(code: int, filename: str | None, places: Any, expected: str) -> None:
    err = resource_error(OSError(code, os.strerror(code), filename), places)
    assert err is not None and expected in str(err)


def test_other_os_errors_are_not_resource_errors() -> None:
    assert resource_error(OSError(errno.EIO, "I/O error", "/x")) is None
    assert resource_error(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None


# --- memory --------------------------------------------------------------------------------------------


def test_cached_volumes_stay_on_disk(cohort: Path, tmp_path: Path) -> None:
    """Every volume a training run holds is a read-only memory map of the cache, and workers get none copied."""
    data = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    data.merge_with({"root": str(cohort), "patch_size": PATCH, "augment": False})
    dm = BrainDataModule(data, tmp_path / "cache", roi="brainstem", labelled_only=True)
    dm.setup()
    subjects = dm.train_subjects + dm.val_subjects + dm.test_subjects
    assert len(subjects) == 4
    for subject in subjects:
        for array in (subject.image, subject.brain, subject.tissue, subject.regions):
            assert isinstance(array, np.memmap) and not array.flags.writeable
            assert Path(array.filename).parent == subject.entry
    volume_bytes = sum(s.image.nbytes for s in dm.train_subjects)
    assert dm.train_dataset is not None
    shipped = len(pickle.dumps(dm.train_dataset))  # what each spawned DataLoader worker receives
    assert shipped < volume_bytes / 4, (shipped, volume_bytes)
    shutil.rmtree(tmp_path / "cache")
