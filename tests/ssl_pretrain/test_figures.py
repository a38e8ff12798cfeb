"""Alignment/uniformity against closed forms; the figures are written as PNGs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_pretrain.errors import DataError
from ssl_pretrain.figures import alignment, embedding_quality, plot_loss_curve, plot_mae_reconstruction, uniformity


def test_alignment_closed_forms() -> None:
    z = torch.randn(5, 3)
    assert alignment(z, 2 * z) == pytest.approx(0.0, abs=1e-12)  # scale does not matter: normalised
    e = torch.eye(2)
    assert alignment(e, e.flip(0)) == pytest.approx(2.0)  # orthogonal unit vectors: |a - b|^2 = 2
    assert alignment(e, -e) == pytest.approx(4.0)


def test_uniformity_closed_forms() -> None:
    antipodal = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert uniformity(antipodal) == pytest.approx(-8.0)  # |a - b|^2 = 4, t = 2
    angles = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    simplex = torch.stack([angles.cos(), angles.sin()], 1)
    assert uniformity(simplex) == pytest.approx(-6.0)  # |a - b|^2 = 3 for every pair
    assert uniformity(torch.ones(4, 3)) == pytest.approx(0.0, abs=1e-12)  # collapsed
    with pytest.raises(ValueError):
        uniformity(torch.ones(1, 3))
    quality = embedding_quality(simplex, simplex)
    assert quality == {"alignment": pytest.approx(0.0, abs=1e-12), "uniformity": pytest.approx(-6.0), "n": 3}


def test_loss_curve_png(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    rows = ["epoch,step,train/loss,train/mae,val/loss"]
    rows += [f"0,{s},{1.0 / (s + 1)},{1.0 / (s + 1)}," for s in range(20)] + ["0,19,,,0.2"]
    csv.write_text("\n".join(rows) + "\n")
    out = plot_loss_curve(csv, tmp_path / "loss_curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.csv"
    empty.write_text("epoch,step,val/loss\n0,1,0.3\n")
    with pytest.raises(DataError, match="train/loss"):
        plot_loss_curve(empty, tmp_path / "x.png")


def test_mae_reconstruction_png(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)
    out = plot_mae_reconstruction(image, image * 0, image, [True, False], ["T1w", "T2w"], tmp_path / "mae.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_reconstruction_figure_takes_column_titles(tmp_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(2, 8, 8, 8)).astype(np.float32)
    path = plot_mae_reconstruction(
        image, image * 0, image, [True, True], ["T1w", "T2w"], tmp_path / "x.png", columns=("truth", "in", "out")
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="three column titles"):
        plot_mae_reconstruction(image, image, image, [True, True], ["T1w", "T2w"], tmp_path / "y.png", columns=("a",))
