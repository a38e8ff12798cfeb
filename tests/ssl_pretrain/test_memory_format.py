"""trainer.memory_format: resolution per device, and the same numbers in either layout."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.models.unet import build_unet
from ssl_pretrain.training.memory_format import apply_memory_format, resolve_memory_format


def test_resolution():
    assert resolve_memory_format("auto", "cpu") == "channels_last_3d"
    assert resolve_memory_format("auto", "gpu") == "contiguous"
    assert resolve_memory_format("Contiguous", "cpu") == "contiguous"
    with pytest.raises(ConfigError, match=r"trainer\.memory_format"):
        resolve_memory_format("nhwc", "cpu")


def test_channels_last_gives_the_same_logits_and_gradients():
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "cpu.yaml")
    cfg.channels, cfg.num_res_units = [4, 8, 16, 32], 1
    torch.manual_seed(0)
    plain = build_unet(cfg, 2, 4)
    fast = apply_memory_format(build_unet(cfg, 2, 4), "channels_last_3d")
    fast.load_state_dict(plain.state_dict())
    conv = next(p for p in fast.parameters() if p.ndim == 5)
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 2, 16, 16, 16)
    a, b = plain(x), fast(x)
    assert torch.allclose(a, b, atol=1e-5)
    a.square().mean().backward()
    b.square().mean().backward()
    for p, q in zip(plain.parameters(), fast.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4)
