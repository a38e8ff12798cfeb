"""Reading NIfTI volumes with the checks every input gets.

A bad file (missing, unreadable, truncated, NaN/Inf voxels, 4D where 3D is due, a degenerate affine)
raises :class:`~ssl_pretrain.errors.DataError` naming the file and the problem. Strongly anisotropic
voxels are accepted with a warning: the preprocessing resamples them.

Two levels of checking:

- :func:`load_header` + :func:`check_header` read only the header (milliseconds per file): the file is
  NIfTI, 3D, has a valid affine, and its data stream is as long as the header says (for ``.nii.gz`` the
  gzip trailer is compared first; only on a mismatch is the stream decompressed to be sure).

Geometry that a reader would have to *guess* is an error unless ``data.allow_guessed_geometry=true``
(:func:`check_geometry`): voxel sizes (``pixdim``) of 0 or NaN where the affine is built from them (no
sform) — nibabel silently takes 1 mm — and, per subject (:func:`ssl_pretrain.data.validate.validate_record`),
an image with neither qform nor sform while the subject's other images have one (its position would be
made up, so its grid would no longer match theirs). A singular or non-finite affine is always an error.
- :func:`load_volume` reads the voxels and also rejects NaN/Inf and, for label maps, non-integer values.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.openers import ImageOpener

from ssl_pretrain.errors import DataError

log = logging.getLogger(__name__)

ANISOTROPY_WARN = 2.5  # warn when the largest voxel edge exceeds the smallest by this factor
LABEL_MAX = int(np.iinfo(np.int16).max)  # label maps are returned as int16
_warned: set[tuple[str, str]] = set()  # (path, kind): each warning once per process


def _warn_once(path: Path, kind: str, msg: str, *args: object) -> None:
    if (str(path), kind) not in _warned:
        _warned.add((str(path), kind))
        log.warning(msg, *args)


def check_affine(path: Path, affine: np.ndarray) -> None:
    """Raise if ``affine`` is not a finite, invertible voxel-to-world map; warn if very anisotropic."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(path, "the affine (qform/sform) is not a finite 4x4 matrix; fix the header")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(zooms < 1e-6) or abs(np.linalg.det(affine[:3, :3])) < 1e-6 * float(np.prod(zooms)):
        raise DataError(path, f"degenerate affine (voxel sizes {np.round(zooms, 6).tolist()} mm); fix the header")
    if zooms.max() / zooms.min() > ANISOTROPY_WARN:
        _warn_once(
            path,
            "anisotropy",
            "%s: anisotropic voxels %s mm; resampling to the target grid",
            path,
            np.round(zooms, 2).tolist(),
        )


def load_header(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI file lazily (header and affine only), with a clear error if it is not one."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():
            raise DataError(path, "broken symbolic link (a git-annex/DataLad file not fetched? try `datalad get`)")
        raise DataError(path, "file not found; check the path (and data.root / data.manifest)")
    if not path.is_file():
        raise DataError(path, "not a regular file")
    if not os.access(path, os.R_OK):
        raise DataError(path, "cannot be read: permission denied; check its permissions (or the owner's)")
    try:
        img = nib.load(str(path))
    except Exception as err:  # nibabel raises many types for a bad header
        raise DataError(
            path, f"cannot be read as NIfTI ({type(err).__name__}: {err}); copy or export it again as .nii/.nii.gz"
        ) from err
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise DataError(path, f"expected a NIfTI image, got {type(img).__name__}")
    return img


def check_shape(path: Path, img: nib.Nifti1Image) -> tuple[int, int, int]:
    """The 3D grid shape of ``img`` (a trailing singleton 4th axis is dropped); raise if not 3D or empty."""
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(path, f"expected a 3D volume, got shape {tuple(img.shape)}; split 4D series first")
    if min(shape) < 1:
        raise DataError(path, f"empty volume of shape {tuple(img.shape)}; copy or export it again")
    return shape  # type: ignore[return-value]


def _expected_stream_bytes(img: nib.Nifti1Image) -> int:
    """Uncompressed bytes of the file as the header describes it: data offset + voxel data."""
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))
    return offset + int(np.prod(img.shape)) * img.get_data_dtype().itemsize


def check_stream(path: Path, img: nib.Nifti1Image) -> None:
    """Raise if the file holds fewer bytes of voxel data than its header promises (a truncated file).

    ``.nii``: compares the file size. ``.nii.gz``: compares the gzip trailer (uncompressed size mod
    2**32); on a mismatch (a truncated file, or a multi-member gzip such as bgzip) the stream is
    decompressed to count its bytes.
    """
    expected = _expected_stream_bytes(img)
    if path.name.endswith(".gz"):
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() >= 4:
                f.seek(-4, os.SEEK_END)
                if struct.unpack("<I", f.read(4))[0] == expected % 2**32:
                    return
        actual = 0
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    actual += len(chunk)
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as err:
            raise DataError(
                path, f"truncated or corrupt gzip stream ({type(err).__name__}: {err}); copy or export it again"
            ) from err
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise DataError(
            path,
            f"truncated file: the header promises {expected} bytes of header and voxel data, it holds {actual}; "
            "copy or export it again",
        )


def stored_voxel_sizes(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    """``pixdim[1:4]`` as stored in the file (nibabel replaces stored zeros by 1 when it loads a header)."""
    with ImageOpener(str(path)) as fh:
        raw = type(img.header).from_fileobj(fh, check=False)
    return np.asarray(raw["pixdim"][1:4], dtype=np.float64)


def has_orientation(img: nib.Nifti1Image) -> bool:
    """Whether the header says where the grid lies (a qform or sform code above 0)."""
    return int(img.header["sform_code"]) > 0 or int(img.header["qform_code"]) > 0


def check_geometry(path: Path, img: nib.Nifti1Image, allow_guessed: bool = False) -> None:
    """Raise (or, with ``allow_guessed``, warn) if the affine is built from zero/NaN stored voxel sizes.

    Raises:
        DataError: naming the file, when not ``allow_guessed``.
    """
    if int(img.header["sform_code"]) > 0:
        return  # the sform alone places the grid; pixdim is not used
    sizes = stored_voxel_sizes(path, img)
    if np.all(np.isfinite(sizes)) and np.all(sizes != 0):
        return
    problem = (
        f"voxel sizes (pixdim) {sizes.tolist()} in a header without sform: the geometry would be guessed "
        "(nibabel assumes 1 mm)"
    )
    if not allow_guessed or not np.all(np.isfinite(sizes)):
        hint = "" if not np.all(np.isfinite(sizes)) else "; or set data.allow_guessed_geometry=true to accept it"
        raise DataError(path, f"{problem}; fix the header (e.g. re-export from the scanner data){hint}")
    _warn_once(path, "guessed-sizes", "%s: %s; accepted (data.allow_guessed_geometry=true)", path, problem)


def check_header(
    path: str | Path, img: nib.Nifti1Image | None = None, *, allow_guessed_geometry: bool = False
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Header-only validation of one image: NIfTI, 3D, valid affine, no guessed voxel sizes, not truncated.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        img: the image already opened with :func:`load_header` (opened here if ``None``).
        allow_guessed_geometry: accept zero voxel sizes (with a warning) instead of raising.

    Returns:
        ``(shape, affine)``: the 3D grid shape and the 4x4 voxel-to-world (RAS mm) affine.
    """
    path = Path(path)
    img = load_header(path) if img is None else img
    shape = check_shape(path, img)
    check_geometry(path, img, allow_guessed_geometry)
    affine = np.asarray(img.affine, dtype=np.float64)
    check_affine(path, affine)
    if not has_orientation(img):
        _warn_once(
            path, "orientation", "%s: qform_code and sform_code are both 0: orientation and position are guessed", path
        )
    check_stream(path, img)
    return shape, affine


def load_volume(path: str | Path, *, label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI volume and its affine, validated.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        label: a label map: values must be integers in ``[0, 32767]``; returned as ``int16``.

    Returns:
        ``(data, affine)``: data of shape ``(X, Y, Z)`` (``float32``, or ``int16`` for labels) and the
        4x4 voxel-to-world (RAS mm) affine.
    """
    path = Path(path)
    img = load_header(path)
    shape = check_shape(path, img)
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
        if data.min() < 0 or data.max() > LABEL_MAX or not np.all(data == np.round(data)):
            raise DataError(path, f"a label map must hold integers in [0, {LABEL_MAX}]")
        return data.astype(np.int16), affine
    return data, affine
