"""Documentation figures of the demo cohort (``docs/demo_*.png``).

``python -m ssl_pretrain.data.demo.figures docs`` regenerates them:

* ``demo_brainstem_tissue.png``: the brainstem tissue rule — the ICBM152 GM probability (which calls
  most of the brainstem grey) beside the demo's tissue labels (WM tracts, GM nuclei, corticospinal
  tract, subdivisions), on sagittal, coronal and axial slices, and the landmark profile that places
  the pons;
* ``demo_subject.png``: one simulated subject (T1w, T2w, FA, MD, tissue, regions) and the same
  subject simulated as a control and as a patient (lower-brainstem atrophy).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from ssl_pretrain.data.demo import brainstem as bs
from ssl_pretrain.data.demo.anatomy import build_anatomy
from ssl_pretrain.data.demo.simulate import SimulationSettings, simulate_subject
from ssl_pretrain.data.labels import REGION_INDEX

TISSUE_CMAP = ListedColormap(["none", "#f2d43d", "#d7301f", "#2b8cbe"])  # bg, CSF, GM, WM
STEM_COLOURS = {"midbrain": "#ffffff", "pons": "#7fff7f", "medulla": "#ff7fff"}


def _index(axis: np.ndarray, value: float) -> int:
    return int(np.argmin(np.abs(axis - value)))


def _slice(vol: np.ndarray, view: str, idx: int, box: dict[str, slice]) -> np.ndarray:
    if view == "sagittal":
        return vol[idx, box["y"], box["z"]].T
    if view == "coronal":
        return vol[box["x"], idx, box["z"]].T
    return vol[box["x"], box["y"], idx].T


def plot_brainstem_tissue(path: str | Path) -> Path:
    """Write the brainstem tissue-rule figure to ``path`` (PNG)."""
    anat = build_anatomy()
    axes = bs.world_axes(anat.regions.shape, anat.affine)
    tissue = np.argmax(np.stack([1 - anat.gm - anat.wm - anat.csf, anat.csf, anat.gm, anat.wm]), 0)
    ranges = {"x": (-30.0, 30.0), "y": (-60.0, 0.0), "z": (-72.0, 8.0)}
    box = {k: slice(_index(a, ranges[k][0]), _index(a, ranges[k][1]) + 1) for k, a in zip("xyz", axes, strict=True)}
    views = [("sagittal", 5.0, "x = 5 mm"), ("coronal", -28.0, "y = -28 mm"), ("axial", -10.0, "z = -10 mm (midbrain)"),
             ("axial", -32.0, "z = -32 mm (pons)"), ("axial", -52.0, "z = -52 mm (medulla)")]  # fmt: skip
    fig, grid = plt.subplots(2, len(views) + 1, figsize=(4.0 * (len(views) + 1), 8.6))
    for col, (view, value, title) in enumerate(views):
        ax_idx = {"sagittal": 0, "coronal": 1, "axial": 2}[view]
        idx = _index(axes[ax_idx], value)
        h, v = [k for k in "xyz" if k != "xyz"[ax_idx]]
        extent = (ranges[h][0], ranges[h][1], ranges[v][0], ranges[v][1])
        t1 = _slice(anat.t1, view, idx, box)
        top, bottom = grid[0, col], grid[1, col]
        top.imshow(t1, cmap="gray", origin="lower", extent=extent)
        shown = top.imshow(_slice(anat.gm_icbm, view, idx, box), cmap="magma", vmin=0, vmax=1, alpha=0.75,
                           origin="lower", extent=extent)  # fmt: skip
        top.set_title(f"ICBM152 GM probability\n{title}", fontsize=9)
        bottom.imshow(t1, cmap="gray", origin="lower", extent=extent)
        labels = _slice(tissue, view, idx, box).astype(float)
        bottom.imshow(np.ma.masked_where(labels == 0, labels), cmap=TISSUE_CMAP, vmin=-0.5, vmax=3.5, alpha=0.6,
                      origin="lower", extent=extent, interpolation="nearest")  # fmt: skip
        xs = np.linspace(extent[0], extent[1], t1.shape[1])
        ys = np.linspace(extent[2], extent[3], t1.shape[0])
        bottom.contour(xs, ys, _slice(anat.cst, view, idx, box), [0.5], colors="cyan", linewidths=1.2)
        for name, colour in STEM_COLOURS.items():
            region = _slice((anat.regions == REGION_INDEX[name]).astype(float), view, idx, box)
            if region.any():
                bottom.contour(xs, ys, region, [0.5], colors=colour, linewidths=0.8, linestyles="--")
        bottom.set_title(f"demo tissue (GM red, WM blue, CSF yellow)\n{title}", fontsize=9)
        for ax in (top, bottom):
            ax.set_xlabel(f"{h} (mm)", fontsize=8)
            ax.set_ylabel(f"{v} (mm)", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.colorbar(shown, ax=grid[0, len(views) - 1], fraction=0.046, pad=0.02)
    _plot_landmarks(grid[0, -1], anat, axes)
    _legend(grid[1, -1])
    fig.suptitle("Demo cohort (SIMULATION): brainstem tissue rule on the ICBM152 2009a template", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _plot_landmarks(ax, anat, axes) -> None:
    """Anterior (ventral) extent of the atlas brainstem near the midline versus z, with the pons landmarks."""
    stem = np.isin(anat.regions, [REGION_INDEX[n] for n in ("midbrain", "pons", "medulla")])
    near_midline = np.abs(axes[0]) <= 3.0
    column = stem[near_midline].any(0)  # (Y, Z)
    z_vals, front = [], []
    for k, z in enumerate(axes[2]):
        ys = np.nonzero(column[:, k])[0]
        if len(ys):
            z_vals.append(z)
            front.append(axes[1][ys.max()])
    ax.plot(front, z_vals, color="k")
    for z, name in ((bs.PONS_TOP_Z, "superior pontine sulcus"), (bs.PONS_BOTTOM_Z, "inferior pontine sulcus")):
        ax.axhline(z, color="tab:green", linestyle="--")
        ax.text(min(front), z + 0.8, f"{name} (z = {z:g})", fontsize=7, color="tab:green")
    ax.set_xlabel("most anterior brainstem y near the midline (mm)", fontsize=8)
    ax.set_ylabel("z (mm)", fontsize=8)
    ax.set_title("pons = the ventral bulge\n(midbrain above, medulla below)", fontsize=9)
    ax.tick_params(labelsize=7)


def _legend(ax) -> None:
    ax.axis("off")
    lines = ["Inside the brainstem:", "  WM by default (tracts)", "  GM only in modelled nuclei:"]
    tags = {"iron": " [iron]", "motor": " [motor: ALS loss]", "spared": " [spared in ALS]", "other": ""}
    lines += [f"   - {n.name} ({n.region}){tags[n.group]}" for n in bs.NUCLEI] + ["   - periaqueductal grey (midbrain)"]
    lines += ["  cyan: corticospinal tract (always WM)", "  dashed: midbrain / pons / medulla"]
    ax.text(0.0, 1.0, "\n".join(lines), va="top", fontsize=7.5, family="monospace")


def plot_subject(path: str | Path, index: int = 1, spacing: float = 2.0, seed: int = 0) -> Path:
    """Write a figure of one simulated subject, and of its control and patient versions, to ``path``."""
    settings = SimulationSettings(spacing=spacing, seed=seed)
    hc = simulate_subject(index, "HC", settings)
    als = simulate_subject(index, "ALS", settings)
    ax_z = _index(bs.world_axes(hc.t1w.shape, hc.anat_affine)[2], 5.0)
    fig, grid = plt.subplots(2, 6, figsize=(24, 8.4))
    dwi_z = _index(bs.world_axes(hc.fa.shape, hc.dwi_affine)[2], 5.0)
    panels = [
        ("T1w", hc.t1w[:, :, ax_z], "gray"),
        ("T2w", hc.t2w[:, :, ax_z], "gray"),
        ("FA", hc.fa[:, :, dwi_z], "gray"),
        ("MD (mm²/s)", hc.md[:, :, dwi_z], "gray"),
        ("tissue labels", hc.tissue[:, :, ax_z], TISSUE_CMAP),
        ("region labels", hc.regions[:, :, ax_z], "tab20"),
    ]
    for ax, (title, img, cmap) in zip(grid[0], panels, strict=True):
        kwargs = {"vmin": -0.5, "vmax": 3.5} if title == "tissue labels" else {}
        ax.imshow(img.T, cmap=cmap, origin="lower", interpolation="nearest", **kwargs)
        ax.set_title(f"sub-{index:02d} {title} (z = 5 mm)", fontsize=9)
        ax.axis("off")
    x_mid = _index(bs.world_axes(hc.t1w.shape, hc.anat_affine)[0], 2.0)
    z_pons = _index(bs.world_axes(hc.t1w.shape, hc.anat_affine)[2], -34.0)
    stem_ids = [REGION_INDEX[n] for n in ("pons", "medulla")]
    for k, (data, label) in enumerate(((hc, "as control"), (als, "as patient"))):
        a, b = grid[1, 2 * k], grid[1, 2 * k + 1]
        a.imshow(data.t1w[x_mid].T, cmap="gray", origin="lower")
        a.contour(np.isin(data.regions[x_mid], stem_ids).T, [0.5], colors="lime", linewidths=0.8)
        a.set_title(f"T1w sagittal {label}, pons + medulla outlined", fontsize=9)
        b.imshow(data.t1w[:, :, z_pons].T, cmap="gray", origin="lower")
        b.contour(np.isin(data.regions[:, :, z_pons], stem_ids).T, [0.5], colors="lime", linewidths=0.8)
        b.set_title(f"T1w axial z = -34 mm {label}", fontsize=9)
    diff = np.isin(hc.regions[:, :, z_pons], stem_ids).astype(int) - np.isin(als.regions[:, :, z_pons], stem_ids)
    grid[1, 4].imshow(hc.tissue[:, :, z_pons].T, cmap=TISSUE_CMAP, vmin=-0.5, vmax=3.5, origin="lower")
    grid[1, 4].set_title("control tissue labels at z = -34 mm", fontsize=9)
    grid[1, 5].imshow(diff.T, cmap="coolwarm", vmin=-1, vmax=1, origin="lower")
    loss = 100 * float(als.truth["lower_brainstem_volume_loss"])
    title = f"voxels leaving pons/medulla in this slice\n(patient version: volume loss {loss:.1f} %)"
    grid[1, 5].set_title(title, fontsize=9)
    for ax in grid[1]:
        ax.axis("off")
    fig.suptitle("Demo cohort (SIMULATION): one simulated subject", fontsize=12)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    """Regenerate the figures into the directory given as the first argument (default ``docs``)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "docs")
    print(plot_brainstem_tissue(out / "demo_brainstem_tissue.png"))
    print(plot_subject(out / "demo_subject.png"))


if __name__ == "__main__":
    main()


__all__ = ["main", "plot_brainstem_tissue", "plot_subject"]
