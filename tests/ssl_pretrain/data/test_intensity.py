"""The bias field and the noise of ssl_pretrain.data.intensity against TorchIO's own transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchio as tio
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.augment import augment_margin, build_augment
from ssl_pretrain.data.intensity import LocalSeedNoise, SeparableBiasField, polynomial_bias_field


def patch(shape: tuple[int, ...] = (2, 9, 8, 7)) -> tio.Subject:
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(shape, generator=generator) + 0.5
    label = torch.randint(0, 3, (1, *shape[1:]), generator=generator)
    return tio.Subject(image=tio.ScalarImage(tensor=image), label=tio.LabelMap(tensor=label))


@pytest.mark.parametrize("shape", [(24, 24, 24), (9, 8, 7), (1, 5, 2), (38, 38, 38)])
@pytest.mark.parametrize("order", [0, 1, 3, 4])
def test_polynomial_bias_field_is_torchios(shape: tuple[int, int, int], order: int) -> None:
    n_terms = sum(order + 1 - a - b for a in range(order + 1) for b in range(order + 1 - a))
    coefficients = np.random.default_rng(order).uniform(-0.5, 0.5, n_terms).tolist()
    reference = tio.BiasField.generate_bias_field(torch.zeros(1, *shape), order, coefficients)
    ours = polynomial_bias_field(shape, order, coefficients)
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=0)
    assert np.ptp(ours) > 0.05 or order == 0 or min(shape) == 1  # a field that varies, not a constant


def test_polynomial_bias_field_refuses_the_wrong_number_of_coefficients() -> None:
    with pytest.raises(ValueError, match="order 3 takes 20 coefficients, got 4"):
        polynomial_bias_field((4, 4, 4), 3, [0.1] * 4)


@pytest.mark.parametrize("ours, theirs", [(SeparableBiasField, tio.RandomBiasField), (LocalSeedNoise, tio.RandomNoise)])
def test_same_draws_same_output_same_generator_state_as_torchio(ours: type, theirs: type) -> None:
    kwargs = {"coefficients": 0.4} if theirs is tio.RandomBiasField else {"std": (0.0, 0.1)}
    outputs, states = [], []
    for transform in (ours(p=1.0, copy=False, **kwargs), theirs(p=1.0, copy=False, **kwargs)):
        torch.manual_seed(11)
        out = transform(patch())
        outputs.append(out)
        states.append(torch.random.get_rng_state())
    mine, reference = outputs
    torch.testing.assert_close(mine["image"].data, reference["image"].data, rtol=1e-6, atol=1e-7)
    assert torch.equal(mine["label"].data, reference["label"].data)  # intensity transforms leave labels alone
    assert not torch.equal(mine["image"].data, patch()["image"].data)  # it did something
    assert torch.equal(states[0], states[1])  # the next transform draws what it would after TorchIO's


def test_noise_is_bit_identical_to_torchios() -> None:
    torch.manual_seed(5)
    mine = LocalSeedNoise(std=0.05, copy=False)(patch())["image"].data
    torch.manual_seed(5)
    reference = tio.RandomNoise(std=0.05, copy=False)(patch())["image"].data
    assert torch.equal(mine, reference)


def test_probability_and_include_work_as_in_torchio() -> None:
    subject = patch()
    before = subject["image"].data.clone()
    assert torch.equal(SeparableBiasField(p=0.0, copy=False)(subject)["image"].data, before)
    two = tio.Subject(a=tio.ScalarImage(tensor=before.clone()), b=tio.ScalarImage(tensor=before.clone()))
    out = LocalSeedNoise(std=0.1, include=["a"], copy=False)(two)
    assert not torch.equal(out["a"].data, before) and torch.equal(out["b"].data, before)


def test_the_default_augmentation_gives_what_torchios_transforms_give() -> None:
    """The whole default pipeline (every transform always applied) with TorchIO's bias field and noise in place of
    these: the same patch, so later transforms (motion, ghosting) drew the same."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "data" / "default.yaml").augmentation)
    for section in cfg.values():
        section["p"] = 1.0
    cfg["elastic"]["p"] = 0.0
    ours = build_augment(cfg, (12, 12, 12))
    theirs = []
    for t in ours.transforms:
        if isinstance(t, SeparableBiasField):
            t = tio.RandomBiasField(coefficients=t.coefficients_range, order=t.order, copy=False)
        elif isinstance(t, LocalSeedNoise):
            t = tio.RandomNoise(mean=t.mean_range, std=t.std_range, copy=False)
        theirs.append(t)
    assert [type(t) for t in theirs] != [type(t) for t in ours.transforms]
    size = tuple(12 + 2 * m for m in augment_margin(cfg, (12, 12, 12), spacing=2.0))
    outputs = []
    for compose in (ours, tio.Compose(theirs, copy=False)):
        torch.manual_seed(2)
        outputs.append(compose(patch((2, *size))))
    torch.testing.assert_close(outputs[0]["image"].data, outputs[1]["image"].data, rtol=1e-5, atol=1e-6)
    assert torch.equal(outputs[0]["label"].data, outputs[1]["label"].data)
