"""Shared training infrastructure: schedule, precision, atomic checkpoints, resume, presets.

DDP on two CPU processes is tested in ``tests/reliability/test_ddp.py``.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import textwrap
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.errors import CheckpointError, ConfigError
from ssl_pretrain.training import (
    AtomicCheckpointIO,
    WarmupCosineSchedule,
    build_optimizer,
    build_trainer,
    checkpoint_problem,
    param_groups,
    resolve_precision,
    resolve_resume,
    seed_everything,
)
from ssl_pretrain.training import callbacks as callbacks_module

REPO = CONFIG_DIR.parent
OPTIM = {"lr": 0.01, "weight_decay": 0.05, "warmup_steps": 2, "min_lr_ratio": 0.1}


@pytest.fixture(autouse=True)
def _restore_determinism():
    """Trainer(deterministic=True) switches deterministic algorithms on process-wide; switch them back."""
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def compose_entry(tmp_path: Path, overrides: list[str]):
    """Compose an entry config shaped like the commands' (data, model, trainer groups, then a preset)."""
    entry = tmp_path / "conf"
    entry.mkdir(exist_ok=True)
    (entry / "entry.yaml").write_text(
        textwrap.dedent(
            f"""\
            defaults:
              - _self_
              - data: default
              - model: cpu
              - trainer: default
              - preset: cpu
            hydra:
              searchpath: [file://{CONFIG_DIR}]
            seed: 0
            resume: null
            task_name: entry
            optim: {json.dumps(OPTIM)}
            """
        )
    )
    with initialize_config_dir(config_dir=str(entry), version_base="1.3"):
        return compose(config_name="entry", overrides=overrides)


def trainer_cfg(**overrides):
    t = OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")
    t.merge_with(OmegaConf.load(CONFIG_DIR / "trainer" / "cpu.yaml"))
    t.pop("defaults", None)
    base = {"deterministic": True, "enable_progress_bar": False, "log_every_n_steps": 1, "max_steps": 6}
    return OmegaConf.create({"trainer": {**OmegaConf.to_container(t), **base, **overrides}, "optim": OPTIM})


class Killed(RuntimeError):
    """Stands for the job being killed mid-run."""


class Tiny(pl.LightningModule):
    """A small regression net with dropout and input noise, so resumes must restore random states too."""

    def __init__(self, optim_cfg: dict, total_steps: int, crash_after: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        self.optim_cfg, self.total_steps, self.crash_after = dict(optim_cfg), total_steps, crash_after

    def training_step(self, batch, batch_idx):
        if self.crash_after is not None and self.global_step >= self.crash_after:
            raise Killed(f"killed at step {self.global_step}")  # after the checkpoint at `crash_after`
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x + 0.1 * torch.randn_like(x)), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return build_optimizer(param_groups(self, self.optim_cfg), self.optim_cfg, self.total_steps)


def loader(shuffle: bool = True) -> DataLoader:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(12, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4, shuffle=shuffle)  # 3 steps per epoch


def fit(cfg, out: Path, *, crash_after=None, ckpt_path=None, **kwargs) -> Tiny:
    seed_everything(0, deterministic=True)
    model = Tiny(cfg.optim, int(cfg.trainer.max_steps), crash_after)
    trainer = build_trainer(cfg, out, **kwargs)
    trainer.fit(model, loader(), ckpt_path=ckpt_path)
    return model


# --- optimiser and schedule -------------------------------------------------------------------------


def test_warmup_cosine_matches_the_closed_form():
    f = WarmupCosineSchedule(warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1)
    assert f(4) == pytest.approx(0.5)
    assert f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert f(60) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1)
    assert f(500) == pytest.approx(0.1)


def test_optimizer_steps_follow_the_schedule_and_scale_the_encoder():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))  # model[0] plays the encoder
    cfg = {**OPTIM, "warmup_steps": 4, "encoder_lr_scale": 0.1}
    groups = param_groups(model, cfg, encoder=model[0])
    assert {(g["lr_scale"], g["weight_decay"]) for g in groups} == {(0.1, 0.05), (0.1, 0.0), (1.0, 0.05), (1.0, 0.0)}
    out = build_optimizer(groups, cfg, total_steps=20)
    opt, sched = out["optimizer"], out["lr_scheduler"]["scheduler"]
    assert out["lr_scheduler"]["interval"] == "step"
    f = WarmupCosineSchedule(4, 20, 0.1)
    for step in range(25):
        for group in opt.param_groups:
            scale = 0.1 if any(p is model[0].weight or p is model[0].bias for p in group["params"]) else 1.0
            assert group["lr"] == pytest.approx(0.01 * scale * f(step))
        opt.step()
        sched.step()
    assert "lr_lambdas" in sched.state_dict() and sched.state_dict()["lr_lambdas"][0]["warmup_steps"] == 4


def test_fused_adamw_follows_the_per_parameter_loop_on_a_fixed_seed():
    torch.manual_seed(0)
    fused_model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    loop_model, start = copy.deepcopy(fused_model), copy.deepcopy(fused_model)
    cfg = {**OPTIM, "warmup_steps": 2, "encoder_lr_scale": 0.5}
    fused = build_optimizer(param_groups(fused_model, cfg, encoder=fused_model[0]), cfg, total_steps=30)
    assert all(group["fused"] for group in fused["optimizer"].param_groups)
    loop_out = build_optimizer(param_groups(loop_model, cfg, encoder=loop_model[0]), cfg, total_steps=30)
    loop, loop_sched = loop_out["optimizer"], loop_out["lr_scheduler"]["scheduler"]
    for group in loop.param_groups:
        group["fused"] = False  # the per-parameter loop, the same groups, lr, decay and schedule
    x, y = torch.randn(16, 6), torch.randn(16, 2)
    for _ in range(30):
        for model, opt, sched in ((fused_model, fused["optimizer"], fused["lr_scheduler"]["scheduler"]),
                                  (loop_model, loop, loop_sched)):  # fmt: skip
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
    for a, b, before in zip(fused_model.parameters(), loop_model.parameters(), start.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, before, atol=1e-3)


def test_frozen_and_zero_scaled_parameters_are_left_out():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[1].bias.requires_grad_(False)
    groups = param_groups(model, {**OPTIM, "encoder_lr_scale": 0.0}, encoder=model[0])
    params = [p for g in groups for p in g["params"]]
    assert len(params) == 1 and params[0] is model[1].weight


def test_warmup_as_fraction_and_too_long_warmup():
    model = nn.Linear(2, 2)
    out = build_optimizer(model.parameters(), {**OPTIM, "warmup_steps": 0.25}, total_steps=40)
    assert out["lr_scheduler"]["scheduler"].lr_lambdas[0].warmup_steps == 10
    out = build_optimizer(model.parameters(), {**OPTIM, "warmup_steps": 100}, total_steps=5)  # a smoke run
    assert out["lr_scheduler"]["scheduler"].lr_lambdas[0].warmup_steps == 0


@pytest.mark.parametrize(
    ("change", "total", "key"),
    [
        ({"lr": None}, 10, "optim.lr"),
        ({"lr": -1.0}, 10, "optim.lr"),
        ({"weight_decay": -0.1}, 10, "optim.weight_decay"),
        ({"min_lr_ratio": 2.0}, 10, "optim.min_lr_ratio"),
        ({"warmup_steps": -3}, 10, "optim.warmup_steps"),
        ({"warmup_steps": 1.5}, 10, "optim.warmup_steps"),
        ({}, math.inf, "trainer.max_steps"),
    ],
)
def test_optimizer_config_errors_name_the_key(change, total, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_optimizer(nn.Linear(2, 2).parameters(), {**OPTIM, **change}, total_steps=total)


# --- precision, accelerator, trainer config -----------------------------------------------------------


@pytest.mark.parametrize(
    ("cuda", "bf16", "precision", "expected"),
    [
        (False, False, "auto", "32-true"),
        (True, True, "auto", "bf16-mixed"),
        (True, False, "auto", "16-mixed"),
        (False, False, "32", "32-true"),
        (False, False, "bf16-mixed", "bf16-mixed"),
        (True, True, 16, "16-mixed"),
    ],
)
def test_precision_resolution(monkeypatch, cuda, bf16, precision, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision(precision, "auto") == expected


def test_precision_and_accelerator_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"trainer\.precision.*needs a CUDA GPU"):
        resolve_precision("16-mixed", "cpu")
    with pytest.raises(ConfigError, match=r"trainer\.precision.*unknown"):
        resolve_precision("fp8-magic", "cpu")
    with pytest.raises(ConfigError, match=r"trainer\.accelerator.*CUDA is not available"):
        resolve_precision("auto", "gpu")
    with pytest.raises(ConfigError, match=r"trainer\.accelerator.*unknown"):
        resolve_precision("auto", "tpu-ish")


def test_trainer_config_errors_name_the_key(tmp_path):
    cfg = trainer_cfg()
    del cfg.trainer["max_steps"]
    with pytest.raises(ConfigError, match=r"trainer\.max_steps"):
        build_trainer(cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"trainer\.checkpoint_every_n_steps"):
        build_trainer(trainer_cfg(checkpoint_every_n_steps=0), tmp_path)
    with pytest.raises(ConfigError, match=r"trainer\.deterministic"):
        build_trainer(trainer_cfg(deterministic="sometimes"), tmp_path)


def test_presets_compose_with_data_model_and_trainer(tmp_path):
    cpu = compose_entry(tmp_path, [])
    assert list(cpu.model.channels) == list(OmegaConf.load(CONFIG_DIR / "model" / "cpu.yaml").channels)
    assert (cpu.data.patch_size, cpu.trainer.accelerator, cpu.trainer.precision) == (48, "cpu", "32-true")
    assert list(cpu.data.modalities) == ["T1w", "T2w", "FA", "MD"]  # data/default.yaml is still there
    gpu = compose_entry(tmp_path, ["preset=gpu"])
    assert list(gpu.model.channels) == list(OmegaConf.load(CONFIG_DIR / "model" / "gpu.yaml").channels)
    assert (gpu.data.patch_size, gpu.trainer.accelerator, gpu.trainer.precision) == (128, "gpu", "auto")
    assert gpu.data.patch_size % math.prod(gpu.model.strides) == 0
    user = compose_entry(tmp_path, ["preset=gpu", "data.patch_size=96", "model.channels=[8,16,32,64,128,128]"])
    assert user.data.patch_size == 96 and user.model.channels[0] == 8  # command-line values win over presets
    ddp = compose_entry(tmp_path, ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"])
    assert (ddp.trainer.strategy, ddp.trainer.devices, ddp.trainer.accelerator) == ("ddp", 2, "cpu")


# --- checkpoints ----------------------------------------------------------------------------------------


def test_atomic_checkpoint_io_keeps_the_previous_file_when_a_write_crashes(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 3, "w": torch.ones(3)}, target)
    before = target.read_bytes()

    def crash(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(callbacks_module.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 6, "w": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert os.listdir(target.parent) == ["last.ckpt"]  # the temporary file is gone too
    assert torch.load(target, weights_only=True)["global_step"] == 3


def test_trainer_writes_last_checkpoint_every_n_steps_and_at_the_end(tmp_path):
    cfg = trainer_cfg(max_steps=5, checkpoint_every_n_steps=3)
    fit(cfg, tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert checkpoint_problem(last) is None
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 5
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["last.ckpt"]
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert {"train/loss", "lr-AdamW/pg1", "step"} <= set(rows[0])
    assert [int(r["step"]) for r in rows if r["train/loss"]] == [0, 1, 2, 3, 4]


def test_monitored_metric_keeps_the_best_checkpoint(tmp_path):
    cfg = trainer_cfg(max_steps=6, checkpoint_every_n_steps=3)
    seed_everything(0, deterministic=True)
    model = Tiny(cfg.optim, 6)
    trainer = build_trainer(cfg, tmp_path, monitor="val/loss", monitor_mode="min", log_dir=tmp_path / "training")
    trainer.fit(model, loader(), loader(shuffle=False))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best.ckpt", "last.ckpt"]
    assert checkpoint_problem(tmp_path / "checkpoints" / "best.ckpt") is None
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    rows = list(csv.DictReader((tmp_path / "training" / "metrics.csv").open()))  # log_dir moves metrics.csv
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 2 and best["callbacks"]  # validated at both epoch ends
    scores = [v["best_model_score"] for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert any(s is not None and float(s) == pytest.approx(min(val)) for s in scores)
    assert not (tmp_path / "metrics.csv").exists()


def test_interrupted_then_resumed_training_equals_uninterrupted_training(tmp_path):
    cfg = trainer_cfg(max_steps=6, checkpoint_every_n_steps=3)
    straight = fit(cfg, tmp_path / "straight")
    run = tmp_path / "run"
    with pytest.raises(Killed):
        fit(cfg, run, crash_after=4)
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 3
    ckpt = resolve_resume("auto", run)
    assert ckpt == str(run / "checkpoints" / "last.ckpt")
    resumed = fit(cfg, run, ckpt_path=ckpt)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 6
    for sa, sb in zip(
        a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"]) and torch.equal(sa["step"], sb["step"])
    # the resumed run's metrics.csv holds one continuous curve, like the uninterrupted one's
    steps = [int(r["step"]) for r in csv.DictReader((run / "metrics.csv").open()) if r["train/loss"]]
    assert steps == [0, 1, 2, 3, 4, 5]


# --- resume resolution ----------------------------------------------------------------------------------


def fake_ckpt(path: Path, step: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "optimizer_states": [], "loops": {}, "global_step": step}, path)
    return path


def test_resume_off_and_explicit_paths(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("none", tmp_path) is None
    ckpt = fake_ckpt(tmp_path / "old" / "checkpoints" / "last.ckpt")
    assert resolve_resume(str(ckpt), tmp_path / "new") == str(ckpt)
    assert resolve_resume(str(tmp_path / "old"), tmp_path / "new") == str(ckpt)  # a run directory
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_resume(str(tmp_path / "missing.ckpt"), tmp_path / "new")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"garbage" * 20, "not a checkpoint or truncated"),
        (None, "not a training checkpoint"),  # a weights file (state dict only)
        ("truncate", "not a checkpoint or truncated"),
    ],
)
def test_explicit_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "last.ckpt"
    if content is None:
        torch.save({"w": torch.ones(2)}, path)
    elif content == "truncate":
        fake_ckpt(path)
        path.write_bytes(path.read_bytes()[:-40])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as err:
        resolve_resume(str(path), tmp_path / "new")
    assert str(path) in str(err.value)


def write_run(runs: Path, name: str, config: dict, step: int = 3, corrupt: bool = False, mtime: float = 0) -> Path:
    run = runs / name
    ckpt = fake_ckpt(run / "checkpoints" / "last.ckpt", step)
    if corrupt:
        ckpt.write_bytes(b"\x00" * 64)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    os.utime(ckpt, (mtime, mtime))
    return ckpt


def test_resume_auto_finds_the_newest_valid_run_with_the_same_config(tmp_path, caplog):
    runs = tmp_path / "runs" / "pretrain"
    config = {"task_name": "pretrain", "paths": {"runs_dir": str(tmp_path / "runs")}, "model": {"channels": [4]}}
    older = write_run(runs, "2024-01-01", {**config, "paths": {"runs_dir": "elsewhere", "output_dir": "x"}}, mtime=100)
    write_run(runs, "2024-01-02", {**config, "model": {"channels": [8]}}, mtime=300)  # another config: ignored
    write_run(runs, "2024-01-03", {**config, "trainer": {"max_steps": 10**6}}, corrupt=True, mtime=400)
    write_run(runs, "multirun/2024-01-04/0", {**config, "trainer": {"max_steps": 5}}, mtime=200)
    out = runs / "2024-01-05"
    cfg = OmegaConf.create({**config, "paths": {**config["paths"], "output_dir": str(out)}, "resume": "auto"})
    with caplog.at_level(logging.WARNING):
        chosen = resolve_resume("auto", out, cfg)
    assert chosen == str(runs / "multirun/2024-01-04/0/checkpoints/last.ckpt")  # newest valid, same config
    assert "2024-01-03" in caplog.text and "skipping" in caplog.text  # the corrupt one was not trusted
    os.utime(older, (500, 500))
    assert resolve_resume("auto", out, cfg) == str(older)
    own = fake_ckpt(out / "checkpoints" / "last.ckpt")
    assert resolve_resume("auto", out, cfg) == str(own)  # this run's own checkpoint comes first
    own.write_bytes(b"corrupt")
    assert resolve_resume("auto", out, cfg) == str(older)  # ... unless it is corrupt
    other = OmegaConf.create({**cfg, "model": {"channels": [16]}})
    assert resolve_resume("auto", out, other) is None


def test_resume_auto_reads_this_runs_config_yaml_when_no_config_is_given(tmp_path):
    config = {"task_name": "pretrain", "data": {"spacing": 2.0}}
    ckpt = write_run(tmp_path, "a", config, mtime=100)
    out = tmp_path / "b"
    out.mkdir()
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    assert resolve_resume("auto", out) == str(ckpt)
    assert resolve_resume("auto", tmp_path / "c") is None  # no config anywhere: start fresh


def test_resume_auto_continues_a_run_recorded_before_methods_named_their_class(tmp_path):
    recorded = {"task_name": "pretrain", "method": {"name": "mae", "mask_ratio": 0.75}}
    ckpt = write_run(tmp_path / "pretrain", "old", recorded, mtime=100)
    now = {**recorded, "method": {"_target_": "ssl_pretrain.methods.mae.MAE", **recorded["method"]}}
    out = tmp_path / "pretrain" / "new"
    assert resolve_resume("auto", out, OmegaConf.create(now)) == str(ckpt)
    other = {**now, "method": {**now["method"], "name": "simclr"}}
    assert resolve_resume("auto", out, OmegaConf.create(other)) is None


# --- loggers and Lightning internals ----------------------------------------------------------------------


@pytest.mark.parametrize("option", ["csv", "tensorboard", "wandb", "mlflow"])
def test_every_logger_option_composes_and_names_a_lightning_logger(option):
    from hydra.utils import get_class
    from lightning.pytorch.loggers import Logger

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=[f"logger={option}"])
    entries = OmegaConf.to_container(cfg.logger, resolve=False)
    assert (entries == {}) == (option == "csv")
    for entry in entries.values():
        assert issubclass(get_class(entry["_target_"]), Logger)


def test_logger_group_adds_loggers_and_every_logger_gets_the_hyperparameters(tmp_path):
    cfg = trainer_cfg(max_steps=2, checkpoint_every_n_steps=2)
    extra = {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(tmp_path / "extra"), "name": "x"}
    cfg.merge_with({"logger": {"second": extra}, "seed": 7})
    fit(cfg, tmp_path / "run")
    own = OmegaConf.load(tmp_path / "run" / "hparams.yaml")
    assert own.seed == 7 and own.trainer.max_steps == 2  # the resolved run config
    (theirs,) = (tmp_path / "extra" / "x").glob("version_*/hparams.yaml")
    assert OmegaConf.load(theirs).seed == 7
    assert (tmp_path / "run" / "metrics.csv").is_file()  # metrics.csv is always written


def test_a_logger_whose_package_is_missing_is_a_config_error(tmp_path):
    cfg = trainer_cfg()
    cfg.merge_with({"logger": {"missing": {"_target_": "no_such_package.Logger"}}})
    with pytest.raises(ConfigError, match=r"logger\.missing.*no_such_package\.Logger"):
        build_trainer(cfg, tmp_path)


def test_csv_logger_widens_its_header_and_drops_rows_on_resume(tmp_path):
    from ssl_pretrain.training.logger import ResumableCSVLogger

    logger = ResumableCSVLogger(tmp_path, flush_logs_every_n_steps=100)
    logger.log_metrics({"a": torch.tensor(1.0)}, step=0)
    logger.save()
    logger.log_metrics({"a": 2.0, "b": 3.0}, step=1)
    logger.log_metrics({"a": 4.0}, step=2)
    logger.finalize("success")
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [(r["step"], r["a"], r["b"]) for r in rows] == [("0", "1.0", ""), ("1", "2.0", "3.0"), ("2", "4.0", "")]
    ResumableCSVLogger(tmp_path).drop_rows_from(2)  # a new run in the same directory keeps the file
    assert [r["step"] for r in csv.DictReader((tmp_path / "metrics.csv").open())] == ["0", "1"]


def test_lightning_private_fit_loop_data_source_still_finds_the_training_dataset(tmp_path):
    """SamplerPositionCallback reads ``trainer.fit_loop._data_source`` (no public API finds the loader given
    to ``fit`` before it is set up); pyproject bounds lightning below the next minor release. If this fails,
    Lightning changed that private attribute: update ``callbacks._train_dataset`` before raising the bound."""
    seen = []

    class Probe(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            seen.append(callbacks_module._train_dataset(trainer))

    data = loader()
    seed_everything(0)
    trainer = build_trainer(trainer_cfg(max_steps=1, checkpoint_every_n_steps=1), tmp_path, extra_callbacks=[Probe()])
    trainer.fit(Tiny(OPTIM, 1), data)
    assert seen == [data.dataset], "Lightning's private fit_loop._data_source changed: see this test's docstring"
