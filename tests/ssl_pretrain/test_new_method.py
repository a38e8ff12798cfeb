"""A new self-supervised method is one class and one config: it trains through ``bssl pretrain``'s real path.

The class lives in this test module, its config in a temporary config folder that Hydra searches
(``hydra.searchpath``); no file of the package or of configs/ is touched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import pandas as pd
import pytest
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_pretrain.config import compose_config
from ssl_pretrain.data.batch import IMAGE
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.methods import available_methods
from ssl_pretrain.methods.base import Patch, PretrainMethod
from ssl_pretrain.methods.pooling import pool_maps
from ssl_pretrain.models.unet import build_encoder
from ssl_pretrain.pretrain import run
from tests.ssl_pretrain.test_pretrain import TINY
from tests.synthetic import write_synthetic_bids

CONFIG = f"""\
_target_: {__name__}.FeatureTarget
name: feature_target
target: 1.0
"""


class FeatureTarget(PretrainMethod):
    """A test method: pulls every pooled encoder feature towards ``target`` (it only has to train).

    Args:
        encoder: ``(B, C, X, Y, Z) -> list`` of feature maps, fine to coarse.
        target: the value each pooled feature is pulled to.
    """

    name: ClassVar[str] = "feature_target"
    views: ClassVar[int] = 1

    def __init__(self, encoder: nn.Module, target: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.target = float(target)
        self.register_buffer("hook_calls", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: DictConfig, model_cfg: DictConfig, in_channels: int) -> FeatureTarget:
        """The method on a fresh encoder."""
        return cls(build_encoder(model_cfg, in_channels), float(cfg.target))

    @classmethod
    def check_config(cls, cfg: DictConfig, patch: Patch, batch_size: int) -> None:
        """``method.target`` must be positive."""
        if float(cfg.target) <= 0:
            raise ConfigError("method.target", f"must be > 0, got {cfg.target}")

    def before_training_step(self, step: int, total_steps: int) -> None:
        """Count the calls (a momentum method would update its copy here)."""
        self.hook_calls += 1

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss", "feature_target"}``: mean squared distance of the pooled features ``(B, F)`` to ``target``."""
        pooled = pool_maps(self.encoder(batch[IMAGE]))  # (B, F)
        loss = ((pooled - self.target) ** 2).mean()
        return {"loss": loss, "feature_target": loss.detach()}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/ssl_pretrain/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 6-subject synthetic cohort, its cache, and a config folder holding only method/feature_target.yaml."""
    base = tmp_path_factory.mktemp("new_method")
    root = write_synthetic_bids(base / "bids", n_subjects=6)
    configs = base / "configs"
    (configs / "method").mkdir(parents=True)
    (configs / "method" / "feature_target.yaml").write_text(CONFIG)
    return root, base / "cache", configs


def config(setup: tuple[Path, Path, Path], out: Path, *extra: str) -> DictConfig:
    root, cache, configs = setup
    overrides = [f"hydra.searchpath=[file://{configs}]", "method=feature_target"]
    overrides += [f"data.root={root}", f"paths.cache_dir={cache}", f"paths.runs_dir={out.parent}", *TINY, *extra]
    return compose_config("pretrain", overrides, output_dir=out)


def test_a_method_from_one_class_and_one_config_trains(setup, tmp_path: Path) -> None:
    assert "feature_target" in available_methods(setup[2])
    out = run(config(setup, tmp_path / "run", "trainer.max_steps=2"))
    metrics = pd.read_csv(out / "metrics.csv").dropna(subset=["train/loss"])
    assert sorted(metrics["step"]) == [0, 1] and "train/feature_target" in metrics
    assert torch.load(out / "encoder.pt", weights_only=True)
    sidecar = json.loads((out / "encoder.json").read_text())
    assert sidecar["method"]["name"] == "feature_target"
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert int(state["method.hook_calls"]) == 2  # once before each training step, never in validation
    report = json.loads((out / "embedding_quality.json").read_text())
    assert report["method"] == "feature_target" and "reconstruction" not in report and "embeddings" not in report
    assert not (out / "mae_reconstruction.png").exists()


def test_the_new_methods_config_check_runs_before_training(setup, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"method\.target"):
        run(config(setup, tmp_path / "bad", "method.target=0"))
    assert not (tmp_path / "bad" / "encoder.pt").exists()
