"""``bssl predict model=PATH data.root=DIR``: segment every subject (or given NIfTI files).

For each subject the inputs go through the same preprocessing cache as training, with the settings the
model was trained with (modalities, spacing, normalisation: from its ``model.json``); MONAI's
sliding-window inference predicts tissue probabilities on the cache grid, which are resampled
(trilinear) to the reference image's native grid and arg-maxed there, so the ``dseg`` has exactly the
input's shape, affine and q/sform codes. Outputs:

- a BIDS derivative dataset (see :mod:`finetune.bids_output`; it passes the BIDS validator and carries
  colour tables for FSLeyes and ITK-SNAP) with one ``sub-XX[_ses-YY]_desc-bsslTissue_dseg.nii.gz`` per
  subject and, with ``predict.save_probabilities=true``, probability maps
  (``predict.probabilities_per_class=true``: one ``_label-<class>_desc-bsslTissue_probseg`` per class).
  Where it goes is ``predict.output``: ``run`` (default) ``<run dir>/bssl/``; ``in_dataset``
  ``<data.root>/derivatives/bssl/``, where BIDS tools look for derivatives (label discovery skips it: its
  ``GeneratedBy`` is brainstem-ssl, and its ``desc-bsslTissue`` never collides with reference labels); or a
  directory. Nothing outside ``<data.root>/derivatives/`` of the input dataset is ever written;
- with a region head (:mod:`finetune.region_head`), ``sub-XX[_ses-YY]_desc-bsslRegions_dseg.nii.gz``: the
  brainstem's parts and the subcortical nuclei predicted from the images, so a subject without label maps
  (any new scan) gets brainstem volumes too; predicted brainstem voxels not connected to its largest piece are
  dropped (``predict.largest_component``, :mod:`finetune.postprocess`);
- in the run directory, ``volumes.tsv`` (written last, so a run killed part-way has none; re-running the
  command in the same directory predicts every subject again and removes the temporary files the killed run
  left): CSF/GM/WM volume in mm³ per subject and region (whole brain, subcortical, brainstem, midbrain, pons,
  medulla) measured on the native grid *inside the model's own region outline* (``regions_from: model``;
  a model without a region head falls back to the subject's reference regions, ``regions_from`` says so),
  ``brain_mask_mm3`` (the cached brain mask, from the reference tissue labels or an intensity threshold:
  a head-size measure that does not come from the model), the ``model``, its ``crossfit_fold`` and
  ``model_saw_subject`` (whether the model, or one it started from, trained or selected on this subject).
  ``in_model_roi`` says which rows lie inside the region group the model learned tissue in; the others are
  extrapolations. ``reference_volumes.tsv`` holds the same measures inside the *reference* region labels
  (for comparison only: no model outline), and ``region_dice.tsv`` the Dice of the written region map against
  them per subject and region (:mod:`finetune.region_dice`: the whole volume, as the map is used). Outside
  the subject's cached brain mask (``predict.brain_mask=true``) everything is background.

Any subset of the model's modalities works: ``predict.modalities=[T1w]`` feeds only T1w (the others as
zero channels, as modality dropout presented them in training), and subjects missing a modality get a
zero channel for it. ``predict.inputs`` replaces dataset discovery: a list whose entries are a NIfTI
path (one subject; modality from its BIDS suffix — ``_T1w``, ``_T2w``, ``param-fa``, ``param-md`` — else the
model's first modality) or a mapping ``{modality: path}`` (one subject with several images).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from nibabel.processing import resample_from_to
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from finetune.bids_output import (
    DERIVATIVE_NAME,
    REFERENCE_VOLUMES_FILE,
    VOLUMES_FILE,
    DatasetLinks,
    check_derivative_root,
    init_derivative,
    region_volumes,
    write_dseg,
    write_probseg,
    write_text,
    write_volumes,
)
from finetune.inference import InferenceSettings, head_starts, mask_to_brain, predict_cached
from finetune.initialisation import heads_of, load_segmentation_model
from finetune.postprocess import check_groups, keep_largest_component
from finetune.region_dice import FILE as REGION_DICE_FILE
from finetune.region_dice import region_dice_rows
from finetune.region_head import head_to_canonical
from ssl_pretrain.atomic import remove_stale_temporaries
from ssl_pretrain.data.bids import parse_name
from ssl_pretrain.data.cache import CachedSubject, preprocess, preprocessing_settings
from ssl_pretrain.data.grid import to_native
from ssl_pretrain.data.label_maps import load_regions
from ssl_pretrain.data.manifest import SubjectRecord
from ssl_pretrain.data.validate import load_records, validate_record
from ssl_pretrain.errors import CheckpointError, ConfigError
from ssl_pretrain.models.checkpoint import read_sidecar
from ssl_pretrain.run_dir import run_context

log = logging.getLogger(__name__)

# data.* keys that must equal the model's training settings (from model.json's "preprocessing").
PREPROCESSING_KEYS = {
    "modalities": "modalities",
    "spacing": "spacing",
    "crop_margin": "crop_margin",
    "brain_threshold": "brain_threshold",
    "normalisation": "normalisation",
    "antialias": "antialias",
    "cache_dtype": "dtype",
}
_SUFFIX_MODALITY = {"T1w": "T1w", "T2w": "T2w", "FLAIR": "FLAIR"}
_PARAM_MODALITY = {"fa": "FA", "md": "MD"}


def device_of(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; or the named device."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def data_config_for(model_sidecar: Mapping[str, Any], data_cfg: DictConfig) -> DictConfig:
    """``data_cfg`` with the preprocessing settings the model was trained with (they define its inputs)."""
    settings = model_sidecar.get("preprocessing") or {}
    out = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True)))
    with open_dict(out):
        for key, source in PREPROCESSING_KEYS.items():
            if source in settings:
                out[key] = settings[source]
        if "min_shape" in settings:
            out.patch_size = list(settings["min_shape"])
        out.modalities = list(model_sidecar["modalities"])
    return out


def _label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", text) or "x"


def _modality_of(path: Path, default: str) -> str:
    parsed = parse_name(path.name)
    if parsed is None:
        return default
    if parsed.suffix == "dwimap" and parsed.entities.get("param", "").lower() in _PARAM_MODALITY:
        return _PARAM_MODALITY[parsed.entities["param"].lower()]
    return _SUFFIX_MODALITY.get(parsed.suffix, default)


def records_from_inputs(
    inputs: Sequence[Any], modalities: Sequence[str], allow_guessed_geometry: bool = False
) -> list[SubjectRecord]:
    """Records for ``predict.inputs`` (see the module docstring), validated on their headers.

    Raises:
        ConfigError: an entry that is neither a path nor a ``{modality: path}`` mapping, an unknown
            modality, or two entries with the same subject/session.
        DataError: a bad file.
    """
    records = []
    for n, entry in enumerate(inputs):
        if isinstance(entry, Mapping):
            images = {str(m): Path(str(p)).expanduser() for m, p in entry.items()}
        elif isinstance(entry, str | Path):
            path = Path(str(entry)).expanduser()
            images = {_modality_of(path, modalities[0]): path}
        else:
            raise ConfigError(f"predict.inputs[{n}]", f"expected a NIfTI path or {{modality: path}}, got {entry!r}")
        unknown = sorted(set(images) - set(modalities))
        if unknown:
            raise ConfigError(
                f"predict.inputs[{n}]", f"modalities {unknown} are not among the model's {list(modalities)}"
            )
        first = next(iter(images.values()))
        parsed = parse_name(first.name)
        subject = parsed.subject if parsed and parsed.subject else _label(first.name.split(".")[0])
        session = parsed.session if parsed else None
        record = SubjectRecord(subject=subject, session=session, images=images)
        validate_record(record, allow_guessed_geometry=allow_guessed_geometry)
        records.append(record)
    keys = [r.key for r in records]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ConfigError(
            "predict.inputs", f"several entries name the same subject {dupes}; give one entry per subject"
        )
    return records


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_output_outside(out: Path, data_root: str | Path | None) -> None:
    """Refuse a run directory inside the input dataset (runs hold no BIDS files; the dataset is not theirs).

    Raises:
        ConfigError: naming ``paths.output_dir``.
    """
    if not data_root:
        return
    root = Path(str(data_root)).expanduser().resolve()
    out = out.expanduser().resolve()
    if _inside(out, root):
        raise ConfigError("paths.output_dir", f"{out} lies inside the input dataset {root}; write runs elsewhere")


def derivative_root(output: str | None, run_dir: Path, data_root: str | Path | None, from_inputs: bool) -> Path:
    """Where ``predict.output`` puts the derivative dataset (see the module docstring).

    Raises:
        ConfigError: (``predict.output``) ``in_dataset`` without a dataset (``predict.inputs``), or a
            directory inside the input dataset but outside its ``derivatives/``.
    """
    choice = str(output or "run")
    if choice == "run":
        return run_dir / DERIVATIVE_NAME
    if choice == "in_dataset":
        if from_inputs or not data_root:
            raise ConfigError("predict.output", "in_dataset needs data.root (predict.inputs lists loose files)")
        return Path(str(data_root)).expanduser().absolute() / "derivatives" / DERIVATIVE_NAME
    path = Path(choice).expanduser().absolute()
    if data_root:
        root = Path(str(data_root)).expanduser().resolve()
        if _inside(path.resolve(), root) and not _inside(path.resolve(), root / "derivatives"):
            raise ConfigError(
                "predict.output",
                f"{path} lies in the input dataset {root} outside derivatives/, which is never written",
            )
    return path


def predict_subject(
    net: torch.nn.Module,
    subject: CachedSubject,
    settings: InferenceSettings,
    use: Sequence[bool],
    device: torch.device,
    brain_mask: bool = True,
    largest_component: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Native-grid prediction of one cached subject.

    Args:
        brain_mask: voxels outside the subject's cached brain mask are background (probability 1).
        largest_component: region groups whose predicted voxels outside their largest connected piece become
            ``other`` (:func:`finetune.postprocess.keep_largest_component`).

    Returns:
        ``(tissue labels (X, Y, Z) uint8, region labels (X, Y, Z) uint8 canonical indices or None without a
        region head, tissue probabilities (4, X, Y, Z) float32, native affine 4x4)``.
    """
    heads = settings.heads
    probs = predict_cached(net, subject, settings, device, use)
    if brain_mask:
        mask_to_brain(probs, subject.brain, heads)
    cval = np.zeros(probs.shape[0])
    cval[head_starts(heads)] = 1.0  # outside the cached box: background / other
    native = to_native(probs.numpy(), subject, order=1, cval=cval.tolist())
    prob_native = np.moveaxis(np.asarray(native.dataobj, dtype=np.float32), -1, 0)
    tissue = prob_native[: heads[0]].argmax(0).astype(np.uint8)
    regions = None
    if len(heads) == 2:
        regions = keep_largest_component(head_to_canonical(prob_native[heads[0] :].argmax(0)), largest_component)
    return tissue, regions, prob_native[: heads[0]], np.asarray(native.affine)


def reference_regions(
    record: SubjectRecord, reference: nib.Nifti1Image, settings: Mapping[str, Any] | None
) -> np.ndarray | None:
    """The subject's reference region labels (canonical indices) on the grid of ``reference`` (its native image):
    the label file itself where it shares that grid, else resampled onto it (nearest neighbour)."""
    loaded = load_regions(record, settings)
    if loaded is None:
        return None
    labels, affine = loaded
    if labels.shape == reference.shape[:3] and np.allclose(affine, reference.affine, atol=1e-4):
        return labels
    moved = resample_from_to(nib.Nifti1Image(labels, affine), (reference.shape[:3], reference.affine), order=0)
    return np.asarray(moved.dataobj).astype(np.uint8)


MAX_CHAIN = 5


def subjects_seen(sidecar: Mapping[str, Any]) -> set[str]:
    """Every subject whose labels a model (or any model it was initialised from) trained or selected on."""
    seen: set[str] = set()
    current: Mapping[str, Any] | None = sidecar
    for _ in range(MAX_CHAIN):
        if not current:
            break
        seen |= set(current.get("labelled_subjects") or [])
        seen |= set((current.get("selection") or {}).get("val_subjects") or [])
        path = (current.get("init") or {}).get("path")
        try:
            current = read_sidecar(path) if path else None
        except CheckpointError:
            log.warning("the chain of the model stops at %s (unreadable); subjects it saw may be missing", path)
            current = None
    return seen


def _brain_mask_mm3(subject: CachedSubject) -> float:
    """The subject's brain-mask volume (mm³; cache grid): tissue > 0 of its reference labels when it has them,
    else the intensity threshold — never the model's output, so it can stand in for head size."""
    return float(np.count_nonzero(np.asarray(subject.brain))) * float(abs(np.linalg.det(subject.affine[:3, :3])))


def run(cfg: DictConfig) -> Path:
    """``bssl predict``: write dseg NIfTIs, optional probability maps and ``volumes.tsv``; return the run dir."""
    pcfg = cfg.predict
    if not pcfg.get("model"):
        raise ConfigError("predict.model", "not set: give model=<a bssl finetune run directory or its model.pt>")
    out = Path(cfg.paths.output_dir)
    inputs = list(pcfg.get("inputs") or [])
    check_output_outside(out, None if inputs else cfg.data.get("root"))
    largest = check_groups(pcfg.get("largest_component"))
    with run_context(cfg, "predict") as out:
        remove_stale_temporaries(out)  # half-written files of an earlier, killed run in this directory
        device = device_of(str(pcfg.get("device", "auto")))
        net, sidecar, pt = load_segmentation_model(str(pcfg.model))
        net.to(device)
        data_cfg = data_config_for(sidecar, cfg.data)
        modalities = list(data_cfg.modalities)
        use_names = list(pcfg.get("modalities") or modalities)
        unknown = sorted(set(use_names) - set(modalities))
        if unknown:
            raise ConfigError("predict.modalities", f"{unknown} are not among the model's modalities {modalities}")
        use = [m in use_names for m in modalities]
        if inputs:
            entries = cast(list, OmegaConf.to_container(OmegaConf.create(inputs)))
            records = records_from_inputs(entries, modalities, bool(data_cfg.get("allow_guessed_geometry", False)))
        else:
            records = load_records(data_cfg)
        wanted = pcfg.get("subjects")
        if wanted:
            keys = {f"sub-{s}" if not str(s).startswith("sub-") else str(s) for s in wanted}
            records = [r for r in records if r.key in keys or f"sub-{r.subject}" in keys]
            if not records:
                raise ConfigError("predict.subjects", f"none of {sorted(keys)} is in the dataset")
        subjects = preprocess(records, data_cfg, cfg.paths.cache_dir)
        total_stride = int(np.prod(sidecar["architecture"]["config"]["strides"]))
        heads = heads_of(sidecar)
        settings = InferenceSettings.from_config(
            cfg.inference, sidecar.get("patch_size") or data_cfg.patch_size, total_stride, heads
        )
        root = derivative_root(pcfg.get("output"), out, data_cfg.get("root"), bool(inputs))
        check_derivative_root(root)
        links = DatasetLinks(root, None if inputs else Path(str(data_cfg.root)))
        for subject in subjects:  # every input's dataset is linked before the first file is written
            for path in subject.record.images.values():
                links.uri(path)
        description = f"bssl predict with {pt} (stage {sidecar.get('stage')}, modalities {use_names})"
        init_derivative(root, links, description)
        model_roi = (sidecar.get("stage_config") or {}).get("roi")
        if model_roi:
            log.info("the model was trained inside the '%s' ROI: tissue elsewhere is extrapolated", model_roi)
        rows: list[dict[str, object]] = []
        reference_rows: list[dict[str, object]] = []
        dice_rows: list[dict[str, object]] = []
        label_settings = preprocessing_settings(data_cfg).get("labels")
        seen = subjects_seen(sidecar)
        fold = (sidecar.get("crossfit") or {}).get("fold")
        for subject in tqdm(subjects, desc="predict", unit="subject", disable=None):
            labels, predicted_regions, probs, _ = predict_subject(
                net, subject, settings, use, device, bool(pcfg.get("brain_mask", True)), largest
            )
            record = subject.record
            reference_path = record.images[str(subject.meta["reference"])]
            reference = cast(nib.Nifti1Image, nib.load(str(reference_path)))
            sources = [links.uri(record.images[m]) for m in modalities if m in record.images and m in use_names]
            spatial = links.uri(reference_path)
            write_dseg(root, record.subject, record.session, labels, reference, sources, spatial)
            if predicted_regions is not None:
                write_dseg(
                    root, record.subject, record.session, predicted_regions, reference, sources, spatial, "regions"
                )
            if pcfg.get("save_probabilities", False):
                write_probseg(
                    root,
                    record.subject,
                    record.session,
                    probs[1:],
                    reference,
                    sources,
                    spatial,
                    per_class=bool(pcfg.get("probabilities_per_class", False)),
                )
            labelled = reference_regions(record, reference, label_settings) if subject.regions is not None else None
            voxel_mm3 = float(abs(np.linalg.det(reference.affine[:3, :3])))
            info = {"participant_id": f"sub-{record.subject}", "session": record.session, "group": record.group}
            extra = {
                "brain_mask_mm3": round(_brain_mask_mm3(subject), 3),
                "model": str(pt),
                "crossfit_fold": "n/a" if fold is None else fold,
                "model_saw_subject": record.key in seen,
            }
            outline = predicted_regions if predicted_regions is not None else labelled
            source = "model" if predicted_regions is not None else "reference regions"
            for row in region_volumes(labels, outline, voxel_mm3, info, model_roi=model_roi):
                rows.append({**row, **extra, "regions_from": source})
            if labelled is not None and predicted_regions is not None:
                for row in region_volumes(labels, labelled, voxel_mm3, info, model_roi=model_roi):
                    reference_rows.append({**row, "regions_from": "reference regions"})
                for row in region_dice_rows(predicted_regions, labelled, voxel_mm3, model_roi):
                    dice_rows.append({**info, **row, **extra, "largest_component": ",".join(largest) or "none"})
            if not np.any(labels):
                log.warning("%s: the prediction is empty (all background)", record.key)
        if reference_rows:
            write_volumes(out / REFERENCE_VOLUMES_FILE, reference_rows)
        if dice_rows:
            write_text(out / REGION_DICE_FILE, pd.DataFrame(dice_rows).to_csv(sep="\t", index=False, na_rep="n/a"))
        write_volumes(out / VOLUMES_FILE, rows)
        log.info("predicted %d subjects into %s", len(subjects), root)
    return out
