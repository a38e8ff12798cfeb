"""Probes score ≈1 on separable features and chance on shuffled labels; the transfer matrix keeps subjects apart."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.probes import knn_probe, linear_probe, run_probe, transfer_matrix
from ssl_pretrain.models.features import RegionFeatures


def _separable(n, seed):
    rng = np.random.default_rng(seed)
    y = np.repeat([2, 3], n // 2)
    return rng.normal(size=(n, 8)) + 4.0 * (y == 3)[:, None], y


@pytest.mark.parametrize("probe", [linear_probe, knn_probe])
def test_probe_on_separable_features_scores_near_one(probe):
    xtr, ytr = _separable(600, 0)
    xte, yte = _separable(600, 1)
    out = probe(xtr, ytr, xte, yte, seed=0)
    assert out["balanced_accuracy"] > 0.99
    assert out["dice"][2] > 0.99 and out["dice"][3] > 0.99 and out["dice_mean"] > 0.99
    assert out["n_train"] == 600 and out["n_test"] == 600


@pytest.mark.parametrize("probe", [linear_probe, knn_probe])
def test_probe_on_shuffled_labels_is_at_chance(probe):
    xtr, ytr = _separable(2000, 2)
    xte, yte = _separable(4000, 3)
    rng = np.random.default_rng(4)
    out = probe(xtr, rng.permutation(ytr), xte, rng.permutation(yte), seed=0)
    assert abs(out["balanced_accuracy"] - 0.5) < 0.05  # SD of the score at n = 4000 is ≈ 0.008


def test_probe_input_checks():
    x, y = _separable(20, 0)
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x, np.full(20, 2), x, y)
    with pytest.raises(ValueError, match="width"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="one label per row"):
        knn_probe(x, y[:5], x, y)


def _region(signal_column, subjects, seed, n=400):
    """GM/WM told apart by one feature column; the others are noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat([2, 3], n // 2)
    x = rng.normal(size=(n, 4))
    x[:, signal_column] += 5.0 * (y == 3)
    return RegionFeatures(X=x, y=y, subjects=np.resize(np.asarray(subjects), n))


def test_transfer_matrix_shape_and_meaning():
    train = {"subcortical": _region(0, ["s1", "s2"], 0), "brainstem": _region(1, ["s1", "s2"], 1)}
    test = {
        "subcortical": _region(0, ["s3", "s4"], 2),
        "brainstem": _region(1, ["s3", "s4"], 3),
        "cortex": _region(0, ["s3"], 4),
    }
    m = transfer_matrix(train, test, probe="linear")
    assert list(m) == ["subcortical", "brainstem"] and all(list(r) == list(test) for r in m.values())
    assert m["subcortical"]["subcortical"] > 0.97 and m["brainstem"]["brainstem"] > 0.97
    assert m["subcortical"]["cortex"] > 0.97  # same code for tissue: transfers
    assert abs(m["subcortical"]["brainstem"] - 0.5) < 0.1  # tissue coded in another feature: does not transfer
    knn = transfer_matrix(train, test, probe="knn", score="dice_mean")
    assert knn["brainstem"]["brainstem"] > 0.95


def test_transfer_matrix_rejects_shared_subjects():
    train = {"subcortical": _region(0, ["s1", "s2"], 0)}
    test = {"brainstem": _region(1, ["s3"], 1), "cortex": _region(0, ["s2"], 2)}
    with pytest.raises(ValueError, match=r"share subjects \['s2'\]"):
        transfer_matrix(train, test)
    with pytest.raises(ValueError, match="disjoint"):
        run_probe("linear", train["subcortical"], test["cortex"])
    with pytest.raises(ValueError, match="unknown probe"):
        transfer_matrix(train, {"brainstem": test["brainstem"]}, probe="svm")
    with pytest.raises(ValueError, match="unknown score"):
        transfer_matrix(train, {"brainstem": test["brainstem"]}, score="auc")


def test_transfer_cells_get_a_ci_over_testing_subjects():
    from evaluation.probes import subject_bootstrap_balanced_accuracy, transfer_matrix_with_ci

    rng = np.random.default_rng(0)

    def side(prefix, n_subjects, signal):
        y = np.tile([2, 3], 50 * n_subjects)
        X = rng.normal(size=(len(y), 4)) + signal * (y == 3)[:, None]
        subjects = np.repeat([f"{prefix}{i}" for i in range(n_subjects)], 100)
        return RegionFeatures(X=X, y=y, subjects=subjects)

    train, test = {"a": side("tr", 4, 2.0)}, {"a": side("te", 6, 2.0), "b": side("te", 6, 0.0)}
    values, cis = transfer_matrix_with_ci(train, test, n_boot=300)
    assert cis["a"]["a"][0] < values["a"]["a"] < cis["a"]["a"][1] and cis["a"]["a"][0] > 0.75
    assert cis["a"]["b"][0] < 0.5 < cis["a"]["b"][1]  # no signal in b: chance lies inside its CI
    assert values == transfer_matrix(train, test)
    one = subject_bootstrap_balanced_accuracy(np.array([2, 3]), np.array([2, 3]), np.array(["s", "s"]))
    assert all(np.isnan(one))  # a single subject: no interval
