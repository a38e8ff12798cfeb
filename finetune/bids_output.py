"""Writing predictions as a BIDS derivative dataset, and the per-region tissue volume table.

Layout under ``<run dir>/bssl/`` (opens over the input in FSLeyes or ITK-SNAP; a BIDS derivative
that the data layer can read back as labels)::

    dataset_description.json               DatasetType "derivative", GeneratedBy brainstem-ssl
    desc-tissue_dseg.tsv                   index -> name (0 background, 1 CSF, 2 GM, 3 WM), inherited
    sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_desc-tissue_dseg.nii.gz   (+ .tsv and .json sidecars)
    sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_desc-tissue_probseg.nii.gz  (optional, 4D: CSF, GM, WM)
    sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_label-GM_probseg.nii.gz     (optional, one per class)

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written image that a later run would trust.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from ssl_pretrain.atomic import atomic_path
from ssl_pretrain.data.labels import REGION_INDEX, TISSUE_CLASSES, region_group_indices

DERIVATIVE_NAME = "bssl"
BIDS_VERSION = "1.9.0"
# Regions of the volume table: (name, region indices or None = whole brain, always reported).
VOLUME_REGIONS: tuple[tuple[str, tuple[int, ...] | None, bool], ...] = (
    ("whole_brain", None, True),
    ("subcortical", region_group_indices("subcortical"), True),
    ("brainstem", region_group_indices("brainstem"), True),
    ("midbrain", (REGION_INDEX["midbrain"],), False),
    ("pons", (REGION_INDEX["pons"],), False),
    ("medulla", (REGION_INDEX["medulla"],), False),
)
VOLUME_CLASSES: tuple[str, ...] = ("CSF", "GM", "WM")
VOLUME_COLUMNS = [
    "participant_id",
    "session",
    "group",
    "region",
    *[f"{c}_mm3" for c in VOLUME_CLASSES],
    "region_mm3",
    "in_model_roi",
]


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the result onto ``path``."""
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=suffix) as tmp:
        write(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically."""
    _atomic(Path(path), lambda tmp: tmp.write_text(text))


def write_nifti(path: str | Path, img: nib.Nifti1Image) -> None:
    """Save a NIfTI image atomically."""
    _atomic(Path(path), lambda tmp: nib.save(img, str(tmp)))


def dseg_tsv() -> str:
    """The ``dseg.tsv`` of the tissue classes."""
    return "index\tname\n" + "".join(f"{i}\t{n}\n" for i, n in sorted(TISSUE_CLASSES.items()))


def init_derivative(root: str | Path, source: str | Path | None, version: str, description: str = "") -> Path:
    """Create the derivative dataset's top-level files (idempotent) and return its root."""
    root = Path(root)
    desc = {
        "Name": "brainstem-ssl tissue segmentation (background/CSF/GM/WM)",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "brainstem-ssl", "Version": version, "Description": description or "bssl predict"}],
    }
    if source is not None:
        desc["SourceDatasets"] = [{"URL": Path(source).resolve().as_uri()}]
    write_text(root / "dataset_description.json", json.dumps(desc, indent=2) + "\n")
    write_text(root / "desc-tissue_dseg.tsv", dseg_tsv())
    return root


def anat_dir(root: str | Path, subject: str, session: str | None) -> Path:
    """``root/sub-XX/[ses-YY/]anat``."""
    path = Path(root) / f"sub-{subject}"
    if session:
        path = path / f"ses-{session}"
    return path / "anat"


def entity_stem(subject: str, session: str | None) -> str:
    """``sub-XX[_ses-YY]``."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def write_dseg(
    root: str | Path, subject: str, session: str | None, labels: np.ndarray, affine: np.ndarray, sources: Sequence[str]
) -> Path:
    """Write ``sub-XX[_ses-YY]_desc-tissue_dseg.nii.gz`` (uint8) with its ``.tsv`` and ``.json``.

    Args:
        labels: ``(X, Y, Z)`` tissue classes on the subject's native grid.
        affine: the native voxel-to-world affine.
        sources: the input files (recorded in the JSON sidecar).
    """
    folder = anat_dir(root, subject, session)
    stem = f"{entity_stem(subject, session)}_desc-tissue_dseg"
    img = nib.Nifti1Image(np.asarray(labels, np.uint8), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path = folder / f"{stem}.nii.gz"
    write_nifti(path, img)
    write_text(folder / f"{stem}.tsv", dseg_tsv())
    write_text(folder / f"{stem}.json", json.dumps({"Sources": list(sources), "Type": "tissue"}, indent=2) + "\n")
    return path


def write_probseg(
    root: str | Path,
    subject: str,
    session: str | None,
    probs: np.ndarray,
    affine: np.ndarray,
    classes: Sequence[str] = VOLUME_CLASSES,
    per_class: bool = False,
) -> list[Path]:
    """Write probability maps: one 4D ``_desc-tissue_probseg`` (volumes in ``classes`` order) or one
    ``_label-<class>_probseg`` per class.

    Args:
        probs: ``(len(classes), X, Y, Z)`` probabilities on the native grid.
    """
    if probs.shape[0] != len(classes):
        raise ValueError(f"expected {len(classes)} probability volumes, got {probs.shape[0]}")
    folder = anat_dir(root, subject, session)
    stem = entity_stem(subject, session)
    paths = []
    if per_class:
        for name, vol in zip(classes, probs, strict=True):
            path = folder / f"{stem}_label-{name}_probseg.nii.gz"
            write_nifti(path, nib.Nifti1Image(vol.astype(np.float32), affine))
            paths.append(path)
    else:
        path = folder / f"{stem}_desc-tissue_probseg.nii.gz"
        write_nifti(path, nib.Nifti1Image(np.moveaxis(probs.astype(np.float32), 0, -1), affine))
        write_text(folder / f"{stem}_desc-tissue_probseg.json", json.dumps({"Volumes": list(classes)}) + "\n")
        paths.append(path)
    return paths


def region_volumes(
    tissue: np.ndarray,
    regions: np.ndarray | None,
    voxel_mm3: float,
    info: Mapping[str, str | None],
    model_roi: str | None = None,
) -> list[dict[str, object]]:
    """Rows of the volume table for one subject.

    Args:
        tissue: ``(X, Y, Z)`` predicted tissue classes.
        regions: ``(X, Y, Z)`` canonical region indices on the same grid, or ``None`` (only the whole
            brain is reported then).
        voxel_mm3: volume of one voxel.
        info: ``participant_id``, ``session`` and ``group`` of the subject.
        model_roi: the region group the model was trained in (``stage.roi``), or ``None``.

    Returns:
        One dict per region with the :data:`VOLUME_COLUMNS`. Whole brain = every voxel (its
        ``region_mm3`` is the CSF+GM+WM volume); subcortical and brainstem are reported whenever a regions
        map exists (0 if the region is absent); midbrain, pons and medulla only when labelled.
        ``in_model_roi`` is True when the region lies inside ``model_roi``.
    """
    inside_model = set(region_group_indices(model_roi)) if model_roi else set()
    rows = []
    counts = np.bincount(tissue.ravel().astype(np.int64), minlength=len(TISSUE_CLASSES))
    present = set(np.unique(regions).tolist()) if regions is not None else set()
    for name, indices, always in VOLUME_REGIONS:
        if indices is None:
            per_class, region_vox = counts, int(np.count_nonzero(tissue))
        else:
            if regions is None or (not always and not present & set(indices)):
                continue
            inside = np.isin(regions, indices)
            per_class = np.bincount(tissue[inside].astype(np.int64), minlength=len(TISSUE_CLASSES))
            region_vox = int(inside.sum())
        row: dict[str, object] = {k: info.get(k) or "n/a" for k in ("participant_id", "session", "group")}
        row["region"] = name
        for cls in VOLUME_CLASSES:
            idx = next(i for i, n in TISSUE_CLASSES.items() if n == cls)
            row[f"{cls}_mm3"] = round(float(per_class[idx]) * voxel_mm3, 3)
        row["region_mm3"] = round(region_vox * voxel_mm3, 3)
        row["in_model_roi"] = indices is not None and bool(inside_model) and set(indices) <= inside_model
        rows.append(row)
    return rows


def write_volumes(path: str | Path, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write the volume table (tab-separated, ``n/a`` for unknown) atomically."""
    frame = pd.DataFrame(list(rows), columns=VOLUME_COLUMNS)
    write_text(path, frame.to_csv(sep="\t", index=False, na_rep="n/a"))
    return Path(path)
