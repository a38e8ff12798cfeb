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


def sweep_rows(seed: int = 0, n_subjects: int = 8) -> list[dict]:
    """Per-subject Dice rows of a simulated label-efficiency sweep: 3 inits × k ∈ {1,2,4,8,all} × 3 seeds."""
    rng = np.random.default_rng(seed)
    subject_effect = rng.normal(0, 0.03, n_subjects)
    # (Dice at full labels, loss at k=1): pretraining helps most with few labels
    inits = {"scratch": (0.80, 0.30), "ssl_mae": (0.81, 0.15), "ssl_mae+subcortical": (0.82, 0.10)}
    rows = []
    for init, (top, loss) in inits.items():
        for k in (1, 2, 4, 8, "all"):
            n = 16 if k == "all" else k
            for s in range(3):
                for i in range(n_subjects):
                    for cls, offset in (("GM", -0.06), ("WM", 0.04)):
                        dice = top + offset - loss / n + subject_effect[i] + rng.normal(0, 0.015)
                        rows.append(
                            {"init": init, "k": k, "seed": s, "subject": f"sub-{i:02d}", "group": "HC" if i % 2 else
                             "ALS", "region": "brainstem", "class": cls, "dice": float(np.clip(dice, 0, 1))}
                        )  # fmt: skip
    return rows


@pytest.fixture
def rich_results():
    """A realistic results dict: the sweep rows above through the real summaries, plus every other section."""
    return make_rich_results()


def make_rich_results() -> dict:
    """The :func:`rich_results` dict."""
    from evaluation.learning_curves import best_init_per_k, comparisons, learning_curves, segmentation_summary

    rows = sweep_rows()
    curves = learning_curves(rows, n_boot=500)
    comps = comparisons(rows, n_boot=500)
    best = best_init_per_k(curves, comps)
    costs = {
        "scratch": {"seconds": 15 * 60.0, "runs": 15, "by_stage": {"brainstem": 900.0}},
        "ssl_mae": {"seconds": 3600.0 + 15 * 62.0, "runs": 16, "by_stage": {"pretrain": 3600.0, "brainstem": 930.0}},
        "ssl_mae+subcortical": {
            "seconds": 3600.0 + 400.0 + 15 * 61.0,
            "runs": 17,
            "by_stage": {"pretrain": 3600.0, "subcortical": 400.0, "brainstem": 915.0},
        },
    }
    for b in best:
        b["compute_seconds"] = costs[b["best"]]["seconds"]
    regions = ["subcortical", "brainstem", "cerebrum", "cerebellum"]
    tm = {e: {a: {b: 0.95 - 0.08 * (a != b) - 0.03 * j for b in regions} for a in regions} for j, e in
          enumerate(["random_init", "ssl_mae", "ssl_mae+subcortical"])}  # fmt: skip
    full = [r for r in rows if r["k"] == "all" and r["init"] == "ssl_mae+subcortical"]
    group = {
        "measure": "brainstem_volume", "control": "HC", "patient": "ALS", "n_control": 4, "n_patient": 4,
        "mean_control": 28100.0, "mean_patient": 25964.4, "diff_pct": -7.6, "ci95": [-10.1, -5.0], "cohens_d": -1.9,
        "cohens_d_ci95": [-2.5, -1.2], "p": 1e-3, "p_holm": 4e-3, "p_mannwhitney": 0.03, "true_diff_pct": -8.0,
        "truth_in_ci": True,
    }  # fmt: skip
    return {
        "config": {
            "data.root": "data/demo",
            "runs": ["runs/finetune/multirun/2026-01-01"],
            "seeds": [0, 1, 2],
            "spacing": 2.0,
        },
        "dataset": {"root": "data/demo", "simulated": True},
        "segmentation": {"brainstem": segmentation_summary(full, n_boot=500)["brainstem"]},
        "learning_curves": curves,
        "comparisons": comps,
        "best_per_k": best,
        "transfer_matrix": tm,
        "shift": {e: {a: {b: 0.5 + 0.2 * (a != b) for b in regions} for a in regions} for e in tm},
        "cka": {"brainstem": {e: {f: 1.0 if e == f else 0.6 for f in tm} for e in tm}},
        "baselines": {"gmm": {"brainstem": {"GM": {"dice": 0.41, "ci95": [0.36, 0.46]}}}},
        "group_analysis": [
            group,
            dict(
                group,
                measure="brainstem_GM",
                mean_control=8800.0,
                mean_patient=8008.0,
                diff_pct=-9.0,
                true_diff_pct=-10.3,
            ),
        ],
        "group_excluded": [
            {
                "measure": "subcortical_GM",
                "reason": "GM in subcortical is outside the region the model was trained in (in_model_roi false)",
            }
        ],
        "group_region_dice": [
            {
                "region": "brainstem",
                "n_subjects": 8,
                "dice": 0.884,
                "ci95": [0.87, 0.9],
                "predicted_mm3": 27600.0,
                "reference_mm3": 27000.0,
                "largest_component": "brainstem",
                "in_model_roi": True,
            },
            {
                "region": "caudate",
                "n_subjects": 8,
                "dice": 0.05,
                "ci95": [0.04, 0.06],
                "predicted_mm3": 200.0,
                "reference_mm3": 8400.0,
                "largest_component": "brainstem",
                "in_model_roi": False,
            },
        ],
        "compute": {"pretrain/ssl_mae/pre": {"seconds": 3600.0, "device": "cuda"}},
        "compute_per_init": costs,
        "evaluate_config": {"bootstrap": {"n": 2000}, "probe": {"probe": "linear", "voxels_per_subject": 200}},
    }
