"""Overlay figure of a fine-tuning run: true and predicted tissue through the stage's ROI.

One row per test subject; columns: the true tissue and the prediction on a coronal slice, then on an
axial slice, both through the ROI's centre of mass and zoomed to the ROI (plus a margin). The image is
the first present modality (normally T1w); CSF is blue, GM red, WM yellow (the colours of the dseg.tsv
and viewer tables, :data:`ssl_pretrain.data.labels.TISSUE_COLOURS`); the ROI outline is green.

Panels are drawn with nilearn's plotting (``plot_anat`` + ``add_overlay`` + ``add_contours``) from the
arrays *and their affine* (the cache grid's), so each panel says where its slice lies in mm (``y=…``,
``z=…``, world coordinates of the subject's scanner space) and which side is the subject's left and right
(``L``/``R``, neurological convention as nilearn draws it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

from ssl_pretrain.atomic import atomic_path
from ssl_pretrain.data.labels import TISSUE_COLOURS as TISSUE_HEX
from ssl_pretrain.data.labels import hex_to_rgb

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
from matplotlib.colors import ListedColormap
from nilearn import plotting

OVERLAY_ALPHA = 0.45
TISSUE_COLOURS = ListedColormap(
    [(0, 0, 0, 0)] + [(*(c / 255 for c in hex_to_rgb(TISSUE_HEX[i])), 1.0) for i in (1, 2, 3)]
)


@dataclass
class OverlayCase:
    """One subject of the figure (arrays ``(X, Y, Z)`` on one grid).

    Attributes:
        title: row label (subject, group, Dice).
        image: intensities.
        pred: predicted tissue classes.
        truth: true tissue classes, or ``None``.
        roi: the ROI (True = inside).
        affine: the grid's voxel-to-world affine (4x4, mm); ``None`` draws voxel indices as mm (1 mm voxels,
            RAS axes), so callers should pass the cache grid's.
    """

    title: str
    image: np.ndarray
    pred: np.ndarray
    truth: np.ndarray | None
    roi: np.ndarray
    affine: np.ndarray | None = None


def _window(roi: np.ndarray, margin: int = 6) -> tuple[slice, slice, slice]:
    idx = np.argwhere(roi) if roi.any() else np.argwhere(np.ones_like(roi))
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, roi.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))  # type: ignore[return-value]


def _cropped(volume: np.ndarray, box: tuple[slice, slice, slice], affine: np.ndarray) -> nib.Nifti1Image:
    """``volume[box]`` as an image whose affine keeps its voxels where they were in mm."""
    shift = np.eye(4)
    shift[:3, 3] = [b.start for b in box]
    return nib.Nifti1Image(np.ascontiguousarray(volume[box]), affine @ shift)


def _panel(
    ax: plt.Axes,
    anat: nib.Nifti1Image,
    labels: nib.Nifti1Image | None,
    roi: nib.Nifti1Image,
    mode: str,
    cut: float,
    title: str,
) -> None:
    """One slice (``mode`` ``y`` coronal / ``z`` axial at ``cut`` mm) of ``anat`` with ``labels`` and the ROI."""
    values = np.asarray(anat.dataobj)
    lo, hi = np.percentile(values, [1, 99]) if values.size else (0.0, 1.0)
    display = plotting.plot_anat(
        anat,
        display_mode=mode,
        cut_coords=[cut],
        axes=ax,
        annotate=True,
        draw_cross=False,
        black_bg=True,
        colorbar=False,
        dim=0,
        vmin=float(lo),
        vmax=float(hi if hi > lo else lo + 1),
        title=None,
    )
    if labels is not None:
        display.add_overlay(  # threshold: background (0) stays transparent
            labels, cmap=TISSUE_COLOURS, vmin=0, vmax=3, transparency=OVERLAY_ALPHA, interpolation="nearest"
        )
    else:
        ax.text(0.5, 0.5, "no labels", color="w", ha="center", va="center", transform=ax.transAxes)
    roi_data = np.asarray(roi.dataobj)
    if roi_data.any() and not roi_data.all():
        display.add_contours(roi, levels=[0.5], colors="lime", linewidths=0.8)
    ax.set_title(title, fontsize=8)


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
        affine = np.eye(4) if case.affine is None else np.asarray(case.affine, dtype=np.float64)
        box = _window(case.roi)
        inside = np.argwhere(case.roi)
        centre = np.round(inside.mean(0)).astype(int) if len(inside) else np.array(case.roi.shape) // 2
        world = affine[:3, :3] @ centre + affine[:3, 3]  # the ROI's centre in mm
        anat = _cropped(np.asarray(case.image, np.float32), box, affine)
        roi = _cropped(case.roi.astype(np.uint8), box, affine)
        pred = _cropped(np.asarray(case.pred, np.uint8), box, affine)
        truth = None if case.truth is None else _cropped(np.asarray(case.truth, np.uint8), box, affine)
        for col, (mode, cut, name) in enumerate((("y", world[1], "coronal"), ("z", world[2], "axial"))):
            _panel(row[2 * col], anat, truth, roi, mode, float(cut), f"truth, {name} {mode}={cut:.0f} mm")
            _panel(row[2 * col + 1], anat, pred, roi, mode, float(cut), f"prediction, {name} {mode}={cut:.0f} mm")
        row[0].text(
            -0.08, 0.5, case.title, fontsize=8, rotation=90, ha="right", va="center", transform=row[0].transAxes
        )
    handles = [plt.Rectangle((0, 0), 1, 1, color=TISSUE_COLOURS(i), alpha=OVERLAY_ALPHA) for i in (1, 2, 3)]
    fig.legend(handles, ["CSF", "GM", "WM"], loc="lower center", ncol=3, fontsize=8, frameon=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.08, top=0.9 if suptitle else 0.95, wspace=0.04, hspace=0.3)
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
