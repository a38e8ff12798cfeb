"""evaluation.design and evaluation.recorded_split read the rules of DESIGN §10 off the runs themselves."""

from __future__ import annotations

import json

import pytest
import yaml

from evaluation.design import convergence_rows, design_summary
from evaluation.recorded_split import recorded_split
from evaluation.runs import Run
from ssl_pretrain.errors import ConfigError

STAGE = {"name": "subcortical", "roi": "subcortical", "roi_margin_mm": 4.0, "roi_exclude": "brainstem"}


def _run(tmp_path, name, label, k="1", seed=0, steps=10, seen=None, lr=1e-3, matched=False, init=None, **extra):
    path = tmp_path / name
    path.mkdir()
    config = {"optim": {"lr": lr, "encoder_lr_scale": 1.0}, "trainer": {"max_steps": steps}, "init": init or "scratch",
              "init_label": label, "labels": {"k": k, "seed": seed}, "seed": seed}  # fmt: skip
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    sidecar = {
        "task": "segmentation", "architecture": {"class": "UNet"}, "modalities": ["T1w"],
        "stage": extra.pop("stage", "brainstem"), "init_label": label, "compute_matched": matched,
        "labels": {"k": k, "seed": seed, "seen": seen if seen is not None else (int(k) if k != "all" else 8)},
        "seeds": {"seed": seed}, "result": {"steps": steps}, "optim": config["optim"],
        "selection": {"description": "fixed schedule, last weights"}, "labelled_subjects": [f"sub-{seed}"],
        "init": {"init": init or "scratch", "path": init}, "test_subjects": ["t1", "t2"], "val_subjects": ["v1"],
        "train_subjects": ["sub-0", "sub-1"], "convergence": {"converged": True, "train_dice_gain": 0.001},
        **extra,
    }  # fmt: skip
    (path / "model.json").write_text(json.dumps(sidecar))
    return Run(path=path, kind="finetune", sidecar=sidecar, label=label)


def test_equal_schedules_and_bounded_labels_pass(tmp_path):
    source = _run(tmp_path, "sub", "subcortical", k="all", steps=30, stage="subcortical", stage_config=STAGE)
    runs = [
        source,
        _run(tmp_path, "a", "scratch"),
        _run(tmp_path, "b", "subcortical", init=str(source.path)),
        _run(tmp_path, "c", "scratch_matched", steps=40, matched=True),
    ]
    d = design_summary(runs, "brainstem")
    assert d["equal_schedules"] and d["same_labelled_subjects"] and d["labels_bounded_by_k"]
    assert d["source_roi_excludes_target"] is True
    assert d["supervised_steps_total"] == {"scratch": 10, "subcortical": 40, "scratch_matched": 40}
    assert d["target_steps"] == {"scratch": 10, "subcortical": 10, "scratch_matched": 40}
    assert [r["role"] for r in convergence_rows(runs, "brainstem")] == ["source", "target", "target", "target"]


def test_a_broken_rule_is_reported(tmp_path):
    runs = [
        _run(tmp_path, "a", "scratch"),
        _run(tmp_path, "b", "ssl_mae", lr=1e-4, seen=9),  # another learning rate, and 9 labels seen at k=1
        _run(tmp_path, "c", "longer", steps=99),  # more steps without being a compute-matched control
        _run(tmp_path, "s", "leaky", k="all", stage="subcortical", stage_config={**STAGE, "roi_exclude": None}),
    ]
    runs.append(_run(tmp_path, "d", "from-leaky", init=str(runs[3].path)))
    d = design_summary(runs, "brainstem")
    assert not d["equal_schedules"] and not d["labels_bounded_by_k"] and d["max_labelled_seen"]["1"] == 9
    assert any("optim.lr" in x for x in d["schedule_differences"])
    assert any("trainer.max_steps" in x for x in d["schedule_differences"])
    assert d["source_roi_excludes_target"] is False


def test_the_split_comes_from_the_sidecars_and_disagreement_stops(tmp_path):
    a, b = _run(tmp_path, "a", "scratch"), _run(tmp_path, "b", "scratch", seed=1)
    assert recorded_split([a, b]) == {"train": ["sub-0", "sub-1"], "val": ["v1"], "test": ["t1", "t2"]}
    b.sidecar["test_subjects"] = ["t1", "t3"]
    with pytest.raises(ConfigError, match="different test subjects") as err:
        recorded_split([a, b])
    assert str(a.path) in str(err.value) and str(b.path) in str(err.value)
    assert recorded_split([]) is None
