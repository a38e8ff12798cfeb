"""The region-aware patch sampler: ROI share, determinism, modality subsets and dropout, missing modalities,
clean targets, two views with a bounded overlap, sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data import batch as B
from ssl_pretrain.data import sampler as sampler_mod
from ssl_pretrain.data.augment import augment_margin, build_augment, build_view_augment
from ssl_pretrain.data.cache import preprocess
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.data.sampler import EpochSampler, PatchDataset, check_view_overlap, crop_overlap, draw_view_offset
from ssl_pretrain.data.subsets import expected_share, parse_modality_subsets
from ssl_pretrain.data.validate import load_records
from tests.synthetic import write_synthetic_bids

PATCH = 16


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory):
    """Five cached subjects: sub-02 lacks FA and tissue, sub-03 lacks regions, sub-05 lacks T1w."""
    base = tmp_path_factory.mktemp("sampler")
    missing = {"02": ["FA", "tissue"], "03": ["regions"], "05": ["T1w"]}
    root = write_synthetic_bids(base / "bids", n_subjects=5, missing=missing)
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
    n = len(subjects)
    assert sorted(PatchDataset(subjects, PATCH, length=n)[(5, i)][B.SUBJECT] for i in range(n)) == sorted(
        s.key for s in subjects
    )


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


def test_crop_overlap_closed_form() -> None:
    assert crop_overlap((0, 0, 0), (16, 16, 16)) == 1.0
    assert crop_overlap((8, 0, 0), (16, 16, 16)) == 0.5
    assert crop_overlap((-4, 8, 2), (16, 16, 16)) == pytest.approx(12 / 16 * 8 / 16 * 14 / 16)
    assert crop_overlap((16, 0, 0), (16, 16, 16)) == 0.0 and crop_overlap((0, 0, 40), (16, 16, 16)) == 0.0


@pytest.mark.parametrize(
    ("bounds", "patch"), [((0.2, 0.5), (16, 16, 16)), ((0.05, 0.1), (32, 16, 8)), ((0.9, 1.0), (8,) * 3)]
)
def test_view_offsets_stay_inside_the_overlap_bounds(bounds: tuple, patch: tuple) -> None:
    rng = np.random.default_rng(0)
    overlaps = [crop_overlap(draw_view_offset(patch, bounds, rng), patch) for _ in range(500)]
    assert min(overlaps) >= bounds[0] and max(overlaps) <= bounds[1]
    fallback = draw_view_offset(patch, bounds, rng, tries=0)  # the one-axis fallback also keeps the bounds
    assert bounds[0] <= crop_overlap(fallback, patch) <= bounds[1]


@pytest.mark.parametrize("bad", [(0.0, 0.5), (0.6, 0.5), (0.5, 1.2), (0.3,), (0.51, 0.52)])
def test_unreachable_or_malformed_overlap_bounds_raise(bad: tuple) -> None:
    with pytest.raises(ValueError, match=r"view_overlap|no crop offset"):
        check_view_overlap(bad, (8, 8, 8))  # 8 voxels: overlap steps of 1/8 cannot land in [0.51, 0.52]


def test_second_view_is_a_crop_with_bounded_overlap(subjects, monkeypatch: pytest.MonkeyPatch) -> None:
    full = subjects[0]
    ds = PatchDataset([full], PATCH, length=12, seed=2, views=2, view_overlap=(0.2, 0.5))
    centres: list[np.ndarray] = []
    second = PatchDataset._second_centre

    def spy(self, s, centre, rng):
        out = second(self, s, centre, rng)
        centres.append(np.asarray(centre))
        centres.append(out)
        return out

    monkeypatch.setattr(PatchDataset, "_second_centre", spy)
    for i in range(len(ds)):
        item = ds[i]
        a, b = centres[-2], centres[-1]
        assert 0.2 <= crop_overlap(b - a, (PATCH,) * 3) <= 0.5
        window = sampler_mod.read_box(full.image, b - PATCH // 2, (PATCH,) * 3, fill=full.background, dtype=np.float32)
        assert torch.equal(item[B.IMAGE_B], torch.from_numpy(window))
        assert item[B.PRESENCE_B].shape == (4,)


def test_views_get_independent_strong_intensity_augmentation(subjects) -> None:
    full, partial = subjects[0], subjects[1]  # partial lacks FA
    gain_only = build_view_augment({"gain": {"log_gain": 0.5}})
    for subject in (full, partial):
        ds = PatchDataset([subject], PATCH, length=6, seed=3, views=2, view_overlap=(1.0, 1.0), view_augment=gain_only)
        for i in range(len(ds)):
            item = ds[i]
            raw = torch.from_numpy(
                sampler_mod.read_box(
                    subject.image, ds.locate(i)[1] - PATCH // 2, (PATCH,) * 3, fill=subject.background, dtype=np.float32
                )
            )
            gains = []
            for view in (B.IMAGE, B.IMAGE_B):
                for c in np.flatnonzero(subject.presence):
                    ratio = item[view][c][raw[c] != 0] / raw[c][raw[c] != 0]
                    torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio), rtol=1e-5, atol=1e-6)
                    gains.append(float(ratio.mean()))
                assert torch.all(item[view][~torch.from_numpy(subject.presence)] == 0)  # absent stays zero
            half = len(gains) // 2
            assert all(abs(ga - gb) > 1e-4 for ga, gb in zip(gains[:half], gains[half:], strict=True))
    default = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml").view_augmentation
    names = [type(t).__name__ for t in build_view_augment(default).transforms]
    assert names == ["Lambda", "SeparableBiasField", "RandomGamma", "LocalSeedNoise"]
    assert all(t.probability == 1.0 for t in build_view_augment(default).transforms)  # always applied


def test_t1w_only_share_matches_the_config_within_sampling_error(subjects) -> None:
    full = subjects[0]
    cfg = {"T1w": 0.25, "all": 0.5, "random": 0.25}
    subsets = parse_modality_subsets(cfg, ["T1w", "T2w", "FA", "MD"])
    n = 1200
    ds = PatchDataset([full], PATCH, length=n, seed=5, modality_subsets=subsets, modality_dropout=0.25)
    shown = [tuple(int(c) for c in np.flatnonzero(ds[i][B.PRESENCE].numpy())) for i in range(n)]
    for kept in ((0,), (0, 1, 2, 3)):
        p = expected_share(subsets, kept, 4, 0.25, 1)
        observed = sum(s == kept for s in shown) / n
        assert abs(observed - p) < 4 * np.sqrt(p * (1 - p) / n), (kept, observed, p)
    assert expected_share(subsets, (0,), 4, 0.25, 1) >= 0.25


def test_a_subject_without_t1w_shows_what_it_has_under_the_t1w_subset(subjects) -> None:
    no_t1 = subjects[4]
    assert no_t1.presence.tolist() == [False, True, True, True]
    subsets = parse_modality_subsets({"T1w": 1.0}, ["T1w", "T2w", "FA", "MD"])
    ds = PatchDataset([no_t1], PATCH, length=5, modality_subsets=subsets)
    for i in range(len(ds)):
        item = ds[i]
        assert item[B.PRESENCE].tolist() == [0.0, 1.0, 1.0, 1.0] and item[B.ACQUIRED].tolist() == [0.0, 1.0, 1.0, 1.0]
        assert torch.all(item[B.IMAGE][0] == 0)


def test_clean_target_is_unaffected_by_intensity_augmentation_and_dropout(subjects) -> None:
    spatial = {"flip": {"p": 0.5}, "affine": {"p": 1.0, "scales": 0.1, "degrees": 10}}
    heavy = {
        **spatial,
        "bias_field": {"p": 1.0, "coefficients": 0.5},
        "gamma": {"p": 1.0, "log_gamma": 0.3},
        "noise": {"p": 1.0, "std": 0.2},
        "motion": {"p": 1.0},
        "ghosting": {"p": 1.0},
    }
    margin = augment_margin(heavy, (PATCH,) * 3, 2.0)
    t1_only = parse_modality_subsets({"T1w": 1.0}, ["T1w", "T2w", "FA", "MD"])
    common = {"length": 4, "seed": 9, "augment_margin": margin, "roi": "brainstem", "roi_fraction": 0.5}
    for subject in (subjects[0], subjects[1]):  # subjects[1] lacks FA
        noisy = PatchDataset(
            [subject],
            PATCH,
            augment=build_augment(heavy, (PATCH,) * 3),
            clean_target=True,
            modality_subsets=t1_only,
            **common,
        )
        clean = PatchDataset([subject], PATCH, augment=build_augment(spatial, (PATCH,) * 3), **common)
        for i in range(4):
            item, reference = noisy[i], clean[i]
            acquired = torch.from_numpy(subject.presence)
            assert torch.equal(item[B.ACQUIRED].bool(), acquired)
            assert item[B.PRESENCE].tolist() == [1.0, 0.0, 0.0, 0.0]
            # the target is the spatially augmented patch, before intensity transforms and before dropout
            torch.testing.assert_close(item[B.TARGET][acquired], reference[B.IMAGE][acquired], rtol=0, atol=0)
            assert torch.all(item[B.TARGET][~acquired] == 0)
            assert not torch.allclose(item[B.IMAGE][0], item[B.TARGET][0], atol=1e-3)  # the input was augmented
            assert torch.all(item[B.IMAGE][1:] == 0) and item[B.TARGET][1].abs().sum() > 0  # dropped, still a target
    assert B.TARGET not in PatchDataset(subjects, PATCH, length=1)[0]


def test_subjects_are_sharded_across_ranks(subjects, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampler_mod.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(sampler_mod.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(sampler_mod.dist, "get_rank", lambda: 1)
    ds = PatchDataset(subjects, PATCH, length=4)
    assert [s.key for s in ds.subjects] == [subjects[1].key, subjects[3].key]
    assert len(PatchDataset(subjects, PATCH, length=4, shard=False).subjects) == len(subjects)
    monkeypatch.setattr(sampler_mod.dist, "get_world_size", lambda: 8)
    assert len(PatchDataset(subjects, PATCH, length=4).subjects) == len(subjects)  # fewer subjects than ranks


@pytest.mark.parametrize(
    "kwargs",
    [
        {"roi_fraction": 1.5},
        {"modality_dropout": 1.0},
        {"min_modalities": 0},
        {"views": 3},
        {"length": 0},
        {"augment_margin": -1},
        {"views": 2, "view_overlap": (0.0, 0.4)},
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
