"""Bootstrap coverage, Holm's worked example, Wilcoxon edge cases, Cohen's d closed form and CI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from evaluation.statistics import bootstrap_ci, bootstrap_diff_ci, cohens_d, holm, paired_wilcoxon


def test_holm_worked_example():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_nan():
    out = holm([0.5, np.nan, 0.4])
    assert out[0] == pytest.approx(0.8) and math.isnan(out[1]) and out[2] == pytest.approx(0.8)
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]).size == 0


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_ci_coverage_on_normal_mean(method):
    rng = np.random.default_rng(1)
    hits = 0
    reps = 200
    for r in range(reps):
        x = rng.normal(5.0, 2.0, 30)
        est, lo, hi = bootstrap_ci(x, n_boot=1000, seed=r, method=method)
        assert lo <= est <= hi
        hits += lo <= 5.0 <= hi
    assert 0.90 <= hits / reps <= 0.99


def test_bootstrap_ci_matches_t_interval_width():
    x = np.random.default_rng(0).normal(0, 1, 200)
    est, lo, hi = bootstrap_ci(x, n_boot=4000)
    half_t = stats.t.ppf(0.975, 199) * x.std(ddof=1) / np.sqrt(200)
    assert est == pytest.approx(x.mean())
    assert (hi - lo) / 2 == pytest.approx(half_t, rel=0.1)


def test_bootstrap_ci_degenerate_and_seeded():
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)
    est, lo, hi = bootstrap_ci([2.0, np.nan])
    assert est == 2.0 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    x = np.arange(10.0)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)
    assert bootstrap_ci(x, stat=np.median)[0] == 4.5
    assert bootstrap_ci(x, stat=lambda v: float(np.max(v)))[0] == 9.0  # a statistic without axis=
    with pytest.raises(ValueError):
        bootstrap_ci(x, level=1.5)
    with pytest.raises(ValueError):
        bootstrap_ci(x, method="studentized")


def test_paired_bootstrap_is_narrower_when_units_correlate():
    rng = np.random.default_rng(0)
    subject = rng.normal(0.8, 0.1, 20)  # large between-subject spread shared by both inits
    a = subject + 0.03 + rng.normal(0, 0.005, 20)
    b = subject + rng.normal(0, 0.005, 20)
    d, lo, hi = bootstrap_diff_ci(a, b, paired=True)
    du, ulo, uhi = bootstrap_diff_ci(a, b, paired=False)
    assert d == pytest.approx(np.mean(a - b)) and du == pytest.approx(a.mean() - b.mean())
    assert lo > 0 and ulo < 0 < uhi  # pairing reveals the difference that subject spread hides
    assert hi - lo < (uhi - ulo) / 5
    with pytest.raises(ValueError, match="length"):
        bootstrap_diff_ci([1.0, 2.0], [1.0], paired=True)


def test_paired_wilcoxon_exact_and_edge_cases():
    a = np.arange(1.0, 11.0)
    delta, p = paired_wilcoxon(a + np.arange(1.0, 11.0), a)  # 10 positive differences: exact p = 2 / 2**10
    assert delta == 5.5 and p == pytest.approx(2 / 2**10)
    assert paired_wilcoxon([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == (0.0, 1.0)  # no difference at all
    _, p5 = paired_wilcoxon(np.arange(5.0) + 1, np.zeros(5))  # n = 5: smallest attainable p
    assert p5 == pytest.approx(0.0625)
    d, p = paired_wilcoxon([np.nan, 1.0], [0.0, np.nan])
    assert math.isnan(d) and math.isnan(p)


def test_cohens_d_closed_form():
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([3.0, 4, 5, 6, 7])  # means 3 and 5, both variances 2.5
    d, lo, hi = cohens_d(x, y)
    assert d == pytest.approx(-2 / np.sqrt(2.5))
    # the bounds are where the noncentral t puts the observed t at the 97.5th and 2.5th percentiles
    scale, t, df = np.sqrt(25 / 10), d * np.sqrt(25 / 10), 8
    assert stats.nct.cdf(t, df, lo * scale) == pytest.approx(0.975, abs=1e-6)
    assert stats.nct.cdf(t, df, hi * scale) == pytest.approx(0.025, abs=1e-6)
    se = np.sqrt(10 / 25 + d**2 / 20)  # Hedges & Olkin large-sample SE, a rough check of the width
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.25)
    assert all(math.isnan(v) for v in cohens_d([1.0], [2.0, 3.0]))
    assert all(math.isnan(v) for v in cohens_d([1.0, 1.0], [1.0, 1.0]))


def test_cohens_d_ci_coverage():
    rng = np.random.default_rng(2)
    hits = sum(
        lo <= 0.8 <= hi for lo, hi in (cohens_d(rng.normal(0.8, 1, 20), rng.normal(0, 1, 20))[1:] for _ in range(200))
    )
    assert 0.90 <= hits / 200 <= 0.99


def test_bca_interval_is_scipys():
    x = np.random.default_rng(2).gamma(2.0, 1.0, 13)  # skewed, n = 13 test subjects
    est, lo, hi = bootstrap_ci(x, n_boot=3000, seed=7)
    ref = stats.bootstrap((x,), np.mean, n_resamples=3000, method="BCa", rng=np.random.default_rng(7))
    assert est == pytest.approx(x.mean())
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    plo, phi = bootstrap_ci(x, n_boot=3000, seed=7, method="percentile")[1:]
    assert (lo, hi) != pytest.approx((plo, phi))  # BCa shifts the interval of a skewed sample


def test_coverage_at_13_subjects_is_close_to_but_below_nominal():
    """What the docstring of bootstrap_ci states: at n = 13 from a skewed population both intervals cover the
    mean about 90 % of the time for a nominal 95 % (the bootstrap's plug-in variance is too small at small n)."""
    rng = np.random.default_rng(3)
    hits = {"percentile": 0, "bca": 0}
    reps = 300
    for r in range(reps):
        x = rng.lognormal(0.0, 0.6, 13)
        for method in hits:
            _, lo, hi = bootstrap_ci(x, n_boot=800, seed=r, method=method)
            hits[method] += lo <= np.exp(0.18) <= hi  # the lognormal mean exp(sigma^2 / 2)
    assert all(0.85 <= h / reps <= 0.95 for h in hits.values())
