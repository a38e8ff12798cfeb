"""Linear and k-nearest-neighbour probes on frozen features, and the region-to-region transfer matrix.

A probe is trained on voxel features of one region (and one set of subjects) to predict the voxels'
tissue class (GM/WM), then scored on voxels of another region from *other* subjects. Scores:

* ``balanced_accuracy``: mean per-class recall (0.5 = chance for two balanced classes);
* ``dice``: per-class Dice of the voxel predictions, ``2TP / (2TP + FP + FN)`` over the sampled voxels
  (a voxel-sample Dice, not a volume Dice: it says how well the classes are told apart, with no shape).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluation.metrics import dice
from evaluation.statistics import subject_bootstrap_balanced_accuracy
from ssl_pretrain.models.features import RegionFeatures

PROBES = ("linear", "knn")
SCORES = ("balanced_accuracy", "dice_mean")


def _check(train_X: np.ndarray, train_y: np.ndarray, test_X: np.ndarray, test_y: np.ndarray) -> None:
    for name, x, y in (("train", train_X, train_y), ("test", test_X, test_y)):
        if np.ndim(x) != 2 or len(x) != len(y):
            raise ValueError(f"{name}_X must be (n, F) with one label per row; got {np.shape(x)} and {np.shape(y)}")
        if len(y) == 0:
            raise ValueError(f"no {name} samples")
    if np.shape(train_X)[1] != np.shape(test_X)[1]:
        raise ValueError(f"train and test features differ in width: {np.shape(train_X)[1]} vs {np.shape(test_X)[1]}")
    if np.unique(train_y).size < 2:
        raise ValueError("the training side holds a single class; a probe needs at least two")


def _fit(probe: str, X: np.ndarray, y: np.ndarray, seed: int, C: float = 1.0, k: int = 20) -> Pipeline:
    if probe == "linear":
        head = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    elif probe == "knn":
        head = KNeighborsClassifier(n_neighbors=min(k, len(y)))
    else:
        raise ValueError(f"unknown probe {probe!r}; choose one of {PROBES}")
    return make_pipeline(StandardScaler(), head).fit(X, y)


def _evaluate(model: Pipeline, train_y: np.ndarray, test_X: np.ndarray, test_y: np.ndarray) -> dict:
    pred = model.predict(test_X)
    test_y = np.asarray(test_y)
    classes = np.union1d(np.unique(train_y), np.unique(test_y))
    per_class = dice(pred, test_y, [int(c) for c in classes])
    return {
        "balanced_accuracy": float(balanced_accuracy_score(test_y, pred)),
        "dice": per_class,
        "dice_mean": float(np.nanmean(list(per_class.values()))),
        "n_train": len(train_y),
        "n_test": len(test_y),
    }


def linear_probe(
    train_X: np.ndarray,
    train_y: np.ndarray,
    test_X: np.ndarray,
    test_y: np.ndarray,
    seed: int = 0,
    C: float = 1.0,
) -> dict:
    """Standardised (multinomial) logistic regression trained on one side and scored on the other.

    Args:
        train_X: ``(n_train, F)`` features; train_y: ``(n_train,)`` classes.
        test_X: ``(n_test, F)`` features; test_y: ``(n_test,)`` classes.
        seed: solver seed.
        C: inverse L2 regularisation strength.

    Returns:
        ``{"balanced_accuracy", "dice": {class: dice}, "dice_mean", "n_train", "n_test"}``.
    """
    _check(train_X, train_y, test_X, test_y)
    return _evaluate(_fit("linear", train_X, train_y, seed, C=C), train_y, test_X, test_y)


def knn_probe(
    train_X: np.ndarray,
    train_y: np.ndarray,
    test_X: np.ndarray,
    test_y: np.ndarray,
    seed: int = 0,
    k: int = 20,
) -> dict:
    """Standardised k-nearest-neighbour vote (Euclidean, uniform weights); same output as :func:`linear_probe`.

    ``seed`` is accepted for a uniform probe signature (kNN is deterministic).
    """
    _check(train_X, train_y, test_X, test_y)
    return _evaluate(_fit("knn", train_X, train_y, seed, k=k), train_y, test_X, test_y)


def _subjects(features: RegionFeatures) -> set[str]:
    return set(np.asarray(features.subjects, dtype=str).tolist())


def run_probe(probe: str, train: RegionFeatures, test: RegionFeatures, seed: int = 0) -> dict:
    """Train probe ``probe`` (``"linear"`` or ``"knn"``) on ``train`` and score it on ``test``.

    Raises:
        ValueError: unknown probe, or a subject appears on both sides.
    """
    shared = _subjects(train) & _subjects(test)
    if shared:
        raise ValueError(f"train and test sides share subjects {sorted(shared)}; probes need disjoint subjects")
    _check(train.X, train.y, test.X, test.y)
    return _evaluate(_fit(probe, train.X, train.y, seed), train.y, test.X, test.y)


def _cells(
    features_by_region_train: Mapping[str, RegionFeatures],
    features_by_region_test: Mapping[str, RegionFeatures],
    probe: str,
    seed: int,
) -> Iterator[tuple[str, str, Pipeline, RegionFeatures, RegionFeatures]]:
    """``(train region, test region, fitted probe, train side, test side)`` of every cell (one fit per row)."""
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; choose one of {PROBES}")
    train_subjects = set().union(*(_subjects(f) for f in features_by_region_train.values()))
    test_subjects = set().union(*(_subjects(f) for f in features_by_region_test.values()))
    shared = train_subjects & test_subjects
    if shared:
        raise ValueError(f"training and testing sides share subjects {sorted(shared)}; use disjoint subject sets")
    for a, train in features_by_region_train.items():
        model: Pipeline | None = None
        for b, test in features_by_region_test.items():
            _check(train.X, train.y, test.X, test.y)
            if model is None:
                model = _fit(probe, train.X, train.y, seed)
            yield a, b, model, train, test


def transfer_matrix(
    features_by_region_train: Mapping[str, RegionFeatures],
    features_by_region_test: Mapping[str, RegionFeatures],
    probe: str = "linear",
    score: str = "balanced_accuracy",
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Probe scores for every (training region, testing region) pair of one encoder.

    The training side and the testing side must come from disjoint subject sets (e.g. a subject split
    made once for the whole evaluation): every subject of any training region is checked against every
    subject of any testing region, and an overlap raises ``ValueError``.

    Args:
        features_by_region_train: region -> features of the training subjects.
        features_by_region_test: region -> features of the testing subjects (same encoder).
        probe: ``"linear"`` or ``"knn"``.
        score: ``"balanced_accuracy"`` or ``"dice_mean"``.
        seed: probe seed.

    Returns:
        ``{train_region: {test_region: score}}``; the diagonal is the within-region score.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
    out: dict[str, dict[str, float]] = {}
    for a, b, model, train, test in _cells(features_by_region_train, features_by_region_test, probe, seed):
        out.setdefault(a, {})[b] = float(_evaluate(model, train.y, test.X, test.y)[score])
    return out


def transfer_matrix_with_ci(
    features_by_region_train: Mapping[str, RegionFeatures],
    features_by_region_test: Mapping[str, RegionFeatures],
    probe: str = "linear",
    seed: int = 0,
    n_boot: int = 1000,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, list[float]]]]:
    """:func:`transfer_matrix` of balanced accuracy with a 95% CI per cell over the testing subjects
    (:func:`subject_bootstrap_balanced_accuracy`; chance is 0.5).

    Returns:
        ``({train_region: {test_region: balanced accuracy}}, {train_region: {test_region: [lo, hi]}})``.
    """
    values: dict[str, dict[str, float]] = {}
    cis: dict[str, dict[str, list[float]]] = {}
    for a, b, model, _, test in _cells(features_by_region_train, features_by_region_test, probe, seed):
        pred = model.predict(test.X)
        values.setdefault(a, {})[b] = float(balanced_accuracy_score(test.y, pred))
        cis.setdefault(a, {})[b] = subject_bootstrap_balanced_accuracy(
            pred, np.asarray(test.y), test.subjects, n_boot, seed
        )
    return values, cis
