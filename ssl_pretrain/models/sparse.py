"""SparK-style sparse encoding of masked inputs: convolutions and instance norms that ignore masked voxels.

Tian, Jiang, Yuan, Wang, Wang, "Designing BERT for Convolutional Networks: Sparse and Hierarchical
Masked Modeling" (SparK), ICLR 2023 (https://arxiv.org/abs/2301.03580), and its 3D port for brain MRI in
MIC-DKFZ/nnssl (``SparseInstanceNorm3d``; Wald et al., "An OpenMind for 3D medical vision
self-supervised learning", 2024, https://arxiv.org/abs/2412.17041). A dense convolutional encoder fed a
75 %-masked volume computes its normalisation statistics over mostly empty voxels, and fine-tuning then
feeds it unmasked inputs with other statistics. SparK treats the visible voxels as a sparse set: after
every convolution the masked positions are zeroed again, and normalisation statistics come from the
visible positions only.

:class:`SparseMasking` does this to an existing encoder with forward hooks (PyTorch's public hook API),
so the encoder's modules, parameters and state dict stay exactly those of the dense encoder that is
saved and fine-tuned: outside a :meth:`SparseMasking.visible` block nothing changes. Inside it, for a
visible mask ``m`` (1 = visible) at the input resolution:

- the encoder's input is multiplied by ``m`` (masked voxels are empty, whatever fills them);
- every ``nn.Conv3d`` output is multiplied by ``m`` at its resolution;
- every ``nn.InstanceNorm3d`` output is replaced by ``((x - μ) / sqrt(σ² + eps) · γ + β) · m``, with μ and
  σ² the mean and (biased) variance of ``x`` over the visible voxels of each sample and channel.

A coarse voxel counts as visible when any input voxel under it is (max-pooling of ``m``); with the mask
block at least the encoder's total stride this is exact at every stage. SparK's decoder additionally
fills masked positions with a learned token at each scale; here the U-Net decoder sees zeros there and
fills them from their neighbours.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sparse_instance_norm(x: Tensor, visible: Tensor, norm: nn.InstanceNorm3d) -> Tensor:
    """Instance norm of ``x`` ``(B, C, X, Y, Z)`` with statistics over ``visible`` ``(B, 1, X, Y, Z)`` voxels only.

    Returns ``(B, C, X, Y, Z)`` in ``x``'s dtype, zero at masked voxels; a sample without visible voxels
    gives zeros. Uses ``norm``'s ``eps`` and affine parameters (if any).
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32  # half precision: statistics in fp32
    xf, m = x.to(work), visible.to(work)
    n = m.sum(dim=(2, 3, 4), keepdim=True).clamp_min(1.0)
    mean = (xf * m).sum(dim=(2, 3, 4), keepdim=True) / n
    var = ((xf - mean) ** 2 * m).sum(dim=(2, 3, 4), keepdim=True) / n
    out = (xf - mean) / torch.sqrt(var + norm.eps)
    if norm.affine and norm.weight is not None and norm.bias is not None:
        out = out * norm.weight.to(work).view(1, -1, 1, 1, 1) + norm.bias.to(work).view(1, -1, 1, 1, 1)
    return (out * m).to(x.dtype)


class SparseMasking:
    """Make ``encoder`` sparse (SparK) inside :meth:`visible` blocks; dense everywhere else.

    Args:
        encoder: a 3D convolutional encoder (its ``nn.Conv3d`` and ``nn.InstanceNorm3d`` modules get hooks).

    Raises:
        ValueError: the encoder has a batch norm (SparK's sparse batch norm is not implemented here) or no
            instance norm to make sparse.
    """

    def __init__(self, encoder: nn.Module) -> None:
        self._visible: Tensor | None = None
        self._cache: dict[tuple[int, ...], Tensor] = {}
        convs = [m for m in encoder.modules() if isinstance(m, nn.Conv3d)]
        norms = [m for m in encoder.modules() if isinstance(m, nn.InstanceNorm3d)]
        batch_norms = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
        if any(isinstance(m, batch_norms) for m in encoder.modules()):
            raise ValueError("sparse normalisation supports instance norm only (model.norm: instance)")
        if not norms:
            raise ValueError("sparse normalisation needs an encoder with instance norms (model.norm: instance)")
        self.handles = [encoder.register_forward_pre_hook(self._input_hook)]
        self.handles += [m.register_forward_hook(self._conv_hook) for m in convs]
        self.handles += [m.register_forward_hook(self._norm_hook) for m in norms]

    @property
    def active(self) -> bool:
        """Whether a visible mask is set (inside :meth:`visible`)."""
        return self._visible is not None

    @contextmanager
    def visible(self, mask: Tensor) -> Iterator[None]:
        """Encode sparsely inside this block.

        Args:
            mask: ``(B, 1, X, Y, Z)`` at the encoder's input resolution, **1 = visible** (0 = masked).
        """
        self._visible, self._cache = mask, {}
        try:
            yield
        finally:
            self._visible, self._cache = None, {}

    def at(self, shape: torch.Size) -> Tensor:
        """The visible mask at the spatial size of a ``(B, C, x, y, z)`` feature map (max-pooled)."""
        assert self._visible is not None
        key = tuple(int(s) for s in shape[2:])
        if key not in self._cache:
            full = self._visible
            factor = [int(f) // int(s) for f, s in zip(full.shape[2:], key, strict=True)]
            if any(int(f) % int(s) for f, s in zip(full.shape[2:], key, strict=True)):
                raise ValueError(f"feature map {key} does not tile the masked input {tuple(full.shape[2:])}")
            self._cache[key] = F.max_pool3d(full.float(), factor, factor) if max(factor) > 1 else full.float()
        return self._cache[key]

    def _input_hook(self, module: nn.Module, inputs: Any) -> tuple[Any, ...] | None:
        if self._visible is None:
            return None
        x, *rest = inputs
        return (x * self.at(x.shape).to(x.dtype), *rest)

    def _conv_hook(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        if self._visible is None:
            return None
        return output * self.at(output.shape).to(output.dtype)

    def _norm_hook(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
        if self._visible is None:
            return None
        x = inputs[0]
        return sparse_instance_norm(x, self.at(x.shape), module)  # type: ignore[arg-type]

    def remove(self) -> None:
        """Remove the hooks (the encoder is dense again for good)."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
