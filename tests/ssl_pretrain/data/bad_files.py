"""Writers of bad input files (truncated, garbage, bad affine, …) and an assertion on the error they cause.

Shared by the data-layer tests; the CLI reliability tests can reuse the writers.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ssl_pretrain.errors import DataError


@contextmanager
def raises_naming(path: str | Path, match: str) -> Iterator[pytest.ExceptionInfo[DataError]]:
    """Expect a :class:`DataError` whose message matches ``match`` (regex) and names ``path``."""
    with pytest.raises(DataError, match=match) as info:
        yield info
    assert str(path) in str(info.value), f"{path} not named in: {info.value}"


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` with ``affine`` (identity if ``None``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def save_with_sform(path: Path, data: np.ndarray, sform: np.ndarray) -> Path:
    """Write an image whose sform is exactly ``sform`` (nibabel will not build a degenerate one from an affine)."""
    header = nib.Nifti1Header()
    header.set_data_shape(data.shape)
    header.set_data_dtype(data.dtype)
    header["sform_code"] = 2
    header["srow_x"], header["srow_y"], header["srow_z"] = sform[0], sform[1], sform[2]
    nib.save(nib.Nifti1Image(data, None, header=header), str(path))
    return path


def truncate(path: Path, keep: float = 2 / 3) -> Path:
    """Cut a file to ``keep`` of its bytes, as an interrupted copy would."""
    content = path.read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    return path


def write_garbage(path: Path, n_bytes: int = 2000) -> Path:
    """Overwrite ``path`` with random bytes."""
    path.write_bytes(np.random.default_rng(1).bytes(n_bytes))
    return path


def save_without_orientation(path: Path, data: np.ndarray, voxel_sizes: tuple[float, float, float]) -> Path:
    """Write an image with qform_code = sform_code = 0 and exactly these stored voxel sizes (pixdim[1:4]).

    nibabel refuses to write zero sizes, so the header bytes are patched (NIfTI-1: pixdim at byte 76).
    """
    img = nib.Nifti1Image(data, None)
    img.header["qform_code"] = img.header["sform_code"] = 0
    raw = bytearray(img.to_bytes())
    raw[80:92] = np.asarray(voxel_sizes, dtype="<f4").tobytes()  # pixdim[1], [2], [3]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(bytes(raw)) if path.name.endswith(".gz") else bytes(raw))
    return path
