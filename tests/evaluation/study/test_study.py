"""``bssl study``: hypothesis configs compose, stages are keyed by config, a tiny study runs end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf, open_dict

from evaluation.protocol import check_arms
from evaluation.study.chain import Study, needs_demo
from evaluation.study.chain import run as run_study
from evaluation.study.hypotheses import Hypothesis, hypotheses
from evaluation.study.stages import compose_stage, config_hash
from ssl_pretrain.config import CONFIG_DIR, compose_config
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.errors import ConfigError, DataError
from ssl_pretrain.run_dir import is_complete, read_run_record, write_json_atomic

EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "hypothesis").glob("*.yaml"))
TINY_STAGES = ["preset=cpu", "model.channels=[4,8,16]", "model.strides=[1,2,2]", "model.num_res_units=1",
               "trainer.max_steps=2", "trainer.enable_progress_bar=false"]  # fmt: skip


def study_config(tmp_path: Path, root: Path, experiments: list[str], extra: list[str] = ()):  # type: ignore[assignment]
    cfg = compose_config(
        "study",
        [f"data.root={root}", "data.spacing=3", "data.patch_size=16", f"hypothesis=[{','.join(experiments)}]",
         f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}", *extra],
        output_dir=tmp_path / "study",
    )  # fmt: skip
    with open_dict(cfg):
        cfg.study.overrides.common = TINY_STAGES  # the preset's per-stage step counts are replaced too
        cfg.study.overrides.pretrain, cfg.study.overrides.subcortical = [], []
        cfg.study.overrides.brainstem = ["eval.hd95=false", "eval.n_overlays=1"]
        cfg.study.overrides.evaluate = [
            "bootstrap.n=50",
            "probe.max_subjects=2",
            "probe.voxels_per_subject=20",
            "probe.regions=[subcortical,brainstem]",
            "baselines.methods=[gmm]",
            "baselines.bias_correction=null",  # N4 is tested by itself and in test_evaluate_e2e; here it only costs
            "probe.n_null=10",
        ]
    return cfg


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_hypothesis_config_composes_into_stage_configs(tmp_path, name):
    chosen = [name] if name != "scratch_matched" else ["scratch", name]  # a matched control needs an arm to match
    cfg = study_config(tmp_path, tmp_path / "bids", chosen)
    spec = next(h for h in hypotheses(cfg) if h.name == name)
    assert isinstance(spec, Hypothesis)
    study = Study(cfg, "fingerprint")
    assert study.ks == ["0", "all"] and study.seeds == [0, 1] and study.target == "brainstem"  # quick
    study.check_design()
    if spec.pretrain:
        stage = compose_stage("p", "pretrain", [f"method={spec.pretrain}"], cfg, "fp")
        assert stage.cfg.method.name == spec.pretrain and stage.cfg.data.patch_size == 16
    stage = compose_stage("b", "finetune", ["stage=brainstem", *TINY_STAGES], cfg, "fp", values={"init": "scratch"})
    assert stage.cfg.stage.name == "brainstem" and list(stage.cfg.model.channels) == [4, 8, 16]
    assert stage.path.parent == tmp_path / "runs" / "study" / "stages"


def test_the_compute_matched_control_trains_as_long_as_the_longest_chain(tmp_path):
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch", "subcortical", "scratch_matched"])
    with open_dict(cfg):
        cfg.study.overrides.subcortical = ["trainer.max_steps=7"]
        cfg.study.overrides.brainstem = ["trainer.max_steps=3"]
    study = Study(cfg, "fp")
    steps = {h.name: study.supervised_steps(h) for h in study.hypotheses}
    assert steps == {"scratch": 3, "subcortical": 10, "scratch_matched": 10}
    matched = next(h for h in study.hypotheses if h.match_compute)
    assert "trainer.max_steps=10" in study._target_overrides(matched, "2", 0)
    study.check_design()  # the matched arm differs from the others in its steps only: allowed


def test_only_the_runs_the_report_reads_score_t1w_only(tmp_path):
    """The T1w-only table reads k = all runs (study.t1w_only_k); other k skip that second pass, every arm alike."""
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch", "subcortical", "scratch_matched"])
    study = Study(cfg, "fp")
    for h in study.hypotheses:
        for k, scored in (("1", False), ("all", True)):
            stage = compose_stage(h.name, "finetune", study._target_overrides(h, k, 0), cfg, "fp", {"init": "scratch"})
            assert stage.cfg.eval.t1w_only is scored
    study.check_design()
    with open_dict(cfg):
        cfg.study.t1w_only_k = ["0", "1", "all"]
    assert "eval.t1w_only=false" not in Study(cfg, "fp")._target_overrides(study.hypotheses[0], "1", 0)


def test_arms_that_differ_in_more_than_their_initialisation_are_refused(tmp_path):
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"])
    a = compose_stage("a", "finetune", ["stage=brainstem"], cfg, "fp", values={"init": "scratch"}).cfg
    b = compose_stage(
        "b", "finetune", ["stage=brainstem"], cfg, "fp", values={"init": "/runs/sub", "init_label": "x"}
    ).cfg
    check_arms([("scratch", a, False), ("subcortical", b, False)], "k=1")  # only where the weights start differs
    for override in ("trainer.max_steps=99", "optim.encoder_lr_scale=0.1", "optim.warmup_steps=0", "labels.seed=5"):
        other = compose_stage("c", "finetune", ["stage=brainstem", override], cfg, "fp", values={"init": "/x"}).cfg
        with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
            check_arms([("scratch", a, False), ("subcortical", other, False)], "k=1")
    longer = compose_stage("m", "finetune", ["stage=brainstem", "trainer.max_steps=99"], cfg, "fp").cfg
    check_arms([("scratch", a, False), ("scratch_matched", longer, True)], "k=1")  # the matched control's steps
    slower = compose_stage("m", "finetune", ["stage=brainstem", "trainer.max_steps=99", "optim.lr=1e-4"], cfg, "fp").cfg
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        check_arms([("scratch", a, False), ("scratch_matched", slower, True)], "k=1")


def test_a_stage_data_override_applies_on_the_study_data_and_paths_are_refused(tmp_path):
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"])
    stage = compose_stage("b", "finetune", ["stage=brainstem", "data.patch_size=24"], cfg, "fp")
    assert stage.cfg.data.patch_size == 24 and stage.cfg.data.root == cfg.data.root and cfg.data.patch_size == 16
    assert stage.path != compose_stage("b", "finetune", ["stage=brainstem"], cfg, "fp").path
    with pytest.raises(ConfigError, match=r"data\.no_such_key"):
        compose_stage("b", "finetune", ["data.no_such_key=1"], cfg, "fp")
    for bad in ("paths.cache_dir=/elsewhere", "data=default"):
        with pytest.raises(ConfigError, match=r"study\.overrides"):
            compose_stage("b", "finetune", [bad], cfg, "fp")


def test_presets_compose(tmp_path):
    for preset in ("quick", "full"):
        cfg = compose_config("study", [f"study_preset={preset}"])
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


def test_a_finetune_stage_hashed_before_eval_test_existed_is_reused_and_one_that_skips_scoring_is_not(tmp_path):
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"])
    stage = compose_stage("b", "finetune", ["labels.k=2"], cfg, "fp")
    assert stage.cfg.eval.test is True
    recorded = stage.cfg.copy()
    with open_dict(recorded):
        del recorded.eval["test"]
    assert config_hash(recorded, "fp") == config_hash(stage.cfg, "fp")
    unscored = compose_stage("b", "finetune", ["labels.k=2", "eval.test=false"], cfg, "fp")
    assert unscored.path != stage.path


def test_a_pretrain_stage_hashed_before_methods_named_their_class_is_reused(tmp_path):
    cfg = study_config(tmp_path, tmp_path / "bids", ["ssl_mae"])
    stage = compose_stage("pretrain-mae", "pretrain", ["method=mae"], cfg, "fp")
    recorded = stage.cfg.copy()
    with open_dict(recorded):
        del recorded.method["_target_"]
    assert config_hash(recorded, "fp") == config_hash(stage.cfg, "fp")


def test_bad_study_settings_name_their_key(tmp_path):
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch"])
    for name, spec, key in [
        ("mine", {"pretrain": "byol", "sources": []}, r"study\.hypotheses\.mine\.pretrain"),
        ("old", {"pretrain": None, "subcortical": True}, r"study\.hypotheses\.old\.subcortical"),
        ("where", {"pretrain": None, "sources": ["hippocampus"]}, r"study\.hypotheses\.where\.sources"),
        ("both", {"pretrain": "mae", "match_compute": True}, r"study\.hypotheses\.both\.match_compute"),
    ]:
        bad = cfg.copy()
        with open_dict(bad):
            bad.study.hypotheses = {"scratch": {"pretrain": None, "sources": []}, name: spec}
        with pytest.raises(ConfigError, match=key):
            hypotheses(bad)
    for extra, key in [(["study.k=[0]"], r"study\.k"), (["study.k=[-1]"], r"labels\.k"),
                       (["study.seeds=[]"], r"study\.seeds"), (["study.target=cortex"], r"study\.target"),
                       (["study.t1w_only_k=[some]"], r"study\.t1w_only_k")]:  # fmt: skip
        with pytest.raises(ConfigError, match=key):
            Study(study_config(tmp_path, tmp_path / "bids", ["scratch"], extra), "fp")
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


SMOKE = ["study.k=[0,1]", "study.seeds=[0]"]  # one labelled point besides zero-shot: every stage kind, fewer runs


@pytest.mark.slow
def test_smoke_study_runs_every_stage_reuses_and_resumes(tmp_path, demo_cohort, header_reads):
    cfg = study_config(tmp_path, demo_cohort, EXPERIMENTS, SMOKE)
    out = run_study(cfg)
    # One study process, every stage inline: each image of the dataset is validated once (header read + check).
    images = [p for r in load_records(cfg.data) for role, p in r.files().items() if not role.endswith("_tsv")]
    assert sorted(header_reads) == sorted(2 * [Path(p) for p in images])
    summary = json.loads((out / "study.json").read_text())
    stages = summary["stages"]
    assert all(s["status"] == "complete" for s in stages) and summary["reused"] == 0
    brainstem = [s for s in stages if s["name"].startswith("brainstem-")]
    assert {s["hypothesis"] for s in brainstem} == set(EXPERIMENTS)
    heads = {s["hypothesis"] for s in brainstem if s["k"] == "0"}
    assert heads == {"subcortical", "ssl_mae_subcortical"}  # zero-shot for the arms with a segmentation head
    assert len(brainstem) == len(EXPERIMENTS) + len(heads)
    assert {s["command"] for s in stages} == {"pretrain", "finetune", "predict", "evaluate"}
    predicted = [s for s in stages if s["command"] == "predict"]
    assert [s["name"] for s in predicted] == ["predict-fold0", "predict-fold1"]  # cross-fitted, 2 folds by default
    volumes = pd.concat([pd.read_csv(Path(s["path"]) / "volumes.tsv", sep="\t") for s in predicted])
    assert not volumes["model_saw_subject"].astype(bool).any()  # no subject measured by a model that saw it
    for s in stages:  # a cross-fitted chain's held-out subjects are scored by predict only, not by its training
        if s["command"] == "finetune":
            assert (Path(s["path"]) / "metrics.csv").is_file() == ("crossfit_fold" not in s), s["name"]
    per_subject = volumes.groupby("participant_id")["crossfit_fold"].nunique()
    assert (per_subject == 1).all() and len(per_subject) == 4  # every subject of the cohort, by one fold's model
    results = json.loads(Path(summary["results"]).read_text())
    assert {"segmentation", "learning_curves", "transfer_matrix", "group_analysis", "baselines"} <= set(results)
    report = (out / "report.html").read_text()
    assert "<img" in report and "brainstem" in report

    # Same config again: every stage is reused, nothing is trained.
    again_dir = run_study(study_config(tmp_path, demo_cohort, EXPERIMENTS, SMOKE))
    again = json.loads((again_dir / "study.json").read_text())
    assert again["reused"] == len(stages)

    # A stage killed half-way (run.json still 'running', no model) is re-run in its directory; the rest reused.
    victim = Path(brainstem[0]["path"])
    (victim / "model.pt").unlink()
    record = read_run_record(victim)
    write_json_atomic(victim / "run.json", {**record, "status": "running"})
    third = run_study(study_config(tmp_path, demo_cohort, EXPERIMENTS, SMOKE))
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

    from evaluation.study import stages

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


def test_the_predictor_is_fixed_in_advance_at_full_labels(tmp_path):
    from evaluation.study.stages import Stage

    extra = ["study.k=[2,all]", "study.seeds=[0,1]"]
    cfg = study_config(tmp_path, tmp_path / "bids", ["scratch", "subcortical"], extra)
    study = Study(cfg, "fp")
    stages = []
    for hypothesis, k, seed in [("scratch", "all", 0), ("subcortical", "all", 0), ("subcortical", "2", 0),
                                ("subcortical", "all", 1)]:  # fmt: skip
        path = tmp_path / f"{hypothesis}-{k}-{seed}"
        info = {"hypothesis": hypothesis, "k": k, "seed": seed, "pretrain_seed": None}
        stages.append(Stage(path.name, "finetune", cfg, path, info))
    assert study.predictor(stages).name == "subcortical-all-0"  # the first arm with a source stage, k=all, seed 0
    with open_dict(cfg):
        cfg.study.predict_with = "scratch"
    assert study.predictor(stages).name == "scratch-all-0"
    cfg.study.predict_with = "nope"
    with pytest.raises(ConfigError, match=r"study\.predict_with"):
        study.predictor(stages)
