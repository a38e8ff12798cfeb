"""Grid geometry: canonical grids, resampling through affines (closed forms), crop/pad, back to native."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy.spatial.transform import Rotation

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data import grid
from ssl_pretrain.data.cache import preprocess
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.errors import ConfigError
from tests.synthetic import write_synthetic_bids


def data_cfg(root: Path, **overrides: object):
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    cfg.root = str(root)
    cfg.patch_size = 16
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def rigid(degrees: float, shift: tuple[float, float, float], spacing: float, origin: np.ndarray) -> np.ndarray:
    """Voxel-to-world affine: ``spacing`` mm voxels rotated by ``degrees`` about z, then shifted."""
    out = np.eye(4)
    out[:3, :3] = Rotation.from_euler("z", degrees, degrees=True).as_matrix() * spacing
    out[:3, 3] = origin + np.asarray(shift)
    return out


def test_parse_patch_size_and_spacing() -> None:
    assert grid.parse_patch_size(48) == (48, 48, 48)
    assert grid.parse_patch_size([32, 48, 40]) == (32, 48, 40)
    for bad in (0, -4, [32, 32], "big", 2.5, [16, 16, 0], True):
        with pytest.raises(ConfigError, match=r"data\.patch_size"):
            grid.parse_patch_size(bad)
    assert grid.parse_spacing(1) == 1.0
    for bad in (0, -2, "x", float("nan"), None):
        with pytest.raises(ConfigError, match=r"data\.spacing"):
            grid.parse_spacing(bad)


def test_canonical_grid_of_a_flipped_volume() -> None:
    # LAS 1 mm volume of 10x12x8: x axis points left.
    affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [4.5, -6.0, -3.5]
    out, shape = grid.canonical_grid(affine, (10, 12, 8), spacing=2.0)
    assert shape == (5, 6, 4)
    np.testing.assert_allclose(out[:3, :3], np.diag([2.0, 2.0, 2.0]))
    centre_in = affine @ np.array([4.5, 5.5, 3.5, 1.0])
    centre_out = out @ np.array([2.0, 2.5, 1.5, 1.0])
    np.testing.assert_allclose(centre_out, centre_in)
    # the field of view (voxel edges) is the same: 10 mm x 12 mm x 8 mm
    lo = out @ np.array([-0.5, -0.5, -0.5, 1.0])
    lo_in = affine @ np.array([9.5, -0.5, -0.5, 1.0])
    np.testing.assert_allclose(lo[:3], lo_in[:3])


def test_resampling_a_misregistered_lower_resolution_grid_is_exact_on_a_linear_field() -> None:
    """An FA-like map on a 2.5 mm grid, rotated 3 degrees and shifted 1.3 mm, onto a 2 mm T1w grid.

    Trilinear interpolation reproduces a field linear in world coordinates exactly, so each destination
    voxel inside the source field of view must equal the field at its own world position.
    """
    t1_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    t1_affine[:3, 3] = [-30.0, -36.0, -30.0]
    fa_shape = (26, 30, 26)
    fa_affine = rigid(3.0, (1.3, -0.7, 0.4), 2.5, np.array([-32.0, -37.0, -32.0]))

    def field(world: np.ndarray) -> np.ndarray:
        return 0.2 + 0.004 * world[..., 0] - 0.002 * world[..., 1] + 0.003 * world[..., 2]

    idx = np.stack(np.meshgrid(*[np.arange(n) for n in fa_shape], indexing="ij"), -1).astype(np.float64)
    fa = field(idx @ fa_affine[:3, :3].T + fa_affine[:3, 3]).astype(np.float32)
    dst_shape = (30, 36, 30)
    out = grid.resample_to_grid(fa, fa_affine, t1_affine, dst_shape, order=1, antialias=True)
    didx = np.stack(np.meshgrid(*[np.arange(n) for n in dst_shape], indexing="ij"), -1).astype(np.float64)
    world = didx @ t1_affine[:3, :3].T + t1_affine[:3, 3]
    src = (world - fa_affine[:3, 3]) @ np.linalg.inv(fa_affine[:3, :3]).T
    inside = np.all((src >= 0) & (src <= np.asarray(fa_shape) - 1), axis=-1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], field(world)[inside], atol=2e-5)
    assert np.all(out[~np.all((src >= -0.5) & (src <= np.asarray(fa_shape) - 0.5), axis=-1)] == 0)


def test_nearest_resampling_moves_labels_by_whole_voxels() -> None:
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:4, 3:5, 4:6] = 7
    src = np.diag([2.0, 2.0, 2.0, 1.0])
    dst = src @ grid.translate((1, 0, -1))  # destination voxel v is source voxel v + (1, 0, -1)
    out = grid.resample_to_grid(labels, src, dst, (8, 8, 8), order=0)
    assert out.dtype == np.int16
    expected = np.zeros_like(labels)
    expected[1:3, 3:5, 5:7] = 7
    np.testing.assert_array_equal(out, expected)


def test_antialias_smooths_only_when_downsampling() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(32, 32, 32)).astype(np.float32)
    src = np.eye(4)
    coarse = np.diag([3.0, 3.0, 3.0, 1.0])
    plain = grid.resample_to_grid(noise, src, coarse, (10, 10, 10), order=1)
    smooth = grid.resample_to_grid(noise, src, coarse, (10, 10, 10), order=1, antialias=True)
    assert smooth.std() < 0.5 * plain.std()


def test_crop_box_and_read_box() -> None:
    mask = np.zeros((20, 20, 20), bool)
    mask[5:8, 6:9, 10:12] = True
    lo, hi = grid.crop_box(mask, margin=2, min_shape=(4, 4, 10))
    assert lo[:2] == (3, 4) and hi[:2] == (10, 11)
    assert hi[2] - lo[2] == 10 and lo[2] <= 8 and hi[2] >= 14
    with pytest.raises(ValueError):
        grid.crop_box(np.zeros((3, 3, 3), bool), 1, (1, 1, 1))

    array = np.arange(2 * 4 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 4)
    box = grid.read_box(array, (-1, 2, 0), (3, 3, 4), fill=np.array([-5.0, -9.0]))
    assert box.shape == (2, 3, 3, 4)
    np.testing.assert_array_equal(box[:, 1:3, 0:2, :], array[:, 0:2, 2:4, :])
    assert np.all(box[0, 0] == -5) and np.all(box[1, 0] == -9) and np.all(box[:, :, 2] == [[[-5]], [[-9]]])
    assert np.all(grid.read_box(array[0], (10, 10, 10), (2, 2, 2), fill=3) == 3)


def test_coverage_rejects_disjoint_grids() -> None:
    mask = np.ones((4, 4, 4), bool)
    assert grid.coverage((4, 4, 4), np.eye(4), np.eye(4), mask) == 1.0
    assert grid.coverage((4, 4, 4), grid.translate((100, 0, 0)), np.eye(4), mask) == 0.0
    assert grid.coverage((4, 4, 4), grid.translate((2, 0, 0)), np.eye(4), mask) == 0.5


def _reorient_to_las(path: Path) -> None:
    """Rewrite a NIfTI file as the same image stored left-to-right (x axis flipped)."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)[::-1]
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1, data.shape[0] - 1
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), img.affine @ flip), str(path))


@pytest.fixture(scope="module")
def las_subject(tmp_path_factory: pytest.TempPathFactory):
    """One synthetic subject whose files are all stored LAS; preprocessed at its own 2 mm spacing."""
    base = tmp_path_factory.mktemp("las")
    root = write_synthetic_bids(base / "bids", n_subjects=1, shape=(24, 28, 22))
    for path in root.rglob("*.nii.gz"):
        _reorient_to_las(path)
    cfg = data_cfg(root)
    records = load_records(cfg)
    return preprocess(records, cfg, base / "cache", progress=False)[0], records[0]


def test_to_native_round_trip_at_equal_spacing(las_subject) -> None:
    cached, record = las_subject
    native = nib.load(str(record.tissue))
    assert cached.tissue is not None
    np.testing.assert_allclose(cached.affine[:3, :3], np.diag([2.0, 2.0, 2.0]))  # canonical RAS
    back = grid.to_native(np.asarray(cached.tissue), cached, order=0)
    assert back.shape == native.shape
    np.testing.assert_array_equal(back.affine, native.affine)
    agree = np.mean(np.asarray(back.dataobj) == np.asarray(native.dataobj))
    assert agree >= 0.99


def test_to_native_round_trip_of_probabilities(las_subject) -> None:
    cached, record = las_subject
    native = nib.load(str(record.tissue))
    onehot = np.eye(4, dtype=np.float32)[np.asarray(cached.tissue)].transpose(3, 0, 1, 2)
    back = grid.to_native(onehot, cached, order=1, cval=[1.0, 0.0, 0.0, 0.0])
    assert back.shape == (*native.shape, 4)
    np.testing.assert_array_equal(back.affine, native.affine)
    labels = np.asarray(back.dataobj).argmax(-1)
    assert np.mean(labels == np.asarray(native.dataobj)) >= 0.99
    with pytest.raises(ValueError):
        grid.to_native(np.zeros((3, 3, 3)), cached)


def test_to_native_round_trip_at_another_spacing(tmp_path: Path) -> None:
    root = write_synthetic_bids(tmp_path / "bids", n_subjects=1, shape=(40, 44, 36), spacing=1.5)
    cfg = data_cfg(root, spacing=2.0)
    records = load_records(cfg)
    cached = preprocess(records, cfg, tmp_path / "cache", progress=False)[0]
    native = nib.load(str(records[0].tissue))
    back = grid.to_native(np.asarray(cached.tissue), cached)
    assert back.shape == native.shape
    np.testing.assert_array_equal(back.affine, native.affine)
    assert np.mean(np.asarray(back.dataobj) == np.asarray(native.dataobj)) >= 0.9
    # the written file reads back with the same grid
    path = tmp_path / "pred.nii.gz"
    nib.save(back, str(path))
    again = nib.load(str(path))
    np.testing.assert_allclose(again.affine, native.affine, atol=1e-5)
