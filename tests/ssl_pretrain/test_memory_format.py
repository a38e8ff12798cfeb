"""trainer.memory_format: resolution per device, and the same numbers in either layout (channels-last also runs
instance norms on the group-norm kernel)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.models.unet import build_unet
from ssl_pretrain.training.memory_format import (
    apply_memory_format,
    instance_norms_as_group_norms,
    resolve_memory_format,
)


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
    fast.load_state_dict(plain.state_dict())  # the same keys: checkpoints load in either layout
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in fast.modules())
    norms = sum(isinstance(m, nn.InstanceNorm3d) for m in plain.modules())
    assert norms > 0 and sum(isinstance(m, nn.GroupNorm) for m in fast.modules()) == norms
    assert fast.state_dict().keys() == plain.state_dict().keys()
    conv = next(p for p in fast.parameters() if p.ndim == 5)
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 2, 16, 16, 16)
    a, b = plain(x), fast(x)
    assert torch.allclose(a, b, atol=1e-5)
    a.square().mean().backward()
    b.square().mean().backward()
    for p, q in zip(plain.parameters(), fast.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4)


def test_group_norm_kernel_keeps_parameters_and_leaves_running_statistics_alone():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 3, 3), nn.InstanceNorm3d(3, affine=True), nn.Sequential(nn.InstanceNorm3d(3)))
    net.append(nn.InstanceNorm3d(3, track_running_stats=True))
    with torch.no_grad():
        net[1].weight.uniform_(0.5, 2.0)
        net[1].bias.uniform_(-1.0, 1.0)
    weight = net[1].weight
    x = torch.randn(2, 2, 8, 8, 8)
    expected = net(x)
    instance_norms_as_group_norms(net)
    assert isinstance(net[1], nn.GroupNorm) and net[1].num_groups == 3 and net[1].weight is weight
    assert isinstance(net[2][0], nn.GroupNorm) and not net[2][0].affine
    assert isinstance(net[3], nn.InstanceNorm3d)  # eval mode would use its running statistics
    assert torch.allclose(net(x), expected, atol=1e-5)
