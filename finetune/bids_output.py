"""Writing predictions as a BIDS derivative dataset, and the per-region tissue volume table.

Layout of the derivative (``<run dir>/bssl/``, or ``<data.root>/derivatives/bssl/`` with
``predict.output=in_dataset``); it passes the BIDS validator and opens over the input in FSLeyes or
ITK-SNAP with its colour tables::

    dataset_description.json   DatasetType derivative; GeneratedBy brainstem-ssl with its git revision and the
                               torch/MONAI/TorchIO/Lightning/lightly/nibabel versions; DatasetLinks + SourceDatasets
    README  .bidsignore        (.bidsignore: the colour tables, which are no BIDS files)
    tissue_fsleyes.lut  tissue_itksnap.txt   the classes' colours for FSLeyes (-l) and ITK-SNAP (-l)
    sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_desc-bsslTissue_dseg.nii.gz   (+ .json, and .tsv: index, name,
                               abbreviation, color, mapping to the BIDS common labels)
    sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_desc-bsslRegions_dseg.nii.gz  (models with a region head: canonical
                               region indices, + .tsv/.json; regions_fsleyes.lut, regions_itksnap.txt)
    sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_desc-bsslTissue_probseg.nii.gz  (optional, 4D: CSF, GM, WM; LabelMap)
    sub-XX/[ses-YY/]anat/sub-XX[_ses-YY]_label-GM_desc-bsslTissue_probseg.nii.gz  (optional, one per class)

Predictions carry their own ``desc-bsslTissue``, so they never collide with a dataset's reference labels
(``desc-tissue``), and label discovery skips this derivative (its ``GeneratedBy`` names brainstem-ssl).
Every image copies the reference input's geometry: its affine as qform and sform *with the reference's own
codes*, its spatial units; label maps are ``uint8`` with intent ``NIFTI_INTENT_LABEL``. Sidecars hold
``Sources`` and ``SpatialReference`` as BIDS URIs (``bids:<dataset>:<path>``) resolved by the
``DatasetLinks`` of ``dataset_description.json``.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written image that a later run would trust.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from finetune.colour_tables import fsleyes_lut, itksnap_labels
from finetune.region_head import REGION_HEAD
from ssl_pretrain.atomic import atomic_path
from ssl_pretrain.data.labels import (
    REGION_COLOURS,
    REGION_INDEX,
    REGIONS,
    TISSUE_ABBREVIATIONS,
    TISSUE_CLASSES,
    TISSUE_COLOURS,
    inside_group,
    region_group_indices,
    regions_dseg_tsv,
    tissue_dseg_tsv,
)
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.provenance import TOOLKIT, generated_by

DERIVATIVE_NAME = "bssl"
PREDICTION_DESC = "bsslTissue"  # never "tissue": the reference labels' desc
BIDS_VERSION = "1.9.0"
REGIONS_DESC = "bsslRegions"  # never "regions": the reference labels' desc
VOLUMES_FILE = "volumes.tsv"  # per subject: measures inside the model's own region outline (run directory)
REFERENCE_VOLUMES_FILE = "reference_volumes.tsv"  # the same inside the *reference* region labels (no model outline)
FSLEYES_LUT = "tissue_fsleyes.lut"
ITKSNAP_LABELS = "tissue_itksnap.txt"
REGIONS_FSLEYES_LUT = "regions_fsleyes.lut"
REGIONS_ITKSNAP_LABELS = "regions_itksnap.txt"
BIDSIGNORE = f"{FSLEYES_LUT}\n{ITKSNAP_LABELS}\n{REGIONS_FSLEYES_LUT}\n{REGIONS_ITKSNAP_LABELS}\n"
PREDICTED_REGIONS = tuple(sorted({REGION_INDEX[n] for n in REGION_HEAD[1:]}))
README = """\
brainstem-ssl predictions (bssl predict)
=========================================

Tissue segmentations (0 background, 1 CSF, 2 GM, 3 WM; desc-bsslTissue) and, from models with a region
head, brain regions (midbrain, pons, medulla, thalamus, caudate, putamen, pallidum; desc-bsslRegions)
predicted from images by a brainstem-ssl model, one per subject on the grid of its reference image (see each
sidecar's SpatialReference and Sources, and
GeneratedBy in dataset_description.json for the model, the toolkit's revision and library versions).

View one over its T1w with the colour tables in this folder:
  fsleyes <T1w.nii.gz> sub-XX/anat/sub-XX_desc-bsslTissue_dseg.nii.gz -ot label -l tissue_fsleyes.lut
  itksnap -g <T1w.nii.gz> -s sub-XX/anat/sub-XX_desc-bsslTissue_dseg.nii.gz -l tissue_itksnap.txt
(regions: desc-bsslRegions_dseg with regions_fsleyes.lut / regions_itksnap.txt)
"""
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


def write_json(path: str | Path, payload: object) -> None:
    """Write a JSON file (indented) atomically."""
    write_text(path, json.dumps(payload, indent=2) + "\n")


def write_nifti(path: str | Path, img: nib.Nifti1Image) -> None:
    """Save a NIfTI image atomically."""
    _atomic(Path(path), lambda tmp: nib.save(img, str(tmp)))


def dseg_tsv() -> str:
    """The ``dseg.tsv`` of the tissue classes (with BIDS abbreviations, colours and common-label mapping)."""
    return tissue_dseg_tsv()


def generated_by_toolkit(root: str | Path) -> bool | None:
    """Whether the dataset at ``root`` was written by this toolkit (``None``: no readable description)."""
    try:
        desc = json.loads((Path(root) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return None
    entries = desc.get("GeneratedBy") if isinstance(desc, dict) else None
    return isinstance(entries, list) and any(isinstance(g, dict) and g.get("Name") == TOOLKIT for g in entries)


class DatasetLinks:
    """BIDS URIs for the input files of a derivative, and the ``DatasetLinks`` that resolve them.

    Each input belongs to the nearest dataset above it (a folder with ``dataset_description.json``; for a
    file in no dataset, its folder). The raw dataset is named ``raw``, a derivative by its folder name.
    Links are relative paths when the derivative and the linked dataset lie in the raw dataset's tree
    (in-dataset output: the dataset can be moved as a whole), else ``file://`` URIs.

    Args:
        derivative_root: the derivative dataset being written.
        raw_root: the raw dataset (``data.root``), or ``None``.
    """

    def __init__(self, derivative_root: Path, raw_root: Path | None) -> None:
        self.root = Path(os.path.abspath(derivative_root))
        self.raw = Path(os.path.abspath(raw_root)) if raw_root is not None else None
        self.links: dict[str, Path] = {}

    def _dataset_of(self, path: Path) -> Path:
        for parent in path.parents:
            if (parent / "dataset_description.json").is_file():
                return parent
            if self.raw is not None and parent == self.raw:
                return parent
        return path.parent

    def _name_for(self, dataset: Path) -> str:
        for name, linked in self.links.items():
            if linked == dataset:
                return name
        base = "raw" if dataset == self.raw else (re.sub(r"[^A-Za-z0-9]", "", dataset.name) or "inputs")
        name, n = base, 2
        while name in self.links:
            name, n = f"{base}{n}", n + 1
        self.links[name] = dataset
        return name

    def uri(self, path: str | Path) -> str:
        """``bids:<dataset>:<path inside it>`` of an input file (and its dataset added to the links)."""
        path = Path(os.path.abspath(path))
        dataset = self._dataset_of(path)
        return f"bids:{self._name_for(dataset)}:{path.relative_to(dataset).as_posix()}"

    def as_json(self) -> dict[str, str]:
        """``DatasetLinks`` of ``dataset_description.json``."""
        out = {}
        in_raw = self.raw is not None and self.raw in self.root.parents  # predict.output=in_dataset
        for name, dataset in self.links.items():
            inside = dataset in self.root.parents or (in_raw and (dataset == self.raw or self.raw in dataset.parents))
            out[name] = os.path.relpath(dataset, self.root) + "/" if inside else dataset.as_uri()
        return out


def check_derivative_root(root: str | Path, key: str = "predict.output") -> None:
    """Refuse to write into an existing folder that is not a brainstem-ssl derivative.

    Raises:
        ConfigError: naming ``key``: ``root`` holds another pipeline's dataset, or files without a
            ``dataset_description.json``.
    """
    root = Path(root)
    if not root.exists() or not any(root.iterdir()):
        return
    mine = generated_by_toolkit(root)
    if mine is None:
        raise ConfigError(key, f"{root} exists, is not empty and is no BIDS derivative of {TOOLKIT}; choose another")
    if not mine:
        raise ConfigError(key, f"{root} is another pipeline's derivative (its GeneratedBy); choose another folder")


def init_derivative(root: str | Path, links: DatasetLinks | None, description: str = "", name: str = "") -> Path:
    """Create or refresh the derivative dataset's top-level files and return its root.

    Args:
        root: the derivative dataset folder.
        links: the inputs' datasets (``None``: no source dataset recorded), after every input was passed
            through :meth:`DatasetLinks.uri`.
        description: what the run did (``GeneratedBy[0].Description``).
        name: the dataset's ``Name``.
    """
    root = Path(root)
    desc: dict[str, object] = {
        "Name": name or "brainstem-ssl tissue segmentation (background/CSF/GM/WM)",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by(description or "bssl predict")],
    }
    if links is not None and links.links:
        desc["DatasetLinks"] = links.as_json()
        desc["SourceDatasets"] = [{"URL": url} for url in links.as_json().values()]
    write_json(root / "dataset_description.json", desc)
    write_text(root / "README", README)
    write_text(root / ".bidsignore", BIDSIGNORE)
    write_text(root / FSLEYES_LUT, fsleyes_lut(TISSUE_CLASSES, TISSUE_COLOURS))
    write_text(root / ITKSNAP_LABELS, itksnap_labels(TISSUE_CLASSES, TISSUE_COLOURS))
    names = {i: REGIONS[i] for i in PREDICTED_REGIONS}
    write_text(root / REGIONS_FSLEYES_LUT, fsleyes_lut(names, REGION_COLOURS))
    write_text(root / REGIONS_ITKSNAP_LABELS, itksnap_labels({0: "background", **names}, REGION_COLOURS))
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


def like_reference(data: np.ndarray, reference: nib.Nifti1Image, dtype: type) -> nib.Nifti1Image:
    """``data`` (on the reference grid; 4D: channels last) as NIfTI with the reference's geometry.

    The reference's qform and sform are copied with their own codes (a dseg must not claim a scanner
    space its T1w does not), and its spatial unit (mm when the reference says none).
    """
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), None)
    img.set_data_dtype(dtype)
    header = reference.header
    img.set_qform(reference.get_qform(), code=int(header["qform_code"]))
    img.set_sform(reference.get_sform(), code=int(header["sform_code"]))
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        img.set_sform(reference.affine, code=0)  # no codes to copy: keep the grid the reference was read with
    spatial = header.get_xyzt_units()[0]
    img.header.set_xyzt_units(xyz=spatial if spatial != "unknown" else "mm")
    return img


def _sidecar(description: str, sources: Sequence[str], spatial_reference: str | None) -> dict[str, object]:
    sidecar: dict[str, object] = {"Description": description, "Manual": False, "Sources": list(sources)}
    if spatial_reference:
        sidecar["SpatialReference"] = spatial_reference
    return sidecar


def write_dseg(
    root: str | Path,
    subject: str,
    session: str | None,
    labels: np.ndarray,
    reference: nib.Nifti1Image,
    sources: Sequence[str],
    spatial_reference: str | None = None,
    kind: str = "tissue",
) -> Path:
    """Write ``sub-XX[_ses-YY]_desc-bsslTissue_dseg.nii.gz`` (``kind="tissue"``) or ``…_desc-bsslRegions_dseg``
    (``kind="regions"``: canonical region indices) — uint8, label intent — with its ``.tsv`` and ``.json``.

    Args:
        labels: ``(X, Y, Z)`` tissue classes, or canonical region indices, on the reference image's grid.
        reference: the reference input image (its header's geometry is copied).
        sources: the input files as BIDS URIs (:meth:`DatasetLinks.uri`).
        spatial_reference: the reference image as a BIDS URI.
        kind: ``tissue`` or ``regions``.
    """
    if kind not in ("tissue", "regions"):
        raise ValueError(f"kind must be tissue or regions, got {kind!r}")
    if tuple(labels.shape) != tuple(reference.shape[:3]):
        raise ValueError(f"labels {labels.shape} are not on the reference grid {reference.shape[:3]}")
    folder = anat_dir(root, subject, session)
    desc = PREDICTION_DESC if kind == "tissue" else REGIONS_DESC
    stem = f"{entity_stem(subject, session)}_desc-{desc}_dseg"
    img = like_reference(labels, reference, np.uint8)
    img.header.set_intent("label")
    path = folder / f"{stem}.nii.gz"
    write_nifti(path, img)
    if kind == "tissue":
        write_text(folder / f"{stem}.tsv", dseg_tsv())
        description = "Tissue classes (0 background, 1 CSF, 2 GM, 3 WM) predicted by brainstem-ssl"
    else:
        write_text(folder / f"{stem}.tsv", regions_dseg_tsv(PREDICTED_REGIONS))
        description = "Brain regions (brainstem parts and subcortical nuclei, 0 elsewhere) predicted by brainstem-ssl"
    write_json(folder / f"{stem}.json", _sidecar(description, sources, spatial_reference))
    return path


def write_probseg(
    root: str | Path,
    subject: str,
    session: str | None,
    probs: np.ndarray,
    reference: nib.Nifti1Image,
    sources: Sequence[str] = (),
    spatial_reference: str | None = None,
    classes: Sequence[str] = VOLUME_CLASSES,
    per_class: bool = False,
) -> list[Path]:
    """Write probability maps: one 4D ``_desc-bsslTissue_probseg`` (volumes in ``classes`` order, named by
    the sidecar's ``LabelMap``) or one ``_label-<class>_desc-bsslTissue_probseg`` per class.

    Args:
        probs: ``(len(classes), X, Y, Z)`` probabilities (0..1) on the reference grid.
        reference, sources, spatial_reference: as for :func:`write_dseg`.
    """
    if probs.shape[0] != len(classes):
        raise ValueError(f"expected {len(classes)} probability volumes, got {probs.shape[0]}")
    folder = anat_dir(root, subject, session)
    stem = entity_stem(subject, session)
    abbreviation = {name: TISSUE_ABBREVIATIONS[i] for i, name in TISSUE_CLASSES.items()}
    paths = []
    if per_class:
        for name, vol in zip(classes, probs, strict=True):
            base = folder / f"{stem}_label-{abbreviation[name]}_desc-{PREDICTION_DESC}_probseg"
            write_nifti(base.with_name(base.name + ".nii.gz"), like_reference(vol, reference, np.float32))
            description = f"Probability of {name} predicted by brainstem-ssl"
            write_json(base.with_name(base.name + ".json"), _sidecar(description, sources, spatial_reference))
            paths.append(base.with_name(base.name + ".nii.gz"))
    else:
        base = folder / f"{stem}_desc-{PREDICTION_DESC}_probseg"
        write_nifti(
            base.with_name(base.name + ".nii.gz"), like_reference(np.moveaxis(probs, 0, -1), reference, np.float32)
        )
        description = f"Probabilities of {', '.join(classes)} (one volume each) predicted by brainstem-ssl"
        sidecar = {**_sidecar(description, sources, spatial_reference), "LabelMap": [abbreviation[c] for c in classes]}
        write_json(base.with_name(base.name + ".json"), sidecar)
        paths.append(base.with_name(base.name + ".nii.gz"))
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
        row["in_model_roi"] = indices is not None and inside_group(indices, model_roi)
        rows.append(row)
    return rows


def write_volumes(path: str | Path, rows: Iterable[Mapping[str, object]]) -> Path:
    """Write the volume table (tab-separated, ``n/a`` for unknown) atomically."""
    rows = list(rows)
    extra = [c for c in dict.fromkeys(k for row in rows for k in row) if c not in VOLUME_COLUMNS]
    frame = pd.DataFrame(rows, columns=[*VOLUME_COLUMNS, *extra])
    write_text(path, frame.to_csv(sep="\t", index=False, na_rep="n/a"))
    return Path(path)
