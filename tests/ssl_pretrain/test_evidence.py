"""The evidence of a pretraining run against encoders and reconstructions whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from scipy import stats
from torch import nn

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.cache import preprocess
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.evidence import (
    evidence_settings,
    mean_ci,
    probe_evidence,
    reconstruction_evidence,
    summary_lines,
)
from ssl_pretrain.methods.mae import MAE
from tests.synthetic import write_synthetic_bids

MODALITIES = ["T1w", "T2w", "FA", "MD"]


@pytest.fixture(scope="module")
def subjects(tmp_path_factory: pytest.TempPathFactory):
    """Eight cached synthetic subjects (sub-06 lacks T1w, sub-08 lacks labels)."""
    base = tmp_path_factory.mktemp("evidence")
    root = write_synthetic_bids(base / "bids", n_subjects=8, missing={"06": ["T1w"], "08": ["tissue", "regions"]})
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    cfg.root, cfg.patch_size = str(root), 16
    return preprocess(load_records(cfg), cfg, base / "cache", progress=False)


def settings(**overrides) -> dict:
    cfg = OmegaConf.load(CONFIG_DIR / "pretrain.yaml").evidence
    cfg.merge_with({"voxels_per_subject": 60, "bootstrap": 500, **overrides})
    return evidence_settings(cfg, (16, 16, 16), 2, MODALITIES)


class Channel(nn.Module):
    """A two-scale 'encoder' whose features are one input channel (scaled), or zeros (knows nothing)."""

    def __init__(self, channel: int | None) -> None:
        super().__init__()
        self.channel = channel
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fine = x[:, [self.channel]] if self.channel is not None else torch.zeros_like(x[:, :1])
        return [fine + 0 * self.dummy, nn.functional.avg_pool3d(fine, 2)]


def test_mean_ci_is_scipy_bca_and_refuses_too_few_subjects() -> None:
    values = [0.71, 0.80, 0.77, 0.90, 0.65, 0.84]
    out = mean_ci(values, 1000, 0.95, seed=3)
    ref = stats.bootstrap(
        (np.asarray(values),), np.mean, n_resamples=1000, method="BCa", random_state=np.random.default_rng(3)
    )
    assert out["mean"] == pytest.approx(np.mean(values))
    assert out["ci95"] == pytest.approx([ref.confidence_interval.low, ref.confidence_interval.high])
    assert (
        mean_ci([0.5, 0.7], 1000, 0.95, 0)["ci95"] is None
        and "at least 3" in mean_ci([0.5, 0.7], 1000, 0.95, 0)["ci_note"]
    )
    assert mean_ci([0.6, 0.6, 0.6], 1000, 0.95, 0)["ci_note"].startswith("all subjects equal")


def test_probes_separate_an_informative_encoder_from_an_uninformative_one(subjects) -> None:
    train, val = subjects[:4], subjects[4:]
    encoders = {"pretrained": Channel(0), "random": Channel(None)}  # T1w intensity vs nothing
    out = probe_evidence(encoders, train, val, MODALITIES, settings())
    assert out["status"] == "done"
    for region in ("subcortical", "brainstem"):
        entry = out["regions"][region]
        assert entry["n_train_subjects"] == 4 and entry["n_val_subjects"] == 3  # sub-08 has no labels
        res = entry["inputs"]["all"]
        assert res["pretrained"]["mean"] > 0.75  # synthetic T1w: WM brighter than GM (noise, partial volume)
        assert res["random"]["mean"] == pytest.approx(0.5)  # constant features: one class predicted
        assert res["gap"]["mean"] == pytest.approx(res["pretrained"]["mean"] - 0.5)
        t1 = entry["inputs"]["T1w"]
        assert "sub-06" not in t1["pretrained"]["per_subject"]  # no T1w: not scored under T1w-only input
        assert set(res["pretrained"]["per_subject"]) == {"sub-05", "sub-06", "sub-07"}


def test_probes_are_skipped_with_reasons(subjects) -> None:
    encoders = {"pretrained": Channel(0), "random": Channel(None)}
    unlabelled = [s for s in subjects if s.tissue is None]
    assert probe_evidence(encoders, subjects[:4], [], MODALITIES, settings())["status"] == "skipped"
    skipped = probe_evidence(encoders, subjects[:4], unlabelled, MODALITIES, settings())
    assert skipped["status"] == "skipped" and "labels" in skipped["reason"]


class Constant(nn.Module):
    """A U-Net stand-in predicting a constant per channel."""

    def __init__(self, values: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("values", torch.as_tensor(values, dtype=torch.float32))
        self.encoder = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.values.view(1, -1, 1, 1, 1).expand_as(x).clone()


def test_reconstruction_of_the_train_mean_has_zero_skill(subjects) -> None:
    train, val = subjects[:4], subjects[4:]
    means = np.zeros(4)
    for c in range(4):
        parts = [np.asarray(s.image[c])[np.asarray(s.brain) > 0] for s in train if s.presence[c]]
        means[c] = np.concatenate(parts).mean()
    out = reconstruction_evidence(MAE(Constant(means), 4, mask_block=4), train, val, MODALITIES, settings())
    assert out["status"] == "done" and out["units"] == "normalised intensity"
    assert set(out["modalities"]) == {"T2w", "FA", "MD"} and out["n_subjects"] == 3  # sub-06 has no T1w
    assert out["masked"]["mask"].startswith("0.75 of the input's 4x4x4 blocks")
    for part in (out["modalities"], out["masked"]["modalities"]):  # whole and masked T1w input: same patches
        assert set(part) == {"T2w", "FA", "MD"}
        for res in part.values():
            assert res["mse"] == pytest.approx(res["mean_predictor_mse"], rel=1e-4)  # it *is* the mean predictor
            assert res["skill"] == pytest.approx(0.0, abs=1e-4)
    lines = summary_lines({"probes": {"status": "skipped", "reason": "no labels"}, "reconstruction": out})
    assert lines[0] == "probes skipped: no labels" and len(lines) == 1 + 6
    off = reconstruction_evidence(MAE(Constant(means + 1.0), 4, mask_block=4), train, val, MODALITIES, settings())
    assert all(res["skill"] < -1.0 for res in off["modalities"].values())  # worse than the mean: negative skill
    normed = MAE(Constant(np.zeros(4)), 4, mask_block=4, norm_target=True)
    units = reconstruction_evidence(normed, train, val, MODALITIES, settings())
    assert units["units"] == "block-normalised"
    assert all(res["skill"] == pytest.approx(0.0, abs=1e-6) for res in units["modalities"].values())


def test_reconstruction_is_skipped_without_the_input_modality(subjects) -> None:
    mae = MAE(Constant(np.zeros(4)), 4, mask_block=4)
    no_t1 = [s for s in subjects if not s.presence[0]]
    out = reconstruction_evidence(mae, subjects[:4], no_t1, MODALITIES, settings())
    assert out["status"] == "skipped" and "T1w" in out["reason"]
    other = reconstruction_evidence(mae, subjects[:4], subjects[4:], MODALITIES, settings(reconstruction_input="PD"))
    assert other["status"] == "skipped" and "PD" in other["reason"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"voxels_per_subject": 1}, "evidence.voxels_per_subject"),
        ({"bootstrap": 50}, "evidence.bootstrap"),
        ({"confidence": 1.5}, "evidence.confidence"),
        ({"inputs": []}, "evidence.inputs"),
        ({"inputs": ["T1w+PD"]}, "evidence.inputs"),
        ({"max_val_subjects": 0}, "evidence.max_val_subjects"),
    ],
)
def test_bad_evidence_settings_name_the_key(override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        settings(**override)
