"""BIDS discovery: modalities, sessions, missing files, label tables by inheritance, participants, ambiguity."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssl_pretrain.data.bids import discover, find_dseg_table, parse_name, read_dseg_tsv
from ssl_pretrain.errors import DataError
from tests.ssl_pretrain.data.bad_files import raises_naming, save_nifti
from tests.synthetic import REGIONS_TSV, TISSUE_TSV, write_synthetic_bids

MODALITIES = ["T1w", "T2w", "FA", "MD"]
SHAPE = (8, 9, 8)


def _bids(root: Path, **kwargs: object) -> Path:
    return write_synthetic_bids(root, shape=SHAPE, **kwargs)  # type: ignore[arg-type]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def test_parse_name() -> None:
    name = parse_name("sub-01_ses-2_space-T1w_model-tensor_param-fa_dwimap.nii.gz")
    assert name is not None
    assert name.entities == {"sub": "01", "ses": "2", "space": "T1w", "model": "tensor", "param": "fa"}
    assert (name.suffix, name.extension, name.subject, name.session) == ("dwimap", ".nii.gz", "01", "2")
    assert parse_name("desc-tissue_dseg.tsv").entities == {"desc": "tissue"}  # type: ignore[union-attr]
    assert parse_name("dseg.tsv").entities == {}  # type: ignore[union-attr]
    assert parse_name("sub-01_T1w.json") is None
    assert parse_name("sub-01_foo_T1w.nii.gz") is None  # "foo" is not key-value
    assert parse_name("sub-01_sub-02_T1w.nii") is None  # repeated entity


def test_discovers_images_labels_tables_and_participants(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=3)
    records = discover(root, MODALITIES)
    assert [r.key for r in records] == ["sub-01", "sub-02", "sub-03"]
    r = records[1]
    labels = root / "derivatives" / "labels" / "sub-02" / "anat"
    assert r.images == {
        "T1w": root / "sub-02" / "anat" / "sub-02_T1w.nii.gz",
        "T2w": root / "sub-02" / "anat" / "sub-02_T2w.nii.gz",
        "FA": root / "derivatives/dwi/sub-02/dwi/sub-02_space-T1w_model-tensor_param-fa_dwimap.nii.gz",
        "MD": root / "derivatives/dwi/sub-02/dwi/sub-02_space-T1w_model-tensor_param-md_dwimap.nii.gz",
    }
    assert list(r.images) == MODALITIES  # channel order
    assert r.tissue == labels / "sub-02_desc-tissue_dseg.nii.gz"
    assert r.tissue_tsv == labels / "sub-02_desc-tissue_dseg.tsv"
    assert r.regions == labels / "sub-02_desc-regions_dseg.nii.gz"
    assert r.regions_tsv == labels / "sub-02_desc-regions_dseg.tsv"
    assert [x.group for x in records] == ["HC", "ALS", "HC"]
    assert r.covariates == {"age": "52", "sex": "F"}
    assert all(p.is_file() for x in records for p in x.all_paths())


def test_missing_modalities_and_labels(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=3, missing={"02": ["T2w", "FA", "tissue"], "03": ["T1w", "regions"]})
    r1, r2, r3 = discover(root, MODALITIES)
    assert list(r1.images) == MODALITIES and r1.tissue and r1.regions
    assert list(r2.images) == ["T1w", "MD"] and r2.tissue is None and r2.tissue_tsv is None and r2.regions
    assert list(r3.images) == ["T2w", "FA", "MD"] and r3.tissue and r3.regions is None and r3.regions_tsv is None


def test_sessions_give_one_record_each(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=2, sessions=["pre", "post"], missing={"02": ["FA"]})
    records = discover(root, MODALITIES)
    assert [r.key for r in records] == ["sub-01_ses-post", "sub-01_ses-pre", "sub-02_ses-post", "sub-02_ses-pre"]
    for r in records:
        assert all(f"ses-{r.session}" in p.name and f"ses-{r.session}" in p.parent.parent.name for p in r.all_paths())
        assert r.group == ("HC" if r.subject == "01" else "ALS")
    assert "FA" not in records[2].images and "FA" in records[0].images


def test_only_configured_modalities_and_other_raw_suffixes(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=2)
    flair = save_nifti(root / "sub-01/anat/sub-01_FLAIR.nii.gz", np.ones(SHAPE, np.float32))
    records = discover(root, ["FLAIR", "FA"])
    assert records[0].images == {"FLAIR": flair, "FA": records[0].images["FA"]}
    assert list(records[1].images) == ["FA"]


def test_relative_root_gives_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bids(tmp_path / "bids", n_subjects=1)
    monkeypatch.chdir(tmp_path)
    (record,) = discover(Path("bids"), MODALITIES)
    assert all(p.is_absolute() for p in record.all_paths())


def test_discovery_never_writes_into_the_dataset(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=2, sessions=["1"])
    before = _snapshot(root)
    discover(root, MODALITIES)
    assert _snapshot(root) == before


# --- label tables by BIDS inheritance ---------------------------------------------------------------


def test_dseg_table_inherited_from_derivative_root(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=2)
    labels = root / "derivatives" / "labels"
    for tsv in labels.rglob("sub-*_dseg.tsv"):
        tsv.unlink()
    (labels / "desc-tissue_dseg.tsv").write_text(TISSUE_TSV)
    (labels / "dseg.tsv").write_text(REGIONS_TSV)  # applies to every dseg without a more specific table
    (labels / "desc-other_dseg.tsv").write_text(TISSUE_TSV)  # does not apply to tissue or regions
    subject_table = labels / "sub-02" / "sub-02_desc-regions_dseg.tsv"  # nearer: wins for sub-02
    subject_table.write_text(REGIONS_TSV)
    r1, r2 = discover(root, MODALITIES)
    assert r1.tissue_tsv == r2.tissue_tsv == labels / "desc-tissue_dseg.tsv"
    assert r1.regions_tsv == labels / "dseg.tsv"
    assert r2.regions_tsv == subject_table


def test_dseg_table_search_stops_at_the_derivative_dataset(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=1)
    for tsv in (root / "derivatives").rglob("*_dseg.tsv"):
        tsv.unlink()
    (root / "dseg.tsv").write_text(TISSUE_TSV)  # in the raw dataset: not part of the derivative
    (root / "derivatives" / "dseg.tsv").write_text(TISSUE_TSV)  # above labels/, which has its own description
    (record,) = discover(root, MODALITIES)
    assert record.tissue is not None and record.tissue_tsv is None and record.regions_tsv is None


def test_two_equally_specific_tables_is_an_error(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=1)
    anat = root / "derivatives/labels/sub-01/anat"
    (anat / "sub-01_desc-tissue_dseg.tsv").unlink()
    (anat / "sub-01_dseg.tsv").write_text(TISSUE_TSV)
    (anat / "desc-tissue_dseg.tsv").write_text(TISSUE_TSV)
    tissue = anat / "sub-01_desc-tissue_dseg.nii.gz"
    with raises_naming(tissue, "two label tables apply equally"):
        find_dseg_table(tissue, root / "derivatives" / "labels")


# --- participants.tsv -----------------------------------------------------------------------------------


def test_missing_participants_tsv(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _bids(tmp_path / "bids", n_subjects=2)
    (root / "participants.tsv").unlink()
    with caplog.at_level(logging.WARNING, logger="ssl_pretrain.data.bids"):
        records = discover(root, MODALITIES)
    assert [r.group for r in records] == [None, None] and records[0].covariates == {}
    assert any("participants.tsv not found" in r.getMessage() for r in caplog.records)
    with raises_naming(root / "participants.tsv", "not found; group comparisons need it"):
        discover(root, MODALITIES, require_group=True)


def test_participants_tsv_without_group(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _bids(tmp_path / "bids", n_subjects=2)
    path = root / "participants.tsv"
    path.write_text("participant_id\tage\nsub-01\t40\nsub-02\t50\n")
    with caplog.at_level(logging.WARNING, logger="ssl_pretrain.data.bids"):
        records = discover(root, MODALITIES)
    assert [r.group for r in records] == [None, None]
    assert [r.covariates for r in records] == [{"age": "40"}, {"age": "50"}]
    assert any("no 'group' column" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)
    with raises_naming(path, "no 'group' column"):
        discover(root, MODALITIES, require_group=True)


def test_participant_without_a_group_value(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=3)
    path = root / "participants.tsv"
    path.write_text("participant_id\tgroup\nsub-01\tHC\nsub-02\tn/a\n")  # sub-03 not listed
    assert [r.group for r in discover(root, MODALITIES)] == ["HC", None, None]
    with raises_naming(path, "no group for sub-02, sub-03"):
        discover(root, MODALITIES, require_group=True)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("subject\tgroup\nsub-01\tHC\n", "no 'participant_id' column"),
        ("participant_id\tgroup\nsub-01\tHC\nsub-01\tALS\n", "line 3 repeats sub-01 of line 2"),
        ("participant_id,group\nsub-01,HC\n", "not tab-separated"),
        ("participant_id\tgroup\nsub-01\tHC\textra\n", "line 2 has 3 tab-separated fields, the header has 2"),
    ],
)
def test_malformed_participants_tsv(tmp_path: Path, content: str, match: str) -> None:
    root = _bids(tmp_path / "bids", n_subjects=1)
    (root / "participants.tsv").write_text(content)
    with raises_naming(root / "participants.tsv", match):
        discover(root, MODALITIES)


# --- several candidate files ---------------------------------------------------------------------------


def test_several_runs_take_the_lowest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _bids(tmp_path / "bids", n_subjects=1)
    anat = root / "sub-01" / "anat"
    (anat / "sub-01_T1w.nii.gz").unlink()
    runs = [save_nifti(anat / f"sub-01_run-{i}_T1w.nii.gz", np.ones(SHAPE, np.float32)) for i in (2, 10, 1)]
    with caplog.at_level(logging.WARNING, logger="ssl_pretrain.data.bids"):
        (record,) = discover(root, MODALITIES)
    assert record.images["T1w"] == runs[2]
    (message,) = [r.getMessage() for r in caplog.records if "several runs" in r.getMessage()]
    assert str(runs[0]) in message and str(runs[1]) in message


def test_ambiguous_candidates_are_an_error_naming_them(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=1)
    anat = root / "sub-01" / "anat"
    other = save_nifti(anat / "sub-01_acq-fast_T1w.nii.gz", np.ones(SHAPE, np.float32))
    with raises_naming(root, "sub-01: 2 candidate T1w files") as info:
        discover(root, MODALITIES)
    assert str(other) in str(info.value) and str(anat / "sub-01_T1w.nii.gz") in str(info.value)
    assert "data.manifest" in str(info.value)


def test_diffusion_model_and_space_preferences(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=1)
    dwi = root / "derivatives" / "dwi" / "sub-01" / "dwi"
    ones = np.ones(SHAPE, np.float32)
    save_nifti(dwi / "sub-01_space-MNI152NLin2009cAsym_model-tensor_param-fa_dwimap.nii.gz", ones)  # not native
    dki_fa = save_nifti(dwi / "sub-01_space-T1w_model-dki_param-fa_dwimap.nii.gz", ones)  # tensor preferred
    native_md = save_nifti(dwi / "sub-01_model-tensor_param-MD_dwimap.nii.gz", ones)  # space-T1w preferred
    (record,) = discover(root, MODALITIES)
    assert record.images["FA"] == dwi / "sub-01_space-T1w_model-tensor_param-fa_dwimap.nii.gz"
    assert record.images["MD"] == dwi / "sub-01_space-T1w_model-tensor_param-md_dwimap.nii.gz"
    (dwi / "sub-01_space-T1w_model-tensor_param-md_dwimap.nii.gz").unlink()
    (dwi / "sub-01_space-T1w_model-tensor_param-fa_dwimap.nii.gz").unlink()
    (record,) = discover(root, MODALITIES)
    assert record.images["MD"] == native_md  # param matched case-insensitively, no space = native
    assert record.images["FA"] == dki_fa  # the MNI-space tensor map is never a candidate


def test_file_in_the_wrong_subject_directory_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _bids(tmp_path / "bids", n_subjects=2)
    stray = shutil.copy(root / "sub-02/anat/sub-02_T2w.nii.gz", root / "sub-01/anat/sub-02_T2w.nii.gz")
    (root / "sub-01/anat/sub-01_T2w.nii.gz").unlink()
    with caplog.at_level(logging.WARNING, logger="ssl_pretrain.data.bids"):
        records = discover(root, MODALITIES)
    assert "T2w" not in records[0].images
    assert any(str(stray) in r.getMessage() and "do not match its directory" in r.getMessage() for r in caplog.records)


# --- bad roots ------------------------------------------------------------------------------------------


def test_root_missing_not_a_directory_or_without_subjects(tmp_path: Path) -> None:
    with raises_naming(tmp_path / "nope", "dataset directory not found"):
        discover(tmp_path / "nope", MODALITIES)
    (tmp_path / "file").write_text("x")
    with raises_naming(tmp_path / "file", "not a directory"):
        discover(tmp_path / "file", MODALITIES)
    (tmp_path / "empty" / "sub-01" / "anat").mkdir(parents=True)
    with raises_naming(tmp_path / "empty", "no subjects found"):
        discover(tmp_path / "empty", MODALITIES)


# --- dseg.tsv -------------------------------------------------------------------------------------------


def test_read_dseg_tsv(tmp_path: Path) -> None:
    path = tmp_path / "dseg.tsv"
    path.write_text("index\tname\tcolor\n0\tbackground\t#000000\n5\tBrain-Stem\t#ff0000\n\n10\tcerebral_wm\t\n")
    assert read_dseg_tsv(path) == {0: "background", 5: "Brain-Stem", 10: "cerebral_wm"}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("index\tlabel\n1\tGM\n", "needs columns 'index' and 'name'"),
        ("index\tname\n1\tGM\n1\tWM\n", "line 3: index 1 is listed twice"),
        ("index\tname\n1.5\tGM\n", "line 2: index '1.5' is not an integer"),
        ("index\tname\n-1\tGM\n", "line 2: negative index -1"),
        ("index\tname\n1\t\n", "line 2: empty name"),
        ("index\tname\n", "no rows"),
        ("", "empty file"),
        ("index,name\n1,GM\n", "not tab-separated"),
    ],
)
def test_malformed_dseg_tsv(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "desc-tissue_dseg.tsv"
    path.write_text(content)
    with raises_naming(path, match):
        read_dseg_tsv(path)


def test_binary_dseg_tsv(tmp_path: Path) -> None:
    path = tmp_path / "dseg.tsv"
    path.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe" * 10)
    with raises_naming(path, "not a UTF-8 text TSV file"):
        read_dseg_tsv(path)


def test_same_modality_in_raw_and_derivatives_is_ambiguous(tmp_path: Path) -> None:
    root = _bids(tmp_path / "bids", n_subjects=1)
    raw_fa = save_nifti(root / "sub-01/anat/sub-01_FA.nii.gz", np.ones(SHAPE, np.float32))
    with raises_naming(root, "sub-01: 2 candidate FA files") as info:
        discover(root, MODALITIES)
    assert str(raw_fa) in str(info.value) and "param-fa_dwimap" in str(info.value)


def test_derivatives_generated_by_the_toolkit_are_skipped(tmp_path: Path) -> None:
    """bssl predict's own output (GeneratedBy brainstem-ssl) is never an input, even with a colliding desc."""
    root = write_synthetic_bids(tmp_path / "bids", n_subjects=1, shape=(8, 8, 8))
    ours = root / "derivatives" / "bssl"
    anat = ours / "sub-01" / "anat"
    anat.mkdir(parents=True)
    (ours / "dataset_description.json").write_text(
        json.dumps({"Name": "p", "BIDSVersion": "1.9.0", "GeneratedBy": [{"Name": "brainstem-ssl"}]})
    )
    labels = root / "derivatives/labels/sub-01/anat"
    for name in ("sub-01_desc-tissue_dseg.nii.gz", "sub-01_desc-tissue_dseg.tsv"):
        shutil.copy(labels / name, anat / name)
    (record,) = discover(root, ["T1w"])
    assert record.tissue == labels / "sub-01_desc-tissue_dseg.nii.gz"
    with pytest.raises(DataError, match="2 candidate tissue files"):
        discover(root, ["T1w"], skip_generated_by=[])
