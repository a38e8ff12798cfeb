"""The preprocessing cache: each subject preprocessed once into memory-mappable arrays.

:func:`preprocess` turns validated :class:`~ssl_pretrain.data.manifest.SubjectRecord` s into
:class:`CachedSubject` s. Per subject (one at a time, so memory stays bounded):

1. the *reference* modality (the first of ``data.modalities`` the subject has, usually T1w) defines the
   grid: its field of view in canonical RAS orientation at ``data.spacing`` mm (:mod:`.grid`);
2. the brain mask is ``tissue > 0`` when a tissue map exists, else a robust threshold of the reference
   image (``data.brain_threshold`` x its 99th percentile, opened, largest component, holes filled);
3. the grid is cropped to the brain's bounding box plus ``data.crop_margin`` mm, grown to at least
   ``data.patch_size`` voxels per axis;
4. every modality is resampled onto that grid through its own affine (trilinear, anti-aliased when
   downsampling) — so FA/MD maps on a 2.5 mm grid with a small misregistration land on the T1w grid —
   and label maps by nearest neighbour; label maps are read by :mod:`ssl_pretrain.data.label_maps`
   (values checked against their ``dseg.tsv`` or scheme, tissue mapped by name to 0 bg / 1 CSF / 2 GM /
   3 WM, regions to the canonical indices of :mod:`ssl_pretrain.data.labels`, names that are no canonical
   region becoming 0; a CSF/GM/WM probseg triplet hardened into a tissue map);
5. each modality is normalised inside the brain mask: ``(x - median) / scale`` with ``scale`` the
   ``[lower, upper]`` percentile range (``percentile``, default), the IQR (``iqr``), or mean/std
   (``zscore``); the statistics and the value a raw 0 maps to (``background``) are kept in ``meta.json``.

Entry layout ``<cache_dir>/<sub-XX[_ses-YY]>_<key>/``: ``image.npy`` ``(C, X, Y, Z)`` (``data.cache_dtype``,
zeros for a missing modality), ``brain.npy`` ``(X, Y, Z)`` uint8 (1 = brain), ``tissue.npy`` /
``regions.npy`` ``(X, Y, Z)`` uint8 (absent when the subject has none), ``meta.json`` (grid affine, the
reference's native affine and shape, presence, normalisation statistics, crop box, input hashes, settings).

The key hashes the *content* of every input file and every preprocessing setting, so changing a file or
a setting makes a new entry; an entry is never stale. Entries are written into a temporary directory
and renamed into place (``os.replace``) under a per-entry ``filelock``, so concurrent processes (DDP
ranks, parallel jobs) never see or write a half-made entry; an entry whose ``meta.json`` is missing,
unreadable or for another key is recomputed. Old entries are not deleted (remove the directory to
reclaim space). The cache may not lie inside the raw dataset (``data.root``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from omegaconf import DictConfig
from scipy import ndimage
from tqdm.auto import tqdm

from ssl_pretrain.atomic import dir_mode
from ssl_pretrain.data import grid
from ssl_pretrain.data.label_maps import label_settings, load_regions, load_tissue
from ssl_pretrain.data.manifest import SubjectRecord
from ssl_pretrain.data.nifti import load_volume
from ssl_pretrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the preprocessing changes in a way the settings do not capture
MIN_COVERAGE = 0.1  # share of the brain a modality's field of view must cover on the reference grid
NORMALISATIONS = ("percentile", "iqr", "zscore")
DTYPES = ("float16", "float32")
_hash_memo: dict[tuple[str, int, int, int, int], str] = {}


@dataclass
class CachedSubject:
    """One preprocessed subject; arrays are read-only memory maps (a patch read costs a patch).

    Attributes:
        key: the record key ``sub-XX[_ses-YY]``.
        group: participant group (``""`` when unknown).
        record: the input record.
        image: ``(C, X, Y, Z)`` normalised intensities in ``data.modalities`` order; zeros where missing.
        presence: ``(C,)`` bool, True = the modality exists for this subject.
        tissue: ``(X, Y, Z)`` uint8 tissue classes (0 bg, 1 CSF, 2 GM, 3 WM), or ``None``.
        regions: ``(X, Y, Z)`` uint8 canonical region indices (0 none), or ``None``.
        affine: 4x4 voxel-to-world affine of the cache grid.
        meta: the entry's ``meta.json`` (see the module docstring).
        brain: ``(X, Y, Z)`` uint8 brain mask (1 = brain) used for sampling and normalisation.
        entry: the entry directory.
    """

    key: str
    group: str
    record: SubjectRecord
    image: np.ndarray
    presence: np.ndarray
    tissue: np.ndarray | None
    regions: np.ndarray | None
    affine: np.ndarray
    meta: dict[str, Any]
    brain: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0, 0), np.uint8))
    entry: Path = Path()

    @property
    def modalities(self) -> list[str]:
        """Channel names, in order."""
        return list(self.meta["modalities"])

    @property
    def background(self) -> np.ndarray:
        """``(C,)`` float32: the normalised value of a raw 0 per channel (0 for a missing modality); pad value."""
        stats = self.meta["normalisation"]
        return np.asarray([(s or {}).get("background", 0.0) for s in stats.values()], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        # Pickle (e.g. into spawned DataLoader workers) without the arrays; they are re-mapped on arrival.
        state = dict(self.__dict__)
        for name in ("image", "tissue", "regions", "brain"):
            state[name] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.image, self.tissue, self.regions, self.brain = _open_arrays(self.entry, self.meta)


def check_cache_dir(cache_dir: str | Path, data_root: str | Path | None) -> Path:
    """The absolute cache directory, refusing one inside the raw dataset.

    Raises:
        ConfigError: (``paths.cache_dir``) the cache would lie inside ``data.root``.
    """
    cache = Path(cache_dir).expanduser().resolve()
    if data_root:
        root = Path(str(data_root)).expanduser().resolve()
        if cache == root or root in cache.parents:
            raise ConfigError(
                "paths.cache_dir",
                f"{cache} lies inside the raw dataset data.root={root}; the dataset is never written to, "
                "put the cache elsewhere (e.g. paths.cache_dir=.cache/bssl or BSSL_CACHE=...)",
            )
    return cache


def preprocessing_settings(data_cfg: DictConfig) -> dict[str, Any]:
    """Every setting the cached arrays depend on (part of the cache key), validated.

    Raises:
        ConfigError: naming the key with a bad value.
    """
    modalities = [str(m) for m in (data_cfg.get("modalities") or [])]
    if not modalities or len(set(modalities)) != len(modalities):
        raise ConfigError("data.modalities", f"expected a non-empty list of distinct names, got {modalities}")
    norm = data_cfg.get("normalisation") or {}
    method = str(norm.get("method", "percentile"))
    if method not in NORMALISATIONS:
        raise ConfigError("data.normalisation.method", f"'{method}' is not one of {list(NORMALISATIONS)}")
    lower, upper = float(norm.get("lower", 0.5)), float(norm.get("upper", 99.5))
    if not 0 <= lower < upper <= 100:
        raise ConfigError("data.normalisation", f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    margin = float(data_cfg.get("crop_margin", 8.0))
    if not np.isfinite(margin) or margin < 0:
        raise ConfigError("data.crop_margin", f"expected a margin >= 0 mm, got {margin}")
    threshold = float(data_cfg.get("brain_threshold", 0.1))
    if not 0 < threshold < 1:
        raise ConfigError("data.brain_threshold", f"expected a fraction in (0, 1), got {threshold}")
    dtype = str(data_cfg.get("cache_dtype", "float32"))
    if dtype not in DTYPES:
        raise ConfigError("data.cache_dtype", f"'{dtype}' is not one of {list(DTYPES)}")
    return {
        "version": CACHE_VERSION,
        "modalities": modalities,
        "spacing": grid.parse_spacing(data_cfg.get("spacing")),
        "min_shape": list(grid.parse_patch_size(data_cfg.get("patch_size"))),
        "crop_margin": margin,
        "brain_threshold": threshold,
        "normalisation": {"method": method, "lower": lower, "upper": upper},
        "antialias": bool(data_cfg.get("antialias", True)),
        "dtype": dtype,
        **({"labels": labels} if (labels := label_settings(data_cfg)) is not None else {}),
    }


def file_hash(path: str | Path) -> str:
    """BLAKE2b hex digest of a file's content (memoised per process on path, size, mtime, ctime and inode)."""
    path = Path(path)
    try:
        st = path.stat()
        memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        if memo not in _hash_memo:
            digest = hashlib.blake2b()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 22):
                    digest.update(chunk)
            _hash_memo[memo] = digest.hexdigest()[:32]
    except OSError as err:
        raise DataError(path, f"cannot be read ({err.strerror})") from err
    return _hash_memo[memo]


def entry_key(record: SubjectRecord, settings: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """The cache key of a record under ``settings`` and its input hashes (role -> hash)."""
    hashes = {role: file_hash(path) for role, path in sorted(record.files().items())}
    payload = json.dumps({"record": record.key, "inputs": hashes, "settings": settings}, sort_keys=True)
    return hashlib.blake2b(payload.encode(), digest_size=10).hexdigest(), hashes


def preprocess(
    records: Sequence[SubjectRecord], data_cfg: DictConfig, cache_dir: str | Path, *, progress: bool = True
) -> list[CachedSubject]:
    """Preprocess records into the cache (or load them from it), one subject at a time.

    Args:
        records: validated records (``ssl_pretrain.data.validate.load_records``).
        data_cfg: the ``data`` config (``modalities``, ``spacing``, ``patch_size``, ``crop_margin``,
            ``brain_threshold``, ``normalisation``, ``antialias``, ``cache_dtype``, ``root``).
        cache_dir: the cache directory (``paths.cache_dir``), never inside ``data.root``.
        progress: show a progress bar over subjects (on a terminal).

    Returns:
        One :class:`CachedSubject` per record, in order.

    Raises:
        ConfigError: a bad setting, or the cache inside the dataset.
        DataError: a bad input file (unreadable, NaN, label values not in ``dseg.tsv``, grids that do
            not overlap, an empty brain mask), naming the file.
    """
    cache = check_cache_dir(cache_dir, data_cfg.get("root"))
    settings = preprocessing_settings(data_cfg)
    cache.mkdir(parents=True, exist_ok=True)
    bar = tqdm(records, desc="preprocess", unit="subject", disable=None if progress else True)
    return [preprocess_record(record, settings, cache) for record in bar]


def preprocess_record(record: SubjectRecord, settings: dict[str, Any], cache: Path) -> CachedSubject:
    """One record through the cache: load a valid entry, else compute it atomically under a lock."""
    key, hashes = entry_key(record, settings)
    entry = cache / f"{record.key}_{key}"
    loaded = load_entry(entry, key, record)
    if loaded is not None:
        return loaded
    (cache / ".locks").mkdir(exist_ok=True)
    with FileLock(str(cache / ".locks" / f"{entry.name}.lock")):
        loaded = load_entry(entry, key, record)  # another process may have finished it meanwhile
        if loaded is not None:
            return loaded
        for stale in cache.glob(f".tmp-{entry.name}-*"):  # left by an interrupted writer (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=cache))
        tmp.chmod(dir_mode())  # mkdtemp makes it private; the umask decides who shares the cache
        try:
            compute_entry(record, settings, key, hashes, tmp)
            if entry.exists():  # an untrusted (partial or corrupt) entry: move it aside, then drop it
                trash = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-old-", dir=cache))
                os.replace(entry, trash / "entry")
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("preprocessed %s -> %s", record.key, entry)
    loaded = load_entry(entry, key, record)
    if loaded is None:
        raise DataError(entry, "the cache entry just written cannot be read back; is the disk full?")
    return loaded


def _open_arrays(
    entry: Path, meta: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    image = np.load(entry / "image.npy", mmap_mode="r")
    brain = np.load(entry / "brain.npy", mmap_mode="r")
    tissue = np.load(entry / "tissue.npy", mmap_mode="r") if meta["has_tissue"] else None
    regions = np.load(entry / "regions.npy", mmap_mode="r") if meta["has_regions"] else None
    shape = tuple(meta["shape"])
    if image.shape != (len(meta["modalities"]), *shape) or image.dtype != np.dtype(meta["settings"]["dtype"]):
        raise ValueError(f"image.npy has shape {image.shape} and dtype {image.dtype}, meta.json says otherwise")
    for arr in (brain, tissue, regions):
        if arr is not None and (arr.shape != shape or arr.dtype != np.uint8):
            raise ValueError("a label array does not match meta.json")
    return image, tissue, regions, brain


def load_entry(entry: Path, key: str, record: SubjectRecord) -> CachedSubject | None:
    """The cached subject at ``entry`` if it is complete and made for ``key``, else ``None`` (never raises)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("cache_key") != key or meta.get("record_key") != record.key:
            return None
        image, tissue, regions, brain = _open_arrays(entry, meta)
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    return CachedSubject(
        key=record.key,
        group=record.group or "",
        record=record,
        image=image,
        presence=np.asarray(meta["presence"], dtype=bool),
        tissue=tissue,
        regions=regions,
        affine=np.asarray(meta["affine"], dtype=np.float64),
        meta=meta,
        brain=brain,
        entry=entry,
    )


def brain_threshold_mask(image: np.ndarray, fraction: float) -> np.ndarray:
    """A brain mask from an image alone: ``> fraction x p99`` of positive voxels, opened, largest
    connected component, holes filled. ``(X, Y, Z)`` bool."""
    positive = image[image > 0]
    if positive.size == 0:
        return np.zeros(image.shape, bool)
    mask = image > fraction * np.percentile(positive, 99)
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def robust_stats(values: np.ndarray, norm: dict[str, Any]) -> tuple[float, float]:
    """``(centre, scale)`` of brain intensities under the normalisation settings (scale 0 if constant)."""
    values = np.asarray(values, dtype=np.float64)
    if norm["method"] == "zscore":
        return float(values.mean()), float(values.std())
    lo, hi = (25.0, 75.0) if norm["method"] == "iqr" else (norm["lower"], norm["upper"])
    p_lo, median, p_hi = np.percentile(values, [lo, 50.0, hi])
    return float(median), float(p_hi - p_lo)


def compute_entry(record: SubjectRecord, settings: dict[str, Any], key: str, hashes: dict[str, str], out: Path) -> None:
    """Preprocess one record into the (empty, temporary) directory ``out``; ``meta.json`` is written last."""
    modalities = settings["modalities"]
    present = [m for m in modalities if m in record.images]
    if not present:
        anchor = next(iter(record.files().values()), Path(record.key))
        raise DataError(anchor, f"{record.key} has none of the modalities {modalities}")
    reference = present[0]
    spacing = settings["spacing"]
    ref_data, ref_affine = load_volume(record.images[reference])
    native_shape = [int(n) for n in ref_data.shape]
    full_affine, full_shape = grid.canonical_grid(ref_affine, ref_data.shape, spacing)

    tissue_native = load_tissue(record, settings.get("labels"))
    if tissue_native is not None:
        mask_full = grid.resample_to_grid(tissue_native[0], tissue_native[1], full_affine, full_shape, order=0) > 0
        mask_source = Path(record.tissue or next(iter(record.tissue_probseg.values())))
    else:
        ref_full = grid.resample_to_grid(
            ref_data, ref_affine, full_affine, full_shape, order=1, antialias=settings["antialias"]
        )
        mask_full = brain_threshold_mask(ref_full, settings["brain_threshold"])
        mask_source = record.images[reference]
    if not mask_full.any():
        raise DataError(mask_source, "the brain mask is empty on the reference grid (no tissue > 0 or no signal)")
    margin = int(np.ceil(settings["crop_margin"] / spacing))
    lo, hi = grid.crop_box(mask_full, margin, settings["min_shape"])
    shape = tuple(b - a for a, b in zip(lo, hi, strict=True))
    affine = full_affine @ grid.translate(lo)
    brain = grid.read_box(mask_full.astype(np.uint8), lo, shape)
    del mask_full
    inside = brain.astype(bool)

    image = np.zeros((len(modalities), *shape), dtype=settings["dtype"])
    stats: dict[str, dict[str, float] | None] = {}
    for c, modality in enumerate(modalities):
        stats[modality] = None
        if modality not in record.images:
            continue
        path = record.images[modality]
        data, src_affine = (ref_data, ref_affine) if modality == reference else load_volume(path)
        share = grid.coverage(data.shape, src_affine, affine, inside)
        if share < MIN_COVERAGE:
            raise DataError(
                path,
                f"its field of view covers only {share:.0%} of the brain on the {reference} grid of "
                f"{record.images[reference]}: the grids do not overlap; check the affines or the registration",
            )
        res = grid.resample_to_grid(data, src_affine, affine, shape, order=1, antialias=settings["antialias"])
        centre, scale = robust_stats(res[inside], settings["normalisation"])
        if not scale > 0:
            raise DataError(path, "the intensity is constant inside the brain; the image cannot be normalised")
        image[c] = (res - centre) / scale
        stats[modality] = {"centre": centre, "scale": scale, "background": -centre / scale}
        del data, res
    del ref_data
    np.save(out / "image.npy", image)
    np.save(out / "brain.npy", brain)
    if tissue_native is not None:
        tissue = grid.resample_to_grid(tissue_native[0], tissue_native[1], affine, shape, order=0)
        np.save(out / "tissue.npy", tissue.astype(np.uint8))
    regions_native = load_regions(record, settings.get("labels"))
    if regions_native is not None:
        regions, reg_affine = regions_native
        np.save(out / "regions.npy", grid.resample_to_grid(regions, reg_affine, affine, shape, order=0))

    files = record.files()
    meta = {
        "cache_version": CACHE_VERSION,
        "cache_key": key,
        "record_key": record.key,
        "group": record.group or "",
        "modalities": modalities,
        "presence": [m in record.images for m in modalities],
        "reference": reference,
        "shape": list(shape),
        "affine": affine.tolist(),
        "native_affine": ref_affine.tolist(),
        "native_shape": native_shape,
        "canonical_affine": full_affine.tolist(),
        "canonical_shape": list(full_shape),
        "crop_box": {"lo": list(lo), "hi": list(hi)},
        "brain_mask": "tissue" if tissue_native is not None else "threshold",
        "brain_voxels": int(inside.sum()),
        "has_tissue": tissue_native is not None,
        "has_regions": regions_native is not None,
        "normalisation": stats,
        "settings": settings,
        "inputs": {role: {"path": str(files[role]), "hash": h} for role, h in hashes.items()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tmp_meta = out / "meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_meta, out / "meta.json")
