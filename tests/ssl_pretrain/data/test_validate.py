"""Record validation, load_records, label/ROI checks and the dataset fingerprint."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.bids import discover
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.data.manifest import write_manifest
from ssl_pretrain.data.nifti import load_volume
from ssl_pretrain.data.validate import (
    check_label_values,
    check_region_nonempty,
    dataset_fingerprint,
    grid_overlap,
    load_records,
    read_dseg_tsv,
    validate_record,
    world_bounds,
)
from ssl_pretrain.errors import ConfigError
from tests.ssl_pretrain.data.bad_files import (
    raises_naming,
    save_nifti,
    save_with_sform,
    save_without_orientation,
    truncate,
    write_garbage,
)
from tests.synthetic import write_synthetic_bids

MODALITIES = ["T1w", "T2w", "FA", "MD"]
SHAPE = (10, 12, 10)
SPACING = 2.0


def _bids(root: Path, **kwargs: object) -> Path:
    return write_synthetic_bids(root, shape=SHAPE, spacing=SPACING, **kwargs)  # type: ignore[arg-type]


def _affine(spacing: tuple[float, float, float] = (SPACING,) * 3, shift: float = 0.0) -> np.ndarray:
    """The synthetic grid's affine (same field of view), with other voxel sizes or shifted along x."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.asarray(SHAPE) * SPACING / 2
    affine[0, 3] += shift
    return affine


def _data_cfg(**values: object) -> DictConfig:
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    cfg.merge_with(values)
    return cfg  # type: ignore[return-value]


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    return _bids(tmp_path / "bids", n_subjects=2)


def _fa(root: Path, subject: str = "01") -> Path:
    return root / f"derivatives/dwi/sub-{subject}/dwi/sub-{subject}_space-T1w_model-tensor_param-fa_dwimap.nii.gz"


def _t1(root: Path, subject: str = "01") -> Path:
    return root / f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz"


# --- geometry --------------------------------------------------------------------------------------------


def test_world_bounds_closed_form() -> None:
    np.testing.assert_allclose(world_bounds((2, 3, 4), np.eye(4)), [[-0.5, -0.5, -0.5], [1.5, 2.5, 3.5]])
    swap = np.array([[0, 2.0, 0, 10], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # x <- 2*j, y <- -i
    np.testing.assert_allclose(world_bounds((2, 3, 4), swap), [[9, -1.5, -0.5], [15, 0.5, 3.5]])


def test_grid_overlap_closed_form() -> None:
    a = np.array([[0.0, 0, 0], [10, 10, 10]])
    assert grid_overlap(a, a + np.array([3, 0, 0])) == pytest.approx(0.7)
    assert grid_overlap(a, a + np.array([3, 4, 0])) == pytest.approx(0.7 * 0.6)
    assert grid_overlap(a, np.array([[2.0, 2, 2], [4, 4, 4]])) == pytest.approx(1.0)  # inside: share of the smaller
    assert grid_overlap(a, a + np.array([20, 0, 0])) == 0.0


# --- validate_record ---------------------------------------------------------------------------------------


def test_valid_records_pass(bids: Path) -> None:
    for record in discover(bids, MODALITIES):
        validate_record(record)


def test_shifted_but_overlapping_grid_passes(bids: Path) -> None:
    save_nifti(_fa(bids), np.ones(SHAPE, np.float32), _affine(shift=0.3 * SHAPE[0] * SPACING))  # 70% shared
    validate_record(discover(bids, MODALITIES)[0])


def test_grids_that_do_not_overlap(bids: Path) -> None:
    fa = save_nifti(_fa(bids), np.ones(SHAPE, np.float32), _affine(shift=0.6 * SHAPE[0] * SPACING))  # 40% shared
    with raises_naming(fa, "its grid does not overlap that of") as info:
        validate_record(discover(bids, MODALITIES)[0])
    assert str(_t1(bids)) in str(info.value) and "40%" in str(info.value)


def test_label_map_grid_must_overlap_too(bids: Path) -> None:
    tissue = bids / "derivatives/labels/sub-02/anat/sub-02_desc-tissue_dseg.nii.gz"
    save_nifti(tissue, np.zeros(SHAPE, np.int16), _affine(shift=500.0))
    with raises_naming(tissue, "does not overlap"):
        validate_record(discover(bids, MODALITIES)[1])


def test_anisotropic_voxels_accepted_with_warning(bids: Path, caplog: pytest.LogCaptureFixture) -> None:
    shape = (SHAPE[0] * 2, SHAPE[1] * 2, SHAPE[2] // 2)  # 1 x 1 x 4 mm over the same field of view
    fa = save_nifti(_fa(bids), np.ones(shape, np.float32), _affine(spacing=(1.0, 1.0, 4.0)))
    with caplog.at_level(logging.WARNING, logger="ssl_pretrain.data.nifti"):
        validate_record(discover(bids, MODALITIES)[0])
    (message,) = [r.getMessage() for r in caplog.records if "anisotropic" in r.getMessage()]
    assert str(fa) in message and "[1.0, 1.0, 4.0]" in message


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda p: p.unlink(), "file not found"),
        (write_garbage, "cannot be read as NIfTI"),
        (truncate, "truncated"),
        (lambda p: save_nifti(p, np.ones((*SHAPE, 2), np.float32), _affine()), "expected a 3D volume"),
        (lambda p: save_with_sform(p, np.ones(SHAPE, np.float32), np.zeros((4, 4))), "degenerate affine"),
    ],
    ids=["missing", "garbage", "truncated", "4d", "zero-affine"],
)
def test_bad_image_in_a_record(bids: Path, damage: object, match: str) -> None:
    record = discover(bids, MODALITIES)[0]
    damage(_fa(bids))  # type: ignore[operator]
    with raises_naming(_fa(bids), match):
        validate_record(record)


def test_label_map_without_table(bids: Path) -> None:
    (bids / "derivatives/labels/sub-01/anat/sub-01_desc-regions_dseg.tsv").unlink()
    record = discover(bids, MODALITIES)[0]
    with raises_naming(record.regions, "no regions label table"):  # type: ignore[arg-type]
        validate_record(record)


def test_malformed_table_in_a_record(bids: Path) -> None:
    table = bids / "derivatives/labels/sub-01/anat/sub-01_desc-tissue_dseg.tsv"
    table.write_text("index\tname\n1\tCSF\n1\tGM\n")
    with raises_naming(table, "index 1 is listed twice"):
        validate_record(discover(bids, MODALITIES)[0])


# --- voxel-level checks ------------------------------------------------------------------------------------


def test_label_values_absent_from_dseg_tsv(bids: Path) -> None:
    regions = bids / "derivatives/labels/sub-01/anat/sub-01_desc-regions_dseg.nii.gz"
    data, _ = load_volume(regions, label=True)
    table = read_dseg_tsv(regions.with_name("sub-01_desc-regions_dseg.tsv"))
    check_label_values(regions, data, table)  # consistent as written
    del table[1], table[0]  # thalamus gone; background is always allowed
    with raises_naming(regions, "label values 1 are not listed in its dseg.tsv"):
        check_label_values(regions, data, table)
    data[0, 0, :2] = [7, 12]
    with raises_naming(regions, "label values 1, 7, 12 are not listed"):
        check_label_values(regions, data, table)


def test_label_values_float_and_many(tmp_path: Path) -> None:
    check_label_values(tmp_path / "x.nii.gz", np.array([0.0, 1.0, 3.0]), {1: "CSF", 3: "WM"})
    with raises_naming(tmp_path / "x.nii.gz", r"label values 1, 2, .*, 20 … \(30 in all\)"):
        check_label_values(tmp_path / "x.nii.gz", np.arange(31), {})


def test_empty_region_of_interest(bids: Path) -> None:
    regions = bids / "derivatives/labels/sub-01/anat/sub-01_desc-regions_dseg.nii.gz"
    data, _ = load_volume(regions, label=True)
    check_region_nonempty(regions, data, region_group_indices("brainstem"), "brainstem")
    data[np.isin(data, region_group_indices("brainstem"))] = 0
    with raises_naming(regions, r"the region 'brainstem' \(labels \[5, 6, 7, 8\]\) is empty"):
        check_region_nonempty(regions, data, region_group_indices("brainstem"), "brainstem")


# --- load_records ------------------------------------------------------------------------------------------


def test_load_records_from_bids_and_from_manifest(bids: Path, tmp_path: Path) -> None:
    records = load_records(_data_cfg(root=str(bids)))
    assert [r.key for r in records] == ["sub-01", "sub-02"] and all(list(r.images) == MODALITIES for r in records)
    write_manifest(records, tmp_path / "m.tsv")
    assert load_records(_data_cfg(root="/nonexistent", manifest=str(tmp_path / "m.tsv"))) == records


def test_load_records_reports_every_bad_file(bids: Path) -> None:
    truncate(_fa(bids, "01"))
    write_garbage(_t1(bids, "02"))
    with raises_naming(bids, "2 subjects have bad input files") as info:
        load_records(_data_cfg(root=str(bids)))
    assert f"{_fa(bids, '01')}: truncated" in str(info.value)
    assert f"{_t1(bids, '02')}: cannot be read as NIfTI" in str(info.value)


def test_load_records_without_any_configured_modality(bids: Path) -> None:
    with raises_naming(bids.absolute(), r"no subject has any of the configured modalities \['FLAIR'\]"):
        load_records(_data_cfg(root=str(bids), modalities=["FLAIR"]))  # the label maps alone are no input


def test_records_with_labels_only_are_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _bids(tmp_path / "bids", n_subjects=2, missing={"02": MODALITIES})
    with caplog.at_level(logging.WARNING, logger="ssl_pretrain.data.validate"):
        records = load_records(_data_cfg(root=str(root)))
    assert [r.key for r in records] == ["sub-01"]
    assert any("sub-02" in r.getMessage() and "left out" in r.getMessage() for r in caplog.records)


def test_load_records_requires_groups_when_asked(bids: Path) -> None:
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-01\t40\nsub-02\t41\n")
    assert [r.group for r in load_records(_data_cfg(root=str(bids)))] == [None, None]
    with raises_naming(bids / "participants.tsv", "no 'group' column"):
        load_records(_data_cfg(root=str(bids), require_group=True))


def test_load_records_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"data\.modalities"):
        load_records(_data_cfg(modalities=[]))
    with pytest.raises(ConfigError, match=r"data\.root"):
        load_records(_data_cfg(root=None))


def test_load_records_never_writes_into_the_dataset(bids: Path) -> None:
    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(bids.rglob("*"))}

    before = snapshot()
    records = load_records(_data_cfg(root=str(bids)))
    dataset_fingerprint(records)
    assert snapshot() == before


# --- fingerprint -------------------------------------------------------------------------------------------


def test_dataset_fingerprint(bids: Path, tmp_path: Path) -> None:
    records = discover(bids, MODALITIES)
    fingerprint = dataset_fingerprint(records)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert dataset_fingerprint(records[::-1]) == fingerprint == dataset_fingerprint(discover(bids, MODALITIES))
    copy = shutil.copytree(bids, tmp_path / "moved")  # copy2 keeps sizes and mtimes: the same data
    assert dataset_fingerprint(discover(copy, MODALITIES)) == fingerprint
    assert dataset_fingerprint(records[:1]) != fingerprint
    assert dataset_fingerprint(discover(bids, MODALITIES[:3])) != fingerprint
    stat = _fa(bids).stat()
    os.utime(_fa(bids), ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a rewritten file
    assert dataset_fingerprint(records) != fingerprint
    _fa(bids).unlink()
    with raises_naming(_fa(bids), "cannot be read"):
        dataset_fingerprint(records)


def test_guessed_geometry_is_an_error_unless_allowed(bids: Path, caplog: pytest.LogCaptureFixture) -> None:
    fa = _fa(bids)
    shape = np.asarray(load_volume(fa)[0]).shape
    save_without_orientation(fa, np.ones(shape, np.float32), (2.0, 2.0, 2.0))  # a position made up, beside T1w's
    with raises_naming(fa, "neither qform nor sform"):
        validate_record(discover(bids, MODALITIES)[0])
    with caplog.at_level(logging.WARNING):
        validate_record(discover(bids, MODALITIES)[0], allow_guessed_geometry=True)
    assert "accepted (data.allow_guessed_geometry=true)" in caplog.text
    save_without_orientation(fa, np.ones(shape, np.float32), (0.0, 2.0, 2.0))
    with raises_naming(fa, r"voxel sizes \(pixdim\) \[0.0, 2.0, 2.0\]"):
        validate_record(discover(bids, MODALITIES)[0])
    validate_record(discover(bids, MODALITIES)[0], allow_guessed_geometry=True)
    cfg = OmegaConf.create({"root": str(bids), "modalities": MODALITIES, "allow_guessed_geometry": False})
    with raises_naming(fa, "guessed"):
        load_records(cfg)


def _n_images(records: list) -> int:
    return sum(1 for r in records for role in r.files() if not role.endswith("_tsv"))


def test_a_second_load_records_reads_no_header(bids: Path, header_reads: list[Path]) -> None:
    first = load_records(_data_cfg(root=str(bids)))
    assert len(header_reads) == 2 * _n_images(first)  # load_header + check_header per image
    assert load_records(_data_cfg(root=str(bids))) == first
    assert len(header_reads) == 2 * _n_images(first)
    load_records(_data_cfg(root=str(bids), allow_guessed_geometry=True))  # another verdict: checked again
    assert len(header_reads) == 4 * _n_images(first)


def test_two_stages_in_one_process_validate_once(tmp_path: Path, header_reads: list[Path]) -> None:
    from ssl_pretrain.data.datamodule import BrainDataModule

    root = _bids(tmp_path / "bids", n_subjects=4)
    cfg = _data_cfg(root=str(root), patch_size=8, patches_per_epoch=4, val_patches=2)
    for roi in ("thalamus", "brainstem"):  # a source stage, then a target stage: each builds its data module
        stage = cfg.copy()
        stage.roi = roi
        BrainDataModule(stage, tmp_path / "cache", roi=roi, labelled_only=True).setup()
    images = _n_images(load_records(cfg))
    assert len(header_reads) == 2 * images and len(set(header_reads)) == images


def test_a_changed_file_is_validated_again(bids: Path, header_reads: list[Path]) -> None:
    cfg = _data_cfg(root=str(bids))
    records = load_records(cfg)
    before = len(header_reads)
    data, affine = load_volume(_t1(bids, "01"))
    save_nifti(_t1(bids, "01"), data + 1.0, affine)  # rewritten, still valid: only sub-01 is read again
    load_records(cfg)
    assert len(header_reads) - before == 2 * _n_images(records[:1])
    assert all(str(p).count("sub-01") for p in header_reads[before:])
    truncate(_fa(bids, "02"))  # damaged after it passed: found
    with raises_naming(_fa(bids, "02"), "truncated"):
        load_records(cfg)
    with raises_naming(_fa(bids, "02"), "truncated"):  # a failed record is never remembered
        load_records(cfg)
