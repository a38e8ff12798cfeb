"""build_method on a real (tiny) ResEncoder/UNet for every method; config checks name the key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.batch import IMAGE, IMAGE_B, PRESENCE, PRESENCE_B
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.methods import METHODS, MAESimCLR, build_method, check_method_config, method_class

TINY_MODEL = OmegaConf.create(
    {
        "spatial_dims": 3,
        "channels": [4, 8],
        "strides": [1, 2],
        "num_res_units": 1,
        "subunits": 1,
        "decoder_res_units": 1,
        "kernel_size": 3,
        "norm": ["instance", {"affine": True}],
        "act": ["leakyrelu", {"negative_slope": 0.01}],
        "dropout": 0.0,
        "upsample": "deconv",
    }
)


def method_cfg(name: str, **overrides: object) -> OmegaConf:
    cfg = OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml")
    cfg.merge_with(overrides)
    if "head" in cfg:
        cfg.head.hidden_dim, cfg.head.output_dim = 16, 8
    return cfg


def two_view_batch(b: int = 3, c: int = 2, n: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    image = torch.randn(b, c, n, n, n, generator=g)
    presence = torch.ones(b, c)
    presence[0, 1] = 0
    image[0, 1] = 0
    return {IMAGE: image, PRESENCE: presence, IMAGE_B: image.roll(2, dims=2), PRESENCE_B: presence.clone()}


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_its_encoder(name: str) -> None:
    torch.manual_seed(0)
    method = build_method(method_cfg(name, mask_block=4), TINY_MODEL, 2)
    assert method.name == name and method.views == method_cfg(name).views  # the config's views are the class's
    out = method(two_view_batch(), torch.Generator().manual_seed(1))
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    out["loss"].backward()
    stem = method.encoder.stem.conv.weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0
    if isinstance(method, MAESimCLR):
        expected = method.weight_mae * out["mae"] + method.weight_simclr * out["simclr"]
        assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_mae_masks_are_reproducible_with_the_generator() -> None:
    torch.manual_seed(0)
    method = build_method(method_cfg("mae", mask_block=4), TINY_MODEL, 2)
    batch = two_view_batch()
    a = method(batch, torch.Generator().manual_seed(5))["loss"]
    b = method(batch, torch.Generator().manual_seed(5))["loss"]
    c = method(batch, torch.Generator().manual_seed(6))["loss"]
    assert a.item() == b.item() and a.item() != c.item()


def test_mae_simclr_contrasts_unmasked_views() -> None:
    torch.manual_seed(0)
    method = build_method(method_cfg("mae_simclr", mask_block=4), TINY_MODEL, 2)
    method.eval()  # batch norm in eval mode: the contrastive term depends on the inputs only
    batch = two_view_batch()
    with torch.no_grad():  # no gradient: the memory bank is not updated between the two calls
        simclr = method(batch, torch.Generator().manual_seed(1))["simclr"]
        assert simclr.item() == pytest.approx(method.simclr(batch)["loss"].item(), rel=1e-6)


@pytest.mark.parametrize(
    ("name", "overrides", "patch", "batch", "key"),
    [
        ("byol", {}, 16, 2, "method.name"),
        ("mae", {"mask_block": 5}, 16, 2, "method.mask_block"),
        ("mae", {"mask_block": [4, 4]}, 16, 2, "method.mask_block"),
        ("mae", {"mask_ratio": 1.0}, 16, 2, "method.mask_ratio"),
        ("mae_simclr", {"mask_block": 6}, [16, 16, 12], 2, "method.mask_block"),
        ("simclr", {}, 16, 1, "data.batch_size"),
        ("vicreg", {}, 16, 1, "data.batch_size"),
        ("simclr", {"temperature": 0}, 16, 2, "method.temperature"),
        ("simclr", {"memory_bank_size": -4}, 16, 2, "method.memory_bank_size"),
        ("mae_simclr", {"memory_bank_size": 2.5}, 16, 2, "method.memory_bank_size"),
        ("simclr", {"momentum": 1.0}, 16, 2, "method.momentum"),
        ("vicreg", {"head": {"norm": "group"}}, 16, 2, "method.head.norm"),
        ("vicreg", {"local": {"alpha": 1.5}}, 16, 2, "method.local.alpha"),
        ("simclr", {"pooling": "median"}, 16, 2, "method.pooling"),
        ("vicreg", {"pool_stages": "first"}, 16, 2, "method.pool_stages"),
        ("simclr", {"views": 1}, 16, 2, "method.views"),
        ("mae", {"_target_": "ssl_pretrain.methods.byol.BYOL"}, 16, 2, "method._target_"),
        ("mae", {"_target_": "collections.OrderedDict"}, 16, 2, "method._target_"),
    ],
)
def test_bad_method_config_names_the_key(name: str, overrides: dict, patch: object, batch: int, key: str) -> None:
    cfg = OmegaConf.create({"name": name, **overrides}) if name == "byol" else method_cfg(name, **overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_method_config(cfg, patch, batch)


def test_configs_build_the_faithful_defaults() -> None:
    mae = build_method(method_cfg("mae", mask_block=4), TINY_MODEL, 2)
    assert not mae.loss.norm_target and mae.cross_modal and mae.sparse is None and mae.mask_token is not None
    sparse = build_method(method_cfg("mae", mask_block=4, sparse_norm=True), TINY_MODEL, 2)
    assert sparse.sparse is not None and sparse.mask_token is None
    simclr = build_method(method_cfg("simclr"), TINY_MODEL, 2)
    # in-batch negatives: a queue opens a drift shortcut on the demo cohort (simclr.py)
    assert simclr.loss.temperature == 0.5 and simclr.loss.memory_bank.size == (0,)
    assert simclr.momentum == 0.0 and simclr.momentum_encoder is None
    queued = build_method(method_cfg("simclr", memory_bank_size=16, momentum=0.99), TINY_MODEL, 2)
    assert queued.loss.memory_bank.size == (16, 8) and queued.momentum_encoder is not None
    # max over every stage (4 + 8 channels of TINY_MODEL) feeds the heads: mean pooling is fixed by instance norm
    assert (simclr.pooling, simclr.pool_stages) == ("max", "all") and simclr.embed(torch.randn(2, 2, 8, 8, 8))[
        0
    ].shape == (2, 12)
    both = build_method(method_cfg("mae_simclr", mask_block=4), TINY_MODEL, 2)
    assert both.simclr.loss.memory_bank.size == (0,) and both.simclr.momentum == 0.0 and both.mae.cross_modal
    vicreg = build_method(method_cfg("vicreg"), TINY_MODEL, 2)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in vicreg.head.modules())
    assert (vicreg.pooling, vicreg.pool_stages) == ("max", "all")
    assert vicreg.alpha == 0.75 and vicreg.local is not None and vicreg.local.stages == [0]  # all but the deepest
    assert build_method(method_cfg("vicreg", local={"alpha": 1.0}), TINY_MODEL, 2).local is None
    batch_norm_model = OmegaConf.merge(TINY_MODEL, {"norm": "batch"})
    with pytest.raises(ConfigError, match=r"method\.sparse_norm"):
        build_method(method_cfg("mae", mask_block=4, sparse_norm=True), batch_norm_model, 2)


def test_local_stages_outside_the_encoder_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"method\.local"):
        build_method(method_cfg("vicreg", local={"stages": [5]}), TINY_MODEL, 2)


@pytest.mark.parametrize("name", METHODS)
def test_a_config_recorded_without_target_builds_the_same_method(name: str) -> None:
    """Runs recorded before configs carried ``_target_`` (config.yaml, checkpoint hyperparameters) name the
    method only: its class is the one configs/method/<name>.yaml names, with the same weights."""
    cfg = method_cfg(name, mask_block=4)
    recorded = OmegaConf.create({k: v for k, v in cfg.items() if k != "_target_"})
    assert method_class(recorded) is method_class(cfg)
    torch.manual_seed(0)
    current = build_method(cfg, TINY_MODEL, 2).state_dict()
    torch.manual_seed(0)
    old = build_method(recorded, TINY_MODEL, 2).state_dict()
    assert current.keys() == old.keys() and all(torch.equal(current[k], old[k]) for k in current)
