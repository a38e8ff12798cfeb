"""Every figure function returns a PNG that decodes to an image of the expected layout."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from evaluation.figures import (
    centre_slices,
    figures_from_results,
    group_png,
    learning_curves_png,
    overlay_png,
    similarity_png,
    transfer_matrix_png,
)
from tests.synthetic import synthetic_labels

PNG = b"\x89PNG\r\n\x1a\n"


def _image(png: bytes) -> np.ndarray:
    assert png.startswith(PNG)
    return imread(io.BytesIO(png), format="png")


def test_heatmaps_one_panel_per_encoder():
    matrix = {
        "subcortical": {"subcortical": 0.95, "brainstem": 0.7},
        "brainstem": {"subcortical": 0.6, "brainstem": None},
    }
    one = _image(transfer_matrix_png({"scratch": matrix}))
    two = _image(transfer_matrix_png({"scratch": matrix, "ssl_mae": matrix}))
    assert two.shape[1] > 1.4 * one.shape[1]  # a second panel widens the figure
    assert _image(similarity_png({"ssl_mae": matrix}, "domain shift")).shape[0] > 100
    with pytest.raises(ValueError):
        transfer_matrix_png({})


def test_learning_curves_and_group_plots():
    curves = [
        {"init": i, "k": k, "dice_mean": m, "ci95": [m - 0.05, m + 0.05]}
        for i, off in (("scratch", 0.0), ("ssl_mae", 0.05))
        for k, m in ((1, 0.5 + off), (2, 0.6 + off), ("all", 0.8 + off))
    ]
    assert _image(learning_curves_png(curves)).shape[0] > 100
    table = pd.DataFrame({"group": ["HC"] * 5 + ["ALS"] * 5, "brainstem_volume": np.arange(10.0), "x": 1.0})
    assert _image(group_png(table, ["brainstem_volume", "x"], order=["HC", "ALS"])).shape[1] > 200
    with pytest.raises(ValueError):
        learning_curves_png([])


def test_overlay_and_centre_slices():
    tissue, regions = synthetic_labels((20, 24, 20))
    slices = centre_slices(regions == 5)
    stem = np.argwhere(regions == 5).mean(0)
    assert slices == [(axis, round(stem[axis])) for axis in range(3)]
    single = _image(overlay_png(tissue * 300.0, tissue, slices, title="brainstem"))
    paired = _image(overlay_png(tissue * 300.0, tissue, slices, reference=tissue))
    assert paired.shape[0] > 1.5 * single.shape[0]  # prediction and reference rows
    with pytest.raises(ValueError, match="same 3D grid"):
        overlay_png(tissue, tissue[:5], slices)
    with pytest.raises(ValueError, match="empty"):
        centre_slices(np.zeros((3, 3, 3), bool))


def test_figures_from_results():
    results = {
        "transfer_matrix": {"scratch": {"a": {"a": 0.9}}},
        "cka": {"scratch": {"a": {"a": 1.0}}},
        "learning_curves": [{"init": "scratch", "k": 1, "dice_mean": 0.5, "ci95": [0.4, 0.6]}],
        "group_analysis": [],
    }
    figs = figures_from_results(results)
    assert sorted(figs) == ["cka", "learning_curves", "transfer_matrix"]
    assert all(png.startswith(PNG) for png in figs.values())
