"""Manifest TSV: round trip with discovery, relative paths, and each malformed-manifest case."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_pretrain.data.bids import discover
from ssl_pretrain.data.manifest import SubjectRecord, read_manifest, write_manifest
from tests.ssl_pretrain.data.bad_files import raises_naming
from tests.synthetic import write_synthetic_bids

MODALITIES = ["T1w", "T2w", "FA", "MD"]


@pytest.fixture(scope="module")
def bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("manifest") / "bids"
    return write_synthetic_bids(
        root, n_subjects=3, shape=(6, 7, 6), sessions=["a", "b"], missing={"02": ["T2w", "tissue"]}
    )


def test_round_trip_with_discovery(bids: Path, tmp_path: Path) -> None:
    records = discover(bids, MODALITIES)
    inside, outside = bids / "manifest.tsv", tmp_path / "elsewhere" / "manifest.tsv"
    for path in (inside, outside):
        write_manifest(records, path)
        assert read_manifest(path, MODALITIES) == records
    inside.unlink()  # leave the shared fixture as it was
    header, first = outside.read_text().splitlines()[:2]
    assert header.split("\t") == ["participant_id", "session", "group", *MODALITIES, "tissue", "regions",
                                  "tissue_tsv", "regions_tsv", "age", "sex"]  # fmt: skip
    assert first.split("\t")[:3] == ["sub-01", "a", "HC"]
    assert str(bids) in first  # outside the manifest's directory: absolute paths


def test_relative_paths_are_relative_to_the_manifest(
    bids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.tsv"
    (tmp_path / "data").symlink_to(bids)
    t1 = "data/sub-03/ses-b/anat/sub-03_ses-b_T1w.nii.gz"
    path.write_text(f"participant_id\tsession\tT1w\tFLAIR\tage\n03\tses-b\t{t1}\tn/a\t\n")
    monkeypatch.chdir(tmp_path.parent)  # not the manifest's directory; the manifest path itself is relative
    (record,) = read_manifest(Path(tmp_path.name) / "m.tsv", ["T1w", "FLAIR"])
    assert record == SubjectRecord(subject="03", session="b", images={"T1w": tmp_path / t1})
    assert record.images["T1w"].is_file()


def test_unrequested_modalities_ignored_and_other_columns_are_covariates(bids: Path, tmp_path: Path) -> None:
    write_manifest(discover(bids, MODALITIES), tmp_path / "m.tsv")
    records = read_manifest(tmp_path / "m.tsv", ["FA"])
    assert all(list(r.images) == ["FA"] for r in records)
    assert records[0].covariates == {"age": "51", "sex": "F"}
    assert records[0].tissue is not None and records[0].regions_tsv is not None


def test_require_group(bids: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.tsv"
    t1 = bids / "sub-01/ses-a/anat/sub-01_ses-a_T1w.nii.gz"
    path.write_text(f"participant_id\tT1w\nsub-01\t{t1}\n")
    assert read_manifest(path, MODALITIES)[0].group is None
    with raises_naming(path, "no 'group' column"):
        read_manifest(path, MODALITIES, require_group=True)
    path.write_text(f"participant_id\tgroup\tT1w\nsub-01\tn/a\t{t1}\n")
    with raises_naming(path, "line 2, column 'group': no group for sub-01"):
        read_manifest(path, MODALITIES, require_group=True)


def test_write_refuses_tabs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tab or newline"):
        write_manifest([SubjectRecord("01", covariates={"site": "a\tb"})], tmp_path / "m.tsv")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("subject\tT1w\n01\t{t1}\n", "no 'participant_id' column"),
        ("participant_id\tT1w\nsub-01\t{t1}\n01\t{t1}\n", "line 3 repeats sub-01 of line 2"),
        ("participant_id\tsession\tT1w\n01\t1\t{t1}\n02\t\t{t1}\n01\tses-1\t{t1}\n", "line 4 repeats sub-01 session 1"),
        ("participant_id\tT1w\nsub-01\tsub-01/anat/missing_T1w.nii.gz\n", "line 2, column 'T1w': file .*missing_T1w"),
        ("participant_id\tT1w\nsub-01\t{t1}\n\nsub-02\t{t1}\tx\n", "line 4 has 3 tab-separated fields"),
        ("participant_id\tT1w\n\t{t1}\n", "line 2, column 'participant_id': empty participant id"),
        ("participant_id,T1w\nsub-01,{t1}\n", "not tab-separated"),
        ("participant_id\tT1w\n", "lists no subjects"),
        ("", "empty file"),
    ],
)
def test_malformed_manifest(bids: Path, tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "manifest.tsv"
    path.write_text(content.format(t1=bids / "sub-01/ses-a/anat/sub-01_ses-a_T1w.nii.gz"))
    with raises_naming(path, match):
        read_manifest(path, MODALITIES)


def test_manifest_not_a_tsv(tmp_path: Path) -> None:
    path = tmp_path / "manifest.tsv"
    path.write_bytes(bytes(range(256)))
    with raises_naming(path, "not a UTF-8 text TSV file"):
        read_manifest(path, MODALITIES)
    with raises_naming(tmp_path / "none.tsv", "file not found"):
        read_manifest(tmp_path / "none.tsv", MODALITIES)


def test_listed_path_is_a_directory(bids: Path, tmp_path: Path) -> None:
    path = tmp_path / "manifest.tsv"
    path.write_text(f"participant_id\tregions\nsub-01\t{bids / 'sub-01'}\n")
    with raises_naming(path, "line 2, column 'regions': file .* is not a regular file"):
        read_manifest(path, MODALITIES)
