"""Weight files: atomic save with sidecar, safe loading, architecture checks, channel adaptation by name."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

import ssl_pretrain
from ssl_pretrain.errors import CheckpointError
from ssl_pretrain.models.checkpoint import load_state_dict, load_weights, read_sidecar, save_weights
from ssl_pretrain.models.unet import ResEncoder, UNet

ARCH = {"channels": (4, 8, 16), "strides": (1, 2, 2), "num_res_units": 1}
MODS4 = ["T1w", "T2w", "FA", "MD"]
META = {"modalities": MODS4, "spacing": 2.0, "normalisation": "robust-zscore", "method": "mae", "stage": "pretrain"}


def _encoder(in_channels: int, seed: int = 0, **kw) -> ResEncoder:
    torch.manual_seed(seed)
    return ResEncoder(3, in_channels, **{**ARCH, **kw}).eval()


def _unet(in_channels: int, out_channels: int = 3, seed: int = 0, **kw) -> UNet:
    torch.manual_seed(seed)
    return UNet(3, in_channels, out_channels, **{**ARCH, **kw}).eval()


def _assert_features_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_round_trip_gives_identical_outputs_and_a_complete_sidecar(tmp_path):
    src = _unet(4)
    save_weights(src, tmp_path / "model.pt", {**META, "data_fingerprint": "abc123"})
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.pt"]  # no temp files left behind
    dst = _unet(4, seed=1)
    report = load_weights(dst, tmp_path / "model.pt", modalities=MODS4)
    x = torch.randn(2, 4, 8, 8, 8)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    assert not report.adapted and report.prefix == "" and report.kept == MODS4
    side = read_sidecar(tmp_path / "model.pt")
    assert side == read_sidecar(tmp_path / "model.json")
    assert side["architecture"]["class"] == "UNet"
    assert side["architecture"]["config"]["channels"] == [4, 8, 16]
    assert side["modalities"] == MODS4
    assert side["version"] == ssl_pretrain.__version__
    assert {"spacing", "normalisation", "method", "stage", "data_fingerprint", "created"} <= set(side)
    assert side["data_fingerprint"] == "abc123" and side["method"] == "mae"
    # the weights file is a plain state dict that torch loads with weights_only=True
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state.keys() == src.state_dict().keys()


def test_encoder_part_of_a_unet_checkpoint_loads_from_a_run_directory(tmp_path):
    src = _unet(4)
    save_weights(src, tmp_path / "model.pt", META)
    enc = _encoder(4, seed=3)
    report = load_weights(enc, tmp_path, modalities=MODS4)
    assert report.path == tmp_path / "model.pt" and report.prefix == "encoder."
    x = torch.randn(1, 4, 8, 8, 8)
    _assert_features_equal(enc(x), src.encoder(x))


def test_explicit_prefix(tmp_path):
    src = _unet(4)
    save_weights(src, tmp_path / "model.pt", META)
    enc = _encoder(4, seed=3)
    assert load_weights(enc, tmp_path / "model.pt", modalities=MODS4, prefix="encoder.").prefix == "encoder."
    x = torch.randn(1, 4, 8, 8, 8)
    _assert_features_equal(enc(x), src.encoder(x))
    with pytest.raises(CheckpointError, match=r"no tensors under the prefix 'backbone\.'"):
        load_weights(enc, tmp_path / "model.pt", modalities=MODS4, prefix="backbone.")


def test_run_directory_prefers_encoder_pt_for_an_encoder_and_model_pt_for_a_unet(tmp_path):
    save_weights(_unet(4, seed=1), tmp_path / "model.pt", META)
    save_weights(_encoder(4, seed=2), tmp_path / "encoder.pt", META)
    assert load_weights(_encoder(4), tmp_path, modalities=MODS4).path.name == "encoder.pt"
    assert load_weights(_unet(4), tmp_path, modalities=MODS4).path.name == "model.pt"


def test_an_encoder_checkpoint_does_not_silently_half_load_a_unet(tmp_path):
    save_weights(_encoder(4), tmp_path / "encoder.pt", META)
    with pytest.raises(CheckpointError, match=r"encoder\.pt.*model\.encoder"):
        load_weights(_unet(4), tmp_path / "encoder.pt", modalities=MODS4)
    net = _unet(4, seed=5)  # the documented way: into the U-Net's encoder
    load_weights(net.encoder, tmp_path / "encoder.pt", modalities=MODS4)
    x = torch.randn(1, 4, 8, 8, 8)
    _assert_features_equal(net.encoder(x), _encoder(4)(x))


def test_fewer_modalities_equal_the_source_model_with_the_others_zero(tmp_path):
    """Closed form: [T1w] loaded from [T1w, T2w, FA, MD] == the 4-channel model fed T1w and zeros."""
    src = _encoder(4)
    save_weights(src, tmp_path / "encoder.pt", META)
    dst = _encoder(1, seed=7)
    report = load_weights(dst, tmp_path / "encoder.pt", modalities=["T1w"])
    assert report.adapted
    assert (report.kept, report.zero_initialised, report.dropped) == (["T1w"], [], ["T2w", "FA", "MD"])
    t1 = torch.randn(2, 1, 8, 8, 8)
    padded = torch.cat([t1, torch.zeros(2, 3, 8, 8, 8)], dim=1)
    _assert_features_equal(dst(t1), src(padded))


def test_more_and_reordered_modalities_get_zero_weights_for_the_new_one(tmp_path):
    """[PD, MD, T1w, T2w, FA] from [T1w, T2w, FA, MD]: PD is ignored, the rest are permuted."""
    src = _unet(4)
    save_weights(src, tmp_path / "model.pt", META)
    target = ["PD", "MD", "T1w", "T2w", "FA"]
    dst = _unet(5, seed=8)
    report = load_weights(dst, tmp_path / "model.pt", modalities=target)
    assert report.zero_initialised == ["PD"] and report.dropped == [] and sorted(report.kept) == sorted(MODS4)
    x5 = torch.randn(2, 5, 8, 8, 8)
    x4 = x5[:, [2, 3, 4, 1]]  # T1w, T2w, FA, MD
    torch.testing.assert_close(dst(x5), src(x4), rtol=1e-5, atol=1e-6)
    w = dst.state_dict()[UNet.input_weight_key]
    assert torch.count_nonzero(w[:, 0]) == 0


def test_no_shared_modality_is_refused(tmp_path):
    save_weights(_encoder(4), tmp_path / "encoder.pt", META)
    with pytest.raises(CheckpointError, match="shares no modality"):
        load_weights(_encoder(1), tmp_path / "encoder.pt", modalities=["PD"])


def test_modalities_must_match_the_model(tmp_path):
    save_weights(_encoder(4), tmp_path / "encoder.pt", META)
    with pytest.raises(ValueError, match="2 input channels"):
        load_weights(_encoder(2), tmp_path / "encoder.pt", modalities=["T1w"])
    with pytest.raises(ValueError, match="duplicate"):
        load_weights(_encoder(2), tmp_path / "encoder.pt", modalities=["T1w", "T1w"])


def test_other_widths_name_the_first_mismatching_parameter_and_both_shapes(tmp_path):
    save_weights(_encoder(4), tmp_path / "encoder.pt", META)
    wide = _encoder(4, channels=(8, 16, 32))
    with pytest.raises(CheckpointError) as err:
        load_weights(wide, tmp_path / "encoder.pt", modalities=MODS4)
    message = str(err.value)
    assert "encoder.pt" in message
    assert "'stem.conv.weight' has shape (4, 4, 3, 3, 3) in the checkpoint but (8, 4, 3, 3, 3) in the model" in message
    assert "model.channels=[4, 8, 16] in the checkpoint, [8, 16, 32] here" in message
    assert "init=scratch" in message


def test_other_depth_is_refused_and_loads_partially_without_strict_arch(tmp_path):
    save_weights(_encoder(4), tmp_path / "encoder.pt", META)
    deeper = _encoder(4, seed=4, channels=(4, 8, 16, 32), strides=(1, 2, 2, 2))
    with pytest.raises(
        CheckpointError, match=r"architecture mismatch: the model's 'stages\.3\..*' is not in the checkpoint"
    ):
        load_weights(deeper, tmp_path / "encoder.pt", modalities=MODS4)
    report = load_weights(deeper, tmp_path / "encoder.pt", modalities=MODS4, strict_arch=False)
    assert report.missing_keys and all(k.startswith("stages.3.") for k in report.missing_keys)
    torch.testing.assert_close(deeper.stem.conv.weight, _encoder(4).stem.conv.weight)


def test_same_shapes_other_settings_are_refused_under_strict_arch(tmp_path):
    save_weights(_encoder(4, act="relu"), tmp_path / "encoder.pt", META)
    other = _encoder(4, act="elu")  # same tensors, another network
    with pytest.raises(CheckpointError, match=r"model\.act='relu' in the checkpoint, 'elu' here"):
        load_weights(other, tmp_path / "encoder.pt", modalities=MODS4)
    load_weights(other, tmp_path / "encoder.pt", modalities=MODS4, strict_arch=False)


class _Exploit:
    """Unpickling this would create a marker file: weights_only=True must never run it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_objects_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "encoder.pt"
    torch.save({"stem.conv.weight": torch.zeros(1), "x": _Exploit(str(marker))}, path)
    save_weights(_encoder(4), tmp_path / "ok.pt", META)
    os.replace(tmp_path / "ok.json", tmp_path / "encoder.json")
    with pytest.raises(CheckpointError, match=r"encoder\.pt: refused.*weights_only=True"):
        load_weights(_encoder(4), path, modalities=MODS4)
    assert not marker.exists()
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00\x01garbage bytes, not a checkpoint" * 10, "not a PyTorch weights file"),
        (pickle.dumps([1, 2, 3]), "not a PyTorch weights file"),
        (b"PK\x03\x04" + b"\x00" * 100, "not a PyTorch weights file"),
    ],
)
def test_non_checkpoint_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "encoder.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as err:
        load_weights(_encoder(4), path, modalities=MODS4)
    assert str(path) in str(err.value)


def test_truncated_and_non_dict_files_are_refused(tmp_path):
    save_weights(_encoder(4), tmp_path / "encoder.pt", META)
    data = (tmp_path / "encoder.pt").read_bytes()
    (tmp_path / "encoder.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_weights(_encoder(4), tmp_path / "encoder.pt", modalities=MODS4)
    torch.save([torch.zeros(2)], tmp_path / "encoder.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        load_weights(_encoder(4), tmp_path / "encoder.pt", modalities=MODS4)


def test_json_missing_and_sidecar_problems(tmp_path):
    save_weights(_encoder(4), tmp_path / "encoder.pt", META)
    with pytest.raises(CheckpointError, match=r"encoder\.json: is a JSON file"):
        load_weights(_encoder(4), tmp_path / "encoder.json", modalities=MODS4)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(_encoder(4), tmp_path / "nothing.pt", modalities=MODS4)
    with pytest.raises(CheckpointError, match="no weights in this directory"):
        load_weights(_encoder(4), tmp_path / "..", modalities=MODS4)
    (tmp_path / "encoder.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"encoder\.json: sidecar is not readable JSON"):
        load_weights(_encoder(4), tmp_path / "encoder.pt", modalities=MODS4)
    (tmp_path / "encoder.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(CheckpointError, match="not a bssl weights sidecar"):
        load_weights(_encoder(4), tmp_path / "encoder.pt", modalities=MODS4)
    (tmp_path / "encoder.json").unlink()
    with pytest.raises(CheckpointError, match="sidecar missing"):
        load_weights(_encoder(4), tmp_path / "encoder.pt", modalities=MODS4)
    side = {**META, "architecture": {"class": "ResEncoder", "config": {}}, "modalities": ["T1w", "T2w"]}
    (tmp_path / "encoder.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="sidecar lists 2 modalities"):
        load_weights(_encoder(4), tmp_path / "encoder.pt", modalities=MODS4, strict_arch=False)


def test_save_weights_validates_its_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"\.pt"):
        save_weights(_encoder(4), tmp_path / "encoder.bin", META)
    with pytest.raises(ValueError, match="modalities"):
        save_weights(_encoder(4), tmp_path / "encoder.pt", {"method": "mae"})
    with pytest.raises(ValueError, match="input channels"):
        save_weights(_encoder(4), tmp_path / "encoder.pt", {"modalities": ["T1w"]})
    assert not list(tmp_path.iterdir())


def test_a_failed_save_leaves_the_previous_weights_intact(tmp_path, monkeypatch):
    save_weights(_encoder(4), tmp_path / "encoder.pt", META)
    before = (tmp_path / "encoder.pt").read_bytes()

    def crash(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_weights(_encoder(4, seed=9), tmp_path / "encoder.pt", META)
    assert (tmp_path / "encoder.pt").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["encoder.json", "encoder.pt"]


def test_weights_of_an_unfinished_run_are_refused(tmp_path):
    from ssl_pretrain.errors import CheckpointError
    from ssl_pretrain.models.checkpoint import resolve_weights_path
    from ssl_pretrain.run_dir import write_json_atomic

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"")
    write_json_atomic(run / "run.json", {"status": "running"})
    with pytest.raises(CheckpointError, match="did not finish"):
        resolve_weights_path(run)
    write_json_atomic(run / "run.json", {"status": "complete"})
    assert resolve_weights_path(run) == run / "model.pt"
    (run / "run.json").unlink()  # weights copied without a run record are taken as they are
    assert resolve_weights_path(run) == run / "model.pt"
