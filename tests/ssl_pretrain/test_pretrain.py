"""``bssl pretrain`` end to end on a tiny synthetic cohort with a tiny network (16³ patches)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from ssl_pretrain.config import compose_config
from ssl_pretrain.data.datamodule import BrainDataModule
from ssl_pretrain.errors import CheckpointError, ConfigError
from ssl_pretrain.methods import METHODS
from ssl_pretrain.methods.module import PretrainModule
from ssl_pretrain.models.checkpoint import load_weights
from ssl_pretrain.models.unet import build_encoder
from ssl_pretrain.pretrain import run
from ssl_pretrain.training import build_optimizer, param_groups
from tests.synthetic import write_synthetic_bids

TINY = [
    "model.channels=[8,16]",
    "model.strides=[1,2]",
    "model.num_res_units=[1,1]",
    "model.subunits=1",
    "data.patch_size=16",
    "data.batch_size=2",
    "data.patches_per_epoch=6",  # 3 steps per epoch
    "data.val_patches=4",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "trainer.checkpoint_every_n_steps=3",
]
HEAD = ["method.head.hidden_dim=32", "method.head.output_dim=16"]
METHOD_OVERRIDES = {
    "mae": ["method=mae", "method.mask_block=4"],
    "simclr": ["method=simclr", *HEAD],
    "mae_simclr": ["method=mae_simclr", "method.mask_block=4", *HEAD],
    "vicreg": ["method=vicreg", *HEAD],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/ssl_pretrain/conftest.py


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 6-subject synthetic BIDS dataset and a preprocessing cache shared by this module's runs."""
    base = tmp_path_factory.mktemp("pretrain")
    root = write_synthetic_bids(base / "bids", n_subjects=6, missing={"03": ["FA", "MD"]})
    return root, base / "cache"


def config(cohort: tuple[Path, Path], out: Path, method: str, *extra: str):
    root, cache = cohort
    overrides = [f"data.root={root}", f"paths.cache_dir={cache}", f"paths.runs_dir={out.parent}"]
    return compose_config("pretrain", [*overrides, *TINY, *METHOD_OVERRIDES[method], *extra], output_dir=out)


def test_mae_run_writes_a_loadable_encoder_and_figures(cohort, tmp_path: Path) -> None:
    out = run(config(cohort, tmp_path / "mae", "mae", "trainer.max_steps=4"))
    state = torch.load(out / "encoder.pt", map_location="cpu", weights_only=True)
    encoder = build_encoder(config(cohort, tmp_path / "x", "mae").model, 4)
    assert set(state) == set(encoder.state_dict())
    sidecar = json.loads((out / "encoder.json").read_text())
    assert sidecar["modalities"] == ["T1w", "T2w", "FA", "MD"]
    assert sidecar["spacing"] == 2.0
    assert sidecar["method"]["name"] == "mae" and sidecar["method"]["mask_block"] == 4
    assert sidecar["architecture"]["class"] == "ResEncoder"
    assert sidecar["architecture"]["config"]["channels"] == [8, 16]
    assert len(sidecar["data_fingerprint"]) >= 8 and sidecar["version"]
    assert sidecar["normalisation"]["method"] == "percentile"
    metrics = pd.read_csv(out / "metrics.csv")
    train = metrics.dropna(subset=["train/loss"])
    assert sorted(train["step"].tolist()) == [0, 1, 2, 3]
    assert "val/loss" in metrics and metrics["val/loss"].notna().sum() >= 1
    for png in ("loss_curve.png", "mae_reconstruction.png", "mae_cross_modal.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    report = json.loads((out / "embedding_quality.json").read_text())
    assert report["schema_version"] == 1 and report["method"] == "mae" and "embeddings" not in report
    assert report["probes"]["status"] == "done" and report["reconstruction"]["status"] == "done"
    assert set(report["reconstruction"]["modalities"]) == {"T2w", "FA", "MD"}  # predicted from T1w alone
    assert sidecar["method"]["norm_target"] is False and sidecar["method"]["cross_modal"] is True
    assert {"train/mae", "train/loss"} <= set(metrics.columns)
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("method", ["simclr", "mae_simclr", "vicreg"])
def test_two_view_runs_report_embedding_quality(cohort, tmp_path: Path, method: str) -> None:
    queue = ["method.memory_bank_size=16", "method.momentum=0.99"] if method == "mae_simclr" else []
    out = run(config(cohort, tmp_path / method, method, "trainer.max_steps=3", *queue))
    assert (out / "encoder.pt").is_file() and (out / "loss_curve.png").is_file()
    assert (out / "mae_reconstruction.png").exists() == (method == "mae_simclr")
    assert json.loads((out / "encoder.json").read_text())["method"]["name"] == method
    report = json.loads((out / "embedding_quality.json").read_text())
    assert report["probes"]["status"] == "done"
    assert ("reconstruction" in report) == (method == "mae_simclr")
    embeddings = report["embeddings"]
    assert embeddings["split"] == "validation"
    for stage in ("initial", "trained"):
        for space in ("projection", "encoder"):
            q = embeddings[stage][space]
            assert q["n"] == 4  # data.val_patches pairs
            assert 0.0 <= q["alignment"] <= 4.0  # squared distance of unit vectors
            assert -4.0 <= q["uniformity"] <= 0.0 + 1e-9
    age = embeddings.get("queue_age")  # a queue's (method.memory_bank_size) entries by their age
    assert (age is not None) == bool(queue)
    if age is not None:
        assert len(age["cosine_oldest_to_newest"]) == 4 and (age["n"], age["queue_size"]) == (4, 16)
        assert all(-1.0 - 1e-6 <= c <= 1.0 + 1e-6 for c in age["cosine_oldest_to_newest"])


@pytest.mark.parametrize("method", METHODS)
def test_training_steps_lower_the_loss_on_a_fixed_batch(cohort, tmp_path: Path, method: str) -> None:
    # VICReg's head has no batch norm (method.head.norm=none): its embeddings start with a tiny spread, and the
    # variance hinge (25 x ~1) falls more slowly per step than the other losses at the same learning rate
    lr = "optim.lr=1e-2" if method == "vicreg" else "optim.lr=3e-3"
    cfg = config(cohort, tmp_path, method, "optim.warmup_steps=2", lr)
    dm = BrainDataModule(cfg.data, cfg.paths.cache_dir, views=2, seed=0)
    dm.setup()
    loader = iter(dm.train_dataloader())
    first_half, second_half = next(loader), next(loader)
    batch = {k: torch.cat([v, second_half[k]]) for k, v in first_half.items() if torch.is_tensor(v)}  # 4 samples
    torch.manual_seed(0)
    module = PretrainModule(cfg.method, cfg.model, cfg.optim, dm.in_channels, seed=0)
    steps = 12
    optim = build_optimizer(param_groups(module.method, cfg.optim), cfg.optim, steps)
    losses = []
    for _ in range(steps):
        optim["optimizer"].zero_grad()
        loss = module.method(batch, torch.Generator().manual_seed(0))["loss"]  # the same masks every step
        loss.backward()
        optim["optimizer"].step()
        optim["lr_scheduler"]["scheduler"].step()
        losses.append(loss.item())
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.85 * first, losses


class CrashAfter(Callback):
    """Simulate a killed job: fail as the batch after ``step`` optimiser steps starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("method", ["mae", "simclr"])
def test_interrupted_then_resumed_equals_uninterrupted(cohort, tmp_path: Path, method: str) -> None:
    straight = run(config(cohort, tmp_path / "straight", method, "trainer.max_steps=6"))
    crashed = config(cohort, tmp_path / "crashed", method, "trainer.max_steps=6")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashed, extra_callbacks=[CrashAfter(3)])
    assert json.loads((tmp_path / "crashed" / "run.json").read_text())["status"] == "failed"
    assert (tmp_path / "crashed" / "checkpoints" / "last.ckpt").is_file()
    resumed = run(config(cohort, tmp_path / "crashed", method, "trainer.max_steps=6", "resume=auto"))
    a = torch.load(straight / "encoder.pt", weights_only=True)
    b = torch.load(resumed / "encoder.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = pd.read_csv(resumed / "metrics.csv").dropna(subset=["train/loss"])["step"].tolist()
    assert sorted(steps) == list(range(6))  # one continuous curve across the crash
    straight_loss = pd.read_csv(straight / "metrics.csv").dropna(subset=["train/loss"])
    resumed_loss = pd.read_csv(resumed / "metrics.csv").dropna(subset=["train/loss"])
    assert straight_loss["train/loss"].tolist() == pytest.approx(resumed_loss["train/loss"].tolist(), rel=1e-6)


def test_encoder_reloads_into_other_channels_by_modality_name(cohort, tmp_path: Path) -> None:
    cfg = config(cohort, tmp_path / "mae", "mae", "trainer.max_steps=1")
    out = run(cfg)
    source = torch.load(out / "encoder.pt", weights_only=True)["stem.conv.weight"]  # (8, 4, 3, 3, 3)
    target = build_encoder(cfg.model, 3)
    report = load_weights(target, out, modalities=["T2w", "PD", "T1w"])
    weight = target.state_dict()["stem.conv.weight"]
    assert torch.equal(weight[:, 0], source[:, 1]) and torch.equal(weight[:, 2], source[:, 0])
    assert weight[:, 1].abs().sum() == 0
    assert report.kept == ["T2w", "T1w"] and report.zero_initialised == ["PD"] and report.dropped == ["FA", "MD"]


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        (["method.mask_block=5"], "method.mask_block"),
        (["method.views=3"], "method.views"),
        (["method.mask_ratio=0"], "method.mask_ratio"),
        (["evidence.bootstrap=10"], "evidence.bootstrap"),
        (["evidence.inputs=[T1w,PD]"], "evidence.inputs"),
        (["data.modality_subsets.T1w=0.9"], "data.modality_subsets"),
    ],
)
def test_bad_settings_fail_before_training(cohort, tmp_path: Path, extra: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(config(cohort, tmp_path / "bad", "mae", *extra))
    assert not (tmp_path / "bad" / "encoder.pt").exists()


def check_probe_entry(entry: dict) -> None:
    """A probe result per the schema of ssl_pretrain.evidence: pretrained / random / gap with means and CIs."""
    for label in ("pretrained", "random", "gap"):
        part = entry[label]
        assert set(part) >= {"mean", "ci95", "per_subject"} and part["per_subject"]
        assert (part["ci95"] is None) == ("ci_note" in part)
        if part["ci95"] is not None:
            assert part["ci95"][0] <= part["mean"] <= part["ci95"][1]
    for key, score in entry["pretrained"]["per_subject"].items():
        assert 0.0 <= score <= 1.0
        assert entry["gap"]["per_subject"][key] == pytest.approx(score - entry["random"]["per_subject"][key])


def test_tiny_demo_run_writes_the_documented_evidence(demo_cohort: Path, tmp_path: Path) -> None:
    """embedding_quality.json on the simulated demo cohort: probes in both regions for both inputs, trained on
    train-split subjects and scored on validation-split ones, and the cross-modal reconstruction error."""
    extra = ["trainer.max_steps=3", "data.val_fraction=0.5", "data.test_fraction=0.0", "evidence.voxels_per_subject=40"]
    out = run(config((demo_cohort, tmp_path / "cache"), tmp_path / "demo", "mae", *extra))
    report = json.loads((out / "embedding_quality.json").read_text())
    cfg = config((demo_cohort, tmp_path / "cache"), tmp_path / "x", "mae", *extra)
    dm = BrainDataModule(cfg.data, cfg.paths.cache_dir)
    dm.setup()
    assert report["subjects"] == {
        "train": [s.key for s in dm.train_subjects],
        "validation": [s.key for s in dm.val_subjects],
    }
    assert not set(report["subjects"]["train"]) & set(report["subjects"]["validation"])
    assert report["settings"]["inputs"] == ["all", "T1w"] and report["settings"]["context"] == 4
    probes = report["probes"]
    assert probes["status"] == "done" and probes["score"] == "balanced_accuracy"
    for region in ("subcortical", "brainstem"):
        entry = probes["regions"][region]
        assert entry["status"] == "done" and entry["n_val_subjects"] == len(dm.val_subjects)
        for condition in ("all", "T1w"):
            check_probe_entry(entry["inputs"][condition])
            assert set(entry["inputs"][condition]["pretrained"]["per_subject"]) == set(report["subjects"]["validation"])
    rec = report["reconstruction"]
    assert rec["status"] == "done" and rec["input"] == "T1w" and rec["units"] == "normalised intensity"
    for name, res in rec["modalities"].items():
        assert name in ("T2w", "FA", "MD") and res["mean_predictor_mse"] > 0
        assert res["skill"] == pytest.approx(
            np.mean([1 - v["mse"] / v["mean_predictor_mse"] for v in res["per_subject"].values()])
        )


def test_probes_are_skipped_with_a_reason_without_labels(tmp_path: Path) -> None:
    root = write_synthetic_bids(
        tmp_path / "bids", n_subjects=6, missing={f"{i:02d}": ["tissue", "regions"] for i in range(1, 7)}
    )
    out = run(config((root, tmp_path / "cache"), tmp_path / "nolabels", "mae", "trainer.max_steps=1"))
    report = json.loads((out / "embedding_quality.json").read_text())
    assert report["probes"]["status"] == "skipped" and "labels" in report["probes"]["reason"]
    assert report["reconstruction"]["status"] == "done"  # needs no labels


def test_resume_from_a_missing_checkpoint_is_refused(cohort, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nothing\.ckpt"):
        run(config(cohort, tmp_path / "bad", "mae", f"resume={tmp_path / 'nothing.ckpt'}"))
    assert not (tmp_path / "bad" / "encoder.pt").exists()


def test_contrastive_batch_of_one_is_refused(cohort, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.batch_size"):
        run(config(cohort, tmp_path / "bad", "simclr", "data.batch_size=1"))


@pytest.mark.slow
def test_ddp_two_cpu_processes_run_simclr(cohort, tmp_path: Path) -> None:
    """``trainer=ddp trainer.devices=2 trainer.accelerator=cpu`` (gloo) with a queue and a momentum encoder, whose
    new entries are gathered across processes (tests/reliability/test_ddp.py checks the in-batch default)."""
    root, cache = cohort
    run_dir = tmp_path / "ddp"
    args = [
        f"data.root={root}",
        f"paths.cache_dir={cache}",
        f"paths.runs_dir={tmp_path}",
        f"hydra.run.dir={run_dir}",
        *[o for o in TINY if not o.startswith("trainer.accelerator")],
        *METHOD_OVERRIDES["simclr"],
        "method.memory_bank_size=16",
        "method.momentum=0.99",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "data.patches_per_epoch=8",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_pretrain", "pretrain", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert torch.load(run_dir / "encoder.pt", weights_only=True)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "complete"
    metrics = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["train/loss"])
    assert sorted(metrics["step"].tolist()) == [0, 1]
