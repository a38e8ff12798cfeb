"""results.json: strict JSON, lossless round trip, atomic writes, clear errors on bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.results_file import load_results, to_jsonable, write_results
from ssl_pretrain.atomic import write_text_atomic
from ssl_pretrain.errors import DataError


def test_results_json_round_trips(tmp_path, small_results):
    results = small_results
    path = write_results(results, tmp_path / "results.json")
    loaded = load_results(path)
    assert loaded == to_jsonable(results)
    assert loaded["segmentation"]["brainstem"]["WM"]["ci95"] == [0.77, 0.83]
    assert loaded["baselines"]["gmm"]["brainstem"]["GM"]["dice"] is None  # NaN -> null: strict JSON
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert to_jsonable({1: np.int64(3), "a": (np.bool_(True), np.inf)}) == {"1": 3, "a": [True, None]}


def test_failed_write_leaves_previous_results_intact(tmp_path):
    path = write_results({"config": {}}, tmp_path / "results.json")
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_results({"config": object()}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left behind


def test_load_results_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON"):
        load_results(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(DataError, match="JSON object"):
        load_results(bad)


def test_write_text_atomic(tmp_path):
    path = tmp_path / "sub" / "report.html"
    write_text_atomic(path, "<p>é</p>")
    assert path.read_text(encoding="utf-8") == "<p>é</p>"
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]
