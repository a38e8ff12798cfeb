"""The demo cohort is valid BIDS: the raw dataset and each derivative pass the BIDS validator on their own."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ssl_pretrain.data.demo.bids_writer import GENERATOR
from tests.bids_validator import validate


@pytest.mark.parametrize("dataset", [".", "derivatives/dwi", "derivatives/labels", "derivatives/simulation"])
def test_every_dataset_of_the_demo_cohort_passes_the_validator(demo_cohort: Path, dataset: str) -> None:
    report = validate(demo_cohort / dataset)
    print(f"bids-validator on the demo cohort's {dataset}: {len(report.errors())} errors, summary {report.summary}")
    assert report.errors() == []


def test_labels_have_colours_and_a_resolvable_spatial_reference(demo_cohort: Path) -> None:
    labels = demo_cohort / "derivatives" / "labels"
    desc = json.loads((labels / "dataset_description.json").read_text())
    assert desc["GeneratedBy"][0]["Name"] == GENERATOR and "torch" in desc["GeneratedBy"][0]["Libraries"]
    raw = (labels / desc["DatasetLinks"]["raw"]).resolve()
    assert raw == demo_cohort.resolve()
    for tsv in labels.rglob("*_dseg.tsv"):
        table = pd.read_csv(tsv, sep="\t")
        assert table["color"].str.fullmatch(r"#[0-9a-f]{6}").all(), tsv
        sidecar = json.loads(tsv.with_suffix(".json").read_text())
        scheme, name, inside = sidecar["SpatialReference"].split(":", 2)
        assert (scheme, name) == ("bids", "raw") and (raw / inside).is_file()
