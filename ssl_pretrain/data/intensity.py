"""TorchIO's bias field and Gaussian noise, with TorchIO's parameter draws and a cheaper computation.

Both are subclasses of the TorchIO transform they replace, so ``p``, ``include``/``exclude`` and ``tio.Compose``
work as before, and they draw their parameters with the parent's own ``get_params`` from torch's global
generator, in the same order (with the one draw of TorchIO's inner transform: :func:`skip_inner_transform_draw`):
a patch seeded the same way gets the same bias field and the same noise, and every later transform the same draws.

* :class:`SeparableBiasField` (``tio.RandomBiasField``): TorchIO builds the order-``n`` polynomial term by term
  over the whole patch, 20 full-volume products at order 3 (about 4 ms on a 24³ patch on this project's 2-core
  machine, a sixth of fetching a training item). The polynomial is separable, ``sum_abc c_abc x^a y^b z^c``, so
  it is three small contractions of per-axis powers here, on TorchIO's grid (``(i + 0.5 - n/2)`` scaled to a
  maximum of 1 per axis). The field agrees with TorchIO's to float32 rounding.
* :class:`LocalSeedNoise` (``tio.RandomNoise``): TorchIO draws the noise after ``torch.manual_seed(seed)``,
  which also queues a lazy seed for each accelerator backend with a formatted stack trace (0.5-2 ms a call,
  more in a deep call stack such as Lightning's loop), then restores the global generator. A CPU generator
  seeded with the same seed yields the same numbers: the noise is bit-identical and the global generator is
  left as TorchIO leaves it.

``tests/ssl_pretrain/data/test_intensity.py`` checks both against TorchIO.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torchio as tio


def polynomial_bias_field(shape: Sequence[int], order: int, coefficients: Sequence[float]) -> np.ndarray:
    """``exp`` of TorchIO's bias-field polynomial on a grid of ``shape`` ``(X, Y, Z)``: float32 ``(X, Y, Z)``.

    ``coefficients`` are in TorchIO's order: ``a`` (x power) outermost, then ``b``, then ``c``, ``a + b + c <= order``.
    """
    grid = []
    for n in shape:
        axis = np.arange(-n / 2, n / 2) + 0.5  # TorchIO's coordinates: voxel centres about the middle
        top = axis.max()
        grid.append(axis / top if top > 0 else axis)
    powers = [np.stack([axis**p for p in range(order + 1)], axis=1) for axis in grid]  # (n, order + 1) per axis
    table = np.zeros((order + 1,) * 3)
    terms = [(a, b, c) for a in range(order + 1) for b in range(order + 1 - a) for c in range(order + 1 - a - b)]
    if len(coefficients) != len(terms):
        raise ValueError(f"order {order} takes {len(terms)} coefficients, got {len(coefficients)}")
    for (a, b, c), value in zip(terms, coefficients, strict=True):
        table[a, b, c] = value
    vx, vy, vz = powers
    yz = np.einsum("jb,kc,abc->ajk", vy, vz, table, optimize=True)  # (order + 1, Y, Z)
    return np.exp(np.einsum("ia,ajk->ijk", vx, yz, optimize=True)).astype(np.float32)


def skip_inner_transform_draw() -> None:
    """Draw what TorchIO's inner transform draws: a random transform applies its parameters through a second
    transform (``tio.BiasField``, ``tio.Noise``) whose ``p = 1`` check takes one ``torch.rand(1)``. Drawing it too
    leaves torch's global generator where TorchIO leaves it, so the transforms after this one draw the same."""
    torch.rand(1)


class SeparableBiasField(tio.RandomBiasField):
    """``tio.RandomBiasField`` (same arguments, same draws) computing the polynomial separably."""

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        images = self.get_images_dict(subject)
        drawn = {name: self.get_params(self.order, self.coefficients_range) for name in images}  # TorchIO's order
        skip_inner_transform_draw()
        for name, image in images.items():
            field = polynomial_bias_field(image.data.shape[1:], self.order, drawn[name])
            image.set_data(image.data * torch.from_numpy(field))
        return subject


class LocalSeedNoise(tio.RandomNoise):
    """``tio.RandomNoise`` (same arguments, same draws, the same noise) drawing from a local generator."""

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        images = self.get_images_dict(subject)
        drawn = {name: self.get_params(self.mean_range, self.std_range) for name in images}  # TorchIO's order
        skip_inner_transform_draw()
        for name, image in images.items():
            mean, std, seed = drawn[name]
            generator = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(*image.data.shape, generator=generator) * std + mean
            image.set_data(image.data + noise)
        return subject
