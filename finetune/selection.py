"""Which k training subjects a few-label stage may see labels of (``labels.k``, ``labels.seed``).

The choice is reproducible (same candidates, k and seed → same subjects, whatever the input order),
balanced across participant groups (group counts differ by at most one while every group still has
candidates) and nested (the k subjects of a seed are among its 2k), so a label-efficiency curve adds
labels to a fixed set instead of redrawing it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ssl_pretrain.errors import ConfigError

ALL = "all"


def parse_k(k: int | str | None) -> int | None:
    """``labels.k`` as an int ≥ 0 (0: zero-shot, no labelled subject of the stage), or ``None`` for ``all``.

    Raises:
        ConfigError: not a non-negative integer or ``all``.
    """
    if k is None or (isinstance(k, str) and k.strip().lower() == ALL):
        return None
    try:
        value = int(k)
    except (TypeError, ValueError):
        raise ConfigError("labels.k", f"expected an integer >= 0 or 'all', got {k!r}") from None
    if value < 0 or isinstance(k, bool) or (isinstance(k, float) and k != value):
        raise ConfigError("labels.k", f"expected an integer >= 0 or 'all', got {k!r}")
    return value


def select_labelled(candidates: Iterable[tuple[str, str | None]], k: int | str | None, seed: int) -> list[str]:
    """Pick the labelled training subjects.

    Each group's subjects are shuffled with ``seed``; the groups (in a seed-shuffled order) then take
    turns, one subject each, until ``k`` are chosen.

    Args:
        candidates: ``(key, group)`` of every labelled training subject (group ``None``/``""`` = unknown,
            treated as a group of its own).
        k: how many to pick, or ``"all"``/``None`` for every candidate.
        seed: ``labels.seed``.

    Returns:
        The chosen keys, in selection order (the first ``j`` are the choice for ``k=j``).

    Raises:
        ConfigError: ``k`` is invalid or exceeds the number of candidates.
    """
    pool = sorted({(key, group or "") for key, group in candidates})
    if len({key for key, _ in pool}) != len(pool):
        raise ValueError("a subject key appears with two different groups")
    n = parse_k(k)
    if n == 0:
        return []
    if n is not None and n > len(pool):
        raise ConfigError(
            "labels.k", f"asked for {n} labelled subjects but the training split has only {len(pool)} with labels"
        )
    if not pool:
        raise ConfigError("labels.k", "the training split has no subject with tissue labels inside the stage's ROI")
    rng = np.random.default_rng(seed)
    groups = sorted({group for _, group in pool})
    queues = []
    for group in groups:
        keys = [key for key, g in pool if g == group]
        queues.append([keys[i] for i in rng.permutation(len(keys))])
    order = [queues[i] for i in rng.permutation(len(queues))]
    chosen: list[str] = []
    depth = 0
    while len(chosen) < len(pool):
        chosen += [queue[depth] for queue in order if depth < len(queue)]
        depth += 1
    return chosen if n is None else chosen[:n]


def group_counts(keys: Sequence[str], group_of: dict[str, str | None]) -> dict[str, int]:
    """How many of ``keys`` fall in each group (for the run's sidecar and log)."""
    counts: dict[str, int] = {}
    for key in keys:
        group = group_of.get(key) or ""
        counts[group] = counts.get(group, 0) + 1
    return counts
