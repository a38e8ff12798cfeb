"""Reading NIfTI volumes with the checks every input gets.

A bad file (missing, unreadable, truncated, NaN/Inf voxels, 4D where 3D is due, a degenerate affine)
raises :class:`~ssl_pretrain.errors.DataError` naming the file and the problem. Strongly anisotropic
voxels are accepted with a warning: the preprocessing resamples them.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from ssl_pretrain.errors import DataError

log = logging.getLogger(__name__)

ANISOTROPY_WARN = 2.5  # warn when the largest voxel edge exceeds the smallest by this factor


def check_affine(path: Path, affine: np.ndarray) -> None:
    """Raise if ``affine`` is not a finite, invertible voxel-to-world map; warn if very anisotropic."""
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(path, "the affine (qform/sform) is not a finite 4x4 matrix; fix the header")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(zooms < 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise DataError(path, f"degenerate affine (voxel sizes {np.round(zooms, 6).tolist()} mm); fix the header")
    if zooms.max() / zooms.min() > ANISOTROPY_WARN:
        log.warning("%s: anisotropic voxels %s mm; resampling to the target grid", path, np.round(zooms, 2).tolist())


def load_header(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI file lazily (header and affine only), with a clear error if it is not one."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if not path.is_file():
        raise DataError(path, "not a regular file")
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for a bad header
        raise DataError(path, f"cannot be read as NIfTI ({type(err).__name__}: {err})") from err
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(path, f"expected a NIfTI image, got {type(img).__name__}")
    return img


def load_volume(path: str | Path, *, label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI volume and its affine, validated.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        label: a label map: values must be non-negative integers; returned as ``int16``.

    Returns:
        ``(data, affine)``: data of shape ``(X, Y, Z)`` (``float32``, or ``int16`` for labels) and the
        4x4 voxel-to-world (RAS mm) affine.
    """
    path = Path(path)
    img = load_header(path)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(path, f"expected a 3D volume, got shape {tuple(img.shape)}; split 4D series first")
    if min(shape) < 1:
        raise DataError(path, f"empty volume of shape {tuple(img.shape)}")
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(path, affine)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError, ValueError) as err:
        raise DataError(path, f"truncated or corrupt image data ({type(err).__name__}: {err})") from err
    if not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise DataError(path, f"{n_bad} voxels are NaN or Inf; fix or mask them before use")
    if label:
        if data.min() < 0 or not np.all(data == np.round(data)):
            raise DataError(path, "a label map must hold non-negative integers")
        return data.astype(np.int16), affine
    return data, affine
