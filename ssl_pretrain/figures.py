"""What ``bssl pretrain`` shows about a run: loss curve, MAE reconstructions, embedding quality.

- :func:`plot_loss_curve`: ``train/loss`` per step (raw and smoothed) and ``val/loss`` from ``metrics.csv``.
- :func:`plot_mae_reconstruction`: input / masked input / reconstruction (masked voxels predicted,
  visible voxels pasted, as in He et al. 2022's figures), sagittal and axial slices through the patch
  centre (the brainstem of a validation subject), one row per present modality.
- :func:`embedding_quality`: alignment and uniformity of L2-normalised embeddings (Wang & Isola,
  "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
  Hypersphere", ICML 2020, https://arxiv.org/abs/2005.10242): alignment = E‖f(x) − f(x⁺)‖² over positive
  pairs (lower: views of one subject agree); uniformity = log E exp(−2‖f(x) − f(y)‖²) over all pairs
  within a view, averaged over the two views (lower: embeddings spread over the sphere; the minimum for
  N points is reached by a regular simplex).

Figures are written atomically (temporary file + rename) with matplotlib's Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

from ssl_pretrain.atomic import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn import functional as F

from ssl_pretrain.errors import DataError


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically and close it."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (shorter at the start)."""
    cumsum = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[lo]) / (idx - lo)


def plot_loss_curve(metrics_csv: str | Path, path: str | Path, title: str = "pretraining loss") -> Path:
    """Plot ``train/loss`` (and its components, and ``val/loss``) against the step.

    Args:
        metrics_csv: Lightning CSV-logger file with a ``step`` column and ``train/*``/``val/*`` columns.
        path: output PNG.
        title: figure title (e.g. the method).

    Raises:
        DataError: the CSV has no ``train/loss`` values.
    """
    frame = pd.read_csv(metrics_csv)
    if "train/loss" not in frame or frame["train/loss"].notna().sum() == 0:
        raise DataError(metrics_csv, "no 'train/loss' values to plot")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    train = frame.dropna(subset=["train/loss"])
    steps, loss = train["step"].to_numpy(), train["train/loss"].to_numpy(float)
    window = max(1, len(loss) // 20)
    ax.plot(steps, loss, color="C0", alpha=0.3, lw=0.8, label="train (per step)")
    ax.plot(steps, _smooth(loss, window), color="C0", lw=1.8, label=f"train (mean of {window} logged)")
    components = [c for c in frame.columns if c.startswith("train/") and c != "train/loss" and not c.endswith("lr")]
    for i, column in enumerate(components):
        part = frame.dropna(subset=[column])
        same = part[column].to_numpy(float).tolist() == part["train/loss"].to_numpy(float).tolist()
        if len(part) and not same:  # a single-objective method's component is the loss itself
            values = part[column].to_numpy(float)
            ax.plot(part["step"], _smooth(values, window), color=f"C{i + 2}", lw=1, ls="--", label=column)
    if "val/loss" in frame and frame["val/loss"].notna().any():
        val = frame.dropna(subset=["val/loss"])
        ax.plot(val["step"], val["val/loss"], "o-", color="C1", ms=4, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_mae_reconstruction(
    image: np.ndarray,
    masked: np.ndarray,
    reconstruction: np.ndarray,
    presence: Sequence[bool],
    modalities: Sequence[str],
    path: str | Path,
    title: str = "MAE reconstruction",
    columns: Sequence[str] = ("input", "masked", "reconstruction"),
) -> Path:
    """Input / masked / reconstruction, sagittal and axial slices through the patch centre.

    Args:
        image: ``(C, X, Y, Z)`` the unmasked input patch (RAS: X left-right, Z inferior-superior).
        masked: ``(C, X, Y, Z)`` what the encoder saw.
        reconstruction: ``(C, X, Y, Z)`` in intensity units (masked voxels predicted, visible pasted).
        presence: ``(C,)`` which modalities exist (absent ones are not shown).
        modalities: channel names.
        path: output PNG.
        title: figure title (names the subject and patch centre).
        columns: the three column titles (e.g. truth / input / prediction for a cross-modal figure).
    """
    rows = [c for c in range(image.shape[0]) if presence[c]]
    if not rows:
        raise ValueError("no present modality to show")
    x, z = image.shape[1] // 2, image.shape[3] // 2
    if len(columns) != 3:
        raise ValueError(f"expected three column titles, got {list(columns)}")
    panels = list(zip(columns, (image, masked, reconstruction), strict=True))
    fig, axes = plt.subplots(len(rows), 6, figsize=(12, 2.1 * len(rows) + 0.6), squeeze=False)
    for r, c in enumerate(rows):
        lo, hi = np.percentile(image[c], [1, 99])
        for k, (plane, take) in enumerate((("sagittal", lambda a: a[x].T), ("axial", lambda a: a[:, :, z].T))):
            for j, (name, volume) in enumerate(panels):
                ax = axes[r, 3 * k + j]
                ax.imshow(take(volume[c]), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, origin="lower")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{name}\n({plane})", fontsize=9)
                if 3 * k + j == 0:
                    ax.set_ylabel(modalities[c])
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def alignment(z_a: Tensor, z_b: Tensor, alpha: float = 2.0) -> float:
    """E‖z_a − z_b‖^α over positive pairs of L2-normalised ``(N, D)`` embeddings (Wang & Isola 2020)."""
    z_a, z_b = F.normalize(z_a.double(), dim=1), F.normalize(z_b.double(), dim=1)
    return float((z_a - z_b).norm(dim=1).pow(alpha).mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """log E exp(−t‖z_i − z_j‖²) over pairs i < j of L2-normalised ``(N, D)`` embeddings (N >= 2)."""
    if z.shape[0] < 2:
        raise ValueError("uniformity needs at least 2 embeddings")
    z = F.normalize(z.double(), dim=1)
    return float(torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log())


def embedding_quality(z_a: Tensor, z_b: Tensor) -> dict[str, float]:
    """``{"alignment", "uniformity", "n"}`` of paired embeddings ``(N, D)`` of two views."""
    return {
        "alignment": alignment(z_a, z_b),
        "uniformity": 0.5 * (uniformity(z_a) + uniformity(z_b)),
        "n": int(z_a.shape[0]),
    }
