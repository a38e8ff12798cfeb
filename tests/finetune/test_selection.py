"""labels.k selection: deterministic, balanced across groups, nested, with clear errors."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from finetune.selection import parse_k, select_labelled
from ssl_pretrain.errors import ConfigError

CANDIDATES = [(f"sub-{i:02d}", "ALS" if i % 3 else "HC") for i in range(1, 16)]  # 10 ALS, 5 HC


def test_deterministic_and_order_independent():
    shuffled = CANDIDATES[:]
    random.Random(1).shuffle(shuffled)
    assert select_labelled(CANDIDATES, 4, seed=7) == select_labelled(shuffled, 4, seed=7)
    draws = {tuple(select_labelled(CANDIDATES, 4, seed=s)) for s in range(10)}
    assert len(draws) > 1  # the seed matters


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 10])
def test_balanced_across_groups(k):
    for seed in range(5):
        chosen = select_labelled(CANDIDATES, k, seed)
        assert len(chosen) == len(set(chosen)) == k
        counts = Counter(dict(CANDIDATES)[key] for key in chosen)
        assert counts["HC"] in (k // 2, (k + 1) // 2)  # 5 HC suffice for k <= 10
        assert counts["HC"] + counts["ALS"] == k


def test_group_exhausted_then_others_fill():
    chosen = select_labelled(CANDIDATES, 12, seed=0)
    counts = Counter(dict(CANDIDATES)[key] for key in chosen)
    assert counts == {"HC": 5, "ALS": 7}


def test_nested_and_all():
    full = select_labelled(CANDIDATES, "all", seed=3)
    assert sorted(full) == sorted(k for k, _ in CANDIDATES)
    for k in (1, 2, 4, 8):
        assert select_labelled(CANDIDATES, k, seed=3) == full[:k]


def test_unknown_group_is_a_group():
    chosen = select_labelled([("sub-01", None), ("sub-02", ""), ("sub-03", "HC"), ("sub-04", "HC")], 2, seed=0)
    assert {dict([("sub-01", ""), ("sub-02", ""), ("sub-03", "HC"), ("sub-04", "HC")])[c] for c in chosen} == {"", "HC"}


@pytest.mark.parametrize("bad", [-1, "two", 1.5])
def test_bad_k(bad):
    with pytest.raises(ConfigError, match=r"labels\.k"):
        select_labelled(CANDIDATES, bad, seed=0)


def test_k_larger_than_pool_and_empty_pool():
    with pytest.raises(ConfigError, match="only 15"):
        select_labelled(CANDIDATES, 16, seed=0)
    with pytest.raises(ConfigError, match="no subject"):
        select_labelled([], "all", seed=0)


def test_parse_k():
    assert parse_k("all") is None and parse_k("ALL") is None and parse_k(None) is None
    assert parse_k(3) == 3 and parse_k("4") == 4
    assert parse_k(0) == 0 and parse_k("0") == 0  # zero-shot: no labelled subject
    for bad in (-1, "-2", 1.5, "two", True):
        with pytest.raises(ConfigError, match=r"labels\.k"):
            parse_k(bad)


def test_k_zero_selects_nobody():
    assert select_labelled(CANDIDATES, 0, seed=0) == []
    assert select_labelled([], 0, seed=0) == []
