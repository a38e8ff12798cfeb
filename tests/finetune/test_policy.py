"""Fine-tuning policies, the hypercolumn head, and whole-volume inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from finetune.inference import (
    InferenceSettings,
    channel_argmax,
    head_labels,
    input_volume,
    predict_labels,
    predict_probabilities,
)
from finetune.linear_head import HypercolumnHead, LinearProbeNet, hypercolumn
from finetune.policy import apply_policy, build_segmentation_net, param_groups
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.models.unet import ResEncoder, UNet
from tests.finetune.tiny_model import TINY as TINY_CONFIG

OPTIM = {"lr": 1e-3, "weight_decay": 0.01, "warmup_steps": 0, "min_lr_ratio": 0.0, "encoder_lr_scale": 0.1}
TINY = OmegaConf.create(TINY_CONFIG)


def test_hypercolumn_head_equals_conv_on_explicit_hypercolumn():
    torch.manual_seed(0)
    feats = [torch.randn(2, 3, 8, 8, 8), torch.randn(2, 5, 4, 4, 4), torch.randn(2, 7, 2, 2, 2)]
    head = HypercolumnHead(3, [3, 5, 7], 4)
    reference = torch.nn.Conv3d(15, 4, 1)
    with torch.no_grad():
        reference.weight.copy_(torch.cat([c.weight for c in head.convs], dim=1))
        reference.bias.copy_(head.convs[0].bias)
    expected = reference(hypercolumn(feats, (8, 8, 8)))
    assert torch.allclose(head(feats, (8, 8, 8)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="feature maps"):
        head(feats[:2], (8, 8, 8))
    with pytest.raises(ValueError, match="out_channels"):
        HypercolumnHead(3, [3], 0)


@pytest.mark.parametrize("policy", ["full", "frozen_encoder", "linear"])
def test_policies_train_the_right_weights(policy):
    net = build_segmentation_net(TINY, in_channels=2, out_channels=4, policy=policy)
    assert isinstance(net, LinearProbeNet if policy == "linear" else UNet)
    apply_policy(net, policy)
    groups = param_groups(net, policy, OPTIM)
    enc = {id(p) for p in net.encoder.parameters()}
    in_groups = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert set(in_groups) == {id(p) for p in net.parameters() if p.requires_grad}
    if policy == "full":
        assert enc <= set(in_groups)
        assert all(scale == (0.1 if pid in enc else 1.0) for pid, scale in in_groups.items())
    else:
        assert not enc & set(in_groups) and all(scale == 1.0 for scale in in_groups.values())
        assert not any(p.requires_grad for p in net.encoder.parameters())
        assert not net.encoder.training
    x = torch.randn(1, 2, 8, 8, 8)
    out = net(x)
    assert out.shape == (1, 4, 8, 8, 8)
    out.sum().backward()
    frozen_grads = [p.grad for p in net.encoder.parameters()]
    assert all(g is None for g in frozen_grads) == (policy != "full")


def test_bad_policy_and_lr_scale():
    with pytest.raises(ConfigError, match=r"finetune\.policy"):
        build_segmentation_net(TINY, 1, 4, "partial")
    net = build_segmentation_net(TINY, 1, 4, "full")
    with pytest.raises(ConfigError, match=r"optim\.encoder_lr_scale"):
        param_groups(net, "full", {**OPTIM, "encoder_lr_scale": 1.5})


def test_sliding_window_matches_direct_forward_and_zeroes_unused_channels():
    torch.manual_seed(0)
    net = build_segmentation_net(TINY, 2, 4, "full").eval()
    image = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)
    settings = InferenceSettings(roi_size=(8, 8, 8), total_stride=2, overlap=0.0, mode="constant")
    x = input_volume(image, presence=[True, True])
    probs = predict_probabilities(net, x, settings)
    assert probs.shape == (4, 8, 8, 8)
    assert torch.allclose(probs, torch.softmax(net(x), 1)[0], atol=1e-5)
    assert torch.allclose(probs.sum(0), torch.ones(8, 8, 8), atol=1e-5)
    # T1w only: the second channel is fed as zeros, as modality dropout presents it in training
    x1 = input_volume(image, presence=[True, True], use=[True, False])
    assert torch.all(x1[0, 1] == 0) and torch.equal(x1[0, 0], torch.from_numpy(image[0]))
    assert torch.equal(input_volume(image, presence=[True, False])[0, 1], torch.zeros(8, 8, 8))
    # a bigger volume, tiled: shape preserved, probabilities normalised
    big = np.random.default_rng(1).normal(size=(2, 12, 10, 9)).astype(np.float32)
    probs = predict_probabilities(net, input_volume(big, [True, True]), InferenceSettings((8, 8, 8), 2))
    assert probs.shape == (4, 12, 10, 9) and torch.allclose(probs.sum(0), torch.ones(12, 10, 9), atol=1e-5)
    assert predict_labels(probs).dtype == np.uint8 and predict_labels(probs).max() <= 3
    # one whole-volume window: the network on the edge-padded volume (to a multiple of the stride), cropped
    whole = InferenceSettings(None, total_stride=2)
    assert whole.window((11, 10, 9)) == (12, 10, 10)
    x = input_volume(big[:, :11], [True, True])
    padded = torch.nn.functional.pad(x, (0, 1, 0, 0, 0, 1), mode="replicate")  # MONAI pads the end when odd
    expected = torch.softmax(net(padded), 1)[0, :, :11, :, :9]
    assert torch.allclose(predict_probabilities(net, x, whole), expected, atol=1e-5)


def test_inference_settings_validation():
    cfg = OmegaConf.create({"roi_size": "patch", "overlap": 0.5, "mode": "gaussian", "sw_batch_size": 1})
    assert InferenceSettings.from_config(cfg, [48, 48, 48], 8).roi_size == (48, 48, 48)
    assert InferenceSettings.from_config(OmegaConf.create({"roi_size": "whole"}), [48] * 3, 8).roi_size is None
    assert InferenceSettings.from_config(OmegaConf.create({"roi_size": [16, 24, 32]}), [48] * 3, 8).roi_size == (
        16,
        24,
        32,
    )
    with pytest.raises(ConfigError, match=r"inference\.roi_size"):
        InferenceSettings.from_config(OmegaConf.create({"roi_size": 20}), [48] * 3, 8)
    with pytest.raises(ConfigError, match=r"inference\.roi_size"):
        InferenceSettings.from_config(OmegaConf.create({"roi_size": "all"}), [48] * 3, 8)
    with pytest.raises(ConfigError, match=r"inference\.overlap"):
        InferenceSettings.from_config(OmegaConf.create({"overlap": 1.0}), [48] * 3, 8)
    with pytest.raises(ConfigError, match=r"inference\.mode"):
        InferenceSettings.from_config(OmegaConf.create({"mode": "max"}), [48] * 3, 8)


def test_linear_probe_net_uses_the_encoder():
    enc = ResEncoder(3, 1, channels=(4, 8), strides=(1, 2), num_res_units=1, subunits=1)
    net = LinearProbeNet(enc, 4)
    assert net.encoder is enc and net.in_channels == 1
    assert net(torch.randn(1, 1, 8, 8, 8)).shape == (1, 4, 8, 8, 8)


def test_predict_cached_crops_to_the_brain_box():
    from types import SimpleNamespace

    from finetune.inference import brain_box, predict_cached

    torch.manual_seed(0)
    net = build_segmentation_net(TINY, 2, 4, "full").eval()
    image = np.random.default_rng(0).normal(size=(2, 14, 12, 10)).astype(np.float32)
    brain = np.zeros((14, 12, 10), np.uint8)
    brain[4:9, 3:7, 2:8] = 1
    assert brain_box(brain, 1) == (slice(3, 10), slice(2, 8), slice(1, 9))
    assert brain_box(np.zeros_like(brain), 1) == (slice(None),) * 3
    subject = SimpleNamespace(
        image=image, presence=np.array([True, True]), brain=brain, affine=np.diag([2.0] * 3 + [1])
    )
    settings = InferenceSettings(None, total_stride=2, brain_margin_mm=2.0)  # 1 voxel at 2 mm
    probs = predict_cached(net, subject, settings)
    box = brain_box(brain, 1)
    inner = predict_probabilities(net, input_volume(image[(slice(None), *box)], [True, True]), settings)
    assert torch.allclose(probs[(slice(None), *box)], inner)
    outside = torch.ones(14, 12, 10, dtype=torch.bool)
    outside[box] = False
    assert torch.all(probs[0][outside] == 1) and torch.all(probs[1:, outside] == 0)
    whole = predict_cached(net, subject, InferenceSettings(None, total_stride=2, brain_margin_mm=None))
    assert whole.shape == (4, 14, 12, 10) and not torch.all(whole[0][outside] == 1)


def test_predict_cached_focus_predicts_the_roi_box_plus_context():
    from types import SimpleNamespace

    from finetune.inference import brain_box, predict_cached

    torch.manual_seed(0)
    net = build_segmentation_net(TINY, 2, 4, "full").eval()
    image = np.random.default_rng(1).normal(size=(2, 16, 14, 12)).astype(np.float32)
    brain = np.ones((16, 14, 12), np.uint8)
    roi = np.zeros_like(brain)
    roi[7:9, 6:8, 5:7] = 1
    subject = SimpleNamespace(image=image, presence=np.array([True, True]), brain=brain, affine=np.eye(4))
    cfg = {"roi_size": "whole", "crop_to_roi": True}
    settings = InferenceSettings.from_config(cfg, patch_size=(4, 4, 4), total_stride=2)
    assert settings.focus_margin == 2  # half the training patch
    probs = predict_cached(net, subject, settings, focus=roi)
    box = brain_box(roi, 2)
    assert box == (slice(5, 11), slice(4, 10), slice(3, 9))
    inner = predict_probabilities(net, input_volume(image[(slice(None), *box)], [True, True]), settings)
    assert torch.allclose(probs[(slice(None), *box)], inner)
    outside = torch.ones(16, 14, 12, dtype=torch.bool)
    outside[box] = False
    assert torch.all(probs[0][outside] == 1)
    # Without crop_to_roi (bssl predict), focus is ignored: the whole brain is predicted.
    plain = InferenceSettings.from_config({"roi_size": "whole"}, patch_size=(4, 4, 4), total_stride=2)
    assert plain.focus_margin is None
    assert not torch.all(predict_cached(net, subject, plain, focus=roi)[0][outside] == 1)


def test_channel_argmax_is_argmax_over_the_first_dimension_with_its_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 3, (5, 7, 6, 4), generator=gen).float()  # many ties: the first maximum wins
    assert torch.equal(channel_argmax(scores), scores.argmax(0))
    probs = torch.softmax(torch.randn(7, 6, 5, 4, generator=gen), 0)
    np.testing.assert_array_equal(predict_labels(probs, [4, 3]), probs[:4].argmax(0).numpy())
    np.testing.assert_array_equal(head_labels(probs, [4, 3], 1), probs[4:].argmax(0).numpy())
