"""Overlay figure of a fine-tuning run: true and predicted tissue through the stage's ROI.

One row per test subject; columns: the true tissue and the prediction on a coronal slice, then on an
axial slice, both through the ROI's centre of mass and zoomed to the ROI (plus a margin). The image is
the first present modality (normally T1w); CSF is blue, GM red, WM yellow; the ROI outline is green.
Arrays are on the cache grid, whose axes point Right, Anterior, Superior (shown in neurological
convention: the subject's right on the right).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

from ssl_pretrain.atomic import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

TISSUE_COLOURS = ListedColormap([(0, 0, 0, 0), (0.2, 0.45, 1.0, 0.4), (0.95, 0.25, 0.2, 0.4), (1.0, 0.9, 0.3, 0.4)])


@dataclass
class OverlayCase:
    """One subject of the figure (arrays ``(X, Y, Z)`` on one grid).

    Attributes:
        title: row label (subject, group, Dice).
        image: intensities.
        pred: predicted tissue classes.
        truth: true tissue classes, or ``None``.
        roi: the ROI (True = inside).
    """

    title: str
    image: np.ndarray
    pred: np.ndarray
    truth: np.ndarray | None
    roi: np.ndarray


def _window(roi: np.ndarray, margin: int = 6) -> tuple[slice, slice, slice]:
    idx = np.argwhere(roi) if roi.any() else np.argwhere(np.ones_like(roi))
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, roi.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]


def _panel(ax: plt.Axes, image: np.ndarray, labels: np.ndarray | None, roi: np.ndarray, title: str) -> None:
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0, 1)
    ax.imshow(image.T, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    if labels is not None:
        ax.imshow(labels.T, cmap=TISSUE_COLOURS, vmin=0, vmax=3, origin="lower", interpolation="nearest")
    else:
        ax.text(0.5, 0.5, "no labels", color="w", ha="center", va="center", transform=ax.transAxes)
    if roi.any() and not roi.all():
        ax.contour(roi.T.astype(float), levels=[0.5], colors="lime", linewidths=0.8, origin="lower")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_figure(path: str | Path, cases: Sequence[OverlayCase], suptitle: str = "") -> Path:
    """Draw the overlay figure and save it atomically as PNG.

    Args:
        path: output ``.png``.
        cases: the subjects, one row each.
        suptitle: figure title (stage, init, k).
    """
    if not cases:
        raise ValueError("no subjects to draw")
    fig, axes = plt.subplots(len(cases), 4, figsize=(11, 2.9 * len(cases) + 0.6), squeeze=False)
    for row, case in zip(axes, cases, strict=True):
        sx, sy, sz = _window(case.roi)
        inside = np.argwhere(case.roi)
        centre = np.round(inside.mean(0)).astype(int) if len(inside) else np.array(case.roi.shape) // 2
        y, z = int(centre[1]), int(centre[2])
        views = [
            (
                case.image[sx, y, sz],
                None if case.truth is None else case.truth[sx, y, sz],
                case.pred[sx, y, sz],
                case.roi[sx, y, sz],
                f"coronal y={y}",
            ),
            (
                case.image[sx, sy, z],
                None if case.truth is None else case.truth[sx, sy, z],
                case.pred[sx, sy, z],
                case.roi[sx, sy, z],
                f"axial z={z}",
            ),
        ]
        for col, (img, truth, pred, roi, name) in enumerate(views):
            _panel(row[2 * col], img, truth, roi, f"truth, {name}")
            _panel(row[2 * col + 1], img, pred, roi, f"prediction, {name}")
        row[0].set_ylabel(case.title, fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=TISSUE_COLOURS(i)) for i in (1, 2, 3)]
    fig.legend(handles, ["CSF", "GM", "WM"], loc="lower center", ncol=3, fontsize=8, frameon=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0.03, 1, 0.97))
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
