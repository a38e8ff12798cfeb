"""Global pooling of an encoder's feature maps into the vector the SimCLR / VICReg heads see.

Every convolution of the encoder (:class:`ssl_pretrain.models.unet.ResEncoder`, MONAI residual units) is
followed by instance normalisation, which sets each channel's spatial mean and variance over the patch to
the norm's affine bias and scale, whatever the patch. A stage's output is such a normalised, activated map
plus the residual path (a convolution of the previous stage, whose mean is fixed the same way), so its
per-channel spatial *mean* is nearly the same for every patch and cannot be trained to differ: what varies
is only the shape of each channel's value distribution under the activation. Global average pooling of the
deepest stage, SimCLR's choice for batch-normalised ResNets, therefore hands the head almost no information
about the patch.

``pooling`` chooses the per-channel statistic:

- ``mean``: spatial average (SimCLR's; kept as the baseline),
- ``max``: spatial maximum, which reports *whether* a channel fired strongly anywhere in the patch,
  something instance norm does not fix (a channel that fires at one spot has a large standardised peak),
- ``meanmax``: both, concatenated.

``stages`` chooses which encoder stages are pooled: ``last`` (the deepest only) or ``all`` (every stage's
pooled vector concatenated, fine to coarse), which also gives the shallow stages that feed the U-Net skips a
direct gradient from the objective. The method configs use ``max`` of ``all``; ``mean`` of ``last`` is the
classes' default (SimCLR's).

Measured on the demo cohort (24 simulated subjects, quick-preset encoder ``channels=[8,16,32,64]``,
``num_res_units=[1,1,1,1]``, 24³ patches). At random initialisation (3 seeds, 32 validation patches) the mean
pairwise cosine of pooled vectors of different patches is 0.971-0.979 with ``mean``/``last``, 0.955-0.959 with
``max``/``last`` and 0.931-0.940 with ``max``/``all`` (1 - cos, what differs between patches: 2-3x ``mean``'s).
``bssl pretrain preset=cpu method=simclr "model.channels=[8,16,32,64]" "model.num_res_units=[1,1,1,1]"
data.patch_size=24 trainer.max_steps=200`` (seed 0, quick-preset evidence settings, 4 validation subjects),
frozen-encoder GM/WM probe gap over the random encoder (balanced accuracy; subcortical all / T1w, brainstem
all / T1w) and the trained projections' alignment / uniformity::

    queue 256, momentum 0.99    gaps                              align / unif
    mean    last                +0.057 +0.048 +0.130 +0.055       0.000 / -0.001  (collapsed)
    max     last                +0.077 +0.000 +0.110 +0.027       0.002 / -0.005  (collapsed)
    mean    all                 +0.020 +0.058 +0.100 +0.070       0.002 / -0.005  (collapsed)
    max     all                 +0.065 +0.055 +0.145 +0.070       0.002 / -0.006  (collapsed)
    in-batch negatives (memory_bank_size=0, momentum=0)
    mean    last                +0.057 +0.033 +0.110 +0.105       0.718 / -0.705  (val loss 1.16 > ln 3)
    max     all                 -0.005 +0.060 +0.148 +0.072       0.611 / -0.922  (val loss 0.99 < ln 3)

Every gap's 95 % CI overlaps the others (half-widths 0.03-0.1): at this budget no pooling measurably changes
the probes. ``max`` of ``all`` is the default for what it measurably does: 2-3x more patch-to-patch difference
in the head's input, and with in-batch negatives the only run whose validation NT-Xent fell below chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_pretrain.errors import ConfigError

POOLINGS = ("mean", "max", "meanmax")
POOL_STAGES = ("last", "all")


def check_pooling(pooling: str, stages: str) -> None:
    """Raise ValueError for an unknown ``pooling`` or ``stages``."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if stages not in POOL_STAGES:
        raise ValueError(f"pool stages must be one of {', '.join(POOL_STAGES)}, got {stages!r}")


def check_pooling_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a ``method.pooling`` or ``method.pool_stages`` that is not known."""
    for key, allowed in (("pooling", POOLINGS), ("pool_stages", POOL_STAGES)):
        value = cfg.get(key, allowed[0])
        if value not in allowed:
            raise ConfigError(f"method.{key}", f"must be one of {', '.join(allowed)}, got {value!r}")


def pooled_dim(feature_channels: Sequence[int], pooling: str = "mean", stages: str = "last") -> int:
    """Length F of the pooled vector of an encoder with ``feature_channels`` (fine to coarse)."""
    check_pooling(pooling, stages)
    channels = sum(int(c) for c in feature_channels) if stages == "all" else int(feature_channels[-1])
    return channels * (2 if pooling == "meanmax" else 1)


def pool_maps(features: Sequence[Tensor], pooling: str = "mean", stages: str = "last") -> Tensor:
    """Pool feature maps ``[(B, C_s, X_s, Y_s, Z_s), …]`` (fine to coarse) into ``(B, F)`` float32.

    Per map, ``mean`` and ``max`` give ``(B, C_s)``, ``meanmax`` their concatenation ``(B, 2 C_s)``; with
    ``stages="all"`` the maps' vectors are concatenated in list order, else only the last map is pooled.
    """
    check_pooling(pooling, stages)
    maps = list(features) if stages == "all" else [features[-1]]
    parts = []
    for feature in maps:
        flat = feature.float().flatten(2)  # (B, C, V)
        if pooling in ("mean", "meanmax"):
            parts.append(flat.mean(dim=2))
        if pooling in ("max", "meanmax"):
            parts.append(flat.amax(dim=2))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def pooled_features(encoder: nn.Module, image: Tensor, pooling: str = "mean", stages: str = "last") -> Tensor:
    """The encoder's pooled features of ``image``: ``(B, C, X, Y, Z) -> (B, F)`` (see :func:`pool_maps`)."""
    return pool_maps(encoder(image), pooling, stages)
