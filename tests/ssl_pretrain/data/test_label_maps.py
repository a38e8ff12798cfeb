"""Label maps of other tools: fMRIPrep's dseg and probseg triplets, FreeSurfer's aseg, configurable matching."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.cache import preprocess
from ssl_pretrain.data.labels import REGION_INDEX, TISSUE_INDEX
from ssl_pretrain.data.manifest import read_manifest, write_manifest
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.errors import ConfigError, DataError
from tests.synthetic import synthetic_labels, write_synthetic_bids

SHAPE = (20, 24, 20)
FMRIPREP_OF = {0: 0, 1: 3, 2: 1, 3: 2}  # toolkit class -> fMRIPrep dseg value (1 GM, 2 WM, 3 CSF)
ASEG_OF_TISSUE = {0: 0, 1: 24, 2: 3, 3: 2}  # CSF, cortex, cerebral WM
ASEG_OF_REGION = {1: 10, 5: 16}  # thalamus, Brain-Stem


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _fmriprep(root: Path, *, dseg: bool = True, probseg: bool = True) -> Path:
    """derivatives/fmriprep of sub-01 (GeneratedBy fMRIPrep): dseg, desc-aseg_dseg, label-*_probseg, no tables."""
    tissue, regions = synthetic_labels(SHAPE)
    affine = nib.load(root / "sub-01/anat/sub-01_T1w.nii.gz").affine
    deriv = root / "derivatives" / "fmriprep"
    deriv.mkdir(parents=True)
    (deriv / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "fMRIPrep",
                "BIDSVersion": "1.9.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "fMRIPrep", "Version": "24.1.0"}],
            }
        )
    )
    anat = deriv / "sub-01" / "anat"
    if dseg:
        _save(anat / "sub-01_dseg.nii.gz", np.vectorize(FMRIPREP_OF.get)(tissue).astype(np.int16), affine)
    aseg = np.vectorize(ASEG_OF_TISSUE.get)(tissue).astype(np.int16)
    for region, value in ASEG_OF_REGION.items():
        aseg[regions == region] = value
    _save(anat / "sub-01_desc-aseg_dseg.nii.gz", aseg, affine)
    if probseg:
        for cls in ("CSF", "GM", "WM"):
            p = (tissue == TISSUE_INDEX[cls]).astype(np.float32) * 0.8
            _save(anat / f"sub-01_label-{cls}_probseg.nii.gz", p, affine)
    return anat


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """Images of one subject, no label derivatives of the toolkit's own kind."""
    return write_synthetic_bids(tmp_path / "bids", n_subjects=1, shape=SHAPE, missing={"01": ["tissue", "regions"]})


def _cfg(root: Path, **overrides: object):
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    cfg.root, cfg.patch_size, cfg.spacing = str(root), 16, 2.0
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def test_fmriprep_dseg_and_freesurfer_aseg_are_found_and_mapped(raw: Path, tmp_path: Path) -> None:
    anat = _fmriprep(raw)
    cfg = _cfg(raw)
    (record,) = load_records(cfg)
    assert record.tissue == anat / "sub-01_dseg.nii.gz" and record.tissue_scheme == "fmriprep"
    assert record.regions == anat / "sub-01_desc-aseg_dseg.nii.gz" and record.regions_scheme == "freesurfer"
    assert record.tissue_probseg == {}  # a dseg is preferred to the probseg triplet
    (subject,) = preprocess([record], cfg, tmp_path / "cache", progress=False)
    tissue, regions = synthetic_labels(SHAPE)  # same 2 mm grid as the cache grid (spacing 2, RAS)
    cached_tissue = np.asarray(subject.tissue)
    for cls in (1, 2, 3):  # fMRIPrep 3 (CSF) -> 1, 1 (GM) -> 2, 2 (WM) -> 3: the same voxel counts
        assert (cached_tissue == cls).sum() == (tissue == cls).sum()
    cached_regions = np.asarray(subject.regions)
    assert (cached_regions == REGION_INDEX["brainstem"]).sum() == (regions == 5).sum()
    assert (cached_regions == REGION_INDEX["thalamus"]).sum() == (regions == 1).sum()
    assert (cached_regions == REGION_INDEX["cortex"]).sum() > 0  # Left-Cerebral-Cortex by name


def test_probseg_triplet_stands_in_for_a_tissue_map(raw: Path, tmp_path: Path) -> None:
    anat = _fmriprep(raw, dseg=False)
    cfg = _cfg(raw)
    (record,) = load_records(cfg)
    assert record.tissue is None and sorted(record.tissue_probseg) == ["CSF", "GM", "WM"]
    assert record.tissue_probseg["GM"] == anat / "sub-01_label-GM_probseg.nii.gz"
    (subject,) = preprocess([record], cfg, tmp_path / "cache", progress=False)
    tissue, _ = synthetic_labels(SHAPE)
    counts = {c: int((np.asarray(subject.tissue) == c).sum()) for c in (1, 2, 3)}
    assert counts == {c: int((tissue == c).sum()) for c in (1, 2, 3)}  # 0.8 >= probseg_min: every voxel kept
    high = _cfg(raw, **{"labels.tissue.probseg_min": 0.9})
    with pytest.raises(DataError, match="brain mask is empty"):  # 0.8 < 0.9: no voxel is tissue
        preprocess(load_records(high), high, tmp_path / "cache2", progress=False)


def test_freesurfer_brainstem_has_no_tissue_class_until_the_user_maps_it(raw: Path, tmp_path: Path) -> None:
    anat = _fmriprep(raw, dseg=False, probseg=False)
    cfg = _cfg(raw, **{"labels.tissue.match": ["desc-aseg"]})
    (record,) = load_records(cfg)
    assert record.tissue == anat / "sub-01_desc-aseg_dseg.nii.gz"
    with pytest.raises(DataError, match=r"label 16 'Brain-Stem' has no tissue class.*brainstem.*tissue\.names"):
        preprocess([record], cfg, tmp_path / "cache", progress=False)
    mapped = _cfg(raw, **{"labels.tissue.match": ["desc-aseg"], "labels.tissue.names": {"Brain-Stem": "WM"}})
    (subject,) = preprocess(load_records(mapped), mapped, tmp_path / "cache", progress=False)
    stem = np.asarray(subject.regions) == REGION_INDEX["brainstem"]  # the aseg is the regions map too
    assert stem.any() and (np.asarray(subject.tissue)[stem] == TISSUE_INDEX["WM"]).all()


def test_label_config_errors_name_the_key(raw: Path, tmp_path: Path) -> None:
    _fmriprep(raw)
    with pytest.raises(ConfigError, match=r"data\.labels\.scheme"):
        load_records(_cfg(raw, **{"labels.scheme": "spm"}))
    with pytest.raises(ConfigError, match=r"data\.labels\.tissue\.match"):
        load_records(_cfg(raw, **{"labels.tissue.match": ["aseg"]}))
    bad = _cfg(raw, **{"labels.tissue.names": {"Brain-Stem": "bone"}})
    with pytest.raises(ConfigError, match=r"data\.labels\.tissue\.names.*'bone'"):
        preprocess(load_records(bad), bad, tmp_path / "cache", progress=False)


def test_a_plain_dseg_of_an_unknown_pipeline_needs_a_table(raw: Path) -> None:
    anat = _fmriprep(raw, probseg=False)
    desc = anat.parents[1] / "dataset_description.json"
    desc.write_text(json.dumps({"Name": "x", "BIDSVersion": "1.9.0", "GeneratedBy": [{"Name": "mytool"}]}))
    with pytest.raises(DataError, match=r"sub-01_dseg\.nii\.gz: no tissue label table.*data\.labels\.scheme"):
        load_records(_cfg(raw))
    (record,) = load_records(_cfg(raw, **{"labels.scheme": "fmriprep"}))
    assert record.tissue_scheme == "fmriprep"


def test_manifest_keeps_schemes_and_probseg(raw: Path, tmp_path: Path) -> None:
    _fmriprep(raw, dseg=False)
    records = load_records(_cfg(raw))
    write_manifest(records, tmp_path / "manifest.tsv")
    assert read_manifest(tmp_path / "manifest.tsv", ["T1w", "T2w", "FA", "MD"]) == records


def test_inside_group_needs_every_index_in_the_group():
    from ssl_pretrain.data.labels import REGION_INDEX, inside_group

    pons, caudate = REGION_INDEX["pons"], REGION_INDEX["caudate"]
    assert inside_group((pons,), "brainstem") and not inside_group((pons, caudate), "brainstem")
    assert not inside_group((pons,), None)  # no group known: nothing is inside it
    with pytest.raises(KeyError, match="unknown region group"):
        inside_group((pons,), "hippocampus")
