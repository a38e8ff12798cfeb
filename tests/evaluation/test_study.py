"""``bssl study``: experiment configs compose, stages are keyed by config, a tiny study runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from evaluation.stages import compose_stage, config_hash
from evaluation.study import Study, hypotheses, needs_demo
from evaluation.study import run as run_study
from ssl_pretrain.config import CONFIG_DIR, compose_config
from ssl_pretrain.errors import ConfigError, DataError
from ssl_pretrain.run_dir import is_complete, read_run_record, write_json_atomic

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
TINY_STAGES = ["preset=cpu", "model.channels=[4,8,16]", "model.strides=[1,2,2]", "model.num_res_units=1",
               "trainer.max_steps=2", "trainer.enable_progress_bar=false"]  # fmt: skip


def study_config(tmp_path: Path, root: Path, experiments: list[str], extra: list[str] = ()):  # type: ignore[assignment]
    cfg = compose_config(
        "study",
        [f"data.root={root}", "data.spacing=3", "data.patch_size=16", f"experiment=[{','.join(experiments)}]",
         f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}", *extra],
        output_dir=tmp_path / "study",
    )  # fmt: skip
    with open_dict(cfg):
        cfg.study.overrides.common = TINY_STAGES
        cfg.study.overrides.brainstem = ["eval.hd95=false", "eval.n_overlays=1"]
        cfg.study.overrides.evaluate = [
            "bootstrap.n=50",
            "probe.max_subjects=2",
            "probe.voxels_per_subject=20",
            "probe.regions=[subcortical,brainstem]",
            "baselines.methods=[gmm]",
        ]
    return cfg


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_config_composes_into_stage_configs(tmp_path, name):
    cfg = study_config(tmp_path, tmp_path / "bids", [name])
    spec = hypotheses(cfg)[name]
    assert set(spec) == {"pretrain", "subcortical"}
    study = Study(cfg, "fingerprint")
    assert study.ks == ["1", "2", "4", "8", "all"] and study.seeds == [0, 1, 2]
    if spec["pretrain"]:
        stage = compose_stage("p", "pretrain", [f"method={spec['pretrain']}"], cfg, "fp")
        assert stage.cfg.method.name == spec["pretrain"] and stage.cfg.data.patch_size == 16
    stage = compose_stage("b", "finetune", ["stage=brainstem", *TINY_STAGES], cfg, "fp", values={"init": "scratch"})
    assert stage.cfg.stage.name == "brainstem" and list(stage.cfg.model.channels) == [4, 8, 16]
    assert stage.path.parent == tmp_path / "runs" / "study" / "stages"


def test_presets_compose(tmp_path):
    for preset in ("quick", "full"):
        cfg = compose_config("study", [f"preset={preset}"])
        assert cfg.study.preset == preset and cfg.study.overrides.brainstem
    assert compose_config("study").study.preset == "quick"


def test_stage_hash_follows_the_config_not_the_paths(tmp_path):
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"])
    a = compose_stage("b", "finetune", ["labels.k=2"], cfg, "fp")
    assert compose_stage("b", "finetune", ["labels.k=2"], cfg, "fp").path == a.path
    assert compose_stage("b", "finetune", ["labels.k=4"], cfg, "fp").path != a.path
    assert compose_stage("b", "finetune", ["labels.k=2"], cfg, "other-data").path != a.path
    moved = a.cfg.copy()
    with open_dict(moved):
        moved.paths.cache_dir, moved.resume = "/elsewhere", "auto"
    assert config_hash(moved, "fp") == config_hash(a.cfg, "fp")


def test_bad_study_settings_name_their_key(tmp_path):
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"])
    with open_dict(cfg):
        cfg.study.hypotheses.mine = {"pretrain": "byol", "subcortical": False}
    with pytest.raises(ConfigError, match=r"study\.hypotheses\.mine\.pretrain"):
        hypotheses(cfg)
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"], ["study.k=[0]"])
    with pytest.raises(ConfigError, match=r"labels\.k"):
        Study(cfg, "fp")
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"])
    with pytest.raises(ConfigError, match=r"study\.overrides"):
        compose_stage("b", "finetune", ["no_such_key=1"], cfg, "fp")


def test_demo_is_simulated_only_at_the_default_location(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config("study")
    assert cfg.data.root == "data/demo" and needs_demo(cfg)  # missing, and the default: simulate
    with open_dict(cfg):
        cfg.data.root = str(tmp_path / "typo")
    with pytest.raises(DataError, match="typo"):  # a user's own (mistyped) path is never filled with a simulation
        needs_demo(cfg)
    cfg.study.simulate_demo = True
    assert needs_demo(cfg)
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "dataset_description.json").write_text("{}")
    assert not needs_demo(cfg)


@pytest.mark.slow
def test_smoke_study_runs_every_stage_reuses_and_resumes(tmp_path, demo_cohort):
    cfg = study_config(tmp_path, demo_cohort, EXPERIMENTS, ["study.k=[1,all]", "study.seeds=[0]"])
    out = run_study(cfg)
    summary = json.loads((out / "study.json").read_text())
    stages = summary["stages"]
    assert all(s["status"] == "complete" for s in stages) and summary["reused"] == 0
    brainstem = [s for s in stages if s["name"].startswith("brainstem-")]
    assert {s["hypothesis"] for s in brainstem} == set(EXPERIMENTS)
    assert len(brainstem) == 2 * len(EXPERIMENTS)
    assert {s["command"] for s in stages} == {"pretrain", "finetune", "predict", "evaluate"}
    results = json.loads(Path(summary["results"]).read_text())
    assert {"segmentation", "learning_curves", "transfer_matrix", "group_analysis", "baselines"} <= set(results)
    report = (out / "report.html").read_text()
    assert "<img" in report and "brainstem" in report

    # Same config again: every stage is reused, nothing is trained.
    again_dir = run_study(study_config(tmp_path, demo_cohort, EXPERIMENTS, ["study.k=[1,all]", "study.seeds=[0]"]))
    again = json.loads((again_dir / "study.json").read_text())
    assert again["reused"] == len(stages)

    # A stage killed half-way (run.json still 'running', no model) is re-run in its directory; the rest reused.
    victim = Path(brainstem[0]["path"])
    (victim / "model.pt").unlink()
    record = read_run_record(victim)
    write_json_atomic(victim / "run.json", {**record, "status": "running"})
    third = run_study(study_config(tmp_path, demo_cohort, EXPERIMENTS, ["study.k=[1,all]", "study.seeds=[0]"]))
    third_summary = json.loads((third / "study.json").read_text())
    assert is_complete(victim) and (victim / "model.pt").is_file()
    # Downstream of the re-run stage, the evaluation is keyed by its inputs' start times: re-run too.
    assert third_summary["reused"] == len(stages) - 2
    assert third_summary["stages"][-1]["path"] != stages[-1]["path"]
    assert OmegaConf.load(victim / "config.yaml").resume == "auto"


def test_two_studies_running_one_stage_at_once_run_it_once(tmp_path, monkeypatch):
    import sys
    import threading
    import time
    import types

    from evaluation import stages

    calls = []

    def fake_run(cfg):
        calls.append(cfg.paths.output_dir)
        time.sleep(0.3)  # the other study arrives while this one is still running the stage
        out = Path(cfg.paths.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / "run.json", {"status": "complete"})

    monkeypatch.setitem(sys.modules, "fake_command", types.SimpleNamespace(run=fake_run))
    monkeypatch.setitem(stages.MODULES, "evaluate", "fake_command")
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"])
    stage = compose_stage("evaluate", "evaluate", [], cfg, "fp")
    reused: list[bool] = []
    threads = [threading.Thread(target=lambda: reused.append(stages.run_stage(stage))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [str(stage.path)] and sorted(reused) == [False, True]


def test_the_predictor_is_the_best_validation_model_at_full_labels(tmp_path):
    from evaluation.stages import Stage

    extra = ["study.k=[2,all]", "study.seeds=[0,1]"]
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch", "subcortical"], extra)
    study = Study(cfg, "fp")
    stages = []
    for hypothesis, k, seed, val in [("scratch", "all", 0, 0.7), ("subcortical", "all", 0, 0.8),
                                     ("subcortical", "2", 0, 0.99), ("scratch", "all", 1, 0.95)]:  # fmt: skip
        path = tmp_path / f"{hypothesis}-{k}-{seed}"
        path.mkdir()
        sidecar = {"architecture": {"name": "UNet"}, "modalities": ["T1w"], "result": {"val_dice": val}}
        (path / "model.json").write_text(json.dumps(sidecar))
        stages.append(Stage(path.name, "finetune", cfg, path, {"hypothesis": hypothesis, "k": k, "seed": seed}))
    assert study.predictor(stages).name == "subcortical-all-0"  # k=all, first seed; not the k=2 or seed-1 runs
    with open_dict(cfg):
        cfg.study.predict_with = "scratch"
    assert study.predictor(stages).name == "scratch-all-0"
    cfg.study.predict_with = "nope"
    with pytest.raises(ConfigError, match=r"study\.predict_with"):
        study.predictor(stages)
