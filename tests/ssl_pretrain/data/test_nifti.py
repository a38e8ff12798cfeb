"""NIfTI reading and header checks: every bad-file case names the file and the problem."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ssl_pretrain.data.nifti import check_affine, check_header, load_header, load_volume
from tests.ssl_pretrain.data.bad_files import raises_naming, save_nifti, save_with_sform, truncate, write_garbage


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(100, 10, (10, 12, 8)).astype(np.float32)


def test_round_trip_data_and_affine(tmp_path: Path, volume: np.ndarray) -> None:
    affine = np.array([[0, 0, 2.0, -10], [-1.5, 0, 0, 20], [0, 1.5, 0, -5], [0, 0, 0, 1]])
    path = save_nifti(tmp_path / "a.nii.gz", volume, affine)
    data, got_affine = load_volume(path)
    np.testing.assert_array_equal(data, volume)
    np.testing.assert_allclose(got_affine, affine, atol=1e-5)
    shape, header_affine = check_header(path)
    assert shape == volume.shape
    np.testing.assert_allclose(header_affine, affine, atol=1e-5)


def test_label_map_int16_and_singleton_fourth_axis(tmp_path: Path) -> None:
    labels = np.arange(60, dtype=np.int32).reshape(3, 4, 5, 1) % 4
    path = save_nifti(tmp_path / "l.nii.gz", labels)
    data, _ = load_volume(path, label=True)
    assert data.dtype == np.int16 and data.shape == (3, 4, 5)
    np.testing.assert_array_equal(data, labels[..., 0])
    assert check_header(path)[0] == (3, 4, 5)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope_T1w.nii.gz"
    with raises_naming(path, "file not found"):
        load_volume(path)
    with raises_naming(path, "file not found"):
        check_header(path)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    path = tmp_path / "dir.nii.gz"
    path.mkdir()
    with raises_naming(path, "not a regular file"):
        load_header(path)


@pytest.mark.parametrize("name", ["garbage.nii.gz", "garbage.nii"])
def test_unreadable_garbage_bytes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_garbage(path)
    with raises_naming(path, "cannot be read as NIfTI"):
        check_header(path)
    with raises_naming(path, "cannot be read as NIfTI"):
        load_volume(path)


@pytest.mark.parametrize("name", ["t.nii.gz", "t.nii"])
def test_truncated_file(tmp_path: Path, volume: np.ndarray, name: str) -> None:
    path = save_nifti(tmp_path / name, volume)
    truncate(path)
    with raises_naming(path, "truncated"):
        check_header(path)  # header-only check
    with raises_naming(path, "truncated or corrupt image data"):
        load_volume(path)


def test_truncated_header_is_unreadable(tmp_path: Path, volume: np.ndarray) -> None:
    path = save_nifti(tmp_path / "h.nii.gz", volume)
    truncate(path, keep=60 / path.stat().st_size)
    with raises_naming(path, "cannot be read as NIfTI"):
        check_header(path)


def test_multimember_gzip_is_not_mistaken_for_truncation(tmp_path: Path, volume: np.ndarray) -> None:
    """bgzip-style files: the gzip trailer holds only the last member's size; the full stream is checked."""
    raw = gzip.decompress(save_nifti(tmp_path / "a.nii.gz", volume).read_bytes())
    path = tmp_path / "multi.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    assert check_header(path)[0] == volume.shape
    np.testing.assert_array_equal(load_volume(path)[0], volume)


def test_nan_and_inf_voxels(tmp_path: Path, volume: np.ndarray) -> None:
    volume[0, 0, :3] = np.nan
    volume[1, 1, :2] = [np.inf, -np.inf]
    path = save_nifti(tmp_path / "nan.nii.gz", volume)
    check_header(path)  # the header is fine: NaN is found when the voxels are read
    with raises_naming(path, "5 voxels are NaN or Inf"):
        load_volume(path)


def test_4d_image_where_3d_is_due(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "dwi.nii.gz", np.zeros((6, 6, 6, 3), np.float32))
    with raises_naming(path, r"expected a 3D volume, got shape \(6, 6, 6, 3\)"):
        check_header(path)
    with raises_naming(path, "expected a 3D volume"):
        load_volume(path)


def test_2d_image(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "slice.nii.gz", np.zeros((6, 6), np.float32))
    with raises_naming(path, "expected a 3D volume"):
        check_header(path)


@pytest.mark.parametrize(
    ("sform", "match"),
    [
        (np.zeros((4, 4)), "degenerate affine"),  # zero-sized voxels
        (np.array([[1.0, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "degenerate affine"),  # collinear
        (np.array([[np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "not a finite 4x4"),
    ],
)
def test_bad_affine(tmp_path: Path, volume: np.ndarray, sform: np.ndarray, match: str) -> None:
    path = save_with_sform(tmp_path / "bad.nii.gz", volume, sform)
    with raises_naming(path, match):
        check_header(path)
    with raises_naming(path, match):
        load_volume(path)


def test_anisotropic_voxels_accepted_with_warning(
    tmp_path: Path, volume: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    path = save_nifti(tmp_path / "aniso.nii.gz", volume, np.diag([1.0, 1.0, 4.0, 1.0]))
    with caplog.at_level(logging.WARNING, logger="ssl_pretrain.data.nifti"):
        assert check_header(path)[0] == volume.shape
        data, _ = load_volume(path)
    np.testing.assert_array_equal(data, volume)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per file, not once per read
    assert str(path) in warnings[0] and "anisotropic voxels [1.0, 1.0, 4.0]" in warnings[0]


def test_isotropic_oblique_affine_gives_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.array([[2 * c, -2 * s, 0, 0], [2 * s, 2 * c, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])
    with caplog.at_level(logging.WARNING):
        check_affine(Path("oblique.nii.gz"), affine)
    assert not caplog.records


def test_missing_orientation_warns(tmp_path: Path, volume: np.ndarray, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "noorient.nii.gz"
    img = nib.Nifti1Image(volume, np.eye(4))
    img.header.set_sform(None, code=0)
    img.header.set_qform(None, code=0)
    img.update_header = lambda: None  # keep the codes at 0 on save
    nib.save(img, str(path))
    header = nib.load(str(path)).header
    assert int(header["sform_code"]) == int(header["qform_code"]) == 0
    with caplog.at_level(logging.WARNING, logger="ssl_pretrain.data.nifti"):
        check_header(path)
    assert any(
        "qform_code and sform_code are both 0" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    ("values", "match"),
    [(np.array([0, 1, 2.5]), "integers"), (np.array([0, -1, 2.0]), "integers"), (np.array([0, 40000.0]), "32767")],
)
def test_bad_label_values(tmp_path: Path, values: np.ndarray, match: str) -> None:
    data = np.zeros((4, 4, 4), np.float32)
    data.flat[: len(values)] = values
    path = save_nifti(tmp_path / "dseg.nii.gz", data)
    with raises_naming(path, match):
        load_volume(path, label=True)


def test_broken_symlink_says_so(tmp_path: Path) -> None:
    path = tmp_path / "sub-01_T1w.nii.gz"
    path.symlink_to(tmp_path / ".git" / "annex" / "objects" / "XX")
    with raises_naming(path, "broken symbolic link"):
        check_header(path)
