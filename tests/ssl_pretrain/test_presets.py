"""Every preset's patch fits inside the brain: a patch larger than the head is mostly background."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssl_pretrain.config import compose_config
from ssl_pretrain.data.grid import parse_patch_size, parse_spacing
from ssl_pretrain.methods.masking import as_block

PRESETS = [  # (command, its preset override): the single-command presets and the study presets
    ("pretrain", "preset=cpu"),
    ("pretrain", "preset=gpu"),
    ("finetune", "preset=cpu"),
    ("finetune", "preset=gpu"),
    ("study", "study_preset=quick"),
    ("study", "study_preset=full"),
]


@pytest.fixture(scope="module")
def brain_box_mm() -> np.ndarray:
    """Extent (mm, x y z) of the demo cohort's template brain (ICBM 2009 mask, ssl_pretrain.data.demo)."""
    from ssl_pretrain.data.demo.anatomy import build_anatomy

    box = build_anatomy().brain_bbox
    return box[1] - box[0]


@pytest.mark.parametrize(("command", "preset"), PRESETS)
def test_preset_patches_fit_inside_the_brain_box(command: str, preset: str, brain_box_mm: np.ndarray) -> None:
    cfg = compose_config(command, [preset])
    patch = np.asarray(parse_patch_size(cfg.data.patch_size))
    extent = patch * parse_spacing(cfg.data.spacing)
    assert np.all(extent <= brain_box_mm), f"{preset}: {extent} mm patches vs a {brain_box_mm} mm brain"
    assert np.all(extent >= 0.25 * brain_box_mm.min()), f"{preset}: {extent} mm patches see too little context"


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_preset_patches_suit_their_network_and_mask(preset: str) -> None:
    cfg = compose_config("pretrain", [f"preset={preset}", "method=mae"])
    patch = np.asarray(parse_patch_size(cfg.data.patch_size))
    assert np.all(patch % math.prod(cfg.model.strides) == 0)  # a whole number of deepest-stage voxels
    assert np.all(patch % np.asarray(as_block(cfg.method.mask_block)) == 0)


def test_the_old_gpu_patch_would_fail(brain_box_mm: np.ndarray) -> None:
    """The check can fail: 128³ at 2 mm (the former gpu preset) is a 256 mm cube."""
    assert not np.all(np.full(3, 128 * 2.0) <= brain_box_mm)
