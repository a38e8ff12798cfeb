"""The BIDS-derivative writer and the volume table."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from finetune.bids_output import (
    VOLUME_COLUMNS,
    init_derivative,
    region_volumes,
    write_dseg,
    write_probseg,
    write_volumes,
)
from ssl_pretrain.data.labels import REGION_INDEX


def test_derivative_layout(tmp_path):
    root = init_derivative(tmp_path / "bssl", source=tmp_path / "raw", version="0.1.0")
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "brainstem-ssl"
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10, 20, 5]
    labels = np.random.default_rng(0).integers(0, 4, (5, 6, 7))
    path = write_dseg(root, "01", "pre", labels, affine, sources=["sub-01_T1w.nii.gz"])
    assert path == root / "sub-01/ses-pre/anat/sub-01_ses-pre_desc-tissue_dseg.nii.gz"
    img = nib.load(path)
    assert img.shape == (5, 6, 7) and np.allclose(img.affine, affine)
    assert np.array_equal(np.asarray(img.dataobj), labels) and img.get_data_dtype() == np.uint8
    tsv = pd.read_csv(path.with_name("sub-01_ses-pre_desc-tissue_dseg.tsv"), sep="\t")
    assert tsv["name"].tolist() == ["background", "CSF", "GM", "WM"]
    assert not list(path.parent.glob(".*"))  # no temporary files left


@pytest.mark.parametrize("per_class", [False, True])
def test_probseg(tmp_path, per_class):
    probs = np.random.default_rng(0).random((3, 4, 4, 4)).astype(np.float32)
    paths = write_probseg(tmp_path, "02", None, probs, np.eye(4), per_class=per_class)
    if per_class:
        assert [p.name for p in paths] == [f"sub-02_label-{c}_probseg.nii.gz" for c in ("CSF", "GM", "WM")]
        assert np.allclose(nib.load(paths[1]).get_fdata(), probs[1])
    else:
        img = nib.load(paths[0])
        assert img.shape == (4, 4, 4, 3) and np.allclose(img.get_fdata()[..., 2], probs[2])


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
