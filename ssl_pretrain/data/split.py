"""Subject-level train/val/test split, stratified by participant group.

The split depends only on the subjects' keys and groups and on the seed (``data.split_seed``): not on
the order they are listed in, nor on the sampling seed of a run, so every command of a study sees the
same test subjects. Sessions of one subject are distinct items here (split by record key).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import numpy as np


class Keyed(Protocol):
    """Anything with a record key and a participant group (records, cached subjects)."""

    @property
    def key(self) -> str: ...

    @property
    def group(self) -> str | None: ...


T = TypeVar("T", bound=Keyed)
SPLITS = ("train", "val", "test")


def _allocate(total: int, sizes: dict[str, int], available: dict[str, int]) -> dict[str, int]:
    """Spread ``total`` over groups in proportion to ``sizes`` (largest remainder), within ``available``."""
    n = sum(sizes.values())
    if n == 0 or total == 0:
        return dict.fromkeys(sizes, 0)
    exact = {g: total * sizes[g] / n for g in sizes}
    out = {g: min(int(np.floor(exact[g])), available[g]) for g in sizes}
    order = sorted(sizes, key=lambda g: (-(exact[g] - np.floor(exact[g])), -sizes[g], g))
    while sum(out.values()) < total:
        progressed = False
        for g in order:
            if sum(out.values()) < total and out[g] < available[g]:
                out[g] += 1
                progressed = True
        if not progressed:
            break
    return out


def split_subjects(subjects: Sequence[T], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[T]]:
    """Split subjects (or records) into ``train``/``val``/``test``, stratified by group.

    Args:
        subjects: items with ``key`` (str) and ``group`` (str or ``None``) attributes, e.g.
            :class:`~ssl_pretrain.data.cache.CachedSubject` or :class:`~ssl_pretrain.data.manifest.SubjectRecord`.
        val_fraction: share of subjects for validation, in ``[0, 1)``.
        test_fraction: share for testing, in ``[0, 1)``; ``val_fraction + test_fraction < 1``.
        seed: split seed.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``: disjoint, together all subjects, each list
        sorted by key. Split sizes are ``round(n * fraction)``, but a split with a positive fraction gets
        at least one subject while train keeps at least one; each group contributes in proportion to its
        size (largest remainder), shuffled within the group by ``seed``.

    Raises:
        ValueError: fractions out of range, or repeated keys.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"need 0 <= val, test and val + test < 1; got val={val_fraction}, test={test_fraction}")
    items = sorted(subjects, key=lambda s: s.key)
    keys = [s.key for s in items]
    if len(set(keys)) != len(keys):
        raise ValueError("subjects with repeated keys: " + ", ".join(sorted({k for k in keys if keys.count(k) > 1})))
    n = len(items)
    targets = {"test": round(n * test_fraction), "val": round(n * val_fraction)}
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if fraction > 0 and targets[name] == 0:
            targets[name] = 1
    while n > 0 and targets["test"] + targets["val"] > n - 1:  # train keeps one
        bigger = "test" if targets["test"] >= targets["val"] else "val"
        if targets[bigger] == 0:
            break
        targets[bigger] -= 1
    if n == 0:
        targets = {"test": 0, "val": 0}

    by_group: dict[str, list[Any]] = {}
    for item in items:
        by_group.setdefault(item.group or "", []).append(item)
    for group, members in by_group.items():
        rng = np.random.default_rng([int(seed), zlib.crc32(group.encode())])
        by_group[group] = [members[j] for j in rng.permutation(len(members))]
    sizes = {g: len(m) for g, m in by_group.items()}
    test_n = _allocate(targets["test"], sizes, sizes)
    left = {g: sizes[g] - test_n[g] for g in sizes}
    val_n = _allocate(targets["val"], sizes, left)

    out: dict[str, list[Any]] = {name: [] for name in SPLITS}
    for group, members in by_group.items():
        t, v = test_n[group], val_n[group]
        out["test"] += members[:t]
        out["val"] += members[t : t + v]
        out["train"] += members[t + v :]
    return {name: sorted(out[name], key=lambda s: s.key) for name in SPLITS}


def crossfit_folds(subjects: Sequence[T], folds: int, seed: int) -> list[list[T]]:
    """``folds`` disjoint folds of every subject, stratified by group (for cross-fitted predictions).

    Each group's subjects, shuffled by ``seed``, are dealt round-robin into the folds, the deal continuing
    across groups so fold sizes differ by at most one. Like :func:`split_subjects`, the result depends only
    on the keys, groups and seed.

    Raises:
        ValueError: fewer than 2 folds, more folds than subjects, or repeated keys.
    """
    items = sorted(subjects, key=lambda s: s.key)
    keys = [s.key for s in items]
    if len(set(keys)) != len(keys):
        raise ValueError("subjects with repeated keys: " + ", ".join(sorted({k for k in keys if keys.count(k) > 1})))
    if not 2 <= folds <= len(items):
        raise ValueError(f"need 2 <= folds <= {len(items)} subjects, got {folds}")
    out: list[list[T]] = [[] for _ in range(folds)]
    turn = 0
    for group in sorted({s.group or "" for s in items}):
        members = [s for s in items if (s.group or "") == group]
        order = np.random.default_rng([seed, zlib.crc32(group.encode()), 11]).permutation(len(members))
        for i in order:
            out[turn % folds].append(members[i])
            turn += 1
    return [sorted(f, key=lambda s: s.key) for f in out]


def crossfit_split(subjects: Sequence[T], folds: int, fold: int, seed: int) -> dict[str, list[T]]:
    """The split of one cross-fitting fold: ``test`` = fold ``fold`` of :func:`crossfit_folds`, ``train`` = the
    others, ``val`` empty (a cross-fitted model selects on nothing).

    Raises:
        ValueError: ``fold`` outside ``[0, folds)`` (and the errors of :func:`crossfit_folds`).
    """
    if not 0 <= fold < folds:
        raise ValueError(f"fold must lie in [0, {folds}), got {fold}")
    parts = crossfit_folds(subjects, folds, seed)
    train = sorted((s for i, p in enumerate(parts) if i != fold for s in p), key=lambda s: s.key)
    return {"train": train, "val": [], "test": parts[fold]}
