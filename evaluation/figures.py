"""Report figures, each drawn by one function that returns PNG bytes.

Figures are made with matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg), never
through ``pyplot``'s global state, so they can be drawn from any thread and leave nothing open.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from evaluation.learning_curves import k_order
from evaluation.sections.instantiate import default_sections, draw_figures
from ssl_pretrain.data.labels import TISSUE_CLASSES

Matrix = Mapping[str, Mapping[str, float]]
TISSUE_COLOURS = {1: "#3b8bd9", 2: "#e8833a", 3: "#f2f2a0"}  # CSF blue, GM orange, WM pale yellow


def figure_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _value(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _draw_matrix(ax: Any, matrix: Matrix, vmin: float, vmax: float, cmap: str) -> Any:
    rows = list(matrix)
    cols = list(dict.fromkeys(c for r in rows for c in matrix[r]))
    values = np.array([[_value(matrix[r].get(c)) for c in cols] for r in rows])
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = values[i, j]
            if np.isfinite(v):
                dark = (v - vmin) / (vmax - vmin + 1e-12) < 0.55
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if dark else "black", fontsize=9)
    return im


def matrices_png(
    matrices: Mapping[str, Matrix],
    title: str,
    colour_label: str,
    row_label: str = "",
    col_label: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "viridis",
) -> bytes:
    """One annotated heatmap panel per entry of ``matrices`` (e.g. per encoder), sharing a colour scale.

    Args:
        matrices: panel name -> ``{row: {column: value}}`` (None or NaN cells are left blank).
        title: figure title.
        colour_label: what the colour encodes (e.g. "balanced accuracy").
        row_label, col_label: axis labels (e.g. "trained in", "tested in").
        vmin, vmax: colour range (default: the data range over all panels).
    """
    if not matrices:
        raise ValueError("no matrix to draw")
    every = [_value(v) for m in matrices.values() for r in m.values() for v in r.values()]
    finite = [v for v in every if np.isfinite(v)]
    lo = vmin if vmin is not None else (min(finite) if finite else 0.0)
    hi = vmax if vmax is not None else (max(finite) if finite else 1.0)
    n = len(matrices)
    fig = Figure(figsize=(1.6 + 3.4 * n, 3.9), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    images = []
    for i, (ax, (name, matrix)) in enumerate(zip(axes, matrices.items(), strict=True)):
        images.append(_draw_matrix(ax, matrix, lo, hi, cmap))
        ax.set_title(name)
        ax.set_xlabel(col_label)
        if i == 0:
            ax.set_ylabel(row_label)
    fig.colorbar(images[0], ax=list(axes), label=colour_label, shrink=0.85)
    fig.suptitle(title)
    return figure_png(fig)


def transfer_matrix_png(transfer: Mapping[str, Matrix], score_label: str = "balanced accuracy") -> bytes:
    """Transfer-matrix heatmaps (``{encoder: {train_region: {test_region: score}}}``), one panel per encoder."""
    return matrices_png(
        transfer,
        "Probe trained in one region, tested in another (other subjects)",
        score_label,
        row_label="trained in",
        col_label="tested in",
        cmap="viridis",
    )


def similarity_png(similarity: Mapping[str, Matrix], measure: str) -> bytes:
    """CKA or shift heatmaps (``{panel: {row: {column: value}}}``); ``measure`` names the value."""
    shift = "shift" in measure.lower()
    return matrices_png(
        similarity,
        f"Representation {'shift between regions' if shift else 'similarity'} ({measure})",
        measure,
        vmin=0.5 if shift else 0.0,
        vmax=1.0,
        cmap="magma",
    )


def learning_curves_png(curves: Sequence[Mapping[str, Any]], ylabel: str = "Dice (mean of GM, WM)") -> bytes:
    """Mean Dice against labelled subjects k, one line per initialisation with its 95% CI band.

    Args:
        curves: DESIGN §9 ``learning_curves`` entries (``init``, ``k``, ``dice_mean``, ``ci95``).
    """
    if not curves:
        raise ValueError("no learning-curve entry to draw")
    ks = sorted({c["k"] for c in curves}, key=k_order)
    pos = {k: i for i, k in enumerate(ks)}
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for init in dict.fromkeys(c["init"] for c in curves):
        pts = sorted((c for c in curves if c["init"] == init), key=lambda c: k_order(c["k"]))
        x = [pos[c["k"]] for c in pts]
        y = [_value(c["dice_mean"]) for c in pts]
        lo = [_value((c.get("ci95") or [None, None])[0]) for c in pts]
        hi = [_value((c.get("ci95") or [None, None])[1]) for c in pts]
        (line,) = ax.plot(x, y, marker="o", label=init)
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_xlabel("labelled training subjects k")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(title="initialisation", fontsize=8)
    ax.set_title("Label efficiency (bands: 95% CI over subjects and seeds)")
    return figure_png(fig)


def training_curves_png(curves: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Training loss and training-subject Dice against step, one line per arm (dashed: not converged).

    Args:
        curves: ``results["training_curves"]`` (:func:`evaluation.design.training_curves`).
    """
    if not curves:
        raise ValueError("no training curve to draw")
    fig = Figure(figsize=(10.0, 3.8))
    loss_ax, dice_ax = fig.subplots(1, 2)
    for label, c in curves.items():
        style = "-" if c.get("converged") is not False else "--"
        loss = np.asarray(c.get("loss") or [], float).reshape(-1, 2)
        (line,) = loss_ax.plot(loss[:, 0], loss[:, 1], style, label=label, linewidth=1.2)
        dice = np.asarray(c.get("train_dice") or [], float).reshape(-1, 2)
        dice_ax.plot(dice[:, 0], dice[:, 1], style, marker="o", color=line.get_color(), label=label)
    loss_ax.set_yscale("log")
    loss_ax.set(xlabel="optimiser step", ylabel="training loss (bin means)", title="Training loss")
    dice_ax.set(xlabel="optimiser step", ylabel="Dice on its labelled training subjects", title="Training-subject Dice")
    for ax in (loss_ax, dice_ax):
        ax.grid(alpha=0.3)
    dice_ax.legend(fontsize=7, title="dashed: not converged", title_fontsize=7)
    return figure_png(fig)


def group_png(
    table: pd.DataFrame,
    measures: Sequence[str],
    group_col: str = "group",
    order: Sequence[str] | None = None,
    ylabel: str = "",
) -> bytes:
    """Box plots with every subject as a dot, one panel per measure, groups side by side.

    Args:
        table: one row per subject with ``group_col`` and the measure columns.
        measures: columns to draw.
        order: groups first on the x axis (e.g. the controls); the others follow in order of appearance.
        ylabel: the unit or quantity on the y axis (e.g. "volume (mm³)").
    """
    if not measures:
        raise ValueError("no measure to draw")
    present = list(dict.fromkeys(table[group_col].dropna().astype(str)))
    groups = [g for g in (order or []) if g in present] + [g for g in present if g not in (order or [])]
    fig = Figure(figsize=(0.5 + 2.6 * len(measures), 3.6))
    axes = fig.subplots(1, len(measures), squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, measure in zip(axes, measures, strict=True):
        data = [table.loc[table[group_col].astype(str) == g, measure].dropna().to_numpy(float) for g in groups]
        ax.boxplot(data, showfliers=False, widths=0.5)
        for i, values in enumerate(data, start=1):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=12, alpha=0.7, zorder=3)
        ax.set_xticks(range(1, len(groups) + 1), groups)
        ax.set_title(measure, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if ylabel:
        axes[0].set_ylabel(ylabel)
    return figure_png(fig)


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2D slice of a RAS volume, oriented for display (superior/anterior up)."""
    return np.take(volume, index, axis=axis).T


def overlay_png(
    image: np.ndarray,
    labels: np.ndarray,
    slices: Sequence[tuple[int, int]],
    reference: np.ndarray | None = None,
    title: str = "",
    alpha: float = 0.45,
) -> bytes:
    """Image slices with the tissue label map overlaid (CSF blue, GM orange, WM yellow).

    Args:
        image: ``(X, Y, Z)`` intensities in RAS orientation (e.g. T1w).
        labels: ``(X, Y, Z)`` tissue classes (0 is transparent).
        slices: ``(axis, index)`` pairs: axis 0 sagittal, 1 coronal, 2 axial.
        reference: optional ``(X, Y, Z)`` reference labels, drawn in a second row for comparison.
        title: figure title.
    """
    img, lab = np.asarray(image, dtype=float), np.asarray(labels)
    if img.ndim != 3 or img.shape != lab.shape or (reference is not None and np.shape(reference) != img.shape):
        raise ValueError(f"image {img.shape}, labels {lab.shape} (and reference) must be the same 3D grid")
    if not slices:
        raise ValueError("no slice to draw")
    rows = [("prediction" if reference is not None else "labels", lab)]
    if reference is not None:
        rows.append(("reference", np.asarray(reference)))
    finite = img[np.isfinite(img)]
    lo, hi = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    cmap = ListedColormap([TISSUE_COLOURS[c] for c in sorted(TISSUE_COLOURS)])
    fig = Figure(figsize=(2.8 * len(slices), 2.9 * len(rows)))
    axes = fig.subplots(len(rows), len(slices), squeeze=False)
    names = {0: "sagittal", 1: "coronal", 2: "axial"}
    for r, (row_name, volume) in enumerate(rows):
        for c, (axis, index) in enumerate(slices):
            ax = axes[r][c]
            ax.imshow(_slice(img, axis, index), cmap="gray", vmin=lo, vmax=hi, origin="lower")
            lab2d = _slice(volume, axis, index).astype(float)
            ax.imshow(np.ma.masked_where(lab2d <= 0, lab2d), cmap=cmap, vmin=0.5, vmax=3.5, alpha=alpha, origin="lower")
            ax.set_title(f"{row_name}: {names.get(axis, axis)} {index}", fontsize=8)
            ax.axis("off")
    handles = [Patch(color=col, label=TISSUE_CLASSES[k]) for k, col in TISSUE_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return figure_png(fig)


def centre_slices(mask: np.ndarray) -> list[tuple[int, int]]:
    """Sagittal, coronal and axial slices through the centre of mass of ``mask`` (e.g. a region ROI)."""
    idx = np.argwhere(np.asarray(mask, dtype=bool))
    if idx.size == 0:
        raise ValueError("the mask is empty; no slice to centre on")
    centre = np.rint(idx.mean(0)).astype(int)
    return [(axis, int(centre[axis])) for axis in range(3)]


def figures_from_results(results: Mapping[str, Any]) -> dict[str, bytes]:
    """The figures that ``results.json`` alone determines, drawn by the default report sections
    (:meth:`evaluation.sections.base.Section.draw`: transfer matrix, CKA, shift, learning and training curves).

    Group plots and overlays need the per-subject table and the images: draw them with
    :func:`group_png` and :func:`overlay_png`.
    """
    return draw_figures(default_sections(), results)
