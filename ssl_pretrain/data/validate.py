"""Input validation: every record is checked on its headers before any work starts.

:func:`load_records` is the one entry point later stages use: it reads the manifest TSV (``data.manifest``)
or discovers the BIDS dataset (``data.root``), then checks each record with :func:`validate_record` (headers
only, milliseconds per file). A record that passed is not checked again in the same process while none of its
files changed (:func:`record_state`: path, size, modification and change time, inode and mode of each file), so
the stages of one ``bssl study`` process (each builds data modules, predicts, evaluates) read the headers once;
discovery itself (a directory walk, milliseconds) runs every time, so added and removed files are seen.
Voxel-level checks (NaN/Inf in :func:`~ssl_pretrain.data.nifti.load_volume`, label values against the table,
empty regions) run where the voxels are read, with :func:`check_label_values` and :func:`check_region_nonempty`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ssl_pretrain.data.bids import LabelRules, discover, read_dseg_tsv
from ssl_pretrain.data.manifest import SubjectRecord, read_manifest
from ssl_pretrain.data.nifti import check_header, has_orientation, load_header
from ssl_pretrain.errors import ConfigError, DataError

__all__ = [
    "MIN_OVERLAP",
    "check_label_values",
    "check_region_nonempty",
    "dataset_fingerprint",
    "grid_overlap",
    "load_records",
    "read_dseg_tsv",
    "record_state",
    "validate_once",
    "validate_record",
]

log = logging.getLogger(__name__)

MIN_OVERLAP = 0.5  # share of the smaller field of view two grids of one subject must have in common
MAX_VALIDATED = 100_000  # remembered record states (a study's dataset is far smaller); the set is emptied beyond it
_validated: set[tuple[Any, ...]] = set()  # record states that passed validate_record in this process


def world_bounds(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """Axis-aligned world bounding box ``(2, 3)`` (min, max corner in mm) of a voxel grid, voxel edges included."""
    corners = np.array(list(itertools.product(*[(-0.5, n - 0.5) for n in shape])))  # (8, 3)
    world = corners @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    return np.stack([world.min(0), world.max(0)])


def grid_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Volume shared by two bounding boxes ``(2, 3)``, as a fraction of the smaller one (0..1)."""
    extent = np.clip(np.minimum(a[1], b[1]) - np.maximum(a[0], b[0]), 0, None)
    smaller = min(float(np.prod(a[1] - a[0])), float(np.prod(b[1] - b[0])))
    return float(np.prod(extent)) / smaller


def validate_record(record: SubjectRecord, *, allow_guessed_geometry: bool = False) -> None:
    """Check one record on its headers: every image and label map readable as NIfTI, 3D, with a valid
    affine, no guessed geometry and not truncated; every label map has a well-formed ``dseg.tsv``; all grids
    overlap in world space (more than :data:`MIN_OVERLAP` of the smaller field of view). Anisotropic voxels
    are logged as a warning. NaN/Inf voxels are found only when the voxels are read (``load_volume``).

    Guessed geometry (:func:`~ssl_pretrain.data.nifti.check_geometry`: zero voxel sizes without sform; and an
    image with neither qform nor sform while another image of the subject has one) is an error unless
    ``allow_guessed_geometry`` (``data.allow_guessed_geometry``), then a warning.

    Raises:
        DataError: naming the offending file (both files for grids that do not overlap) and the problem.
    """
    grids: list[tuple[Path, np.ndarray]] = []
    oriented: dict[Path, bool] = {}
    for role, path in record.files().items():
        if role.endswith("_tsv"):
            continue
        img = load_header(path)
        shape, affine = check_header(path, img, allow_guessed_geometry=allow_guessed_geometry)
        grids.append((path, world_bounds(shape, affine)))
        oriented[Path(path)] = has_orientation(img)
    _check_orientation_codes(oriented, allow_guessed_geometry)
    for desc in ("tissue", "regions"):
        label, table = getattr(record, desc), getattr(record, f"{desc}_tsv")
        if label is not None and table is None and getattr(record, f"{desc}_scheme") is None:
            raise DataError(
                label,
                f"no {desc} label table: add a dseg.tsv (columns index, name) beside it, or name its label scheme "
                "with data.labels.scheme (freesurfer | fmriprep)",
            )
        if table is not None:
            read_dseg_tsv(table)
    for (path_a, box_a), (path_b, box_b) in itertools.combinations(grids, 2):
        overlap = grid_overlap(box_a, box_b)
        if overlap <= MIN_OVERLAP:
            raise DataError(
                path_b,
                f"its grid does not overlap that of {path_a} ({overlap:.0%} of the smaller field of view is shared; "
                f"world bounds {np.round(box_b, 1).tolist()} vs {np.round(box_a, 1).tolist()} mm); "
                "check the affines or the registration",
            )


def record_state(record: SubjectRecord, allow_guessed_geometry: bool) -> tuple[Any, ...] | None:
    """What :func:`validate_record`'s verdict on ``record`` depends on: the setting, the label schemes and, per file,
    its role, resolved path, size, modification and change time (ns), inode and mode (a replaced, rewritten,
    ``chmod``-ed or re-linked file gives another state). ``None`` if a file cannot be ``stat``-ed (then the record is
    validated, which names the problem).
    """
    files = []
    try:
        for role, path in sorted(record.files().items()):
            resolved = Path(path).resolve()
            st = resolved.stat()
            files.append((role, str(resolved), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_mode))
    except OSError:
        return None
    return (bool(allow_guessed_geometry), record.tissue_scheme, record.regions_scheme, tuple(files))


def validate_once(record: SubjectRecord, *, allow_guessed_geometry: bool = False) -> None:
    """:func:`validate_record`, skipped when the record's :func:`record_state` already passed in this process.

    The state is taken before the headers are read, so a file changed while it is checked is checked again next time.
    """
    state = record_state(record, allow_guessed_geometry)
    if state is not None and state in _validated:
        return
    validate_record(record, allow_guessed_geometry=allow_guessed_geometry)
    if state is not None:
        if len(_validated) >= MAX_VALIDATED:
            _validated.clear()
        _validated.add(state)


def _check_orientation_codes(oriented: dict[Path, bool], allow_guessed: bool) -> None:
    """An image without qform/sform beside images with one: its position is made up (see validate_record)."""
    with_codes = [p for p, ok in oriented.items() if ok]
    without = [p for p, ok in oriented.items() if not ok]
    if not with_codes or not without:
        return
    problem = (
        f"neither qform nor sform is set (both codes 0), while {with_codes[0]} of the same subject has one: "
        "its orientation and position would be guessed and its grid would not match"
    )
    if allow_guessed:
        log.warning("%s: %s; accepted (data.allow_guessed_geometry=true)", without[0], problem)
        return
    raise DataError(
        without[0], f"{problem}; fix its header, or set data.allow_guessed_geometry=true to accept a guessed position"
    )


def check_label_values(path: str | Path, data: np.ndarray, table: dict[int, str]) -> None:
    """Raise if the label map ``data`` holds values that its ``dseg.tsv`` ``table`` does not list.

    Args:
        path: the label map (named in the message).
        data: its voxels, any shape, integer values (``load_volume(..., label=True)``).
        table: index -> name from :func:`read_dseg_tsv`; 0 (background) is always allowed.
    """
    data = np.asarray(data)
    if data.size == 0:
        return
    if np.issubdtype(data.dtype, np.integer) and data.min() >= 0:
        values = np.flatnonzero(np.bincount(data.ravel().astype(np.int64)))
    else:
        values = np.unique(data)
    absent = sorted(int(v) for v in values if int(v) != 0 and int(v) not in table)
    if absent:
        shown = ", ".join(map(str, absent[:20])) + (f" … ({len(absent)} in all)" if len(absent) > 20 else "")
        raise DataError(path, f"label values {shown} are not listed in its dseg.tsv; add them or fix the map")


def check_region_nonempty(
    path: str | Path, regions_data: np.ndarray, group_indices: Sequence[int], group_name: str
) -> None:
    """Raise if no voxel of ``regions_data`` belongs to the region group ``group_name``.

    Args:
        path: the regions label map (named in the message).
        regions_data: its voxels, any shape.
        group_indices: the label values making up the group (e.g. ``region_group_indices("brainstem")``).
        group_name: the group's name, for the message.
    """
    if not np.isin(regions_data, np.asarray(list(group_indices))).any():
        raise DataError(
            path,
            f"the region '{group_name}' (labels {list(group_indices)}) is empty in this map; "
            "check its dseg.tsv names or choose another ROI",
        )


def load_records(data_cfg: DictConfig) -> list[SubjectRecord]:
    """The validated records of the configured dataset.

    Reads ``data_cfg.manifest`` if set, else discovers ``data_cfg.root`` with ``data_cfg.modalities``;
    ``data_cfg.require_group`` (default false) demands a group for every subject;
    ``data_cfg.allow_guessed_geometry`` (default false) accepts guessed geometry with a warning. Records without any
    configured modality are dropped with a warning. Every remaining record is validated (:func:`validate_once`: a
    record whose files are unchanged since it passed in this process is not read again); all problems found are
    reported together.

    Raises:
        ConfigError: no modalities, or neither ``data.root`` nor ``data.manifest``.
        DataError: no record has any configured modality, or a file is bad (see :func:`validate_record`).
    """
    modalities = list(data_cfg.get("modalities") or [])
    if not modalities:
        raise ConfigError("data.modalities", "lists no modalities; e.g. data.modalities=[T1w,T2w,FA,MD]")
    require_group = bool(data_cfg.get("require_group", False))
    if data_cfg.get("manifest"):
        source = Path(str(data_cfg.manifest))
        records = read_manifest(source, modalities, require_group=require_group)
    elif data_cfg.get("root"):
        source = Path(str(data_cfg.root))
        rules = LabelRules.from_config(data_cfg.get("labels"))
        records = discover(source, modalities, require_group=require_group, label_rules=rules)
    else:
        raise ConfigError("data.root", "not set: give data.root=<BIDS dir> or data.manifest=<TSV>")
    usable = [r for r in records if r.images]
    if not usable:
        raise DataError(source, f"no subject has any of the configured modalities {modalities}")
    if len(usable) < len(records):
        dropped = ", ".join(r.key for r in records if not r.images)
        log.warning("%s: no image of %s for %s; left out", source, modalities, dropped)
    problems: list[DataError] = []
    allow_guessed = bool(data_cfg.get("allow_guessed_geometry", False))
    for record in usable:
        try:
            validate_once(record, allow_guessed_geometry=allow_guessed)
        except DataError as err:
            problems.append(err)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        listing = "\n".join(f"  - {err}" for err in problems)
        raise DataError(source, f"{len(problems)} subjects have bad input files:\n{listing}")
    return usable


def dataset_fingerprint(records: Sequence[SubjectRecord]) -> str:
    """A stable 16-hex-digit hash of the dataset: record keys and groups, and each file's role, name, size
    and modification time (so it changes when a file is replaced, not when the dataset is moved with
    ``cp -p``/``rsync -a``). Order of ``records`` does not matter.
    """
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.key):
        digest.update(f"{record.key}\t{record.group or ''}\n".encode())
        for role, path in sorted(record.files().items()):
            try:
                stat = Path(path).stat()
            except OSError as err:
                raise DataError(path, f"cannot be read ({err.strerror})") from err
            digest.update(f"{role}\t{Path(path).name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
