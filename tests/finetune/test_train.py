"""End to end on a tiny synthetic cohort: subcortical stage from a pretraining encoder, then the brainstem
stage with labels.k=2 from that run, then bssl predict with that model."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from finetune import predict, train
from finetune.metrics import metric_columns
from finetune.region_head import region_columns
from ssl_pretrain.config import compose_config
from ssl_pretrain.errors import CheckpointError, ConfigError
from ssl_pretrain.models.checkpoint import read_sidecar, save_weights
from ssl_pretrain.models.unet import build_encoder
from tests.synthetic import write_synthetic_bids

TINY_MODEL = [
    "model.channels=[8,16]",
    "model.strides=[1,2]",
    "model.num_res_units=1",
    "model.subunits=1",
]
FAST = [
    "data.patch_size=16",
    "data.batch_size=2",
    "data.patches_per_epoch=4",
    "trainer.max_steps=4",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "inference.overlap=0.0",
    "eval.n_overlays=2",
    *TINY_MODEL,
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_synthetic_bids(tmp_path_factory.mktemp("cohort"), n_subjects=8, shape=(24, 28, 24))


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory):
    """A pretraining run directory (encoder.pt + encoder.json) that read only T1w and T2w."""
    run = tmp_path_factory.mktemp("pretrain")
    cfg = compose_config("finetune", TINY_MODEL)
    torch.manual_seed(0)
    save_weights(build_encoder(cfg.model, 2), run / "encoder.pt", {"modalities": ["T1w", "T2w"], "method": "mae"})
    return run


def _cfg(tmp_path, cohort, name, *overrides):
    base = [f"data.root={cohort}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path / 'runs'}"]
    return compose_config("finetune", [*base, *FAST, *overrides], output_dir=tmp_path / "runs" / name)


@pytest.mark.slow
def test_subcortical_then_brainstem_then_predict(tmp_path, cohort, pretrain_run):
    sub = train.run(_cfg(tmp_path, cohort, "sub", "stage=subcortical", f"init={pretrain_run}"))
    meta = read_sidecar(sub / "model.pt")
    assert meta["task"] == "segmentation" and meta["stage"] == "subcortical" and meta["policy"] == "full"
    assert meta["init"]["loaded"] == "encoder" and meta["init"]["zero_initialised"] == ["FA", "MD"]
    assert meta["optim"]["encoder_lr_scale"] == 1.0  # the same for every initialisation
    assert meta["modalities"] == ["T1w", "T2w", "FA", "MD"] and meta["data_fingerprint"]
    test_keys = meta["test_subjects"]
    assert test_keys and not set(test_keys) & set(meta["labelled_subjects"])
    assert not set(meta["val_subjects"]) & set(test_keys)
    metrics = pd.read_csv(sub / "metrics.csv")
    assert metrics["subject"].tolist() == test_keys
    t1w_only = [f"t1w_only_dice_{c}" for c in ("GM", "WM", "CSF")]
    assert list(metrics.columns) == ["subject", "group", "roi_voxels", *metric_columns(), *region_columns(), *t1w_only]
    assert meta["heads"]["regions"][0] == "other" and meta["architecture"]["config"]["out_channels"] == 4 + 8
    assert (metrics["vol_true_GM_mm3"] > 0).all() and (metrics["vol_true_WM_mm3"] > 0).all()
    assert metrics["dice_GM"].between(0, 1).all()
    assert (sub / "overlays.png").stat().st_size > 1000
    assert (sub / "train_log" / "metrics.csv").is_file()
    assert not (sub / "checkpoints" / "best.ckpt").exists()  # a fixed schedule: no validation label is read
    summary = json.loads((sub / "summary.json").read_text())
    assert summary["weights"] == "last" and summary["steps"] == 4 and summary["val_dice"] is None
    assert meta["selection"]["rule"] == "last" and meta["selection"]["val_subjects"] == []
    assert meta["labels"]["seen"] == len(meta["labelled_subjects"])
    conv = meta["convergence"]
    assert isinstance(conv["converged"], bool) and len(conv["loss"]) == 4
    assert [s for s, _ in conv["train_dice"]] == [1, 2, 3, 4] and conv["train_subjects"]
    assert json.loads((sub / "run.json").read_text())["status"] == "complete"

    assert "fixed patches" in conv["rule"] and conv["dice_on"] == "patches"

    by_subject = ["finetune.convergence.dice_on=subjects", "finetune.convergence.max_subjects=1"]
    stem = train.run(
        _cfg(tmp_path, cohort, "stem", "stage=brainstem", "labels.k=2", "labels.seed=3", f"init={sub}", *by_subject)
    )
    meta2 = read_sidecar(stem / "model.pt")
    conv2 = meta2["convergence"]
    assert len(conv2["train_subjects"]) == 1 and "whole ROI" in conv2["rule"] and len(conv2["train_dice"]) == 4
    assert meta2["stage"] == "brainstem" and meta2["init"]["loaded"] == "model"
    assert meta2["init"]["source_stage"] == "subcortical"
    assert len(meta2["labelled_subjects"]) == 2 and set(meta2["labelled_groups"]) == {"HC", "ALS"}
    assert meta2["test_subjects"] == test_keys  # the test split does not depend on the stage or k
    assert pd.read_csv(stem / "metrics.csv")["subject"].tolist() == test_keys

    zero = train.run(_cfg(tmp_path, cohort, "zero", "stage=brainstem", "labels.k=0", f"init={sub}"))
    meta0 = read_sidecar(zero / "model.pt")
    assert meta0["labels"] == {"k": 0, "seed": 0, "seen": 0} and meta0["labelled_subjects"] == []
    assert meta0["result"]["steps"] == 0 and meta0["convergence"] is None
    assert pd.read_csv(zero / "metrics.csv")["subject"].tolist() == test_keys
    for key, value in read_sidecar(sub / "model.pt")["architecture"].items():
        assert meta0["architecture"][key] == value  # the subcortical model itself, scored on the brainstem

    out = predict.run(
        compose_config(
            "predict",
            [f"predict.model={stem}", f"data.root={cohort}", f"paths.cache_dir={tmp_path / 'cache'}"],
            output_dir=tmp_path / "runs" / "predict",
        )
    )
    for key in ("sub-01", "sub-08"):
        src = nib.load(cohort / key / "anat" / f"{key}_T1w.nii.gz")
        dseg = nib.load(out / "bssl" / key / "anat" / f"{key}_desc-bsslTissue_dseg.nii.gz")
        assert dseg.shape == src.shape and np.allclose(dseg.affine, src.affine)
    vols = pd.read_csv(out / "volumes.tsv", sep="\t")
    assert len(set(vols["participant_id"])) == 8


def test_policies_and_k_on_the_fixture(tmp_path, cohort):
    """linear and frozen_encoder build their networks; labels.k selects reproducibly and per labels.seed."""
    chosen = {}
    for policy in ("linear", "frozen_encoder"):
        out = train.run(
            _cfg(
                tmp_path,
                cohort,
                policy,
                "stage=brainstem",
                "labels.k=1",
                f"finetune.policy={policy}",
                "trainer.max_steps=2",
                "eval.hd95=false",
            )
        )
        meta = read_sidecar(out / "model.pt")
        assert meta["policy"] == policy and len(meta["labelled_subjects"]) == 1
        assert meta["architecture"]["class"] == ("LinearProbeNet" if policy == "linear" else "UNet")
        chosen[policy] = meta["labelled_subjects"]
    assert chosen["linear"] == chosen["frozen_encoder"]  # same labels.seed, same subject


def test_compile_without_a_cxx_compiler_is_refused_before_any_run_folder(tmp_path, cohort, monkeypatch):
    from ssl_pretrain.training import compile as compile_module

    monkeypatch.setattr(compile_module, "cxx_compiler", lambda: None)
    cfg = _cfg(tmp_path, cohort, "compile", "trainer.compile=true", "trainer.accelerator=cpu")
    with pytest.raises(ConfigError, match=r"trainer\.compile.*no C\+\+ compiler"):
        train.run(cfg)
    assert not (tmp_path / "runs" / "compile").exists()


def test_bad_config_values(tmp_path, cohort):
    for bad in ("-1", "1.5", "true"):
        with pytest.raises(ConfigError, match=r"eval\.n_overlays"):
            train.run(_cfg(tmp_path, cohort, f"o{bad}", f"eval.n_overlays={bad}"))
    with pytest.raises(ConfigError, match=r"labels\.k"):
        train.run(_cfg(tmp_path, cohort, "k", "labels.k=99"))
    with pytest.raises(ConfigError, match=r"finetune\.policy"):
        train.run(_cfg(tmp_path, cohort, "p", "finetune.policy=partial"))
    with pytest.raises(ConfigError, match=r"stage\.roi"):
        train.run(_cfg(tmp_path, cohort, "r", "stage.roi=hippocampus"))
    other = compose_config("finetune", ["model.channels=[4,8]", "model.strides=[1,2]", "model.num_res_units=1"])
    bad = tmp_path / "bad-pretrain"
    save_weights(build_encoder(other.model, 4), bad / "encoder.pt", {"modalities": ["T1w", "T2w", "FA", "MD"]})
    with pytest.raises(CheckpointError, match="architecture mismatch"):
        train.run(_cfg(tmp_path, cohort, "a", f"init={bad}"))


@pytest.mark.parametrize("init", ["scratch", "/some/pretraining/run"])
def test_the_encoder_learning_rate_does_not_depend_on_the_initialisation(init):
    cfg = OmegaConf.create({"init": init, "optim": {"lr": 1e-3}})
    assert train.optim_config(cfg).encoder_lr_scale == 1.0
    cfg.optim.encoder_lr_scale = 0.5
    assert train.optim_config(cfg).encoder_lr_scale == 0.5


@pytest.mark.parametrize("value", ["auto", 1.5, -0.1, True])
def test_an_encoder_learning_rate_scale_that_is_not_a_number_in_0_1_is_refused(value):
    cfg = OmegaConf.create({"init": "scratch", "optim": {"lr": 1e-3, "encoder_lr_scale": value}})
    with pytest.raises(ConfigError, match=r"optim\.encoder_lr_scale"):
        train.optim_config(cfg)


def test_selection_on_validation_subjects_counts_them(tmp_path, cohort):
    out = train.run(
        _cfg(tmp_path, cohort, "val", "stage=brainstem", "labels.k=1", "finetune.selection=val", "eval.hd95=false")
    )
    meta = read_sidecar(out / "model.pt")
    assert meta["selection"]["rule"] == "val" and len(meta["selection"]["val_subjects"]) == 1  # as many as k
    assert meta["labels"]["seen"] == 2  # one to train, one to select: both are labelled brainstems it used
    assert not set(meta["selection"]["val_subjects"]) & set(meta["labelled_subjects"] + meta["test_subjects"])


def test_a_run_told_not_to_score_its_test_subjects_writes_its_model_and_no_scores(tmp_path, cohort):
    """``eval.test=false`` (the study's cross-fitted chains, whose held-out subjects predict scores)."""
    out = train.run(_cfg(tmp_path, cohort, "unscored", "stage=brainstem", "labels.k=1", "trainer.max_steps=2",
                         "eval.test=false"))  # fmt: skip
    assert (out / "model.pt").is_file() and read_sidecar(out / "model.pt")["test_subjects"]
    assert not (out / "metrics.csv").exists() and not (out / "overlays.png").exists()
    assert json.loads((out / "summary.json").read_text())["n_test"] == 0


def test_zero_shot_needs_an_init_with_a_segmentation_head(tmp_path, cohort):
    with pytest.raises(CheckpointError, match="zero-shot"):
        train.run(_cfg(tmp_path, cohort, "zero", "stage=brainstem", "labels.k=0"))


def test_early_stopping_without_validation_is_refused(tmp_path, cohort):
    with pytest.raises(ConfigError, match=r"finetune\.early_stopping_patience"):
        train.run(_cfg(tmp_path, cohort, "es", "stage=brainstem", "labels.k=1", "finetune.early_stopping_patience=3"))


def test_a_run_without_overlays_scores_its_test_subjects_and_draws_none(tmp_path, cohort):
    out = train.run(_cfg(tmp_path, cohort, "no-overlays", "stage=brainstem", "labels.k=1", "trainer.max_steps=2",
                         "eval.n_overlays=0", "eval.hd95=false"))  # fmt: skip
    assert (out / "metrics.csv").is_file() and not (out / "overlays.png").exists()
    assert json.loads((out / "summary.json").read_text())["n_test"] > 0
