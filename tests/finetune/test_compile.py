"""trainer.compile: the compiled training forward pass gives the eager numbers, checkpoints stay the plain network's,
and a setting that cannot run is a config error naming the key."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from finetune.inference import InferenceSettings
from finetune.module import SegmentationModule
from finetune.roi import StageROI
from finetune.roi_loss import ROIDiceCELoss
from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data import batch as B
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.models.unet import build_unet
from ssl_pretrain.training import compile as compile_module
from ssl_pretrain.training.compile import resolve_compile
from ssl_pretrain.training.memory_format import apply_memory_format


def test_resolution(monkeypatch):
    monkeypatch.setattr(compile_module, "cxx_compiler", lambda: "/usr/bin/g++")
    assert resolve_compile(True, "cpu") and not resolve_compile(False, "cpu") and resolve_compile("auto", "cpu")
    monkeypatch.setattr(compile_module, "cxx_compiler", lambda: None)
    assert not resolve_compile("auto", "cpu") and not resolve_compile("auto", "gpu") and resolve_compile(True, "gpu")
    with pytest.raises(ConfigError, match=r"trainer\.compile.*no C\+\+ compiler"):
        resolve_compile(True, "cpu")
    with pytest.raises(ConfigError, match=r"trainer\.compile.*true, false or auto"):
        resolve_compile("yes", "cpu")


def test_cxx_compiler_follows_the_cxx_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert compile_module.cxx_compiler() is None


def _module(net: torch.nn.Module, compiled: bool) -> SegmentationModule:
    roi = StageROI.from_config({"name": "brainstem", "roi": "brainstem"}, 2.0)
    return SegmentationModule(
        net, policy="full", roi=roi, loss=ROIDiceCELoss(4), optim_cfg={}, total_steps=1,
        inference=InferenceSettings((16, 16, 16), 8), compile_net=compiled,
    )  # fmt: skip


@pytest.mark.skipif(compile_module.cxx_compiler() is None, reason="torch.compile on CPU needs a C++ compiler")
def test_the_compiled_training_step_gives_the_eager_loss_and_gradients():
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "cpu.yaml")
    cfg.channels, cfg.strides, cfg.num_res_units, cfg.subunits = [4, 8], [1, 2], 1, 1  # small: quick to compile
    torch.manual_seed(0)
    eager_net = apply_memory_format(build_unet(cfg, 2, 4), "channels_last_3d")
    eager, compiled = _module(eager_net, False), _module(copy.deepcopy(eager_net), True)
    regions = torch.full((2, 1, 8, 8, 8), REGION_INDEX["brainstem"])
    batch = {
        B.IMAGE: torch.randn(2, 2, 8, 8, 8),
        B.TISSUE: torch.randint(0, 4, (2, 1, 8, 8, 8)),
        B.REGIONS: regions,
    }
    losses = []
    for module in (eager, compiled):
        loss = module.training_step(batch, 0)
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    for p, q in zip(eager.net.parameters(), compiled.net.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-3)
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # no second copy of the weights
