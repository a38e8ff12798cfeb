"""Agreement statistics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.agreement import bland_altman, constant_fraction, lin_ccc, recovery


def test_bland_altman_by_hand():
    true = np.array([100.0, 200.0, 400.0, 50.0])
    measured = np.array([110.0, 190.0, 420.0, 50.0])  # +10 %, -5 %, +5 %, 0 %
    out = bland_altman(measured, true)
    d = np.array([10.0, -5.0, 5.0, 0.0])
    assert out["bias_pct"] == pytest.approx(2.5) and out["n"] == 4
    assert out["loa_pct"] == pytest.approx([2.5 - 1.96 * d.std(ddof=1), 2.5 + 1.96 * d.std(ddof=1)])


def test_lin_ccc_by_hand():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.5, 3.5, 4.5])  # perfectly correlated, shifted by 0.5
    assert lin_ccc(x, y) == pytest.approx(2 * 1.25 / (1.25 + 1.25 + 0.25))
    assert lin_ccc(x, x) == pytest.approx(1.0) and np.isnan(lin_ccc([1.0], [1.0]))


def test_recovery_of_an_exact_measure_has_zero_error_and_a_biased_one_does_not():
    rng = np.random.default_rng(0)
    patient = np.arange(40) % 2 == 1
    true = rng.normal(1000, 50, 40) * np.where(patient, 0.9, 1.0)
    exact = recovery(true, true, patient, n_boot=200)
    assert exact["error_pct"] == 0.0 and exact["ci95"] == pytest.approx([0.0, 0.0])
    assert exact["true_diff_pct"] == pytest.approx(100 * (true[patient].mean() / true[~patient].mean() - 1))
    flat = recovery(np.full(40, 1000.0), true, patient, n_boot=500)  # a measure that sees no difference
    assert flat["measured_diff_pct"] == 0.0 and flat["ci95"][0] > 0


def test_the_constant_fraction_predictor():
    tissue, outline = np.array([10.0, 30.0]), np.array([100.0, 100.0])
    assert constant_fraction(tissue, outline).tolist() == pytest.approx([20.0, 20.0])
