"""Finding runs, naming initialisations, and reading per-subject Dice."""

from __future__ import annotations

import json

import pytest

from evaluation.runs import collect_runs, finetune_rows, init_label
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.run_dir import write_json_atomic


def _run(path, marker, sidecar, status="complete"):
    path.mkdir(parents=True)
    full = {"architecture": {"class": "ResEncoder", "config": {}}, "modalities": ["T1w"], **sidecar}
    (path / marker).write_text(json.dumps(full))
    write_json_atomic(path / "run.json", {"status": status, "seconds": 12.5, "device": "cpu"})
    return path


def test_init_labels_follow_the_chain(tmp_path):
    pre = _run(tmp_path / "pre", "encoder.json", {"method": {"name": "mae"}})
    sub = _run(
        tmp_path / "sub",
        "model.json",
        {
            "stage": "subcortical",
            "init": {"init": str(pre), "path": str(pre / "encoder.json"), "source_method": {"name": "mae"}},
        },
    )
    assert init_label({"init": {"init": "scratch"}}) == "scratch"
    assert (
        init_label({"init": {"init": str(pre), "path": str(pre / "encoder.json"), "source_method": {"name": "mae"}}})
        == "ssl_mae"
    )
    chained = {"init": {"init": str(sub), "path": str(sub / "model.json"), "source_stage": "subcortical"}}
    assert init_label(chained) == "ssl_mae+subcortical"
    scratch_sub = _run(tmp_path / "sub0", "model.json", {"stage": "subcortical", "init": {"init": "scratch"}})
    assert (
        init_label(
            {"init": {"init": str(scratch_sub), "path": str(scratch_sub / "model.json"), "source_stage": "subcortical"}}
        )
        == "subcortical"
    )


def test_collect_runs_walks_multirun_dirs_and_skips_unfinished(tmp_path):
    _run(tmp_path / "multi" / "0", "model.json", {"stage": "brainstem", "labels": {"k": 2}, "seeds": {"seed": 1}})
    _run(tmp_path / "multi" / "1", "model.json", {"stage": "brainstem"}, status="running")
    _run(tmp_path / "pre", "encoder.json", {"method": {"name": "simclr"}})
    runs = collect_runs([tmp_path / "multi", tmp_path / "pre"])
    assert [(r.kind, r.label) for r in runs] == [("finetune", "scratch"), ("pretrain", "ssl_simclr")]
    assert runs[0].k == "2" and runs[0].seed == 1 and runs[0].record["seconds"] == 12.5


def test_collect_runs_errors_name_the_path(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        collect_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no finished"):
        collect_runs([tmp_path / "empty"])


def test_finetune_rows_read_dice_per_subject_and_class(tmp_path):
    run_dir = _run(tmp_path / "ft", "model.json", {"stage": "brainstem", "labels": {"k": 4}, "seeds": {"seed": 2}})
    (run_dir / "metrics.csv").write_text("subject,group,dice_GM,dice_WM,dice_CSF\nsub-01,HC,0.5,0.75,0.9\n")
    [run] = collect_runs([run_dir])
    rows = finetune_rows(run)
    assert {(r["class"], r["dice"]) for r in rows} == {("GM", 0.5), ("WM", 0.75), ("CSF", 0.9)}
    assert all(r["k"] == "4" and r["seed"] == 2 and r["region"] == "brainstem" for r in rows)
    (run_dir / "metrics.csv").write_text("subject,dice_GM\nsub-01,0.5\n")
    with pytest.raises(ConfigError, match=r"metrics\.csv"):
        finetune_rows(run)
