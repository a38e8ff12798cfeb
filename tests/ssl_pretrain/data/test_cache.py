"""The preprocessing cache: contents, hits, invalidation, atomicity, refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.spatial.transform import Rotation

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data import cache as cache_mod
from ssl_pretrain.data.cache import CachedSubject, preprocess
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.errors import ConfigError, DataError
from tests.synthetic import write_synthetic_bids


def data_cfg(root: Path, **overrides: object):
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    cfg.root = str(root)
    cfg.patch_size = 16
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.fixture
def dataset(tmp_path: Path):
    """Three synthetic subjects; sub-02 lacks FA and its tissue map."""
    root = write_synthetic_bids(tmp_path / "bids", n_subjects=3, missing={"02": ["FA", "tissue"]})
    cfg = data_cfg(root)
    return root, cfg, load_records(cfg), tmp_path / "cache"


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if p.name.startswith("sub-"))


def test_contents_of_an_entry(dataset) -> None:
    _root, cfg, records, cache = dataset
    subjects = preprocess(records, cfg, cache, progress=False)
    assert [s.key for s in subjects] == ["sub-01", "sub-02", "sub-03"]
    full, partial = subjects[0], subjects[1]
    assert isinstance(full.image, np.memmap) and full.image.dtype == np.float32
    assert full.image.shape[0] == 4 and min(full.image.shape[1:]) >= 16
    assert full.group == "HC" and partial.group == "ALS"
    assert full.presence.tolist() == [True, True, True, True]
    assert partial.presence.tolist() == [True, True, False, True]
    assert np.all(partial.image[2] == 0) and partial.meta["normalisation"]["FA"] is None
    assert partial.tissue is None and partial.meta["brain_mask"] == "threshold"
    assert full.tissue is not None and full.tissue.dtype == np.uint8 and set(np.unique(full.tissue)) == {0, 1, 2, 3}
    assert set(np.unique(full.regions)) == {0, 1, 5, 9, 10}
    # normalisation: the median inside the brain is 0 and the scale is the 0.5-99.5 percentile range
    brain = np.asarray(full.brain).astype(bool)
    for c in range(4):
        values = np.asarray(full.image[c])[brain]
        assert abs(np.median(values)) < 1e-3
        lo, hi = np.percentile(values, [0.5, 99.5])
        assert hi - lo == pytest.approx(1.0, rel=1e-3)
    # the brain (tissue > 0) lies inside the box, with the margin on every side
    margin = int(np.ceil(cfg.crop_margin / cfg.spacing))
    idx = np.argwhere(brain)
    assert idx.min() >= margin and np.all(idx.max(0) < np.asarray(brain.shape) - margin)
    assert brain.sum() == np.count_nonzero(nib.load(str(records[0].tissue)).get_fdata())
    # the raw value 0 (outside the head) maps to the stored background value
    assert full.image[0, 0, 0, 0] == pytest.approx(full.background[0])
    meta = json.loads((full.entry / "meta.json").read_text())
    assert meta["native_shape"] == [28, 32, 28] and meta["reference"] == "T1w"
    assert set(meta["inputs"]) == {"T1w", "T2w", "FA", "MD", "tissue", "regions", "tissue_tsv", "regions_tsv"}


def test_second_call_is_a_hit(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    _root, cfg, records, cache = dataset
    first = preprocess(records, cfg, cache, progress=False)
    stamps = {p: (p / "meta.json").stat().st_mtime_ns for p in entries(cache)}

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed a cached subject")

    monkeypatch.setattr(cache_mod, "compute_entry", fail)
    second = preprocess(records, cfg, cache, progress=False)
    assert [s.entry for s in second] == [s.entry for s in first]
    assert {p: (p / "meta.json").stat().st_mtime_ns for p in entries(cache)} == stamps


def test_changed_input_file_invalidates_even_with_same_size_and_mtime(dataset) -> None:
    _root, cfg, records, cache = dataset
    before = preprocess(records, cfg, cache, progress=False)
    path = records[0].images["T2w"]
    stat = path.stat()
    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    data[10:14, 10:14, 10:14] *= 3.0
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: only the content changed
    after = preprocess(records, cfg, cache, progress=False)
    assert after[0].entry != before[0].entry and after[0].meta["cache_key"] != before[0].meta["cache_key"]
    assert not np.array_equal(np.asarray(after[0].image[1]), np.asarray(before[0].image[1]))
    assert [s.entry for s in after[1:]] == [s.entry for s in before[1:]]  # other subjects still hit


@pytest.mark.parametrize(
    "override",
    [
        {"spacing": 3.0},
        {"modalities": ["T1w", "T2w"]},
        {"normalisation.method": "zscore"},
        {"crop_margin": 2.0},
        {"patch_size": 40},
        {"cache_dtype": "float16"},
    ],
)
def test_changed_setting_makes_a_new_key(dataset, override: dict) -> None:
    root, cfg, records, cache = dataset
    base = preprocess(records[:1], cfg, cache, progress=False)[0]
    changed = data_cfg(root, **override)
    other = preprocess(records[:1], changed, cache, progress=False)[0]
    assert other.meta["cache_key"] != base.meta["cache_key"]
    assert len(entries(cache)) == 2


def test_float16_cache(dataset) -> None:
    root, cfg, records, cache = dataset
    a = preprocess(records[:1], cfg, cache, progress=False)[0]
    b = preprocess(records[:1], data_cfg(root, cache_dtype="float16"), cache, progress=False)[0]
    assert b.image.dtype == np.float16
    np.testing.assert_allclose(np.asarray(b.image, np.float32), a.image, atol=2e-3)


def test_cache_inside_the_dataset_is_refused(dataset) -> None:
    root, cfg, records, _cache = dataset
    for inside in (root, root / "derivatives" / "cache"):
        with pytest.raises(ConfigError, match=r"paths\.cache_dir"):
            preprocess(records, cfg, inside, progress=False)
    assert not (root / "derivatives" / "cache").exists()


def test_interrupted_or_corrupt_entries_are_not_trusted(dataset) -> None:
    _root, cfg, records, cache = dataset
    good = preprocess(records[:1], cfg, cache, progress=False)[0]
    entry = good.entry
    reference = np.asarray(good.image).copy()

    # 1. a writer died before the rename: its temporary directory is cleaned, the entry itself is absent
    shutil.rmtree(entry)
    stale = cache / f".tmp-{entry.name}-dead"
    stale.mkdir()
    (stale / "image.npy").write_bytes(b"garbage")
    again = preprocess(records[:1], cfg, cache, progress=False)[0]
    assert again.entry == entry and not stale.exists()
    np.testing.assert_array_equal(again.image, reference)

    # 2. a half-written entry (arrays, no meta.json); 3. meta.json for another key; 4. a truncated array
    def no_meta() -> None:
        (entry / "meta.json").unlink()

    def other_key() -> None:
        meta = json.loads((entry / "meta.json").read_text())
        meta["cache_key"] = "0" * 20
        (entry / "meta.json").write_text(json.dumps(meta))

    def truncated() -> None:
        path = entry / "image.npy"
        path.write_bytes(path.read_bytes()[:1000])

    for corrupt in (no_meta, other_key, truncated):
        corrupt()
        assert cache_mod.load_entry(entry, good.meta["cache_key"], records[0]) is None
        fixed = preprocess(records[:1], cfg, cache, progress=False)[0]
        np.testing.assert_array_equal(fixed.image, reference)
        assert json.loads((entry / "meta.json").read_text())["cache_key"] == good.meta["cache_key"]
    assert not list(cache.glob(".tmp-*"))


def test_pickled_subject_maps_its_arrays_again(dataset) -> None:
    _root, cfg, records, cache = dataset
    subject = preprocess(records[:1], cfg, cache, progress=False)[0]
    blob = pickle.dumps(subject)
    assert len(blob) < 100_000  # the arrays are not in the pickle
    copy: CachedSubject = pickle.loads(blob)
    assert isinstance(copy.image, np.memmap)
    np.testing.assert_array_equal(copy.image, subject.image)
    np.testing.assert_array_equal(copy.tissue, subject.tissue)


def test_region_names_map_to_canonical_indices_and_bad_labels_are_refused(dataset) -> None:
    _root, cfg, records, cache = dataset
    record = records[0]
    tsv = record.regions_tsv
    tsv.write_text("index\tname\n0\tbackground\n1\tLeft-Thalamus\n5\tBrain-Stem\n9\tctx_unknown\n10\tfoo\n")
    subject = preprocess([record], cfg, cache, progress=False)[0]
    native = np.asarray(nib.load(str(record.regions)).dataobj)
    assert set(np.unique(subject.regions)) == {0, REGION_INDEX["thalamus"], REGION_INDEX["brainstem"]}
    assert (subject.regions == REGION_INDEX["brainstem"]).sum() == (native == 5).sum()

    tsv.write_text("index\tname\n0\tbackground\n1\tthalamus\n5\tbrainstem\n9\tcortex\n")  # 10 is not listed
    with pytest.raises(DataError, match=r"desc-regions_dseg.nii.gz.*label values 10"):
        preprocess([record], cfg, cache, progress=False)
    record.tissue_tsv.write_text("index\tname\n0\tbackground\n1\tCSF\n2\tGM\n3\tbone\n")
    with pytest.raises(DataError, match="label 3 'bone' has no tissue class"):
        preprocess([record], cfg, cache, progress=False)
    assert not list(cache.glob(".tmp-*"))


def test_tissue_indices_are_mapped_by_name(dataset) -> None:
    _root, cfg, records, cache = dataset
    record = records[0]
    img = nib.load(str(record.tissue))
    data = np.asarray(img.dataobj)
    swapped = np.choose(data, [0, 7, 5, 6]).astype(np.int16)  # CSF=7, GM=5, WM=6
    nib.save(nib.Nifti1Image(swapped, img.affine), str(record.tissue))
    record.tissue_tsv.write_text("index\tname\n0\tbackground\n5\tgray matter\n6\twhite matter\n7\tcsf\n")
    subject = preprocess([record], cfg, cache, progress=False)[0]
    counts = np.bincount(np.asarray(subject.tissue).ravel(), minlength=4)
    np.testing.assert_array_equal(counts[1:], np.bincount(data.ravel(), minlength=4)[1:])


def test_misregistered_low_resolution_map_lands_on_the_reference_grid(dataset) -> None:
    """FA replaced by a field linear in world mm on a rotated, shifted 2.5 mm grid: after preprocessing,
    each cache voxel inside the FA field of view holds the field at its own world position."""
    _root, cfg, records, cache = dataset
    record = records[0]
    fa_affine = np.eye(4)
    fa_affine[:3, :3] = Rotation.from_euler("xz", [2.0, -3.0], degrees=True).as_matrix() * 2.5
    fa_affine[:3, 3] = [-29.0, -33.0, -27.5]
    shape = (24, 27, 24)

    def field(world: np.ndarray) -> np.ndarray:
        return 0.3 + 0.005 * world[..., 0] + 0.002 * world[..., 1] - 0.004 * world[..., 2]

    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    fa = field(idx @ fa_affine[:3, :3].T + fa_affine[:3, 3]).astype(np.float32)
    nib.save(nib.Nifti1Image(fa, fa_affine), str(record.images["FA"]))
    subject = preprocess([record], cfg, cache, progress=False)[0]
    stats = subject.meta["normalisation"]["FA"]
    raw = np.asarray(subject.image[2], np.float64) * stats["scale"] + stats["centre"]
    cidx = np.stack(np.meshgrid(*[np.arange(n) for n in raw.shape], indexing="ij"), -1).astype(np.float64)
    world = cidx @ subject.affine[:3, :3].T + subject.affine[:3, 3]
    src = (world - fa_affine[:3, 3]) @ np.linalg.inv(fa_affine[:3, :3]).T
    inside = np.all((src >= 0) & (src <= np.asarray(shape) - 1), axis=-1)
    assert inside.sum() > 1000
    np.testing.assert_allclose(raw[inside], field(world)[inside], atol=1e-4)


def test_grids_that_do_not_overlap_are_refused(dataset) -> None:
    _root, cfg, records, cache = dataset
    record = records[0]
    img = nib.load(str(record.images["MD"]))
    far = img.affine.copy()
    far[:3, 3] += 500.0
    moved = record.images["MD"].with_name("moved_md.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), far), str(moved))
    bad = dataclasses.replace(record, images={**record.images, "MD": moved})
    with pytest.raises(DataError, match=r"moved_md.nii.gz.*do not overlap"):
        preprocess([bad], cfg, cache, progress=False)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"cache_dtype": "float64"}, "data.cache_dtype"),
        ({"normalisation.method": "minmax"}, "data.normalisation.method"),
        ({"normalisation.lower": 90.0, "normalisation.upper": 10.0}, "data.normalisation"),
        ({"crop_margin": -1.0}, "data.crop_margin"),
        ({"brain_threshold": 1.5}, "data.brain_threshold"),
        ({"modalities": ["T1w", "T1w"]}, "data.modalities"),
        ({"spacing": 0}, "data.spacing"),
    ],
)
def test_bad_settings_name_their_key(dataset, override: dict, key: str) -> None:
    root, _cfg, records, cache = dataset
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        preprocess(records, data_cfg(root, **override), cache, progress=False)


def test_threshold_brain_mask_without_tissue(dataset) -> None:
    _root, cfg, records, cache = dataset
    partial = preprocess(records, cfg, cache, progress=False)[1]
    tissue = np.asarray(nib.load(str(records[0].tissue)).dataobj)  # same anatomy as sub-02
    share = partial.meta["brain_voxels"] / np.count_nonzero(tissue)
    assert 0.8 < share < 1.2  # the threshold mask finds about the head's extent
