"""The overlay figure is drawn by nilearn in mm, with the subject's left and right marked."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from finetune import figures
from finetune.figures import OverlayCase, overlay_figure
from tests.synthetic import synthetic_labels


def test_overlay_figure_shows_mm_coordinates_and_sides(tmp_path, monkeypatch):
    tissue, regions = synthetic_labels((20, 24, 20))
    image = np.array([0, 300, 600, 900], np.float32)[tissue]
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20.0, -60.0, 10.0]
    roi = regions == 5
    centre = np.round(np.argwhere(roi).mean(0)).astype(int)
    y_mm, z_mm = (affine[:3, :3] @ centre + affine[:3, 3])[1:]
    shown = []
    monkeypatch.setattr(figures.plt, "close", lambda fig: shown.append(fig))
    case = OverlayCase("sub-01", image, tissue.astype(np.uint8), tissue.astype(np.uint8), roi, affine=affine)
    path = overlay_figure(tmp_path / "overlays.png", [case], suptitle="t")
    assert path.stat().st_size > 1000
    (fig,) = shown
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    assert {"L", "R"} <= set(texts)  # nilearn's side marks
    assert f"truth, coronal y={y_mm:.0f} mm" in texts and f"prediction, axial z={z_mm:.0f} mm" in texts
    assert y_mm != centre[1]  # world coordinates, not voxel indices
