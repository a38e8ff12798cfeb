"""Shared fixtures of the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def small_results():
    """A small results dict with every DESIGN §9 key (values as in the DESIGN example), simulated cohort."""
    tm = {
        "subcortical": {"subcortical": 0.93, "brainstem": 0.81},
        "brainstem": {"subcortical": 0.77, "brainstem": 0.88},
    }
    return {
        "config": {"preset": "quick", "seeds": [0, 1, 2], "data": {"root": "data/demo"}},
        "dataset": {"name": "demo", "simulated": True},
        "segmentation": {
            "subcortical": {"GM": {"dice": 0.91, "ci95": [0.89, 0.93]}, "WM": {"dice": 0.92, "ci95": [0.9, 0.94]}},
            "brainstem": {
                "GM": {"dice": 0.70, "ci95": [0.66, 0.74]},
                "WM": {"dice": np.float32(0.8), "ci95": (0.77, 0.83)},
            },
        },
        "learning_curves": [
            {
                "init": "ssl_mae",
                "k": 2,
                "dice_mean": 0.74,
                "ci95": [0.71, 0.77],
                "fraction_of_full": 0.93,
                "n_seeds": 3,
            },
            {
                "init": "ssl_mae",
                "k": "all",
                "dice_mean": 0.80,
                "ci95": [0.78, 0.82],
                "fraction_of_full": 1.0,
                "n_seeds": 3,
            },
            {
                "init": "scratch",
                "k": 2,
                "dice_mean": 0.68,
                "ci95": [0.64, 0.72],
                "fraction_of_full": 0.87,
                "n_seeds": 3,
            },
            {
                "init": "scratch",
                "k": "all",
                "dice_mean": 0.78,
                "ci95": [0.76, 0.8],
                "fraction_of_full": 1.0,
                "n_seeds": 3,
            },
        ],
        "comparisons": [
            {"k": 2, "a": "ssl_mae", "b": "scratch", "delta": 0.06, "ci95": [0.03, 0.09], "p": 0.002, "p_holm": 0.004},
            {"k": "all", "a": "ssl_mae", "b": "scratch", "delta": 0.02, "ci95": [-0.01, 0.05], "p": 0.2, "p_holm": 0.2},
        ],
        "transfer_matrix": {"ssl_mae": tm, "scratch": tm},
        "cka": {"ssl_mae": {"subcortical": {"brainstem": 0.62, "subcortical": 1.0}}},
        "baselines": {
            "hmrf": {"subcortical": {"GM": {"dice": 0.80}}, "brainstem": {"WM": {"dice": 0.55}}},
            "gmm": {"brainstem": {"GM": {"dice": float("nan")}}},
        },
        "group_analysis": [
            {
                "measure": "brainstem_volume",
                "n_control": 27,
                "n_patient": 26,
                "diff_pct": -7.6,
                "ci95": [-10.1, -5.0],
                "cohens_d": -1.9,
                "cohens_d_ci95": [-2.5, -1.2],
                "p": 1e-6,
                "p_holm": 2e-6,
                "p_mannwhitney": 1e-5,
                "true_diff_pct": -8.0,
            },
        ],
        "compute": {"pretrain/ssl_mae": {"seconds": 410, "device": "cpu"}},
    }
