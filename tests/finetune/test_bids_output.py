"""The BIDS-derivative writer and the volume table."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from finetune.bids_output import (
    VOLUME_COLUMNS,
    DatasetLinks,
    check_derivative_root,
    init_derivative,
    region_volumes,
    write_dseg,
    write_probseg,
    write_volumes,
)
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.errors import ConfigError


def _reference(tmp_path, qform_code=1, sform_code=2) -> nib.Nifti1Image:
    """A reference T1w on a 1.5 x 1.5 x 2 mm grid with the given q/sform codes."""
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    img = nib.Nifti1Image(np.zeros((5, 6, 7), np.float32), None)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp_path / "sub-01_T1w.nii.gz")
    return nib.load(tmp_path / "sub-01_T1w.nii.gz")


def test_derivative_layout(tmp_path):
    raw = tmp_path / "raw"
    (raw / "sub-01/anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text('{"Name": "raw", "BIDSVersion": "1.9.0"}')
    links = DatasetLinks(tmp_path / "bssl", raw)
    uri = links.uri(raw / "sub-01/anat/sub-01_T1w.nii.gz")
    assert uri == "bids:raw:sub-01/anat/sub-01_T1w.nii.gz"
    root = init_derivative(tmp_path / "bssl", links, "a test")
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "brainstem-ssl"
    assert desc["DatasetLinks"] == {"raw": raw.as_uri()} and desc["SourceDatasets"] == [{"URL": raw.as_uri()}]
    assert set(desc["GeneratedBy"][0]["Libraries"]) >= {"torch", "MONAI", "TorchIO", "Lightning", "nibabel"}
    reference = _reference(tmp_path)
    labels = np.random.default_rng(0).integers(0, 4, (5, 6, 7))
    path = write_dseg(root, "01", "pre", labels, reference, sources=[uri], spatial_reference=uri)
    assert path == root / "sub-01/ses-pre/anat/sub-01_ses-pre_desc-bsslTissue_dseg.nii.gz"
    img = nib.load(path)
    assert img.shape == (5, 6, 7) and np.allclose(img.affine, reference.affine)
    assert np.array_equal(np.asarray(img.dataobj), labels) and img.get_data_dtype() == np.uint8
    assert int(img.header["intent_code"]) == 1002  # NIFTI_INTENT_LABEL
    assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 2)  # the reference's own
    assert img.header.get_xyzt_units()[0] == "mm"
    tsv = pd.read_csv(path.with_name("sub-01_ses-pre_desc-bsslTissue_dseg.tsv"), sep="\t")
    assert tsv["name"].tolist() == ["background", "CSF", "GM", "WM"]
    assert tsv["color"].str.fullmatch(r"#[0-9a-f]{6}").all() and tsv["mapping"].tolist() == [0, 3, 1, 2]
    sidecar = json.loads(path.with_name("sub-01_ses-pre_desc-bsslTissue_dseg.json").read_text())
    assert sidecar["Sources"] == [uri] and sidecar["SpatialReference"] == uri and "Type" not in sidecar
    assert not list(path.parent.glob(".*"))  # no temporary files left
    lut = (root / "tissue_fsleyes.lut").read_text().splitlines()
    assert lut[1] == "2 0.9490 0.2510 0.2000 GM"  # #f24033 in 0..1
    itk = (root / "tissue_itksnap.txt").read_text()
    assert '    2   242   64   51     1.00  1  1    "GM"' in itk and '"Clear Label"' in itk
    assert (root / ".bidsignore").read_text().split() == [
        "tissue_fsleyes.lut",
        "tissue_itksnap.txt",
        "regions_fsleyes.lut",
        "regions_itksnap.txt",
    ]


def test_in_dataset_links_are_relative(tmp_path):
    raw = tmp_path / "raw"
    for d in ("raw", "raw/derivatives/dwi"):
        (tmp_path / d).mkdir(parents=True, exist_ok=True)
        (tmp_path / d / "dataset_description.json").write_text("{}")
    links = DatasetLinks(raw / "derivatives" / "bssl", raw)
    assert links.uri(raw / "derivatives/dwi/sub-01/dwi/x_dwimap.nii.gz") == "bids:dwi:sub-01/dwi/x_dwimap.nii.gz"
    links.uri(raw / "sub-01/anat/sub-01_T1w.nii.gz")
    assert links.as_json() == {"dwi": "../dwi/", "raw": "../../"}


def test_an_existing_folder_of_another_pipeline_is_refused(tmp_path):
    check_derivative_root(tmp_path / "new")  # absent: fine
    other = tmp_path / "fmriprep"
    other.mkdir()
    (other / "dataset_description.json").write_text('{"GeneratedBy": [{"Name": "fMRIPrep"}]}')
    with pytest.raises(ConfigError, match=r"predict\.output.*another pipeline"):
        check_derivative_root(other)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match="no BIDS derivative"):
        check_derivative_root(tmp_path / "notes")


@pytest.mark.parametrize("per_class", [False, True])
def test_probseg(tmp_path, per_class):
    probs = np.random.default_rng(0).random((3, 5, 6, 7)).astype(np.float32)
    reference = _reference(tmp_path, qform_code=1, sform_code=1)
    paths = write_probseg(tmp_path, "02", None, probs, reference, ["bids:raw:x"], "bids:raw:x", per_class=per_class)
    if per_class:
        names = [f"sub-02_label-{c}_desc-bsslTissue_probseg.nii.gz" for c in ("CSF", "GM", "WM")]
        assert [p.name for p in paths] == names
        assert np.allclose(nib.load(paths[1]).get_fdata(), probs[1])
    else:
        img = nib.load(paths[0])
        assert img.shape == (5, 6, 7, 3) and np.allclose(img.get_fdata()[..., 2], probs[2])
        sidecar = json.loads(paths[0].with_name("sub-02_desc-bsslTissue_probseg.json").read_text())
        assert sidecar["LabelMap"] == ["CSF", "GM", "WM"] and "Volumes" not in sidecar
    for path in paths:
        img = nib.load(path)
        assert (int(img.header["qform_code"]), int(img.header["sform_code"])) == (1, 1)
        assert np.allclose(img.affine, reference.affine) and img.header.get_xyzt_units()[0] == "mm"


def test_region_volumes_hand_counted(tmp_path):
    tissue = np.zeros((4, 4, 4), np.uint8)
    regions = np.zeros_like(tissue)
    tissue[0] = 2  # 16 GM
    tissue[1] = 3  # 16 WM
    tissue[2, :2] = 1  # 8 CSF
    regions[0, :2] = REGION_INDEX["thalamus"]  # 8 GM in subcortical
    regions[1, :1] = REGION_INDEX["pons"]  # 4 WM in the brainstem (pons)
    regions[1, 1:2] = REGION_INDEX["medulla"]
    info = {"participant_id": "sub-01", "session": None, "group": "ALS"}
    rows = {r["region"]: r for r in region_volumes(tissue, regions, 2.0, info, model_roi="brainstem")}
    assert set(rows) == {"whole_brain", "subcortical", "brainstem", "pons", "medulla"}
    assert rows["whole_brain"]["GM_mm3"] == 32 and rows["whole_brain"]["CSF_mm3"] == 16
    assert rows["whole_brain"]["region_mm3"] == 80
    assert rows["subcortical"]["GM_mm3"] == 16 and rows["subcortical"]["WM_mm3"] == 0
    assert rows["brainstem"]["WM_mm3"] == 16 and rows["pons"]["WM_mm3"] == 8
    assert rows["pons"]["session"] == "n/a" and rows["pons"]["group"] == "ALS"
    assert [r["in_model_roi"] for r in rows.values()] == [False, False, True, True, True]
    only_brain = region_volumes(tissue, None, 1.0, info)
    assert [r["region"] for r in only_brain] == ["whole_brain"]
    path = write_volumes(tmp_path / "volumes.tsv", [*rows.values(), *only_brain])
    frame = pd.read_csv(path, sep="\t")
    assert frame.columns.tolist() == VOLUME_COLUMNS and len(frame) == 6
