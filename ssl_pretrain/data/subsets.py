"""Which modalities a training patch shows: explicit modality subsets (``data.modality_subsets``).

Deployment sees a few fixed inputs (every modality; T1w alone, the commonest clinical and follow-up scan)
rather than independent per-modality coin flips: with a dropout of 0.25 on each of four modalities,
T1w-only patches are about 1 % of training. ``data.modality_subsets`` therefore names the share of each
input a patch is shown, drawn per patch (per view for two-view methods):

- ``all``: every modality the subject has;
- ``random``: each modality the subject has is dropped with probability ``data.modality_dropout``, never
  leaving fewer than ``data.min_modalities`` (the former behaviour, kept for variety);
- ``T1w``, ``T1w+T2w``, …: exactly these modalities (``+``-joined ``data.modalities`` names). A subject
  lacking some of them shows those it has; a subject lacking all of them (e.g. no T1w) shows every
  modality it has, as ``all`` would: it never gets an empty input and never an input it cannot have.

Weights are probabilities and must sum to 1 (Hydra merges a mapping override into the default, so an
override sets every entry, e.g. ``data.modality_subsets.T1w=0.5 data.modality_subsets.random=0``).
``null`` (or ``{}``) keeps per-modality dropout alone.
Dropped modalities are zero channels with ``presence`` 0; with cross-modal MAE targets they are still
reconstructed (:mod:`ssl_pretrain.methods.mae`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ssl_pretrain.errors import ConfigError

ALL, RANDOM = "all", "random"
KEY = "data.modality_subsets"


@dataclass(frozen=True)
class ModalitySubset:
    """One entry of ``data.modality_subsets``.

    Attributes:
        name: ``all``, ``random`` or ``+``-joined modality names.
        channels: channel indices of an explicit subset (``None`` for ``all`` and ``random``).
        weight: probability of drawing it.
    """

    name: str
    channels: tuple[int, ...] | None
    weight: float


def parse_modality_subsets(cfg: Mapping[str, Any] | None, modalities: Sequence[str]) -> tuple[ModalitySubset, ...]:
    """Validate ``data.modality_subsets`` against ``data.modalities``.

    Args:
        cfg: subset name -> weight (``None`` or empty: no subsets).
        modalities: channel names in order.

    Returns:
        The subsets in config order (empty when ``cfg`` is empty).

    Raises:
        ConfigError: naming ``data.modality_subsets`` for an unknown modality, a repeated one, a weight that
            is negative or not a number, or weights that do not sum to 1.
    """
    if not cfg:
        return ()
    if not isinstance(cfg, Mapping):
        raise ConfigError(KEY, f"expected a mapping subset -> weight, e.g. {{T1w: 0.25, all: 0.75}}, got {cfg!r}")
    subsets = []
    for name, weight in cfg.items():
        name = str(name)
        try:
            w = float(weight)
        except (TypeError, ValueError):
            w = float("nan")
        if isinstance(weight, bool) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"{KEY}.{name}", f"weight must be a number >= 0, got {weight!r}")
        subsets.append(ModalitySubset(name, _channels(name, modalities), w))
    total = sum(s.weight for s in subsets)
    if abs(total - 1.0) > 1e-6:
        shares = {s.name: s.weight for s in subsets}
        raise ConfigError(
            KEY,
            f"weights must sum to 1, got {total:g} ({shares}); a mapping override is merged into the default, "
            "so set every entry (e.g. data.modality_subsets.random=0) or replace it with "
            "'~data.modality_subsets' '+data.modality_subsets={T1w:0.5,all:0.5}'",
        )
    return tuple(subsets)


def _channels(name: str, modalities: Sequence[str]) -> tuple[int, ...] | None:
    if name in (ALL, RANDOM):
        return None
    parts = name.split("+")
    unknown = [p for p in parts if p not in modalities]
    if unknown:
        raise ConfigError(
            f"{KEY}.{name}", f"unknown modality {unknown[0]!r}; use all, random or +-joined names of {list(modalities)}"
        )
    if len(set(parts)) != len(parts):
        raise ConfigError(f"{KEY}.{name}", "a modality is named twice")
    return tuple(modalities.index(p) for p in parts)


def draw_subset(subsets: Sequence[ModalitySubset], rng: np.random.Generator) -> ModalitySubset:
    """One subset drawn with probability ``weight`` (no random number is used when there is only one)."""
    if len(subsets) == 1:
        return subsets[0]
    cumulative = np.cumsum([s.weight for s in subsets])
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return subsets[min(index, len(subsets) - 1)]


def random_dropout(acquired: np.ndarray, rng: np.random.Generator, p: float, floor: int) -> np.ndarray:
    """Drop each acquired modality with probability ``p``, keeping at least ``min(floor, acquired)``.

    Args:
        acquired: ``(C,)`` bool, True = the subject has the modality.
        rng: the item's generator.
        p: drop probability per modality.
        floor: modalities that always remain (dropped ones are restored at random up to it).

    Returns:
        ``(C,)`` bool, True = kept.
    """
    present = np.flatnonzero(acquired)
    drop = rng.random(len(present)) < p
    excess = min(floor, len(present)) - int((~drop).sum())
    if excess > 0:
        restore = rng.choice(np.flatnonzero(drop), size=excess, replace=False)
        drop[restore] = False
    kept = np.asarray(acquired, dtype=bool).copy()
    kept[present[drop]] = False
    return kept


def keep_modalities(
    subset: ModalitySubset, acquired: np.ndarray, rng: np.random.Generator, dropout: float, floor: int
) -> np.ndarray:
    """The modalities a patch shows under ``subset`` (see the module docstring).

    Args:
        subset: the drawn subset.
        acquired: ``(C,)`` bool, True = the subject has the modality.
        rng: the item's generator (used by ``random`` only).
        dropout / floor: ``data.modality_dropout`` and ``data.min_modalities`` for ``random``.

    Returns:
        ``(C,)`` bool, True = shown; never empty when the subject has any modality.
    """
    acquired = np.asarray(acquired, dtype=bool)
    if subset.name == RANDOM:
        return random_dropout(acquired, rng, dropout, floor)
    if subset.channels is None:  # all
        return acquired.copy()
    wanted = np.zeros_like(acquired)
    wanted[list(subset.channels)] = True
    kept = wanted & acquired
    return kept if kept.any() else acquired.copy()


def expected_share(
    subsets: Sequence[ModalitySubset], kept: Sequence[int], n_channels: int, dropout: float, floor: int
) -> float:
    """Probability that a subject with every modality shows exactly the channels ``kept``.

    The closed form the sampler must match: the weight of each explicit subset equal to ``kept`` (and of
    ``all`` when ``kept`` is every channel), plus ``random``'s weight times the probability that
    per-modality dropout with restoration up to ``floor`` leaves exactly ``kept``.
    """
    target = frozenset(int(c) for c in kept)
    share = 0.0
    for s in subsets:
        if s.name == ALL:
            share += s.weight * (len(target) == n_channels)
        elif s.channels is not None:
            share += s.weight * (frozenset(s.channels) == target)
        else:
            share += s.weight * _dropout_probability(len(target), n_channels, dropout, floor)
    return share


def _dropout_probability(k: int, n: int, p: float, floor: int) -> float:
    """P(exactly one given set of ``k`` of ``n`` modalities survives dropout ``p`` with restoration to ``floor``)."""
    floor = min(floor, n)
    if k > floor:
        return (1 - p) ** k * p ** (n - k)
    if k < floor:
        return 0.0
    # survivors j <= floor are topped up to floor at random from the dropped: the set is reached when the
    # j survivors lie inside it and the restored floor - j come from its other k - j members
    total = 0.0
    for j in range(0, k + 1):
        survive = (1 - p) ** j * p ** (n - j)  # one particular set of j survivors
        ways_inside = math.comb(k, j)
        pick = 1.0 / math.comb(n - j, floor - j)
        total += ways_inside * survive * pick
    return total
