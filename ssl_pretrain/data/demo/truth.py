"""The true volumes behind a simulated subject (``derivatives/simulation/subject_truth.tsv``).

Every volume is a partial-volume sum over the subject's maps, in mm³: a region's volume is the sum of
its membership, its GM/WM/CSF volume the sum of membership times tissue fraction. The regions are those
the toolkit reports: ``brainstem`` (midbrain + pons + medulla) and each part, the subcortical nuclei and
``subcortical`` (their union).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

STEM_PARTS = ("midbrain", "pons", "medulla")
SUBCORTICAL = ("thalamus", "caudate", "putamen", "pallidum")
REGION_UNIONS = {"brainstem": STEM_PARTS, "subcortical": SUBCORTICAL}
TISSUES = ("gm", "wm", "csf")


def truth_volumes(
    regions: Mapping[str, np.ndarray],
    fractions: Mapping[str, np.ndarray],
    parts: Mapping[str, np.ndarray],
    cst: np.ndarray,
    voxel_mm3: float,
) -> dict[str, float]:
    """Region, tissue, nucleus and tract volumes (mm³, rounded to 0.01) and the brainstem GM fraction.

    Args:
        regions: region name -> membership ``(X, Y, Z)`` (0–1) for every name in :data:`STEM_PARTS` and
            :data:`SUBCORTICAL`.
        fractions: ``gm``, ``wm``, ``csf`` fractions ``(X, Y, Z)``.
        parts: ``gm_motor`` (what remains of the motor nuclei's GM) and ``gm_spared`` (oculomotor and
            abducens GM), ``(X, Y, Z)``.
        cst: corticospinal-tract membership ``(X, Y, Z)``.
        voxel_mm3: voxel volume.
    """
    members: dict[str, np.ndarray] = {n: regions[n] for n in (*STEM_PARTS, *SUBCORTICAL)}
    for union, names in REGION_UNIONS.items():
        members[union] = np.sum([regions[n] for n in names], axis=0)
    out: dict[str, float] = {}
    for name, m in members.items():
        out[f"{name}_volume_mm3"] = round(float(m.sum(dtype=np.float64) * voxel_mm3), 2)
        for t in TISSUES:
            out[f"{name}_{t}_volume_mm3"] = round(float((m * fractions[t]).sum(dtype=np.float64) * voxel_mm3), 2)
    stem = members["brainstem"]
    gm = float((stem * fractions["gm"]).sum(dtype=np.float64))
    parenchyma = gm + float((stem * fractions["wm"]).sum(dtype=np.float64))
    out["brainstem_gm_fraction"] = round(gm / parenchyma, 6) if parenchyma else 0.0
    out["motor_nuclei_gm_volume_mm3"] = round(float(parts["gm_motor"].sum(dtype=np.float64) * voxel_mm3), 2)
    out["spared_nuclei_gm_volume_mm3"] = round(float(parts["gm_spared"].sum(dtype=np.float64) * voxel_mm3), 2)
    out["cst_volume_mm3"] = round(float((stem * cst).sum(dtype=np.float64) * voxel_mm3), 2)
    return out


REGION_WORDS = {"brainstem": "midbrain + pons + medulla", "subcortical": "thalamus + caudate + putamen + pallidum"}
COLUMNS: dict[str, str] = {
    **{f"{r}_volume_mm3": f"{r} ({REGION_WORDS.get(r, r)}) volume (partial-volume sum, mm^3)"
       for r in (*STEM_PARTS, *SUBCORTICAL, *REGION_UNIONS)},
    **{f"{r}_{t}_volume_mm3": f"{t.upper()} inside the {r} (membership x fraction, mm^3)"
       for r in (*STEM_PARTS, *SUBCORTICAL, *REGION_UNIONS) for t in TISSUES},
    "brainstem_gm_fraction": "brainstem GM / (GM + WM) (parenchyma share that is grey matter)",
    "motor_nuclei_gm_volume_mm3": "GM of the motor nuclei XII, IX/X (ambiguus), VII, motor V, both sides (mm^3)",
    "spared_nuclei_gm_volume_mm3": "GM of the oculomotor (III) and abducens (VI) nuclei, both sides (mm^3): the "
    "within-brainstem control the ALS effect spares",
    "cst_volume_mm3": "corticospinal-tract membership inside the brainstem (mm^3)",
    "motor_nuclei_loss_factor": "fraction of the motor nuclei's GM lost in this subject (0 for controls)",
    "cst_atrophy_factor": "configured corticospinal cross-section loss applied to this subject (0 for controls)",
    "cst_volume_loss": "realised loss of brainstem corticospinal volume in template space (before the subject warp)",
    "<structure>_t1_ms, <structure>_t2_ms, <structure>_pd": "relaxation of thalamus, caudate, putamen, pallidum, "
    "brainstem_nuclei, iron_nuclei (relative contrast on the subject's cortex and WM values)",
}  # fmt: skip
