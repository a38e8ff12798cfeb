"""Reading a subject's label maps into the toolkit's classes (the preprocessing cache calls this).

A tissue map is a ``dseg`` (values named by its ``dseg.tsv``, or by a scheme of
:data:`~ssl_pretrain.data.labels.SCHEMES` when it has none) or a triplet of ``label-CSF|GM|WM_probseg``
maps (fMRIPrep / sMRIPrep): a voxel is brain where the three probabilities sum to at least
``data.labels.tissue.probseg_min`` (default 0.5: the voxel is more likely tissue than not), and then takes
its most probable class. A regions map is a ``dseg`` read the same way. Names become classes through
:func:`~ssl_pretrain.data.labels.tissue_class` / :func:`~ssl_pretrain.data.labels.region_of`, with the
user's ``data.labels.{tissue,regions}.names`` first; a tissue value present in the map that has no class
is a :class:`DataError` naming the map, the value and the key that maps it.

The settings that decide the result (:func:`label_settings`) are part of the cache key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ssl_pretrain.data.bids import read_dseg_tsv
from ssl_pretrain.data.labels import SCHEMES, TISSUE_INDEX, region_group_indices, region_of, tissue_class
from ssl_pretrain.data.manifest import PROBSEG_CLASSES, SubjectRecord
from ssl_pretrain.data.nifti import load_volume
from ssl_pretrain.data.validate import check_label_values
from ssl_pretrain.errors import ConfigError, DataError

DEFAULT_PROBSEG_MIN = 0.5
BRAINSTEM = set(region_group_indices("brainstem"))
UNMAPPED = 255  # lookup-table value of a label without a class


def label_settings(data_cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``data.labels`` settings the cached label arrays depend on, or ``None`` when all are defaults.

    (``None`` keeps the cache keys of runs that never set them unchanged.)

    Raises:
        ConfigError: a bad ``data.labels.*`` value.
    """
    labels = data_cfg.get("labels") or {}
    if isinstance(labels, DictConfig):
        labels = OmegaConf.to_container(labels, resolve=True)  # type: ignore[assignment]
    tissue, regions = labels.get("tissue") or {}, labels.get("regions") or {}  # type: ignore[union-attr]
    tissue_names = {str(k): str(v) for k, v in (tissue.get("names") or {}).items()}
    regions_names = {str(k): str(v) for k, v in (regions.get("names") or {}).items()}
    probseg_min = float(tissue.get("probseg_min", DEFAULT_PROBSEG_MIN))
    if not 0 < probseg_min <= 1:
        raise ConfigError("data.labels.tissue.probseg_min", f"expected a probability in (0, 1], got {probseg_min}")
    for key, extra, check in (("tissue", tissue_names, tissue_class), ("regions", regions_names, region_of)):
        for name in extra:
            try:
                check(name, extra)  # type: ignore[operator]
            except ValueError as err:
                raise ConfigError(f"data.labels.{key}.names", str(err)) from None
    if not tissue_names and not regions_names and probseg_min == DEFAULT_PROBSEG_MIN:
        return None
    return {"tissue_names": tissue_names, "regions_names": regions_names, "probseg_min": probseg_min}


def label_table(path: Path, table: Path | None, scheme: str | None) -> dict[int, str]:
    """Value -> name of a label map: its ``dseg.tsv``, else its scheme's table.

    Raises:
        DataError: neither is known.
    """
    if table is not None:
        return read_dseg_tsv(table)
    if scheme in SCHEMES:
        return SCHEMES[str(scheme)]
    raise DataError(path, "no label table: add a dseg.tsv (columns index, name) beside it, or set data.labels.scheme")


def _lut(table: Mapping[int, str], kind: str, extra: Mapping[str, str]) -> np.ndarray:
    lut = np.full(max(table) + 1, UNMAPPED if kind == "tissue" else 0, dtype=np.uint8)
    for value, name in table.items():
        if kind == "tissue":
            index = tissue_class(name, extra)
            lut[value] = UNMAPPED if index is None else index
        else:
            lut[value] = region_of(name, extra)
    return lut


def _read_dseg(
    path: Path, table_path: Path | None, scheme: str | None, kind: str, extra: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    data, affine = load_volume(path, label=True)
    table = label_table(path, table_path, scheme)
    check_label_values(path, data, table)
    mapped = _lut(table, kind, extra)[data.astype(np.int64)]
    if kind == "tissue" and (mapped == UNMAPPED).any():
        value = int(data[mapped == UNMAPPED].flat[0])
        name = table[value]
        why = " (FreeSurfer labels the brainstem without its grey nuclei)" if region_of(name) in BRAINSTEM else ""
        raise DataError(
            path,
            f"label {value} '{name}' has no tissue class (background, CSF, GM, WM){why}; map it with "
            f"data.labels.tissue.names, e.g. 'data.labels.tissue.names={{{name}: WM}}'",
        )
    return mapped.astype(np.uint8), affine


def _hard_tissue(record: SubjectRecord, probseg_min: float) -> tuple[np.ndarray, np.ndarray]:
    """The tissue classes of a CSF/GM/WM probseg triplet (module docstring)."""
    volumes, affine, first = [], None, None
    for name in PROBSEG_CLASSES:
        path = record.tissue_probseg[name]
        data, this_affine = load_volume(path)
        if affine is not None and (data.shape != volumes[0].shape or not np.allclose(this_affine, affine, atol=1e-4)):
            raise DataError(path, f"its grid differs from that of {first}; the three probseg maps must share one grid")
        if data.min() < -1e-3 or data.max() > 1 + 1e-3:
            raise DataError(path, f"probabilities must lie in [0, 1], found [{data.min():.3g}, {data.max():.3g}]")
        volumes.append(data)
        affine, first = this_affine, first or path
    stack = np.stack(volumes)  # (3, X, Y, Z) in CSF, GM, WM order
    classes = np.asarray([TISSUE_INDEX[c] for c in PROBSEG_CLASSES], dtype=np.uint8)
    tissue = classes[stack.argmax(0)]
    tissue[stack.sum(0) < probseg_min] = TISSUE_INDEX["background"]
    return tissue, affine  # type: ignore[return-value]


def load_tissue(record: SubjectRecord, settings: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The subject's tissue map ``(X, Y, Z)`` uint8 (0 bg, 1 CSF, 2 GM, 3 WM) and its affine, or ``None``.

    Args:
        record: the subject (its ``tissue`` dseg, else its ``tissue_probseg`` triplet).
        settings: :func:`label_settings` (``None``: the defaults).
    """
    settings = settings or {}
    if record.tissue is not None:
        return _read_dseg(
            record.tissue, record.tissue_tsv, record.tissue_scheme, "tissue", settings.get("tissue_names", {})
        )
    if record.tissue_probseg:
        return _hard_tissue(record, float(settings.get("probseg_min", DEFAULT_PROBSEG_MIN)))
    return None


def load_regions(record: SubjectRecord, settings: Mapping[str, Any] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The subject's regions map ``(X, Y, Z)`` uint8 (canonical region indices, 0 none) and its affine, or ``None``."""
    if record.regions is None:
        return None
    extra = (settings or {}).get("regions_names", {})
    return _read_dseg(record.regions, record.regions_tsv, record.regions_scheme, "regions", extra)
