"""``study.launcher`` and ``study.plan_only``: stages as submitit jobs in dependency waves, and the study's plan."""

from __future__ import annotations

import json
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from evaluation.study import stages as stage_module
from evaluation.study.chain import Study
from evaluation.study.chain import run as run_study
from evaluation.study.launch import JobFailed, Jobs, executor_parameters, job_spec, make_runner, resources, stage_of
from evaluation.study.plan import plan
from evaluation.study.stages import Stage
from ssl_pretrain.config import compose_config
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.run_dir import is_complete, write_json_atomic
from tests.evaluation.study.test_study import study_config


def fake_run(cfg) -> Path:
    """A command that only records a complete run (and the evaluation's report), in the stage's directory."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if "runs" in cfg:  # evaluate
        (out / "report.html").write_text("<html></html>")
        write_json_atomic(out / "results.json", {})
    write_json_atomic(out / "run.json", {"status": "complete"})
    return out


@pytest.fixture
def fake_commands(monkeypatch):
    monkeypatch.setitem(sys.modules, "fake_command", types.SimpleNamespace(run=fake_run))
    for command in ("pretrain", "finetune", "predict", "evaluate"):
        monkeypatch.setitem(stage_module.MODULES, command, "fake_command")


def quick_config(tmp_path: Path, root: Path, extra: list[str] = ()):  # type: ignore[assignment]
    """The quick preset's study (its defaults: five hypotheses, k and seeds) on ``root``."""
    return compose_config(
        "study",
        [f"data.root={root}", f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}", *extra],
        output_dir=tmp_path / "study",
    )


def upstream(stage: Stage) -> list[str]:
    """The directories of the stages a stage reads, from its config."""
    cfg = stage.cfg
    if stage.command == "evaluate":
        return list(cfg.runs)
    if stage.command == "predict":
        return [str(cfg.predict.model)]
    init = str(cfg.get("init") or "scratch")
    return [] if init == "scratch" else [init]


SMALL = ["hypothesis=[scratch,subcortical,ssl_mae_subcortical]", "study.k=[0,1]", "study.seeds=[0]"]


def test_waves_run_every_stage_after_the_stages_it_reads(tmp_path, demo_cohort, fake_commands):
    cfg = quick_config(tmp_path, demo_cohort, SMALL)
    records = load_records(cfg.data)
    runner = Jobs(cfg, "debug", tmp_path / "jobs")  # submitit's in-process executor: the fake commands apply
    study = Study(cfg, "fp", runner)
    study.all_stages(records)
    wave_of = {name: i for i, wave in enumerate(runner.waves) for name in wave}
    assert sorted(wave_of) == sorted(s.name for s in study.done) and len(wave_of) == len(study.done)  # each once
    by_path = {str(s.path): s for s in study.done}
    for stage in study.done:
        assert all(is_complete(s.path) for s in study.done)
        for path in upstream(stage):
            assert wave_of[by_path[path].name] < wave_of[stage.name], (stage.name, by_path[path].name)
    # pretraining with the scratch subcortical stage; then the sweep's arms as soon as their start is ready
    assert sorted(runner.waves[0]) == ["pretrain-mae", "subcortical"]
    sweep = [s.name for s in study.done if s.info["kind"] == "target" and "crossfit_fold" not in s.info]
    assert {wave_of[n] for n in sweep} == {1, 2} and len(sweep) == 5  # 3 arms at k = 1, 2 zero-shot
    assert {wave_of[n] for n in sweep if "-ssl_mae_subcortical-" in n} == {2}  # after its source stage
    assert wave_of["predict-fold0"] == wave_of["predict-fold1"]  # the cross-fitted folds side by side
    assert wave_of["crossfit0-subcortical"] == wave_of["crossfit1-subcortical"]
    assert runner.waves[-1] == ["evaluate"] and len(runner.waves) == 6
    assert runner.reused == 0


@pytest.mark.slow
def test_plan_lists_the_stages_the_study_runs_and_creates_none(tmp_path, demo_cohort, fake_commands, capsys):
    extra = [*SMALL, "study.plan_only=true", "study.plan.seconds_per_step.target=0.5"]
    cfg = quick_config(tmp_path, demo_cohort, extra)
    planned = plan(cfg)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "study").exists()  # nothing created
    printed = capsys.readouterr().out
    targets = [p for p in planned if p.kind == "target" and not p.reused]
    hours = sum(p.steps for p in targets) * 0.5 / 3600
    assert f"= {hours:.2f} device-hours  (given (study.plan.seconds_per_step.target))" in printed
    assert "no step time: study.plan.seconds_per_step.pretrain" in printed
    zero_shot = [p for p in planned if p.stage.name.endswith("-k0-s0")]
    assert zero_shot and all(p.steps == 0 for p in zero_shot)
    assert next(p for p in planned if p.kind == "pretrain").steps == 480  # the quick preset's budget

    with open_dict(cfg):
        cfg.study.plan_only = False
    summary = json.loads((run_study(cfg) / "study.json").read_text())
    assert [s["name"] for s in summary["stages"]] == [p.stage.name for p in planned]  # what the study ran
    assert [s["path"] for s in summary["stages"]][:3] == [str(p.stage.path) for p in planned][:3]
    again = plan(quick_config(tmp_path, demo_cohort, extra))
    assert all(p.reused for p in again) and "0.00 device-hours" in capsys.readouterr().out


@pytest.mark.slow
def test_a_missing_cohort_is_planned_without_simulating_it(tmp_path, capsys):
    cfg = quick_config(tmp_path, tmp_path / "nothing", ["study.simulate_demo=true"])
    planned = plan(cfg)
    assert len(planned) == 22 and not any(p.reused for p in planned)  # the quick preset's 22 stages
    assert not (tmp_path / "nothing").exists() and "would first simulate" in capsys.readouterr().out


@pytest.mark.slow
def test_the_command_lines_plan_leaves_no_run_folder(tmp_path, capsys):
    from ssl_pretrain.cli import main

    runs = tmp_path / "runs"
    args = ["study", "study.plan_only=true", "study.simulate_demo=true", f"data.root={tmp_path / 'nothing'}"]
    main([*args, f"paths.runs_dir={runs}", f"paths.cache_dir={tmp_path / 'cache'}"])
    assert "would first simulate" in capsys.readouterr().out
    assert not runs.exists() or not any(runs.rglob("*.yaml"))  # no job folder with Hydra's config left behind
    kept = runs / "study" / "kept"
    (kept / ".hydra").mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    with pytest.MonkeyPatch.context() as patch:  # a job folder holding anything else is never removed
        patch.setattr("hydra.core.hydra_config.HydraConfig.initialized", staticmethod(lambda: True))
        patch.setattr("hydra.core.hydra_config.HydraConfig.get", staticmethod(
            lambda: OmegaConf.create({"runtime": {"output_dir": str(kept)}, "job": {"name": "study"}})))  # fmt: skip
        from evaluation.study.command import discard_job_folder

        discard_job_folder()
    assert (kept / "notes.txt").read_text() == "mine"


def test_job_resources_per_kind_and_ddp(tmp_path):
    cfg = quick_config(tmp_path, tmp_path / "bids", ["study.slurm.common.partition=gpu"])
    pretrain = Stage("pretrain-mae", "pretrain", compose_config("pretrain", ["trainer=ddp", "trainer.devices=4"]),
                     tmp_path / "p")  # fmt: skip
    settings = resources(cfg, "pretrain", pretrain)
    assert settings["tasks_per_node"] == 4 and settings["gpus_per_node"] == 4 and settings["nodes"] == 1
    made, params = executor_parameters("slurm", settings)
    assert made == {"slurm_max_num_timeout": 3} and params["slurm_partition"] == "gpu"
    assert params["timeout_min"] == 2880 and params["slurm_signal_delay_s"] == 120 and "slurm_setup" not in params
    _, local = executor_parameters("local", settings)
    assert local == {"timeout_min": 2880, "cpus_per_task": 8, "gpus_per_node": 4, "tasks_per_node": 1}
    brainstem = Stage("b", "finetune", compose_config("finetune", ["stage=brainstem"]), tmp_path / "b")
    assert resources(cfg, "target", brainstem)["gpus_per_node"] == 1 and "tasks_per_node" not in resources(
        cfg, "target", brainstem
    )
    assert resources(cfg, "evaluate", brainstem)["gpus_per_node"] == 0
    bad = Stage("p", "pretrain", compose_config("pretrain", ["trainer=ddp"]), tmp_path / "p")  # devices: auto
    with pytest.raises(ConfigError, match=r"trainer\.devices"):
        resources(cfg, "pretrain", bad)
    with open_dict(cfg):
        cfg.study.launcher = "cloud"
    with pytest.raises(ConfigError, match=r"study\.launcher"):
        make_runner(cfg, tmp_path)


def test_a_job_spec_is_plain_data_that_gives_back_the_stage(tmp_path):
    import pickle

    cfg = compose_config("finetune", ["stage=brainstem"])
    stage = Stage("b", "finetune", cfg, tmp_path / "b", {"kind": "target"})
    spec = pickle.loads(pickle.dumps(job_spec(stage, "[3]")))
    assert isinstance(spec["cfg"], dict) and spec["position"] == "[3]"
    again = stage_of(spec)
    assert again.path == stage.path and again.info == stage.info and OmegaConf.is_struct(again.cfg)
    assert OmegaConf.to_container(again.cfg) == OmegaConf.to_container(cfg)


@pytest.mark.slow
def test_a_failed_job_stops_the_study_naming_the_stage_and_its_log(tmp_path):
    cfg = quick_config(tmp_path, tmp_path / "bids", ["study.jobs.poll_s=0.2"])
    runner = Jobs(cfg, "local", tmp_path / "jobs")  # a real process
    broken = OmegaConf.create({"paths": {"output_dir": str(tmp_path / "runs" / "evaluate-x")}})
    stage = Stage("evaluate-x", "evaluate", broken, tmp_path / "runs" / "evaluate-x", {"kind": "evaluate"})
    runner.submit(stage, [], "[1]")
    with pytest.raises(JobFailed, match=r"stage evaluate-x \(local job \d+\): .+; log: /\S+") as err:
        runner.finish()
    log = re.search(r"log: (\S+);", str(err.value))
    assert log and Path(log.group(1)).is_file() and "\n" not in str(err.value)


def _sections(report: str) -> list[str]:
    return re.findall(r"<h2[^>]*>(.*?)</h2>", report)


@pytest.mark.slow
def test_a_study_through_the_local_executor_gives_the_inline_results(tmp_path, demo_cohort):
    """Inline first; then, with a brainstem run and the evaluation gone, the local executor re-runs them as real
    processes (in dependency order) beside the reused stages, and the report is the inline one."""
    chosen = ["scratch", "subcortical"]
    extra = ["study.k=[1]", "study.seeds=[0]", "study.crossfit_folds=null", "study.jobs.poll_s=0.5"]
    inline_out = run_study(study_config(tmp_path, demo_cohort, chosen, extra))
    inline = json.loads((inline_out / "study.json").read_text())
    inline_results = Path(inline["results"]).read_text()
    removed = [s for s in inline["stages"] if s["name"].startswith("brainstem-scratch-") or s["name"] == "evaluate"]
    assert len(removed) == 2
    for stage in removed:
        shutil.rmtree(stage["path"])

    local_cfg = study_config(tmp_path, demo_cohort, chosen, [*extra, "study.launcher=local"])
    with open_dict(local_cfg):
        local_cfg.paths.output_dir = str(tmp_path / "local")
        local_cfg.study.plan_only = True
    planned = plan(local_cfg)
    assert sorted(p.stage.name for p in planned if not p.reused) == sorted(s["name"] for s in removed)
    local_cfg.study.plan_only = False
    local_out = run_study(local_cfg)
    local = json.loads((local_out / "study.json").read_text())
    assert local["launcher"] == "local" and all(s["status"] == "complete" for s in local["stages"])
    assert [s["name"] for s in local["stages"]] == [s["name"] for s in inline["stages"]]
    assert local["reused"] == len(inline["stages"]) - len(removed)
    logs = sorted(p.parent.name for p in (local_out / "jobs").glob("*/*_log.out"))
    assert len(logs) == len(removed)  # each re-run stage ran as a submitit job, in its own process
    a, b = json.loads(inline_results), json.loads(Path(local["results"]).read_text())
    assert set(a) == set(b)
    assert json.dumps(a["segmentation"], sort_keys=True) == json.dumps(b["segmentation"], sort_keys=True)
    assert _sections((inline_out / "report.html").read_text()) == _sections((local_out / "report.html").read_text())

    again = json.loads((run_study(local_cfg) / "study.json").read_text())
    assert again["reused"] == len(local["stages"])  # finished jobs' stages are reused, without a job
    assert sorted(p.parent.name for p in (local_out / "jobs").glob("*/*_log.out")) == logs


@pytest.mark.slow
def test_plan_measures_step_times_on_this_device_and_says_so(tmp_path, demo_cohort, capsys):
    extra = ["study.k=[0,1]", "study.seeds=[0]", "study.plan.measure=true", "study.plan.measure_steps=2"]
    cfg = study_config(tmp_path, demo_cohort, ["scratch", "ssl_mae_subcortical"], extra)
    planned = plan(cfg)
    printed = capsys.readouterr().out
    for kind, stage in [("pretrain", "pretrain-mae"), ("source", "ssl_mae-subcortical"), ("target", "brainstem-")]:
        line = next(line for line in printed.splitlines() if line.startswith(f"  {kind} "))
        assert re.search(rf"× [\d.e-]+ s/step = [\d.]+ device-hours  \(measured: 2 steps of {stage}", line), line
    assert not (tmp_path / "runs" / "study").exists() and all(not p.reused for p in planned)  # no stage dir


def test_bssl_study_plans_with_plan_only_and_runs_otherwise(monkeypatch):
    """The command's module chooses: ``study.plan_only=true`` prints the plan and runs nothing."""
    from evaluation.study import command as study_command

    calls = []
    monkeypatch.setattr(study_command, "plan", lambda cfg: calls.append("plan"))
    monkeypatch.setattr(study_command.chain, "run", lambda cfg: calls.append("run") or Path("out"))
    assert study_command.run(OmegaConf.create({"study": {"plan_only": True}})) is None
    assert study_command.run(OmegaConf.create({"study": {"plan_only": False}})) == Path("out")
    assert calls == ["plan", "run"]
