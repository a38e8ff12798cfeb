"""Learning curves, paired comparisons and summaries from a hand-made results table."""

from __future__ import annotations

import math

import pytest

from evaluation.learning_curves import (
    best_init_per_k,
    comparisons,
    k_order,
    learning_curves,
    normalise_k,
    segmentation_summary,
)

SUBJECTS = ["s1", "s2", "s3", "s4"]


def _rows():
    """Two inits, k ∈ {1, all}, two seeds whose offsets cancel, GM/WM classes.

    ssl at k=1: subject i has GM 0.5 + 0.1 i, WM 0.6 + 0.1 i -> subject mean 0.55 + 0.1 i, mean 0.80.
    scratch at k=1: every subject 0.1 lower. Both at k=all: 0.90 for everyone.
    """
    rows = []
    for init, drop in (("ssl", 0.0), ("scratch", 0.1)):
        for seed, jitter in ((0, 0.02), (1, -0.02)):
            for i, subject in enumerate(SUBJECTS, start=1):
                for cls, base in (("GM", 0.5), ("WM", 0.6)):
                    rows.append(
                        dict(
                            init=init,
                            k=1,
                            seed=seed,
                            subject=subject,
                            **{"class": cls},
                            dice=base + 0.1 * i - drop + jitter,
                        )
                    )
                    rows.append(dict(init=init, k="all", seed=seed, subject=subject, **{"class": cls}, dice=0.9))
    return rows


def test_learning_curve_entries():
    curves = {(c["init"], c["k"]): c for c in learning_curves(_rows(), n_boot=500)}
    assert list(curves) == [("ssl", 1), ("ssl", "all"), ("scratch", 1), ("scratch", "all")]
    ssl1 = curves[("ssl", 1)]
    assert ssl1["dice_mean"] == pytest.approx(0.80)
    assert ssl1["per_class"]["GM"]["dice"] == pytest.approx(0.75)
    assert ssl1["per_class"]["WM"]["dice"] == pytest.approx(0.85)
    lo, hi = ssl1["ci95"]
    assert 0.65 <= lo < 0.80 < hi <= 0.95  # bootstrap over 4 subjects spanning 0.65..0.95
    assert ssl1["fraction_of_full"] == pytest.approx(0.80 / 0.90)
    assert ssl1["fraction_ci95"][0] < 0.80 / 0.90 < ssl1["fraction_ci95"][1]
    assert ssl1["n_seeds"] == 2 and ssl1["n_subjects"] == 4 and ssl1["full_k"] == "all"
    assert curves[("scratch", 1)]["fraction_of_full"] == pytest.approx(0.70 / 0.90)
    assert curves[("ssl", "all")]["ci95"] == pytest.approx([0.9, 0.9])


def test_nan_class_is_skipped_and_largest_k_is_full_without_all():
    rows = [r for r in _rows() if r["k"] == 1 and r["init"] == "ssl"]
    rows += [dict(r, k=4, dice=1.0) for r in rows]
    for r in rows:
        if r["subject"] == "s1" and r["class"] == "WM" and r["k"] == 1:
            r["dice"] = float("nan")  # WM absent for s1: its mean is GM only (0.6)
    (c1, c4) = learning_curves(rows, n_boot=200)
    assert c1["dice_mean"] == pytest.approx((0.6 + 0.75 + 0.85 + 0.95) / 4)
    assert c4["full_k"] == 4 and c1["fraction_of_full"] == pytest.approx(c1["dice_mean"])


def test_comparisons_paired_wilcoxon_and_holm():
    comps = comparisons(_rows(), n_boot=500)
    assert [(c["k"], c["a"], c["b"]) for c in comps] == [(1, "ssl", "scratch"), ("all", "ssl", "scratch")]
    at1, full = comps
    assert at1["delta"] == pytest.approx(0.1) and at1["ci95"] == pytest.approx([0.1, 0.1])
    assert at1["p"] == pytest.approx(2 / 2**4)  # 4 positive differences, exact Wilcoxon
    assert full["delta"] == 0.0 and full["p"] == 1.0  # identical: no difference
    assert at1["p_holm"] == pytest.approx(0.25) and full["p_holm"] == 1.0  # Holm over the 2 comparisons
    assert at1["holm_m"] == 2 and at1["holm_family"] == "all"
    per_k = {c["k"]: c for c in comparisons(_rows(), n_boot=200, holm_family="k")}
    assert per_k[1]["p_holm"] == pytest.approx(at1["p"]) and per_k[1]["holm_m"] == 1  # a family of one test
    with pytest.raises(ValueError, match="holm_family"):
        comparisons(_rows(), holm_family="pairs")
    assert at1["n_subjects"] == 4


def test_comparisons_pair_only_shared_subjects():
    rows = [r for r in _rows() if r["k"] == 1 and not (r["init"] == "scratch" and r["subject"] == "s4")]
    (c,) = comparisons(rows, n_boot=200)
    assert c["n_subjects"] == 3 and c["delta"] == pytest.approx(0.1)


def test_best_init_per_k():
    rows = _rows()
    best = best_init_per_k(learning_curves(rows, n_boot=200), comparisons(rows, n_boot=200))
    at1 = best[0]
    assert at1["k"] == 1 and at1["best"] == "ssl" and at1["runner_up"] == "scratch"
    assert at1["delta"] == pytest.approx(0.1) and at1["p_holm"] == pytest.approx(0.25)
    flipped = best_init_per_k(
        [{"init": "a", "k": 2, "dice_mean": 0.5, "ci95": [0.4, 0.6]}, {"init": "b", "k": 2, "dice_mean": 0.7}],
        [{"k": 2, "a": "a", "b": "b", "delta": -0.2, "ci95": [-0.3, -0.1], "p_holm": 0.01}],
    )[0]
    assert flipped["best"] == "b" and flipped["delta"] == pytest.approx(0.2)
    assert flipped["delta_ci95"] == pytest.approx([0.1, 0.3])
    assert flipped["vs_reference"] is None  # no scratch run at k=2
    assert at1["vs_reference"]["init"] == "scratch" and at1["vs_reference"]["delta"] == pytest.approx(0.1)
    three = best_init_per_k(
        [
            {"init": "scratch", "k": 1, "dice_mean": 0.5},
            {"init": "b", "k": 1, "dice_mean": 0.6},
            {"init": "c", "k": 1, "dice_mean": 0.7},
        ],
        [
            {"k": 1, "a": "scratch", "b": "b", "delta": -0.1, "ci95": [-0.2, 0.0], "p_holm": 0.2},
            {"k": 1, "a": "scratch", "b": "c", "delta": -0.2, "ci95": [-0.3, -0.1], "p_holm": 0.03},
            {"k": 1, "a": "b", "b": "c", "delta": -0.1, "ci95": [-0.15, -0.05], "p_holm": 0.04},
        ],
    )[0]
    assert (three["best"], three["runner_up"], three["p_holm"]) == ("c", "b", 0.04)
    assert three["vs_reference"]["delta"] == pytest.approx(0.2)
    assert three["vs_reference"]["ci95"] == pytest.approx([0.1, 0.3]) and three["vs_reference"]["p_holm"] == 0.03


def test_segmentation_summary():
    rows = [
        dict(region="brainstem", subject=s, seed=seed, **{"class": "GM"}, dice=d + off)
        for s, d in zip(SUBJECTS, (0.6, 0.7, 0.8, 0.9), strict=True)
        for seed, off in ((0, 0.05), (1, -0.05))
    ]
    out = segmentation_summary(rows, n_boot=300)
    entry = out["brainstem"]["GM"]
    assert entry["dice"] == pytest.approx(0.75) and entry["n_subjects"] == 4
    assert entry["ci95"][0] < 0.75 < entry["ci95"][1]


def test_k_helpers_and_bad_rows():
    assert normalise_k("4") == 4 and normalise_k(2.0) == 2 and normalise_k("all") == "all"
    assert sorted(["all", 8, 1, 2], key=k_order) == [1, 2, 8, "all"]
    with pytest.raises(ValueError, match="missing"):
        learning_curves([{"init": "a", "k": 1}])
    with pytest.raises(ValueError):
        comparisons([])
    assert math.isnan(
        learning_curves([dict(init="a", k=1, seed=0, subject="s", **{"class": "GM"}, dice=0.5)])[0]["ci95"][0]
    )


def test_between_seed_sd_and_convergence_flags():
    rows = [dict(r, converged=not (r["init"] == "scratch" and r["k"] == 1 and r["seed"] == 1)) for r in _rows()]
    curves = {(c["init"], c["k"]): c for c in learning_curves(rows, n_boot=200)}
    # seeds' offsets +-0.02: each seed's mean over subjects is 0.82 / 0.78 -> SD 0.0283
    assert curves[("ssl", 1)]["between_seed_sd"] == pytest.approx(0.04 / math.sqrt(2))
    assert curves[("ssl", "all")]["between_seed_sd"] == pytest.approx(0.0)
    assert curves[("ssl", 1)]["converged"] is True and curves[("scratch", 1)]["converged"] is False
    assert learning_curves(_rows(), n_boot=50)[0]["converged"] is None  # not recorded: unknown, not True


def test_pretraining_seeds_widen_the_interval():
    base = _rows()
    two = [dict(r, pretrain_seed=p, dice=r["dice"] + (0.03 if p else -0.03)) for r in base for p in (0, 1)]
    one = {(c["init"], c["k"]): c for c in learning_curves(base, n_boot=500)}
    both = {(c["init"], c["k"]): c for c in learning_curves(two, n_boot=500)}
    assert both[("ssl", "all")]["n_pretrain_seeds"] == 2 and one[("ssl", "all")]["n_pretrain_seeds"] == 1
    width = lambda c: c["ci95"][1] - c["ci95"][0]  # noqa: E731
    assert width(both[("ssl", "all")]) > width(one[("ssl", "all")]) + 0.03
    assert both[("ssl", "all")]["dice_mean"] == pytest.approx(0.9)


def test_zero_shot_is_the_first_point_and_is_compared():
    rows = _rows() + [dict(init="ssl", k=0, seed=0, subject=s, **{"class": c}, dice=0.7) for s in SUBJECTS
                      for c in ("GM", "WM")]  # fmt: skip
    curves = [c for c in learning_curves(rows, n_boot=100) if c["init"] == "ssl"]
    assert [c["k"] for c in curves] == [0, 1, "all"] and curves[0]["n_seeds"] == 1
    zero = [c for c in comparisons(rows, n_boot=100) if c["k"] == 0]
    assert [(c["a"], c["b"], c["b_k"]) for c in zero] == [("ssl", "scratch", 1)]  # no label vs scratch's one
    assert zero[0]["delta"] == pytest.approx(0.7 - 0.7)  # scratch at k=1: 0.55 + 0.1 i - 0.1, mean 0.70


def test_an_unconverged_arm_is_flagged_not_ranked():
    rows = [dict(r, converged=r["init"] != "ssl") for r in _rows()]  # ssl is best at k=1 but did not converge
    best = {b["k"]: b for b in best_init_per_k(learning_curves(rows, n_boot=100), comparisons(rows, n_boot=100))}
    assert best[1]["best"] == "scratch" and best[1]["unranked"] == ["ssl"] and best[1]["runner_up"] is None
    rows = [dict(r, converged=False) for r in _rows()]
    assert all(b["best"] is None for b in best_init_per_k(learning_curves(rows, n_boot=50), []))
