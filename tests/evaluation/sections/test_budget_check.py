"""The budget check fails when the same arm trained longer scores higher, and passes when it does not."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.learning_curves import comparisons
from evaluation.runs import Run
from evaluation.sections.best_per_k import BestPerK
from evaluation.sections.budget_check import BudgetCheck, budget_checks, budget_note

SUBJECTS = [f"sub-{i:02d}" for i in range(13)]


def _run(tmp_path, label, steps, k="all", seed=0, matched=False, init="scratch", stage="brainstem"):
    sidecar = {
        "stage": stage, "labels": {"k": k, "seed": seed}, "seeds": {"seed": seed}, "result": {"steps": steps},
        "init": {"init": init}, "compute_matched": matched,
    }  # fmt: skip
    return Run(path=tmp_path / f"{label}-{k}-{seed}", kind="finetune", sidecar=sidecar, label=label)


def _runs(tmp_path):
    return [
        run
        for seed in (0, 1)
        for run in (
            _run(tmp_path, "scratch", 600, seed=seed),
            _run(tmp_path, "scratch_matched", 1500, seed=seed, matched=True),
            _run(tmp_path, "subcortical", 600, seed=seed, init="/runs/subcortical-abc"),
            _run(tmp_path, "subcortical", None, k="0", seed=seed, init="/runs/subcortical-abc"),
        )
    ]


def _rows(gain: float, seed: int = 0):
    """Per-subject Dice of scratch and scratch_matched at k = all: the longer arm ``gain`` higher, plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in (0, 1):
        for subject in SUBJECTS:
            base = 0.80 + 0.03 * rng.standard_normal()
            for init, shift in (("scratch", 0.0), ("scratch_matched", gain), ("subcortical", 0.01)):
                rows.append({"init": init, "k": "all", "seed": s, "subject": subject, "class": "GM",
                             "dice": base + shift + 0.005 * rng.standard_normal()})  # fmt: skip
    return rows


def test_a_longer_arm_that_scores_higher_fails_the_check(tmp_path):
    comps = comparisons(_rows(gain=0.05), n_boot=500)

    (row,) = budget_checks(_runs(tmp_path), "brainstem", comps)

    assert (row["arm"], row["longer"], row["k"]) == ("scratch", "scratch_matched", "all")
    assert (row["steps"], row["longer_steps"], row["ratio"]) == ([600], [1500], 2.5)
    assert row["delta"] == pytest.approx(0.05, abs=0.005) and row["ci95"][0] > 0
    assert row["budget_short"] is True
    results = {"budget_check": [row]}
    assert "short of the plateau" in BudgetCheck().render(results, "")
    assert "Budget check failed at k = all" in budget_note(results)
    answer = BestPerK().render({**results, "best_per_k": [{"k": "all", "best": None}]}, "")
    assert "Budget check failed" in answer


def test_no_gain_from_training_longer_passes(tmp_path):
    comps = comparisons(_rows(gain=0.0), n_boot=500)

    (row,) = budget_checks(_runs(tmp_path), "brainstem", comps)

    assert row["ci95"][0] < 0 < row["ci95"][1]
    assert row["budget_short"] is False
    assert budget_note({"budget_check": [row]}) == ""
    assert "no gain from training longer" in BudgetCheck().render({"budget_check": [row]}, "")


def test_a_longer_arm_that_scores_lower_does_not_fail(tmp_path):
    (row,) = budget_checks(_runs(tmp_path), "brainstem", comparisons(_rows(gain=-0.05), n_boot=500))
    assert row["ci95"][1] < 0 and row["budget_short"] is False


def test_without_a_compute_matched_control_nothing_is_checked(tmp_path):
    runs = [r for r in _runs(tmp_path) if not r.sidecar["compute_matched"]]
    assert budget_checks(runs, "brainstem", comparisons(_rows(gain=0.05), n_boot=200)) == []
    assert "Not part of this evaluation" in BudgetCheck().render({"budget_check": []}, "")


def test_a_missing_comparison_is_reported_as_unchecked(tmp_path):
    (row,) = budget_checks(_runs(tmp_path), "brainstem", [])
    assert row["budget_short"] is None and row["delta"] is None
    assert "budget was not checked" in BudgetCheck().render({"budget_check": [row]}, "")
