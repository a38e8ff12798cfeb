"""bssl predict: native shape and affine, T1w-only input, NIfTI inputs, BIDS derivative, volumes table."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from finetune.policy import build_segmentation_net
from finetune.predict import run
from ssl_pretrain.config import compose_config
from ssl_pretrain.data.cache import preprocessing_settings
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.errors import CheckpointError, ConfigError
from ssl_pretrain.models.checkpoint import save_weights
from tests.bids_validator import validate
from tests.finetune.tiny_model import TINY
from tests.synthetic import write_synthetic_bids

MODALITIES = ["T1w", "T2w", "FA", "MD"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids")
    # sub-02 has only T1w; an oblique-free but non-canonical, 1.5 mm grid checks the native round trip
    return write_synthetic_bids(
        root, n_subjects=3, shape=(20, 24, 20), spacing=1.5, missing={"02": ["T2w", "FA", "MD"]}
    )


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finetune-run")
    torch.manual_seed(0)
    net = build_segmentation_net(TINY, 4, 4, "full")
    data = OmegaConf.create({"modalities": MODALITIES, "spacing": 2.0, "patch_size": 16})
    meta = {
        "modalities": MODALITIES,
        "task": "segmentation",
        "policy": "full",
        "stage": "subcortical",
        "spacing": 2.0,
        "patch_size": [16, 16, 16],
        "preprocessing": preprocessing_settings(data),
    }
    save_weights(net, run_dir / "model.pt", meta)
    return run_dir


def _cfg(tmp_path, dataset, model_run, *extra):
    overrides = [
        f"predict.model={model_run}",
        f"data.root={dataset}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "data.spacing=3.0",
        *extra,
    ]  # data.spacing is replaced by the model's own (2 mm)
    return compose_config("predict", overrides, output_dir=tmp_path / "run")


def test_predict_writes_native_dseg_and_volumes(tmp_path, dataset, model_run):
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    out = run(_cfg(tmp_path, dataset, model_run, "predict.save_probabilities=true"))
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before  # input untouched
    deriv = out / "bssl"
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    for sub in ("01", "02", "03"):
        src = nib.load(dataset / f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz")
        dseg = nib.load(deriv / f"sub-{sub}/anat/sub-{sub}_desc-bsslTissue_dseg.nii.gz")
        assert dseg.shape == src.shape
        assert np.allclose(dseg.affine, src.affine)
        labels = np.asarray(dseg.dataobj)
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        truth = np.asarray(
            nib.load(dataset / f"derivatives/labels/sub-{sub}/anat/sub-{sub}_desc-tissue_dseg.nii.gz").dataobj
        )
        assert (labels[truth == 0] > 0).mean() < 0.05  # background outside the brain mask (up to resampling)
        probseg = nib.load(deriv / f"sub-{sub}/anat/sub-{sub}_desc-bsslTissue_probseg.nii.gz")
        assert probseg.shape == (*src.shape, 3) and np.allclose(probseg.affine, src.affine)
        assert (deriv / f"sub-{sub}/anat/sub-{sub}_desc-bsslTissue_dseg.tsv").is_file()
    vols = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert set(vols["participant_id"]) == {"sub-01", "sub-02", "sub-03"}
    assert set(vols["region"]) == {"whole_brain", "subcortical", "brainstem"}
    assert set(vols.loc[vols.participant_id == "sub-02", "group"]) == {"ALS"}
    # volumes are voxel counts of the written dseg x the native voxel volume
    dseg = np.asarray(nib.load(deriv / "sub-01/anat/sub-01_desc-bsslTissue_dseg.nii.gz").dataobj)
    whole = vols[(vols.participant_id == "sub-01") & (vols.region == "whole_brain")].iloc[0]
    assert whole["GM_mm3"] == pytest.approx((dseg == 2).sum() * 1.5**3)


def test_t1w_only_and_nifti_inputs(tmp_path, dataset, model_run):
    t1 = dataset / "sub-03/anat/sub-03_T1w.nii.gz"
    both = {
        "T1w": str(dataset / "sub-01/anat/sub-01_T1w.nii.gz"),
        "T2w": str(dataset / "sub-01/anat/sub-01_T2w.nii.gz"),
    }
    cfg = _cfg(tmp_path, dataset, model_run, "predict.modalities=[T1w]")
    OmegaConf.update(cfg, "predict.inputs", [str(t1), both])
    out = run(cfg)
    for sub in ("01", "03"):
        src = nib.load(dataset / f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz")
        dseg = nib.load(out / f"bssl/sub-{sub}/anat/sub-{sub}_desc-bsslTissue_dseg.nii.gz")
        assert dseg.shape == src.shape and np.allclose(dseg.affine, src.affine)
    vols = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert vols["region"].tolist() == ["whole_brain", "whole_brain"]  # no regions map for raw inputs


def test_t1w_only_equals_a_subject_without_the_other_modalities(tmp_path, dataset, model_run):
    """predict.modalities=[T1w] on a subject with all four = the same subject with only T1w on disk."""
    only_t1 = write_synthetic_bids(
        tmp_path / "only-t1", n_subjects=1, shape=(20, 24, 20), spacing=1.5, missing={"01": ["T2w", "FA", "MD"]}
    )
    assert np.array_equal(
        nib.load(only_t1 / "sub-01/anat/sub-01_T1w.nii.gz").get_fdata(),
        nib.load(dataset / "sub-01/anat/sub-01_T1w.nii.gz").get_fdata(),
    )
    path = "bssl/sub-01/anat/sub-01_desc-bsslTissue_probseg.nii.gz"
    common = ["predict.subjects=[sub-01]", "predict.save_probabilities=true"]
    full = run(_cfg(tmp_path / "a", dataset, model_run, *common))
    t1 = run(_cfg(tmp_path / "b", dataset, model_run, *common, "predict.modalities=[T1w]"))
    absent = run(_cfg(tmp_path / "c", only_t1, model_run, *common))
    p_full, p_t1, p_absent = (nib.load(d / path).get_fdata() for d in (full, t1, absent))
    assert np.allclose(p_t1, p_absent, atol=1e-5)
    assert not np.allclose(p_full, p_t1, atol=1e-3)  # the restriction does change the input


def test_errors(tmp_path, dataset, model_run):
    with pytest.raises(ConfigError, match=r"predict\.model"):
        run(compose_config("predict", [f"data.root={dataset}"], output_dir=tmp_path / "r0"))
    with pytest.raises(ConfigError, match=r"predict\.modalities"):
        run(_cfg(tmp_path, dataset, model_run, "predict.modalities=[FLAIR]"))
    with pytest.raises(ConfigError, match=r"paths\.output_dir"):
        run(
            compose_config(
                "predict",
                [f"predict.model={model_run}", f"data.root={dataset}"],
                output_dir=dataset / "derivatives" / "bssl-run",
            )
        )
    enc = tmp_path / "pretrain"
    save_weights(build_segmentation_net(TINY, 4, 4, "full").encoder, enc / "encoder.pt", {"modalities": MODALITIES})
    with pytest.raises(CheckpointError, match="not a fine-tuned segmentation model"):
        run(_cfg(tmp_path, dataset, enc))


@pytest.mark.parametrize(
    ("output", "per_class"), [("run", False), ("in_dataset", True)], ids=["run-dir", "in-dataset-per-class"]
)
def test_predictions_are_a_valid_bids_derivative(tmp_path, model_run, output, per_class):
    dataset = write_synthetic_bids(tmp_path / "bids", n_subjects=2, shape=(20, 24, 20), spacing=1.5)
    raw_files = {p: p.stat().st_mtime_ns for p in dataset.rglob("*") if p.is_file()}
    extra = [
        f"predict.output={output}",
        "predict.save_probabilities=true",
        f"predict.probabilities_per_class={per_class}",
    ]
    out = run(_cfg(tmp_path, dataset, model_run, *extra))
    root = out / "bssl" if output == "run" else dataset / "derivatives" / "bssl"
    report = validate(root)
    print(f"bids-validator on {root}: {len(report.errors())} errors, warnings {report.warnings()}")
    assert report.errors() == []
    assert {p: p.stat().st_mtime_ns for p in raw_files} == raw_files  # no input file touched
    written = {p for p in dataset.rglob("*") if p.is_file()} - set(raw_files)
    assert all(root in p.parents for p in written)  # only the derivative folder was added
    desc = json.loads((root / "dataset_description.json").read_text())
    for sub in ("01", "02"):
        t1 = nib.load(dataset / f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz")
        for path in (root / f"sub-{sub}/anat").glob("*.nii.gz"):
            img = nib.load(path)
            assert (img.header["qform_code"], img.header["sform_code"]) == (
                t1.header["qform_code"],
                t1.header["sform_code"],
            )
            assert np.allclose(img.affine, t1.affine)
        sidecar = json.loads((root / f"sub-{sub}/anat/sub-{sub}_desc-bsslTissue_dseg.json").read_text())
        for uri in [*sidecar["Sources"], sidecar["SpatialReference"]]:
            _, name, inside = uri.split(":", 2)  # bids:<dataset>:<path>
            link = desc["DatasetLinks"][name]
            base = Path(link.removeprefix("file://")) if link.startswith("file:") else root / link
            assert (base / inside).is_file(), uri
    if output == "in_dataset":  # predictions are never read back as labels
        data = compose_config("predict", [f"data.root={dataset}"]).data
        for record in load_records(data):
            assert "derivatives/labels" in str(record.tissue)
            assert all("bssl" not in str(p) for p in record.all_paths())


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_output_gets_the_umask_mode(tmp_path, dataset, model_run, umask):
    before = os.umask(umask)
    try:
        out = run(_cfg(tmp_path, dataset, model_run, "predict.subjects=[sub-01]", "predict.save_probabilities=true"))
    finally:
        os.umask(before)
    files = [p for p in out.rglob("*") if p.is_file() and p.name != ".run.lock"]
    assert len(files) > 10
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes  # 0o644 (group-readable) under umask 022


def test_output_elsewhere_in_the_dataset_is_refused(tmp_path, dataset, model_run):
    with pytest.raises(ConfigError, match=r"predict\.output.*outside derivatives"):
        run(_cfg(tmp_path, dataset, model_run, f"predict.output={dataset / 'sub-01'}"))
    inputs = [f"predict.inputs=[{dataset / 'sub-01/anat/sub-01_T1w.nii.gz'}]", "predict.output=in_dataset"]
    with pytest.raises(ConfigError, match=r"predict\.output.*in_dataset needs data\.root"):
        run(_cfg(tmp_path / "b", dataset, model_run, *inputs))


def test_predict_and_finetune_share_the_inference_settings():
    """One ``configs/inference/default.yaml``: finetune's scoring adds only the ROI crop (inference/roi.yaml)."""
    predicted = OmegaConf.to_container(compose_config("predict").inference)
    scored = OmegaConf.to_container(compose_config("finetune").inference)
    assert isinstance(predicted, dict) and isinstance(scored, dict)
    assert scored == {**predicted, "crop_to_roi": True} and "crop_to_roi" not in predicted
    assert compose_config("finetune", ["inference.overlap=0.25"]).inference.overlap == 0.25  # keys override as before
    assert "crop_to_roi" not in compose_config("finetune", ["inference=default"]).inference


@pytest.fixture(scope="module")
def region_model_run(tmp_path_factory):
    """An untrained model with a region head: its region map is noise, scattered over the brain."""
    from finetune.region_head import REGION_HEAD
    from ssl_pretrain.data.labels import TISSUE_CLASSES

    run_dir = tmp_path_factory.mktemp("finetune-regions")
    torch.manual_seed(0)
    net = build_segmentation_net(TINY, 4, 4 + len(REGION_HEAD), "full")
    data = OmegaConf.create({"modalities": MODALITIES, "spacing": 2.0, "patch_size": 16})
    meta = {
        "modalities": MODALITIES, "task": "segmentation", "policy": "full", "stage": "brainstem", "spacing": 2.0,
        "patch_size": [16, 16, 16], "preprocessing": preprocessing_settings(data),
        "heads": {"tissue": [TISSUE_CLASSES[i] for i in sorted(TISSUE_CLASSES)], "regions": list(REGION_HEAD)},
    }  # fmt: skip
    save_weights(net, run_dir / "model.pt", meta)
    return run_dir


@pytest.mark.parametrize("largest", [["brainstem"], []], ids=["largest-piece", "every-voxel"])
def test_region_maps_keep_one_brainstem_piece_and_their_dice_is_scored_on_the_written_map(
    tmp_path, dataset, region_model_run, largest
):
    from scipy import ndimage

    from ssl_pretrain.data.labels import region_group_indices

    out = run(_cfg(tmp_path, dataset, region_model_run, f"predict.largest_component={largest}"))
    dice = pd.read_csv(out / "region_dice.tsv", sep="\t")
    assert set(dice["participant_id"]) == {"sub-01", "sub-02", "sub-03"}
    for sub in ("01", "02", "03"):
        written = np.asarray(nib.load(out / f"bssl/sub-{sub}/anat/sub-{sub}_desc-bsslRegions_dseg.nii.gz").dataobj)
        stem = np.isin(written, region_group_indices("brainstem"))
        pieces = ndimage.label(stem, structure=np.ones((3, 3, 3)))[1]
        assert pieces <= 1 if largest else pieces >= 1
        reference = np.asarray(
            nib.load(dataset / f"derivatives/labels/sub-{sub}/anat/sub-{sub}_desc-regions_dseg.nii.gz").dataobj
        )
        truth = reference == 5  # the synthetic brainstem, undivided: only the whole is scored
        row = dice[(dice.participant_id == f"sub-{sub}") & (dice.region == "brainstem")].iloc[0]
        assert row["dice"] == pytest.approx(2 * (stem & truth).sum() / (stem.sum() + truth.sum()), abs=1e-6)
        assert not set(dice.loc[dice.participant_id == f"sub-{sub}", "region"]) & {"midbrain", "pons", "medulla"}
    assert set(dice["largest_component"]) == {",".join(largest) or "none"}
    assert set(dice["model_saw_subject"]) == {False}
