"""The residual U-Net: feature shapes, skip connections, argument validation, config building."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.models.unet import ResEncoder, UNet, UNetDecoder, build_encoder, build_unet

TINY = {"channels": (4, 8, 16), "strides": (1, 2, 2), "num_res_units": 1}


def test_encoder_features_fine_to_coarse_with_documented_shapes():
    enc = ResEncoder(3, 2, channels=(4, 8, 16, 32), strides=(1, 2, 2, 2), num_res_units=(1, 1, 2, 2))
    feats = enc(torch.randn(2, 2, 16, 24, 32))
    assert enc.feature_channels == (4, 8, 16, 32)
    assert enc.total_stride == 8
    assert [tuple(f.shape) for f in feats] == [
        (2, 4, 16, 24, 32),
        (2, 8, 8, 12, 16),
        (2, 16, 4, 6, 8),
        (2, 32, 2, 3, 4),
    ]


def test_encoder_first_stride_downsamples_the_first_features():
    enc = ResEncoder(3, 1, channels=(4, 8), strides=(2, 2), num_res_units=1)
    assert [tuple(f.shape[2:]) for f in enc(torch.randn(1, 1, 16, 16, 16))] == [(8, 8, 8), (4, 4, 4)]


@pytest.mark.parametrize("strides", [(1, 2, 2), (2, 2, 2), (1, 1, 2)])
@pytest.mark.parametrize("upsample", ["deconv", "nontrainable"])
def test_unet_returns_the_input_grid(strides, upsample):
    net = UNet(3, 3, 5, channels=(4, 8, 16), strides=strides, num_res_units=1, upsample=upsample)
    assert net(torch.randn(2, 3, 16, 8, 24)).shape == (2, 5, 16, 8, 24)


def test_unet_2d():
    net = UNet(2, 1, 2, **TINY)
    assert net(torch.randn(1, 1, 16, 16)).shape == (1, 2, 16, 16)


def test_decoder_uses_every_skip_connection():
    dec = UNetDecoder(3, (4, 8, 16), 2, strides=(1, 2, 2))
    feats = [
        torch.randn(1, 4, 8, 8, 8, requires_grad=True),
        torch.randn(1, 8, 4, 4, 4, requires_grad=True),
        torch.randn(1, 16, 2, 2, 2, requires_grad=True),
    ]
    dec(feats).sum().backward()
    for f in feats:
        assert f.grad is not None and f.grad.abs().sum() > 0


def test_unet_is_encoder_then_decoder():
    torch.manual_seed(0)
    net = UNet(3, 2, 3, **TINY).eval()
    x = torch.randn(1, 2, 8, 8, 8)
    torch.testing.assert_close(net(x), net.decoder(net.encoder(x)))


def test_input_layer_is_the_only_layer_that_sees_the_input():
    """Channel adaptation relies on this: zeroing the stem's weights of a channel removes that channel."""
    torch.manual_seed(0)
    enc = ResEncoder(3, 2, **TINY).eval()
    with torch.no_grad():
        enc.state_dict()[ResEncoder.input_weight_key][:, 1] = 0
    x = torch.randn(1, 2, 8, 8, 8)
    x2 = x.clone()
    x2[:, 1] = torch.randn(8, 8, 8)
    for a, b in zip(enc(x), enc(x2), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"in_channels": 0}, "in_channels"),
        ({"channels": ()}, "channels"),
        ({"channels": (4, -8)}, "channels"),
        ({"strides": (1, 2)}, "strides"),
        ({"strides": (1, 0, 2)}, "strides"),
        ({"num_res_units": (1, 1)}, "num_res_units"),
        ({"num_res_units": 0}, "num_res_units"),
        ({"subunits": 0}, "subunits"),
        ({"kernel_size": 2}, "kernel_size"),
        ({"dropout": 1.0}, "dropout"),
        ({"norm": ["instance", "affine"]}, "norm"),
    ],
)
def test_encoder_validates_arguments(kwargs, match):
    args = {"spatial_dims": 3, "in_channels": 2, **TINY, **kwargs}
    with pytest.raises(ValueError, match=match):
        ResEncoder(**args)


def test_decoder_validates_arguments():
    with pytest.raises(ValueError, match="upsample"):
        UNetDecoder(3, (4, 8), 2, strides=(1, 2), upsample="bicubic-magic")
    with pytest.raises(ValueError, match="strides"):
        UNetDecoder(3, (4, 8), 2, strides=(1,))
    with pytest.raises(ValueError, match="out_channels"):
        UNetDecoder(3, (4, 8), 0, strides=(1, 2))
    with pytest.raises(ValueError, match="feature maps"):
        UNetDecoder(3, (4, 8), 2, strides=(1, 2))([torch.zeros(1, 4, 4, 4, 4)])


def test_encoder_rejects_inputs_that_do_not_fit():
    enc = ResEncoder(3, 2, **TINY)
    with pytest.raises(ValueError, match="multiple of the total stride 4"):
        enc(torch.randn(1, 2, 10, 8, 8))
    with pytest.raises(ValueError, match="2 input channels"):
        enc(torch.randn(1, 3, 8, 8, 8))
    with pytest.raises(ValueError, match="5D input"):
        enc(torch.randn(2, 8, 8, 8))


@pytest.mark.parametrize("name", ["cpu", "gpu"])
def test_model_configs_build(name):
    cfg = OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml")
    enc = build_encoder(cfg, 4)
    assert enc.feature_channels == tuple(cfg.channels)
    assert enc.strides == tuple(cfg.strides)
    assert enc.arch_config["norm"] == ["instance", {"affine": True}]
    if name == "cpu":  # the cpu preset's 48³ patches fit, and the full U-Net runs
        net = build_unet(cfg, 4, 4)
        assert 48 % net.encoder.total_stride == 0
        assert net(torch.randn(1, 4, 16, 16, 24)).shape == (1, 4, 16, 16, 24)
    else:  # 128³ (and 96³) patches are multiples of the gpu model's total stride
        assert 128 % enc.total_stride == 0 and 96 % enc.total_stride == 0


def test_every_architecture_key_changes_the_model():
    base = OmegaConf.load(CONFIG_DIR / "model" / "cpu.yaml")
    ref = build_unet(base, 4, 4)

    def n_params(model):
        return sum(p.numel() for p in model.parameters())

    changes = {
        "channels": [8, 16, 32, 64],
        "num_res_units": 2,
        "subunits": 3,
        "decoder_res_units": 2,
        "kernel_size": 5,
        "norm": "batch",
        "act": "prelu",
        "upsample": "nontrainable",
    }
    for key, value in changes.items():
        cfg = base.copy()
        cfg[key] = value
        other = build_unet(cfg, 4, 4)
        assert other.arch_config[key] != ref.arch_config[key], key
        differs = n_params(other) != n_params(ref) or ref.state_dict().keys() != other.state_dict().keys()
        assert differs, key
    cfg = base.copy()
    cfg.strides = [1, 2, 2, 1]
    assert build_encoder(cfg, 4).total_stride == 4
    cfg = base.copy()
    cfg.dropout = 0.2
    assert any(isinstance(m, torch.nn.Dropout) for m in build_encoder(cfg, 4).modules())


def test_build_reports_the_bad_config_key():
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "cpu.yaml")
    del cfg["strides"]
    with pytest.raises(ConfigError, match=r"model\.strides"):
        build_encoder(cfg, 4)
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "cpu.yaml")
    cfg.strides = [1, 2]
    with pytest.raises(ConfigError, match=r"model\.strides"):
        build_unet(cfg, 4, 2)
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "cpu.yaml")
    cfg.upsample = "magic"
    with pytest.raises(ConfigError, match=r"model\.upsample"):
        build_unet(cfg, 4, 2)
