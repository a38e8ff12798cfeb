"""Compute per initialisation: each run of an init's chain (pretrain → subcortical → brainstem) counted once."""

from __future__ import annotations

import json

import pytest

from evaluation.compute_cost import compute_per_init
from evaluation.runs import collect_runs
from ssl_pretrain.run_dir import write_json_atomic


def _run(path, marker, sidecar, seconds):
    path.mkdir(parents=True)
    full = {"architecture": {"class": "ResEncoder", "config": {}}, "modalities": ["T1w"], **sidecar}
    (path / marker).write_text(json.dumps(full))
    record = {"status": "complete", "device": "cpu"} | ({} if seconds is None else {"seconds": seconds})
    write_json_atomic(path / "run.json", record)
    return path


def _from(source, pt, **extra):
    return {"init": {"init": str(source), "path": str(source / pt), **extra}}


def test_chain_seconds_are_summed_once_per_run(tmp_path):
    pre = _run(tmp_path / "pre", "encoder.json", {"method": {"name": "mae"}}, 100.0)
    sub = _run(
        tmp_path / "sub", "model.json", {"stage": "subcortical", **_from(pre, "encoder.pt", source_method="mae")}, 40.0
    )
    sweep = tmp_path / "multirun"
    for i, k in enumerate([1, 2, 4]):  # three brainstem runs from the same subcortical model
        _run(
            sweep / f"{i}",
            "model.json",
            {"stage": "brainstem", "labels": {"k": k}, **_from(sub, "model.pt", source_stage="subcortical")},
            5.0,
        )
        _run(sweep / f"s{i}", "model.json", {"stage": "brainstem", "init": {"init": "scratch"}}, 3.0 if i else None)
    # the pretraining and subcortical runs are not passed in: they are found through init.path
    runs = collect_runs([sweep])
    costs = compute_per_init(runs, "brainstem")
    assert list(costs) == ["ssl_mae+subcortical", "scratch"]
    chained = costs["ssl_mae+subcortical"]
    assert chained["seconds"] == pytest.approx(100 + 40 + 3 * 5)
    assert chained["runs"] == 5
    assert chained["by_stage"] == {"brainstem": 15.0, "subcortical": 40.0, "pretrain": 100.0}
    assert chained["runs_by_stage"] == {"brainstem": 3, "subcortical": 1, "pretrain": 1}
    scratch = costs["scratch"]
    assert scratch["seconds"] == pytest.approx(6.0) and scratch["runs"] == 3
    assert scratch["missing"] == [str((sweep / "s0").resolve())]  # no seconds in its run.json


def test_other_stages_define_no_init(tmp_path):
    _run(tmp_path / "sub", "model.json", {"stage": "subcortical", "init": {"init": "scratch"}}, 4.0)
    assert compute_per_init(collect_runs([tmp_path]), "brainstem") == {}
    assert compute_per_init(collect_runs([tmp_path]), stage="subcortical")["scratch"]["seconds"] == 4.0
