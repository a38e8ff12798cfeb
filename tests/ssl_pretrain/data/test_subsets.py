"""Modality subsets: config checks, what a patch shows, and the closed form of each subset's share."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ssl_pretrain.data.subsets import (
    ALL,
    RANDOM,
    ModalitySubset,
    draw_subset,
    expected_share,
    keep_modalities,
    parse_modality_subsets,
    random_dropout,
)
from ssl_pretrain.errors import ConfigError

MODALITIES = ["T1w", "T2w", "FA", "MD"]


def test_parse_keeps_order_and_channels() -> None:
    subsets = parse_modality_subsets({"T1w": 0.25, "all": 0.5, "T1w+FA": 0.125, "random": 0.125}, MODALITIES)
    assert [(s.name, s.channels, s.weight) for s in subsets] == [
        ("T1w", (0,), 0.25),
        ("all", None, 0.5),
        ("T1w+FA", (0, 2), 0.125),
        ("random", None, 0.125),
    ]
    assert parse_modality_subsets(None, MODALITIES) == () and parse_modality_subsets({}, MODALITIES) == ()


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"T1w": 0.5, "PD": 0.5}, r"modality_subsets\.PD.*unknown modality 'PD'"),
        ({"T1w+T1w": 1.0}, "named twice"),
        ({"T1w": -0.5, "all": 1.5}, r"modality_subsets\.T1w.*>= 0"),
        ({"T1w": "a lot", "all": 1.0}, r"modality_subsets\.T1w"),
        ({"T1w": 0.5, "all": 0.5, "random": 0.25}, r"sum to 1, got 1\.25.*random=0"),
        ([0.5, 0.5], "expected a mapping"),
    ],
)
def test_bad_subsets_name_the_key(cfg, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_modality_subsets(cfg, MODALITIES)


def test_what_a_patch_shows() -> None:
    rng = np.random.default_rng(0)
    full = np.array([True, True, True, True])
    t1 = ModalitySubset("T1w", (0,), 1.0)
    pair = ModalitySubset("T1w+T2w", (0, 1), 1.0)
    everything = ModalitySubset(ALL, None, 1.0)
    assert keep_modalities(t1, full, rng, 0.5, 1).tolist() == [True, False, False, False]
    assert keep_modalities(everything, full, rng, 0.5, 1).tolist() == [True] * 4
    no_t2 = np.array([True, False, True, True])
    assert keep_modalities(pair, no_t2, rng, 0.5, 1).tolist() == [True, False, False, False]  # what it has of it
    no_t1 = np.array([False, True, True, False])
    assert keep_modalities(t1, no_t1, rng, 0.5, 1).tolist() == no_t1.tolist()  # none of it: all it has
    assert keep_modalities(everything, no_t1, rng, 0.5, 1).tolist() == no_t1.tolist()


def test_draw_follows_the_weights() -> None:
    subsets = parse_modality_subsets({"T1w": 0.2, "all": 0.5, "random": 0.3}, MODALITIES)
    rng = np.random.default_rng(1)
    n = 20000
    counts = {s.name: 0 for s in subsets}
    for _ in range(n):
        counts[draw_subset(subsets, rng).name] += 1
    for s in subsets:
        sd = np.sqrt(s.weight * (1 - s.weight) / n)
        assert abs(counts[s.name] / n - s.weight) < 4 * sd, counts
    single = (ModalitySubset(ALL, None, 1.0),)
    state = np.random.default_rng(3).bit_generator.state
    rng = np.random.default_rng(3)
    assert draw_subset(single, rng) is single[0] and rng.bit_generator.state == state  # no draw spent


@pytest.mark.parametrize(("n", "p", "floor"), [(4, 0.25, 1), (4, 0.8, 2), (3, 0.5, 3), (2, 0.9, 1)])
def test_dropout_share_closed_form_sums_to_one_and_matches_draws(n: int, p: float, floor: int) -> None:
    random_only = (ModalitySubset(RANDOM, None, 1.0),)
    subsets = [c for k in range(n + 1) for c in itertools.combinations(range(n), k)]
    shares = {c: expected_share(random_only, c, n, p, floor) for c in subsets}
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(7)
    draws = 20000
    seen: dict[tuple[int, ...], int] = {}
    for _ in range(draws):
        kept = tuple(int(i) for i in np.flatnonzero(random_dropout(np.ones(n, bool), rng, p, floor)))
        seen[kept] = seen.get(kept, 0) + 1
    for c, share in shares.items():
        sd = np.sqrt(max(share * (1 - share), 1e-12) / draws)
        assert abs(seen.get(c, 0) / draws - share) < 4 * sd + 1e-9, (c, share, seen.get(c, 0) / draws)


def test_default_t1w_only_share_is_a_quarter_and_a_bit() -> None:
    subsets = parse_modality_subsets({"T1w": 0.25, "all": 0.5, "random": 0.25}, MODALITIES)
    share = expected_share(subsets, (0,), 4, 0.25, 1)
    # explicit 0.25 + random's 0.25 x (T1w kept, three dropped: 0.75 x 0.25^3; all dropped, T1w restored: 0.25^4 / 4)
    assert share == pytest.approx(0.25 + 0.25 * (0.75 * 0.25**3 + 0.25**4 / 4), rel=1e-12)
