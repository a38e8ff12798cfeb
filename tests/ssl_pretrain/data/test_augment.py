"""TorchIO patch augmentation: config keys, label consistency, context margin, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.augment import (
    RandomAffineCrop,
    RandomGain,
    augment_margin,
    build_augment,
    build_view_augment,
    split_augment,
)
from ssl_pretrain.errors import ConfigError

OFF = {name: {"p": 0.0} for name in ("affine", "elastic", "flip", "bias_field", "gamma", "noise", "motion", "ghosting")}


def subject(image: torch.Tensor, label: torch.Tensor) -> tio.Subject:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    return tio.Subject(
        image=tio.ScalarImage(tensor=image, affine=affine), label=tio.LabelMap(tensor=label, affine=affine)
    )


def test_default_config_builds_and_returns_patch_shaped_tensors() -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml").augmentation
    patch = (16, 16, 16)
    margin = augment_margin(cfg, patch, spacing=2.0)
    assert all(m > 0 for m in margin)
    compose = build_augment(cfg, patch)
    names = [type(t).__name__ for t in compose.transforms]
    assert names == [
        "RandomFlip",
        "RandomAffineCrop",
        "SeparableBiasField",
        "RandomGamma",
        "LocalSeedNoise",
        "RandomMotion",
        "RandomGhosting",
    ]
    size = tuple(p + 2 * m for p, m in zip(patch, margin, strict=True))
    label = torch.randint(0, 4, (1, *size))
    torch.manual_seed(0)
    out = compose(subject(torch.randn(2, *size), label))
    assert out["image"].data.shape == (2, *patch) and out["label"].data.shape == (1, *patch)
    assert set(out["label"].data.unique().tolist()) <= {0, 1, 2, 3}  # nearest neighbour keeps label values


def test_flip_moves_image_and_labels_together_left_right() -> None:
    cfg = {**OFF, "flip": {"p": 1.0}}
    image = torch.arange(2 * 4 * 3 * 2, dtype=torch.float32).reshape(2, 4, 3, 2)
    label = (torch.arange(4 * 3 * 2).reshape(1, 4, 3, 2) % 5).long()
    out = build_augment(cfg, (4, 3, 2))(subject(image.clone(), label.clone()))
    assert torch.equal(out["image"].data, image.flip(1))
    assert torch.equal(out["label"].data, label.flip(1))


@pytest.mark.parametrize(
    ("scales", "degrees"),
    [
        ((1.1, 0.95, 1.0), (0.0, 0.0, 0.0)),
        ((1.0, 1.0, 1.0), (10.0, 0.0, 0.0)),
        ((1.0, 1.0, 1.0), (0.0, 0.0, -10.0)),
        ((0.9, 1.1, 1.05), (7.0, -5.0, 9.0)),
    ],
)
def test_fused_affine_crop_equals_torchio_affine_then_crop(scales: tuple, degrees: tuple) -> None:
    """Reference: ``tio.Affine`` with the same parameters on the whole box, then the centre crop."""
    n, out = 36, 20
    g = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij")).astype(np.float32)
    image = torch.from_numpy(np.stack([np.sin(g[0] / 5) + np.cos(g[1] / 7) * g[2] / 20, g[0] * g[1] / n**2]))
    labels = torch.from_numpy((np.floor(g[0] / 6) + 3 * (g[2] > 17))[None].astype(np.int64))
    ref = tio.Affine(scales=scales, degrees=degrees, translation=(0, 0, 0))(subject(image.clone(), labels.clone()))
    fused = RandomAffineCrop((out,) * 3, copy=False)
    fused.draw = lambda: (np.asarray(scales), np.asarray(degrees))  # type: ignore[method-assign]
    mine = fused(subject(image.clone(), labels.clone()))
    lo = (n - out) // 2
    box = (slice(None), *(slice(lo, lo + out),) * 3)
    torch.testing.assert_close(mine["image"].data, ref["image"].data[box], atol=1e-5, rtol=0)
    agree = (mine["label"].data == ref["label"].data[box]).float().mean()
    assert agree > 0.995  # nearest neighbour: ties on exact voxel boundaries may round either way
    assert mine["label"].data.dtype == torch.int64
    np.testing.assert_allclose(mine["image"].affine[:3, 3], [2.0 * lo] * 3)  # the output grid is the box


def test_fused_affine_crop_without_a_draw_is_an_exact_crop() -> None:
    image = torch.randn(2, 30, 28, 26)
    labels = torch.randint(0, 5, (1, 30, 28, 26))
    out = RandomAffineCrop((20, 20, 20), affine_probability=0.0, copy=False)(subject(image, labels))
    assert torch.equal(out["image"].data, image[:, 5:25, 4:24, 3:23])
    assert torch.equal(out["label"].data, labels[:, 5:25, 4:24, 3:23])
    with pytest.raises(ValueError, match="smaller than the patch"):
        RandomAffineCrop((40, 40, 40), copy=False)(
            subject(torch.randn(1, 30, 30, 30), torch.zeros(1, 30, 30, 30, dtype=torch.long))
        )


def test_margin_keeps_padding_out_of_the_patch_under_the_strongest_affine() -> None:
    """Scale 0.9 (zoom out) and 10 degrees about every axis: the labels of an all-ones box padded with 0
    stay all ones after the centre crop when the margin is used, and not without it."""
    cfg = {**OFF, "affine": {"p": 1.0, "scales": [0.9, 0.9], "degrees": [10, 10]}}
    patch = (20, 20, 20)
    margin = augment_margin(cfg, patch, spacing=2.0)
    compose = build_augment(cfg, patch)
    size = tuple(p + 2 * m for p, m in zip(patch, margin, strict=True))
    torch.manual_seed(0)
    out = compose(subject(torch.ones(1, *size), torch.ones(1, *size, dtype=torch.long)))
    assert out["label"].data.min() == 1
    tight = compose(subject(torch.ones(1, *patch), torch.ones(1, *patch, dtype=torch.long)))
    assert tight["label"].data.min() == 0


def test_margin_is_zero_without_spatial_transforms_and_grows_with_elastic() -> None:
    assert augment_margin(OFF, (32, 32, 32), 2.0) == (0, 0, 0)
    elastic = {**OFF, "elastic": {"p": 0.5, "max_displacement": 8.0}}
    assert augment_margin(elastic, (32, 32, 32), 2.0) == (5, 5, 5)  # 8 mm / 2 mm + 1


def test_same_seed_same_output() -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml").augmentation
    compose = build_augment(cfg, (12, 12, 12))
    size = (12 + 2 * augment_margin(cfg, (12, 12, 12), 2.0)[0],) * 3
    image, label = torch.randn(3, *size), torch.randint(0, 3, (1, *size))
    outs = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        outs.append(compose(subject(image.clone(), label.clone()))["image"].data)
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"rotate": {"p": 0.5}}, "data.augmentation"),
        ({"affine": {"p": 0.5, "shear": 3}}, "data.augmentation.affine"),
        ({"noise": {"p": 1.5}}, "data.augmentation.noise.p"),
        ({"gamma": {"p": -0.1}}, "data.augmentation.gamma.p"),
        ({"affine": {"p": 0.5, "scales": -3}}, "data.augmentation"),
    ],
)
def test_bad_config_names_the_key(cfg: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_augment(cfg, (16, 16, 16))


def test_only_torchio_public_api_is_used() -> None:
    """The augmentation imports ``torchio`` itself only (no ``torchio.transforms.*`` internals), and the fused
    crop is a public ``tio.SpatialTransform`` that ``tio.Compose`` drives through ``apply_transform``."""
    import ast
    import inspect

    from ssl_pretrain.data import augment, sampler

    for module in (augment, sampler):
        tree = ast.parse(inspect.getsource(module))
        private = [
            node.module if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
            if ((node.module if isinstance(node, ast.ImportFrom) else alias.name) or "").startswith("torchio.")
        ]
        assert private == [], f"{module.__name__} imports TorchIO internals: {private}"
    crop = RandomAffineCrop((4, 4, 4), copy=False)
    assert isinstance(crop, tio.SpatialTransform) and not isinstance(crop, tio.IntensityTransform)
    out = tio.Compose([crop])(subject(torch.randn(1, 6, 6, 6), torch.zeros(1, 6, 6, 6, dtype=torch.long)))
    assert out["image"].data.shape == (1, 4, 4, 4)


def test_affine_draws_are_uniform_in_the_configured_ranges() -> None:
    crop = RandomAffineCrop((4, 4, 4), scales=(0.8, 0.9), degrees=5, copy=False)
    assert crop.scales == (0.8, 0.9) * 3 and crop.degrees == (-5.0, 5.0) * 3
    torch.manual_seed(0)
    draws = [crop.draw() for _ in range(200)]
    scales = np.stack([d[0] for d in draws])
    degrees = np.stack([d[1] for d in draws])
    assert scales.min() >= 0.8 and scales.max() <= 0.9 and np.all(np.abs(degrees) <= 5)
    assert scales.std(axis=0).min() > 0.02 and degrees.std(axis=0).min() > 2  # each axis drawn on its own
    with pytest.raises(ValueError, match="scales"):
        RandomAffineCrop((4, 4, 4), scales=1.5)


def test_split_augment_applies_spatial_then_intensity_like_the_whole() -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml").augmentation
    compose = build_augment(cfg, (8, 8, 8))
    spatial, intensity = split_augment(compose)
    assert [type(t).__name__ for t in spatial.transforms] == ["RandomFlip", "RandomAffineCrop"]
    assert all(isinstance(t, tio.IntensityTransform) for t in intensity.transforms)
    assert split_augment(None) == (None, None)
    with pytest.raises(ValueError, match="before a spatial"):
        split_augment(tio.Compose([tio.RandomNoise(), tio.RandomFlip()]))


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"blur": {}}, "data.view_augmentation"),
        ({"gain": {"gain": 0.2}}, "data.view_augmentation.gain"),
        ({"noise": {"std": [0.1, 0.2, 0.3]}}, "data.view_augmentation.noise.std"),
    ],
)
def test_bad_view_augmentation_names_the_key(cfg: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_view_augment(cfg)


def test_random_gain_scales_each_channel_and_keeps_zeros() -> None:
    x = torch.ones(3, 2, 2, 2)
    x[1] = 0
    torch.manual_seed(0)
    y = RandomGain(0.3)(x)
    gains = y.flatten(1)[:, 0]
    assert torch.all(y[1] == 0) and torch.all((gains[[0, 2]] >= np.exp(-0.3)) & (gains[[0, 2]] <= np.exp(0.3)))
    assert torch.equal(y, gains.view(3, 1, 1, 1).expand_as(y) * x) and gains[0] != gains[2]
