"""The hierarchical bootstrap over subjects × training seeds × pretraining seeds (crossed random effects)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation import hierarchical_bootstrap as hb
from evaluation.statistics import bootstrap_ci


def _crossed(rng, mu=0.8, n_subjects=20, n_seeds=8, subject_sd=0.03, seed_sd=0.03, noise=0.01, n_pretrain=1):
    """values[p, s, n] = mu + subject_n + seed_s + noise (a crossed two-way random-effects design)."""
    subject = rng.normal(0, subject_sd, n_subjects)
    seed = rng.normal(0, seed_sd, n_seeds)
    shape = (n_pretrain, n_seeds, n_subjects)
    return mu + subject[None, None, :] + seed[None, :, None] + rng.normal(0, noise, shape)


def test_one_seed_reduces_to_the_subject_bootstrap():
    rng = np.random.default_rng(0)
    values = _crossed(rng, n_seeds=1)
    est, lo, hi = hb.mean_ci(values, n_boot=4000, seed=1)
    plain = bootstrap_ci(values[0, 0], n_boot=4000, seed=1, method="percentile")
    assert est == pytest.approx(plain[0]) and (hi - lo) == pytest.approx(plain[2] - plain[1], rel=0.15)


def test_seed_variance_enters_the_interval_and_restores_coverage():
    """With a seed effect as large as the subject effect, resampling subjects of seed-averaged values (the old
    practice) under-covers; the crossed bootstrap covers close to its nominal level."""
    rng = np.random.default_rng(1)
    hits = {"hierarchical": 0, "subjects only": 0}
    reps = 150
    for r in range(reps):
        values = _crossed(rng)
        _, lo, hi = hb.mean_ci(values, n_boot=600, seed=r)
        hits["hierarchical"] += lo <= 0.8 <= hi
        _, lo, hi = bootstrap_ci(values.mean(axis=(0, 1)), n_boot=600, seed=r, method="percentile")
        hits["subjects only"] += lo <= 0.8 <= hi
    assert hits["hierarchical"] / reps >= 0.85
    assert hits["subjects only"] / reps < 0.75


def test_paired_difference_removes_shared_subject_and_seed_effects():
    rng = np.random.default_rng(2)
    a = _crossed(rng, subject_sd=0.1, seed_sd=0.0, noise=0.005)
    b = a - 0.02 + rng.normal(0, 0.005, a.shape)  # the same subjects and seeds, 0.02 lower
    delta, lo, hi = hb.paired_ci(a, b, n_boot=2000)
    assert delta == pytest.approx(0.02, abs=0.003) and 0 < lo < 0.02 < hi
    _, ulo, uhi = hb.mean_ci(a, n_boot=2000)
    assert hi - lo < (uhi - ulo) / 5  # the subject spread is shared, so it cancels


def test_pretraining_seeds_are_resampled_and_shared_between_arms_that_have_them():
    rng = np.random.default_rng(3)
    one = _crossed(rng, n_pretrain=1, seed_sd=0.0)
    shifts = np.array([-0.05, 0.05])[:, None, None]
    two = np.concatenate([one, one]) + shifts  # two pretraining runs, far apart
    _, lo1, hi1 = hb.mean_ci(one, n_boot=2000)
    _, lo2, hi2 = hb.mean_ci(two, n_boot=2000)
    assert hi2 - lo2 > 2 * (hi1 - lo1)
    delta, lo, hi = hb.paired_ci(two, two - 0.01, n_boot=2000)  # same pretraining runs: shared, so they cancel
    assert (lo, hi) == pytest.approx((0.01, 0.01), abs=1e-9) and delta == pytest.approx(0.01)


def test_missing_cells_are_skipped_and_shapes_are_checked():
    values = np.full((1, 2, 3), 0.5)
    values[0, 1, 2] = np.nan
    assert hb.mean_ci(values, n_boot=50)[:1] == (0.5,)
    assert hb.between_seed_sd(np.array([[[0.4, 0.4], [0.6, 0.6]]])) == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert np.isnan(hb.between_seed_sd(values[:, :1]))
    with pytest.raises(ValueError, match="grid"):
        hb.mean_ci(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="same subjects"):
        hb.paired_ci(np.zeros((1, 2, 3)), np.zeros((1, 2, 4)))
    one, three = np.full((1, 1, 5), 0.7), np.full((1, 3, 5), 0.6)  # a zero-shot run against three seeds at k = 1
    assert hb.paired_ci(one, three, n_boot=50)[0] == pytest.approx(0.1)
