"""CKA properties and the distribution-level shift measures."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.similarity import (
    cka_matrix,
    cka_with_uncertainty,
    debiased_linear_cka,
    domain_shift,
    linear_cka,
    mmd_rbf,
    shift_matrix,
)
from ssl_pretrain.models.features import RegionFeatures


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(500, 5))
    X = latent @ rng.normal(size=(5, 12)) + 0.1 * rng.normal(size=(500, 12))
    Y = np.tanh(latent @ rng.normal(size=(5, 8)))
    return X, Y


def test_cka_identical_is_one(feats):
    X, _ = feats
    assert linear_cka(X, X) == pytest.approx(1.0)


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling(feats):
    X, Y = feats
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(12, 12)))
    base = linear_cka(X, Y)
    assert 0.2 < base < 1.0
    assert linear_cka(X @ q, Y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(7.5 * X, 0.01 * Y) == pytest.approx(base, rel=1e-9)
    assert linear_cka(X + 3.0, Y) == pytest.approx(base, rel=1e-9)  # centring removes offsets
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X))
    # not invariant to anisotropic scaling, which changes the geometry
    assert linear_cka(X * np.r_[100.0, np.ones(11)], Y) != pytest.approx(base, rel=1e-3)


def test_cka_independent_features_near_zero():
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(5000, 10)), rng.normal(size=(5000, 10))
    assert linear_cka(X, Y) < 0.01  # expected bias ≈ sqrt(p·q) / n = 0.002


def test_cka_needs_paired_rows_and_finite_values():
    with pytest.raises(ValueError, match="paired"):
        linear_cka(np.ones((5, 2)), np.ones((6, 2)))
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(np.full((5, 2), np.nan), np.ones((5, 2)))


def test_cka_matrix(feats):
    X, Y = feats
    m, detail = cka_matrix({"a": X, "b": Y, "c": X @ np.eye(12) * 2}, n_null=20)
    assert m["a"]["a"] == 1.0 and m["a"]["c"] == pytest.approx(1.0)
    assert m["a"]["b"] == m["b"]["a"] == pytest.approx(debiased_linear_cka(X, Y))
    assert detail["a"]["b"]["biased"] == pytest.approx(linear_cka(X, Y)) and "ci95" in detail["b"]["a"]


def test_debiased_cka_of_independent_features_is_zero_within_its_ci_where_the_plain_one_is_not():
    """At a probe's sizes (900 voxels of 6 subjects, 60 channels) the plain estimator reads ~0.06 for unrelated
    features; the unbiased HSIC gives ~0, inside its CI, and the shuffled-pairing null says the same."""
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(900, 60)), rng.normal(size=(900, 60))
    groups = np.repeat(np.arange(6), 150)
    d = cka_with_uncertainty(X, Y, groups, n_null=50, n_half=50)
    assert d["biased"] > 0.05
    assert abs(d["cka"]) < 0.01 and d["ci95"][0] <= 0.0 <= d["ci95"][1]
    assert d["p"] > 0.05 and abs(d["null_mean"]) < 0.01


def test_debiased_cka_detects_a_shared_signal():
    rng = np.random.default_rng(6)
    shared = rng.normal(size=(600, 5))
    X = np.hstack([shared, rng.normal(size=(600, 20))])
    Y = np.hstack([shared @ rng.normal(size=(5, 5)), rng.normal(size=(600, 20))])
    d = cka_with_uncertainty(X, Y, np.repeat(np.arange(6), 100), n_null=50, n_half=50)
    assert d["cka"] > 0.2 and d["ci95"][0] > d["null_q95"] and d["p"] < 0.05
    assert debiased_linear_cka(X, X) == pytest.approx(1.0)


def test_domain_shift_same_and_separated():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(1000, 6)), rng.normal(size=(1000, 6))
    assert abs(domain_shift(a, b, seed=0) - 0.5) < 0.06
    assert domain_shift(a, b + 4.0, seed=0) > 0.98


def test_domain_shift_matches_tissue_composition():
    """Same class-conditional features, different GM/WM proportions: no shift once composition is matched."""
    rng = np.random.default_rng(4)

    def region(n_gm, n_wm):
        y = np.r_[np.full(n_gm, 2), np.full(n_wm, 3)]
        return rng.normal(size=(len(y), 4)) + 3.0 * (y == 3)[:, None], y

    xa, ya = region(900, 100)
    xb, yb = region(100, 900)
    assert domain_shift(xa, xb, seed=0) > 0.75  # unmatched: composition alone separates the regions
    assert abs(domain_shift(xa, xb, seed=0, labels_a=ya, labels_b=yb) - 0.5) < 0.1


def test_mmd():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(400, 3)), rng.normal(size=(400, 3))
    assert abs(mmd_rbf(a, b)) < 0.01
    assert mmd_rbf(a, b + 2.0) > 0.2
    with pytest.raises(ValueError, match="columns"):
        mmd_rbf(a, b[:, :2])


def test_shift_matrix():
    rng = np.random.default_rng(6)
    y = np.repeat([2, 3], 200)

    def feats(offset):
        return RegionFeatures(X=rng.normal(size=(400, 3)) + offset, y=y, subjects=np.full(400, "s1"))

    m = shift_matrix({"thal": feats(0.0), "stem": feats(5.0), "ctx": feats(0.0)})
    assert m["thal"]["thal"] == 0.5 and m["thal"]["stem"] == m["stem"]["thal"] > 0.95
    assert abs(m["thal"]["ctx"] - 0.5) < 0.1


def _kornblith_debiased_cka(x, y):
    """The reference: Kornblith et al. 2019's notebook (``center_gram(unbiased=True)`` on linear Grams)."""

    def centre(gram):
        gram, n = gram.copy(), len(gram)
        np.fill_diagonal(gram, 0)
        means = gram.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        gram -= means[:, None] + means[None, :]
        np.fill_diagonal(gram, 0)
        return gram

    gx, gy = centre(x @ x.T), centre(y @ y.T)
    return gx.ravel() @ gy.ravel() / (np.linalg.norm(gx) * np.linalg.norm(gy))


def test_debiased_cka_matches_the_reference_and_ignores_feature_offsets():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 7))
    y = x @ rng.normal(size=(7, 4)) + rng.normal(size=(50, 4))
    assert debiased_linear_cka(x, y) == pytest.approx(_kornblith_debiased_cka(x, y))
    assert debiased_linear_cka(x + 5.0, y - 3.0) == pytest.approx(debiased_linear_cka(x, y))
