"""init=scratch | PATH: encoder and whole-model loading, channel adaptation by modality, clear errors."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from finetune.initialisation import initialise, load_segmentation_model, resolve_init
from finetune.policy import build_segmentation_net
from ssl_pretrain.errors import CheckpointError
from ssl_pretrain.models.checkpoint import save_weights
from ssl_pretrain.models.unet import build_encoder
from tests.finetune.tiny_model import TINY

ALL4 = ["T1w", "T2w", "FA", "MD"]


def _pretrain_run(tmp_path, modalities=ALL4, cfg=TINY):
    torch.manual_seed(1)
    enc = build_encoder(OmegaConf.create(cfg), len(modalities))
    run = tmp_path / "pretrain"
    save_weights(enc, run / "encoder.pt", {"modalities": modalities, "method": "mae", "spacing": 2.0})
    return run, enc


def test_scratch():
    net = build_segmentation_net(TINY, 1, 4, "full")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert initialise(net, "scratch", ["T1w"]) == {"init": "scratch"}
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("policy", ["full", "linear"])
def test_encoder_channels_adapt_by_modality_name(tmp_path, policy):
    run, enc = _pretrain_run(tmp_path)
    net = build_segmentation_net(TINY, 2, 4, policy)
    decoder_before = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    info = initialise(net, run, ["MD", "T1w"])  # other modalities, another order
    assert info["loaded"] == "encoder" and info["source_method"] == "mae" and info["dropped"] == ["T2w", "FA"]
    w_src = enc.state_dict()["stem.conv.weight"]
    w_new = net.encoder.state_dict()["stem.conv.weight"]
    assert torch.equal(w_new[:, 0], w_src[:, 3]) and torch.equal(w_new[:, 1], w_src[:, 0])
    for key, value in enc.state_dict().items():
        if key != "stem.conv.weight":
            assert torch.equal(net.encoder.state_dict()[key], value)
    assert all(torch.equal(decoder_before[k], v) for k, v in net.state_dict().items() if k in decoder_before)
    # the adapted encoder computes what the source computes with T2w and FA absent (zero channels)
    x = torch.randn(1, 2, 8, 8, 8)
    full = torch.zeros(1, 4, 8, 8, 8)
    full[:, 3], full[:, 0] = x[:, 0], x[:, 1]
    enc.eval(), net.eval()
    assert torch.allclose(net.encoder(x)[-1], enc(full)[-1], atol=1e-5)


def test_new_modality_gets_zero_weights(tmp_path):
    run, _ = _pretrain_run(tmp_path, modalities=["T1w"])
    net = build_segmentation_net(TINY, 2, 4, "full")
    info = initialise(net, run / "encoder.pt", ["T1w", "T2w"])
    assert info["zero_initialised"] == ["T2w"]
    assert torch.all(net.encoder.state_dict()["stem.conv.weight"][:, 1] == 0)


def test_architecture_mismatch_is_a_checkpoint_error(tmp_path):
    run, _ = _pretrain_run(tmp_path, cfg={**TINY, "channels": [4, 16]})
    net = build_segmentation_net(TINY, 4, 4, "full")
    with pytest.raises(CheckpointError, match="architecture mismatch"):
        initialise(net, run, ALL4)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    net = build_segmentation_net(TINY, 1, 4, "full")
    with pytest.raises(CheckpointError):
        initialise(net, bad, ["T1w"])
    with pytest.raises(CheckpointError, match="no weights"):
        initialise(net, tmp_path, ["T1w"])
    with pytest.raises(CheckpointError, match="does not exist"):
        initialise(net, tmp_path / "missing", ["T1w"])


def _finetune_run(tmp_path, policy="full", modalities=("T1w", "T2w")):
    torch.manual_seed(2)
    net = build_segmentation_net(TINY, len(modalities), 4, policy)
    run = tmp_path / f"finetune-{policy}"
    save_weights(
        net,
        run / "model.pt",
        {"modalities": list(modalities), "task": "segmentation", "stage": "subcortical", "policy": policy},
    )
    return run, net


def test_whole_model_from_a_finetune_run(tmp_path):
    run, src = _finetune_run(tmp_path)
    (run / "encoder.pt").write_bytes(b"")  # a finetune run's model.pt wins over anything else there
    assert resolve_init(run) == run / "model.pt"
    net = build_segmentation_net(TINY, 2, 4, "full")
    info = initialise(net, run, ["T1w", "T2w"])
    assert info["loaded"] == "model" and info["source_stage"] == "subcortical"
    assert all(torch.equal(net.state_dict()[k], v) for k, v in src.state_dict().items())
    # into a linear probe only the encoder fits
    probe = build_segmentation_net(TINY, 1, 4, "linear")
    assert initialise(probe, run / "model.pt", ["T1w"])["loaded"] == "encoder"
    assert torch.equal(
        probe.encoder.state_dict()["stem.conv.weight"][:, 0], src.encoder.state_dict()["stem.conv.weight"][:, 0]
    )


def test_load_segmentation_model(tmp_path):
    for policy in ("full", "linear"):
        run, src = _finetune_run(tmp_path, policy)
        net, _, pt = load_segmentation_model(run)
        assert type(net) is type(src) and pt == run / "model.pt" and not net.training
        x = torch.randn(1, 2, 8, 8, 8)
        assert torch.allclose(net(x), src.eval()(x), atol=1e-6)
    enc_run, _ = _pretrain_run(tmp_path)
    with pytest.raises(CheckpointError, match="not a fine-tuned segmentation model"):
        load_segmentation_model(enc_run)
