"""Unit checks of the pieces behind exact resumes: the sampler's rank share and rotation, stale temporaries."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from ssl_pretrain.atomic import atomic_path, remove_stale_temporaries
from ssl_pretrain.data import sampler as sampler_module
from ssl_pretrain.data.sampler import EpochSampler, PatchDataset


class Items:
    """Stands for a PatchDataset: a length, an epoch and a pending resume position."""

    resume_at = PatchDataset.resume_at

    def __init__(self, length: int) -> None:
        self.length, self.epoch, self.resume_position = length, 0, None

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


@pytest.mark.parametrize(("world", "length"), [(1, 8), (2, 8), (3, 8)])
def test_ranks_share_an_epoch_and_resume_where_they_stopped(monkeypatch, world: int, length: int) -> None:
    shares = []
    for rank in range(world):
        monkeypatch.setattr(sampler_module, "_world", lambda rank=rank: (rank, world))
        sampler = EpochSampler(Items(length))  # type: ignore[arg-type]
        sampler.set_epoch(3)
        shares.append(list(sampler))
        assert len(sampler) == len(shares[-1]) == -(-length // world)
        assert all(epoch == 3 for epoch, _ in shares[-1])
        for done in range(len(sampler)):  # a resume after `done` items of this rank's share
            sampler.dataset.resume_at(3, done)
            resumed = list(sampler)
            assert resumed[: len(sampler) - done] == shares[-1][done:]  # continues exactly where it stopped
            assert list(sampler) == shares[-1]  # the next pass starts at the beginning again
    items = [i for share in shares for _, i in share]
    assert set(items) == set(range(length))  # every item of the epoch is served
    if length % world == 0:
        assert len(items) == length  # ... once


def test_resume_at_sets_the_epoch_even_for_a_sampler_built_before(monkeypatch) -> None:
    monkeypatch.setattr(sampler_module, "_world", lambda: (0, 1))
    dataset = Items(4)
    sampler = EpochSampler(dataset)  # type: ignore[arg-type]  # built at epoch 0, like finetune's loader
    dataset.resume_at(5, 2)
    assert list(sampler) == [(5, 2), (5, 3), (5, 0), (5, 1)]
    assert sampler.epoch == 5


def test_stale_temporaries_of_atomic_writes_are_removed_and_nothing_else(tmp_path: Path) -> None:
    keep = [tmp_path / "a.json", tmp_path / ".run.lock", tmp_path / "sub" / "x_dseg.nii.gz", tmp_path / ".hidden"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kept")
    with atomic_path(tmp_path / "sub" / "y_dseg.nii.gz", suffix=".nii.gz") as tmp:
        tmp.write_text("whole")
        name = tmp.name
    # what a writer killed inside atomic_path leaves: the same kind of name, another random part
    fd, stale = tempfile.mkstemp(dir=tmp_path / "sub", prefix=".y_dseg.nii.gz.", suffix=".nii.gz")
    os.close(fd)
    assert Path(stale).name != name and len(Path(stale).name) == len(name)
    assert remove_stale_temporaries(tmp_path) == [Path(stale)]
    assert all(p.read_text() == "kept" for p in keep)
    assert (tmp_path / "sub" / "y_dseg.nii.gz").read_text() == "whole"
