"""The region-aware patch sampler: ROI share, determinism, dropout, missing modalities, views, sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data import batch as B
from ssl_pretrain.data import sampler as sampler_mod
from ssl_pretrain.data.augment import augment_margin, build_augment
from ssl_pretrain.data.cache import preprocess
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.data.sampler import EpochSampler, PatchDataset
from ssl_pretrain.data.validate import load_records
from tests.synthetic import write_synthetic_bids

PATCH = 16


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory):
    """Four cached subjects: sub-02 lacks FA and tissue, sub-03 lacks regions."""
    base = tmp_path_factory.mktemp("sampler")
    root = write_synthetic_bids(base / "bids", n_subjects=4, missing={"02": ["FA", "tissue"], "03": ["regions"]})
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    cfg.root, cfg.patch_size = str(root), PATCH
    return preprocess(load_records(cfg), cfg, base / "cache", progress=False)


def test_roi_share_matches_roi_fraction(subjects) -> None:
    """With roi_fraction f, a centre lies in the ROI with probability f + (1 - f) q, q the ROI share of
    the brain (brain-drawn centres can land there too); checked within 4 binomial standard deviations."""
    with_roi = [s for s in subjects if s.regions is not None]
    roi = region_group_indices("brainstem")
    for fraction in (0.7, 0.0):
        ds = PatchDataset(with_roi, PATCH, roi="brainstem", roi_fraction=fraction, length=900, seed=3)
        hits, expected = 0, 0.0
        for i in range(len(ds)):
            s, centre, from_roi = ds.locate(i)
            subject = ds.subjects[s]
            assert subject.brain[tuple(centre)] or from_roi
            hits += int(subject.regions[tuple(centre)] in roi)
            q = np.isin(subject.regions, roi)[np.asarray(subject.brain, bool)].mean()
            expected += fraction + (1 - fraction) * q
        p = expected / len(ds)
        sd = np.sqrt(p * (1 - p) / len(ds))
        assert abs(hits / len(ds) - p) < 4 * sd, (fraction, hits / len(ds), p)


def test_subject_without_roi_falls_back_to_brain_voxels(subjects) -> None:
    no_regions = [s for s in subjects if s.regions is None]
    ds = PatchDataset(no_regions, PATCH, roi="brainstem", roi_fraction=1.0, length=50, seed=0)
    for i in range(len(ds)):
        s, centre, from_roi = ds.locate(i)
        assert not from_roi and ds.subjects[s].brain[tuple(centre)]


def test_items_are_deterministic_in_seed_epoch_and_index(subjects) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml").augmentation
    kwargs = {
        "roi": "brainstem",
        "roi_fraction": 0.5,
        "length": 6,
        "augment": build_augment(cfg, (PATCH,) * 3),
        "augment_margin": augment_margin(cfg, (PATCH,) * 3, 2.0),
        "modality_dropout": 0.5,
    }
    a = PatchDataset(subjects, PATCH, seed=11, **kwargs)
    b = PatchDataset(subjects, PATCH, seed=11, **kwargs)
    c = PatchDataset(subjects, PATCH, seed=12, **kwargs)
    for i in range(6):
        x, y = a[(2, i)], b[(2, i)]
        for key in (B.IMAGE, B.PRESENCE, B.TISSUE, B.REGIONS):
            assert torch.equal(x[key], y[key])
        assert x[B.SUBJECT] == y[B.SUBJECT]
    assert not torch.equal(a[(2, 0)][B.IMAGE], a[(3, 0)][B.IMAGE])
    assert not torch.equal(a[(2, 0)][B.IMAGE], c[(2, 0)][B.IMAGE])
    a.set_epoch(2)
    assert torch.equal(a[0][B.IMAGE], b[(2, 0)][B.IMAGE])
    # each round of len(subjects) items visits every subject once
    assert sorted(a[(5, i)][B.SUBJECT] for i in range(4)) == sorted(s.key for s in subjects)


def test_epochs_reach_persistent_workers(subjects) -> None:
    ds = PatchDataset(subjects, PATCH, roi="brainstem", roi_fraction=0.5, length=4, seed=1)
    sampler = EpochSampler(ds)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, num_workers=1, persistent_workers=True)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        got = torch.cat([batch[B.IMAGE] for batch in loader])
        want = torch.stack([ds[(epoch, i)][B.IMAGE] for i in range(4)])
        assert torch.equal(got, want)
    assert list(sampler) == [(1, 0), (1, 1), (1, 2), (1, 3)]


def test_patch_is_the_cached_box_and_pads_with_background(subjects, monkeypatch: pytest.MonkeyPatch) -> None:
    full = subjects[0]
    ds = PatchDataset([full], PATCH, length=5, seed=0)
    centre = np.asarray(full.brain.shape) // 2 + np.array([3, -2, 1])
    monkeypatch.setattr(PatchDataset, "_brain_centre", lambda self, s, rng: centre)
    item = ds[0]
    window = tuple(slice(a, a + PATCH) for a in centre - PATCH // 2)
    np.testing.assert_array_equal(item[B.IMAGE].numpy(), full.image[(slice(None), *window)])
    np.testing.assert_array_equal(item[B.TISSUE][0].numpy(), full.tissue[window])
    np.testing.assert_array_equal(item[B.REGIONS][0].numpy(), full.regions[window])
    # a centre in the corner: the part outside the box holds each channel's background value
    monkeypatch.setattr(PatchDataset, "_brain_centre", lambda self, s, rng: np.zeros(3, int))
    corner = ds[1]
    assert torch.all(corner[B.IMAGE][:, 0, 0, 0] == torch.from_numpy(full.background))
    assert torch.all(corner[B.TISSUE][0, :8, :8, :8] == 0)
    assert torch.equal(corner[B.IMAGE][:, 8:, 8:, 8:], torch.from_numpy(np.array(full.image[:, :8, :8, :8])))


def test_missing_modality_and_labels(subjects) -> None:
    partial = subjects[1]  # no FA, no tissue
    assert partial.presence.tolist() == [True, True, False, True]
    ds = PatchDataset([partial], PATCH, length=3, seed=0)
    item = ds[0]
    assert item[B.PRESENCE].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert torch.all(item[B.IMAGE][2] == 0) and item[B.IMAGE][0].abs().sum() > 0
    assert item[B.TISSUE].dtype == torch.int64 and torch.all(item[B.TISSUE] == B.IGNORE_INDEX)
    no_regions = PatchDataset([subjects[2]], PATCH, length=1)[0]
    assert torch.all(no_regions[B.REGIONS] == 0) and no_regions[B.REGIONS].shape == (1, PATCH, PATCH, PATCH)


def test_modality_dropout_respects_the_floor_and_zeroes_exactly_the_dropped(subjects) -> None:
    # noise on every patch: a dropped channel must be zero after augmentation too
    cfg = {"noise": {"p": 1.0, "std": 0.1}, "flip": {"p": 0.5}}
    full, partial = subjects[0], subjects[1]
    counts = []
    for subject, floor in ((full, 2), (partial, 2), (partial, 5)):
        ds = PatchDataset(
            [subject],
            PATCH,
            length=40,
            seed=4,
            modality_dropout=0.8,
            min_modalities=floor,
            augment=build_augment(cfg, (PATCH,) * 3),
        )
        for i in range(len(ds)):
            item = ds[i]
            kept = item[B.PRESENCE].bool()
            assert not torch.any(kept & ~torch.from_numpy(subject.presence))
            assert kept.sum() >= min(floor, subject.presence.sum())
            nonzero = item[B.IMAGE].flatten(1).abs().amax(1) > 0
            assert torch.equal(nonzero, kept)
            counts.append(int(kept.sum()))
    assert min(counts[:40]) == 2 and max(counts[:40]) < 4  # dropout does happen on the full subject
    assert all(n == 3 for n in counts[80:])  # floor above the present count: all present kept


def test_two_views_overlap(subjects) -> None:
    full = subjects[0]
    ds = PatchDataset([full], PATCH, length=4, seed=2, views=2)
    for i in range(4):
        item = ds[i]
        _, centre, _ = ds.locate(i)
        assert item[B.IMAGE_B].shape == item[B.IMAGE].shape and item[B.PRESENCE_B].shape == (4,)
        jitter = PATCH // 4
        offsets = [
            np.array(d)
            for d in np.ndindex(2 * jitter + 1, 2 * jitter + 1, 2 * jitter + 1)
            if torch.equal(
                item[B.IMAGE_B],
                torch.from_numpy(
                    sampler_mod.read_box(
                        full.image,
                        centre + np.array(d) - jitter - PATCH // 2,
                        (PATCH,) * 3,
                        fill=full.background,
                        dtype=np.float32,
                    )
                ),
            )
        ]
        assert len(offsets) >= 1  # the second view is the first one's centre moved by <= patch / 4


def test_subjects_are_sharded_across_ranks(subjects, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler_mod.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sampler_mod.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(sampler_mod.dist, "get_rank", lambda: 1)
    ds = PatchDataset(subjects, PATCH, length=4)
    assert [s.key for s in ds.subjects] == [subjects[1].key, subjects[3].key]
    assert len(PatchDataset(subjects, PATCH, length=4, shard=False).subjects) == 4
    monkeypatch.setattr(sampler_mod.dist, "get_world_size", lambda: 8)
    assert len(PatchDataset(subjects, PATCH, length=4).subjects) == 4  # fewer subjects than ranks


@pytest.mark.parametrize(
    "kwargs",
    [
        {"roi_fraction": 1.5},
        {"modality_dropout": 1.0},
        {"min_modalities": 0},
        {"views": 3},
        {"length": 0},
        {"augment_margin": -1},
    ],
)
def test_bad_arguments_raise(subjects, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        PatchDataset(subjects, PATCH, **kwargs)


def test_unknown_roi_raises(subjects) -> None:
    with pytest.raises(KeyError, match="unknown region group"):
        PatchDataset(subjects, PATCH, roi="hippocampus", roi_fraction=0.5)


def test_no_subjects_raises() -> None:
    with pytest.raises(ValueError):
        PatchDataset([], PATCH)


def test_index_out_of_range(subjects) -> None:
    with pytest.raises(IndexError):
        PatchDataset(subjects, PATCH, length=2)[2]


def test_patch_reads_do_not_load_whole_volumes(subjects) -> None:
    assert isinstance(subjects[0].image, np.memmap)  # the dataset holds maps, not arrays
    ds = PatchDataset(subjects, PATCH, length=2)
    assert all(isinstance(s.image, np.memmap) for s in ds.subjects)
