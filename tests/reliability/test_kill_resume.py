"""Runs killed hard (SIGKILL) leave nothing a later run trusts, and re-running the command finishes them.

Each test starts the real command (``bssl <command>`` through :mod:`tests.reliability.kill_switch`) in a
fresh interpreter that kills itself at a deterministic point, checks what the killed run left, re-runs the
command in the same run directory (``resume=auto`` for training) and compares the result with an
uninterrupted deterministic run. Kills land inside an epoch and inside a write (a checkpoint, a cache
entry, a NIfTI), the hardest places to resume from.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from finetune import predict, train
from ssl_pretrain import pretrain
from ssl_pretrain.atomic import _TEMPORARY
from ssl_pretrain.config import compose_config
from ssl_pretrain.data.cache import load_entry
from ssl_pretrain.run_dir import is_complete, is_live, read_run_record
from ssl_pretrain.training import checkpoint_problem, resolve_resume
from tests.reliability.harness import (
    FINETUNE,
    KILLED,
    PRETRAIN,
    PRETRAIN_STEPS,
    bssl,
    data_overrides,
    single_thread,
)

FINETUNE_STEPS = ["stage=subcortical", "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3"]  # 2 per epoch


def assert_untrusted(out: Path, *artefacts: str) -> None:
    """The killed run is marked running, holds no lock, and wrote none of its final ``artefacts``."""
    assert read_run_record(out)["status"] == "running"
    assert not is_complete(out)  # what bssl evaluate and bssl study go by
    assert not is_live(out)  # the kernel dropped the run lock with the process
    for name in artefacts:
        assert not (out / name).exists(), name


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def temporaries(directory: Path) -> list[Path]:
    return [p for p in directory.rglob(".*") if p.is_file() and _TEMPORARY.match(p.name)]


def loss_curve(csv: Path) -> pd.Series:
    rows = pd.read_csv(csv).dropna(subset=["train/loss"])
    return rows.set_index("step")["train/loss"].sort_index()


# --- pretrain -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pretrain_killed_while_checkpointing_resumes_to_the_uninterrupted_result(
    cohort: Path, tmp_path: Path, pretrain_reference: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runs = tmp_path / "runs"
    out = runs / "pretrain" / "killed"
    args = [*data_overrides(cohort, tmp_path / "cache", runs), *PRETRAIN, *PRETRAIN_STEPS]
    killed = bssl("checkpoint-write:4", "pretrain", [*args, f"hydra.run.dir={out}"], tmp_path)
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    assert_untrusted(out, "encoder.pt", "encoder.json", "loss_curve.png")
    last = out / "checkpoints" / "last.ckpt"
    (partial,) = (out / "checkpoints").glob(".last.ckpt.*.tmp")  # the write it was killed in
    assert checkpoint_problem(partial) is not None
    assert checkpoint_problem(last) is None
    assert torch.load(last, weights_only=True)["global_step"] == 2  # the previous checkpoint, whole, mid-epoch
    assert resolve_resume("auto", out) == str(last)

    with caplog.at_level(logging.INFO, logger="ssl_pretrain.training.resume"):
        pretrain.run(compose_config("pretrain", [*args, "resume=auto"], output_dir=out))  # the same command, in-process
    assert is_complete(out)
    assert "resume=auto: continuing this run from" in caplog.text
    assert_same_weights(out / "encoder.pt", pretrain_reference / "encoder.pt")
    curve, straight = loss_curve(out / "metrics.csv"), loss_curve(pretrain_reference / "metrics.csv")
    assert curve.index.tolist() == list(range(6))  # one continuous curve across the kill
    np.testing.assert_allclose(curve.to_numpy(), straight.to_numpy(), rtol=1e-6)
    assert not temporaries(out)  # the next checkpoint save removed the partial one


# --- finetune -----------------------------------------------------------------------------------------


def finetune_config(cohort: Path, base: Path, out: Path, *extra: str):
    overrides = [*data_overrides(cohort, base / "cache", base / "runs"), *FINETUNE, *FINETUNE_STEPS, *extra]
    return overrides, compose_config("finetune", overrides, output_dir=out)


@pytest.fixture(scope="module")
def finetune_reference(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted, deterministic subcortical fine-tuning run (also the model predict uses)."""
    base = tmp_path_factory.mktemp("finetune-reference")
    _, cfg = finetune_config(cohort, base, base / "runs" / "finetune" / "straight")
    with single_thread():
        return train.run(cfg)


@pytest.mark.slow
def test_finetune_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    cohort: Path, tmp_path: Path, finetune_reference: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "runs" / "finetune" / "killed"
    overrides, _ = finetune_config(cohort, tmp_path, out)
    killed = bssl("step:3", "finetune", [*overrides, f"hydra.run.dir={out}"], tmp_path)
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    assert_untrusted(out, "model.pt", "model.json", "summary.json", "metrics.csv")
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3 and state["epoch"] == 1  # inside the second epoch

    _, cfg = finetune_config(cohort, tmp_path, out, "resume=auto")
    with caplog.at_level(logging.INFO, logger="ssl_pretrain.training.resume"):
        train.run(cfg)  # the same command again, here in-process
    assert is_complete(out)
    assert "resume=auto: continuing this run from" in caplog.text
    assert_same_weights(out / "model.pt", finetune_reference / "model.pt")
    got, want = (json.loads((d / "summary.json").read_text()) for d in (out, finetune_reference))
    dice = [k for k in want if k.startswith("test_dice")]
    assert dice and {k: got[k] for k in dice} == pytest.approx({k: want[k] for k in dice}, rel=1e-6, nan_ok=True)
    curve, straight = (
        loss_curve(out / "train_log" / "metrics.csv"),
        loss_curve(finetune_reference / "train_log" / "metrics.csv"),
    )
    assert curve.index.tolist() == list(range(6))
    np.testing.assert_allclose(curve.to_numpy(), straight.to_numpy(), rtol=1e-6)


# --- caching and predict ------------------------------------------------------------------------------


def predict_args(cohort: Path, model: Path, cache: Path, out: Path) -> list[str]:
    return [f"predict.model={model}", f"data.root={cohort}", f"paths.cache_dir={cache}", f"hydra.run.dir={out}"]


def predict_again(cohort: Path, model: Path, cache: Path, out: Path) -> Path:
    """``bssl predict`` into ``out`` once more (in this process)."""
    overrides = [f"predict.model={model}", f"data.root={cohort}", f"paths.cache_dir={cache}"]
    return predict.run(compose_config("predict", overrides, output_dir=out))


@pytest.fixture(scope="module")
def predict_reference(cohort: Path, finetune_reference: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted ``bssl predict`` run with its own fresh cache (``<run>/../cache``)."""
    base = tmp_path_factory.mktemp("predict-reference")
    with single_thread():
        return predict_again(cohort, finetune_reference, base / "cache", base / "run")


def entries(cache: Path) -> dict[str, Path]:
    return {p.name: p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")}


def dsegs(out: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.rglob("*_dseg.nii.gz"))}


@pytest.mark.slow
def test_preprocessing_killed_mid_entry_leaves_no_entry_a_later_run_accepts(
    cohort: Path, tmp_path: Path, finetune_reference: Path, predict_reference: Path
) -> None:
    cache, out = tmp_path / "cache", tmp_path / "predict"
    killed = bssl("cache-write:2", "predict", predict_args(cohort, finetune_reference, cache, out), tmp_path)
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    assert_untrusted(out, "volumes.tsv")
    reference = entries(predict_reference.parent / "cache")
    (first,) = entries(cache).values()  # the second entry exists only as its temporary directory
    (partial,) = cache.glob(".tmp-*")
    assert (partial / "image.npy").is_file() and not (partial / "meta.json").exists()
    assert first.name in reference

    predict_again(cohort, finetune_reference, cache, out)
    assert is_complete(out)
    assert entries(cache).keys() == reference.keys() and not list(cache.glob(".tmp-*"))
    for name, entry in entries(cache).items():
        got, want = (
            json.loads((entry / "meta.json").read_text()),
            json.loads((reference[name] / "meta.json").read_text()),
        )
        assert {**got, "created": None} == {**want, "created": None}, name
        for array in sorted(p.name for p in reference[name].glob("*.npy")):
            np.testing.assert_array_equal(np.load(entry / array), np.load(reference[name] / array), err_msg=name)
        record = SimpleNamespace(key=got["record_key"], group=got["group"])
        assert load_entry(entry, got["cache_key"], record) is not None  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "volumes.tsv", sep="\t"), pd.read_csv(predict_reference / "volumes.tsv", sep="\t")
    )


@pytest.mark.slow
def test_predict_killed_mid_write_is_redone_by_the_same_command(
    cohort: Path, tmp_path: Path, finetune_reference: Path, predict_reference: Path
) -> None:
    cache, out = predict_reference.parent / "cache", tmp_path / "predict"  # a warm cache: only predicting
    killed = bssl("dseg-write:2", "predict", predict_args(cohort, finetune_reference, cache, out), tmp_path)
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    assert_untrusted(out, "volumes.tsv")
    reference = dsegs(predict_reference)
    written = dsegs(out)
    assert len(written) == 1  # the first subject, whole; the second only as a hidden temporary file
    for name, labels in written.items():
        np.testing.assert_array_equal(labels, reference[name])
    assert len(temporaries(out / "bssl")) == 1

    predict_again(cohort, finetune_reference, cache, out)
    assert is_complete(out)
    got = dsegs(out)
    assert got.keys() == reference.keys()
    for name in reference:
        np.testing.assert_array_equal(got[name], reference[name], err_msg=name)
    assert not temporaries(out)
    pd.testing.assert_frame_equal(
        pd.read_csv(out / "volumes.tsv", sep="\t"), pd.read_csv(predict_reference / "volumes.tsv", sep="\t")
    )
