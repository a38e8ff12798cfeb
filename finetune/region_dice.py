"""Region Dice of the maps ``bssl predict`` writes, against a subject's reference region labels.

The fine-tuning stage scores its region head inside the stage ROI's box only (``inference.crop_to_roi``), and
that box comes from the reference labels, which a new scan does not have. What the group analysis measures is
the *whole-volume* map ``bssl predict`` writes, false positives far from the brainstem included; this module
scores exactly that map (native grid, after :mod:`finetune.postprocess`), one row per subject and region:
the brainstem (the union of its parts, or the reference's undivided brainstem label) and each class of the
region head. A region absent from both maps gets no row; a reference that labels the brainstem undivided gets
no row for its parts (which part each voxel is, is unknown).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from finetune.region_head import BRAINSTEM_PARTS, REGION_HEAD, head_target, region_dice
from ssl_pretrain.data.labels import REGION_INDEX, inside_group, region_group_indices

FILE = "region_dice.tsv"


def _regions() -> Iterator[tuple[str, tuple[int, ...]]]:
    yield "brainstem", region_group_indices("brainstem")
    for name in REGION_HEAD[1:]:
        yield name, (REGION_INDEX[name],)


def region_dice_rows(
    predicted: np.ndarray, reference: np.ndarray, voxel_mm3: float, model_roi: str | None = None
) -> list[dict[str, object]]:
    """``[{region, dice, predicted_mm3, reference_mm3, in_model_roi}]`` of one subject.

    Args:
        predicted: ``(X, Y, Z)`` canonical region indices written by ``bssl predict``.
        reference: ``(X, Y, Z)`` canonical region indices of the subject's reference labels, same grid.
        voxel_mm3: volume of one voxel.
        model_roi: the region group the model was last trained in (``stage.roi``): ``in_model_roi`` is True for
            the regions inside it; the others are the model's extrapolation (e.g. the caudate of a model whose
            last stage trained in the brainstem ROI).

    Raises:
        ValueError: the two maps differ in shape.
    """
    if predicted.shape != reference.shape:
        raise ValueError(f"predicted {predicted.shape} and reference {reference.shape} maps differ in shape")
    dice = region_dice(head_target(torch.as_tensor(np.asarray(predicted))).numpy(), reference)  # the head's own Dice
    undivided = bool(np.any(reference == REGION_INDEX["brainstem"]))
    rows: list[dict[str, object]] = []
    for name, members in _regions():
        value = dice[f"dice_region_{name}"]
        if np.isnan(value) or (undivided and name in BRAINSTEM_PARTS):
            continue  # absent from both maps, or a part the reference does not divide
        p, r = np.isin(predicted, members), np.isin(reference, members)
        rows.append({
            "region": name,
            "dice": round(value, 6),
            "predicted_mm3": round(float(p.sum()) * voxel_mm3, 3),
            "reference_mm3": round(float(r.sum()) * voxel_mm3, 3),
            "in_model_roi": inside_group(members, model_roi),
        })  # fmt: skip
    return rows
