"""Simulate one subject of the demo cohort: images, label maps and the truth behind them.

Every subject draws from its own random streams, seeded by ``(seed, subject number)`` and split by
purpose (demographics, shape, tissue physics, diffusion, disease effect, bias, artefacts, noise,
brainstem-nucleus placement, motor-nucleus loss, corticospinal atrophy), so a setting that changes one
aspect (say, the atrophy) leaves every other draw of every subject unchanged, and the same seed gives
byte-identical arrays. New streams are appended to the list: ``SeedSequence.spawn`` gives child ``i``
the same seed whatever the number of children, so adding one leaves the earlier streams as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ssl_pretrain.data.demo import brainstem as bs
from ssl_pretrain.data.demo import nucleus_maps as nm
from ssl_pretrain.data.demo import physics
from ssl_pretrain.data.demo import relaxometry as rx
from ssl_pretrain.data.demo.anatomy import TemplateGrid, build_anatomy, template_grid
from ssl_pretrain.data.demo.deform import atrophy_coordinates, draw_warp, sample, template_coordinates
from ssl_pretrain.data.demo.diffusion import diffusion_maps, draw_diffusion_parameters, tissue_fa_md
from ssl_pretrain.data.demo.truth import truth_volumes
from ssl_pretrain.errors import ConfigError

STEM_PARTS = ("midbrain", "pons", "medulla")
LOWER_STEM = ("pons", "medulla")
P_MALE = 0.6  # same in both groups (ALS is about 1.5:1 male), so sex does not confound group
SEX_SCALE = {"M": 1.025, "F": 0.975}  # linear head-size factor (~ +-8 % volume between sexes)


@dataclass(frozen=True)
class SimulationSettings:
    """What ``bssl demo-data`` simulates (the ``demo.*`` config keys)."""

    n_controls: int = 27
    n_patients: int = 26
    spacing: float = 2.0
    seed: int = 0
    brainstem_atrophy: float = 0.08
    cst_fa_reduction: float = 0.10
    brainstem_contrast: float = rx.DEFAULT_BRAINSTEM
    subcortical_contrast: Mapping[str, Any] = field(default_factory=lambda: dict(rx.DEFAULT_SUBCORTICAL))
    iron_nuclei_contrast: Any = field(default_factory=lambda: dict(rx.DEFAULT_IRON))
    nucleus_position_sd_mm: float = 1.0
    nucleus_size_sd: float = 0.05
    motor_nuclei_loss: float = 0.475
    motor_nuclei_loss_tissue: str = "wm"
    cst_atrophy: float = 0.047
    noise: float = 0.03
    artefacts: bool = True
    dwi_spacing: float = 2.5
    artefact_rate: float = 0.2
    bias_field: float = 0.15
    effect_heterogeneity: float = 0.25
    head_size_sd: float = 0.025
    rotation_sd_deg: float = 3.0
    translation_sd_mm: float = 3.0
    deformation_sd_mm: float = 2.0
    deformation_spacing_mm: float = 32.0

    def __post_init__(self) -> None:
        checks = {
            "n_controls": (0, 9999),
            "n_patients": (0, 9999),
            "spacing": (0.5, 4.0),
            "seed": (0, 2**32 - 1),
            "brainstem_atrophy": (0.0, 0.5),
            "cst_fa_reduction": (0.0, 0.9),
            "brainstem_contrast": rx.CONTRAST_RANGE,
            "nucleus_position_sd_mm": (0.0, 5.0),
            "nucleus_size_sd": (0.0, 0.5),
            "motor_nuclei_loss": (0.0, 1.0),
            "cst_atrophy": (0.0, 0.5),
            "noise": (0.0, 0.5),
            "dwi_spacing": (0.5, 6.0),
            "artefact_rate": (0.0, 1.0),
            "bias_field": (0.0, 1.0),
            "effect_heterogeneity": (0.0, 2.0),
            "head_size_sd": (0.0, 0.2),
            "rotation_sd_deg": (0.0, 15.0),
            "translation_sd_mm": (0.0, 20.0),
            "deformation_sd_mm": (0.0, 8.0),
            "deformation_spacing_mm": (8.0, 200.0),
        }
        for name, (lo, hi) in checks.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
                raise ConfigError(f"demo.{name}", f"must be a number, got {value!r}")
            if not lo <= value <= hi:
                raise ConfigError(f"demo.{name}", f"must lie in [{lo}, {hi}], got {value!r}")
        for name in ("n_controls", "n_patients", "seed"):
            if not float(getattr(self, name)).is_integer():
                raise ConfigError(f"demo.{name}", f"must be a whole number, got {getattr(self, name)!r}")
        if self.n_controls + self.n_patients < 1:
            raise ConfigError("demo.n_controls", "the cohort needs at least one subject (n_controls + n_patients)")
        if not isinstance(self.artefacts, bool):
            raise ConfigError("demo.artefacts", f"must be true or false, got {self.artefacts!r}")
        if self.motor_nuclei_loss_tissue not in nm.LOSS_TISSUES:
            raise ConfigError("demo.motor_nuclei_loss_tissue", f"must be one of {nm.LOSS_TISSUES}, got "
                              f"{self.motor_nuclei_loss_tissue!r}")  # fmt: skip
        self.structure_contrasts()  # validates demo.subcortical_contrast and demo.iron_nuclei_contrast

    def structure_contrasts(self) -> dict[str, rx.Contrast]:
        """Relative contrast of every grey-matter structure other than cortex (validated)."""
        return {
            **rx.parse_subcortical(self.subcortical_contrast),
            "brainstem_nuclei": rx.parse_contrast("brainstem_contrast", self.brainstem_contrast),
            "iron_nuclei": rx.parse_contrast("iron_nuclei_contrast", self.iron_nuclei_contrast),
        }

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Names of all settings (the ``demo.*`` keys)."""
        return tuple(f.name for f in fields(cls))


@dataclass
class SubjectData:
    """One simulated subject: images, label maps and the true values behind them.

    Attributes:
        index: subject number (1-based).
        group: ``HC`` or ``ALS``.
        sex, age: demographics.
        anat_affine: affine of ``t1w``, ``t2w``, ``tissue``, ``regions``.
        t1w, t2w: ``(X, Y, Z)`` int16 magnitude images (arbitrary units).
        tissue: ``(X, Y, Z)`` uint8 tissue classes (0 bg, 1 CSF, 2 GM, 3 WM).
        regions: ``(X, Y, Z)`` uint8 canonical region indices.
        dwi_affine: affine of ``fa`` and ``md`` (their own grid).
        fa, md: ``(X', Y', Z')`` float32 maps (MD in mm²/s).
        region_ids: canonical regions of the template (the regions table lists them all).
        truth: one row of ``subject_truth.tsv``.
    """

    index: int
    group: str
    sex: str
    age: int
    anat_affine: np.ndarray
    t1w: np.ndarray
    t2w: np.ndarray
    tissue: np.ndarray
    regions: np.ndarray
    dwi_affine: np.ndarray
    fa: np.ndarray
    md: np.ndarray
    region_ids: tuple[int, ...]
    truth: dict[str, Any]


def _streams(seed: int, index: int) -> dict[str, np.random.Generator]:
    names = ("demographics", "shape", "tissue", "diffusion", "effect", "bias", "artefact", "noise", "nuclei",
             "motor_loss", "cst_atrophy")  # fmt: skip
    children = np.random.SeedSequence([int(seed), int(index)]).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def brain_centre() -> tuple[float, float, float]:
    """Centre of the template brain's bounding box (mm): the centre of rotation and scaling."""
    bbox = build_anatomy().brain_bbox
    return tuple(float(v) for v in bbox.mean(0))  # type: ignore[return-value]


def channel_index(grid: TemplateGrid, name: str) -> int:
    """Position of channel ``name`` (``gm``, ``cst``, ``region:pons``, …) in ``grid.channels``."""
    return grid.names.index(name)


def _healthy_stem(grid: TemplateGrid, stem_idx: list[int], q: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Brainstem memberships without the atrophy, sampled only in a box around the (atrophied) brainstem."""
    near = maps[stem_idx].sum(0) > 0
    margin = int(np.ceil(8.0 / grid.spacing))  # the atrophy moves tissue by at most a few mm
    box = tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1) for i in np.nonzero(near))
    out = np.zeros((len(stem_idx), *maps.shape[1:]), np.float32)
    out[(slice(None), *box)] = sample(grid.channels[stem_idx], grid.affine, q[box])
    return out


def _to_int16(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)


def _effects(rng: np.random.Generator, patient: bool, s: SimulationSettings) -> tuple[float, float]:
    """A subject's lower-brainstem volume loss and CST FA scale (always the same draws)."""
    het_atrophy, het_fa = rng.normal(0.0, 1.0, 2)
    atrophy = s.brainstem_atrophy * max(0.0, 1.0 + s.effect_heterogeneity * het_atrophy)
    fa_drop = s.cst_fa_reduction * max(0.0, 1.0 + s.effect_heterogeneity * het_fa)
    if not patient:
        return 0.0, 1.0
    return float(min(atrophy, 0.5)), float(1.0 - min(fa_drop, 0.9))


def _tissue_effects(rng: dict[str, np.random.Generator], patient: bool, s: SimulationSettings) -> tuple[float, float]:
    """A subject's motor-nuclei GM loss and corticospinal atrophy (own streams, always the same draws)."""
    motor = s.motor_nuclei_loss * max(0.0, 1.0 + s.effect_heterogeneity * rng["motor_loss"].normal())
    cst = s.cst_atrophy * max(0.0, 1.0 + s.effect_heterogeneity * rng["cst_atrophy"].normal())
    if not patient:
        return 0.0, 0.0
    return float(min(motor, 1.0)), float(min(cst, 0.5))


BOX_CHANNELS = ("gm", "wm", "csf", "cst", "coherence")
PART_CHANNELS = ("gm_iron", "gm_nuclei", "gm_motor", "gm_spared")


def _brainstem_override(
    grid: TemplateGrid, maps: np.ndarray, box: dict[str, np.ndarray], q: np.ndarray
) -> dict[str, np.ndarray]:
    """Replace the sampled brainstem-box channels by the subject's own (sampled at ``q``), in place.

    Returns:
        The subject-grid maps of :data:`PART_CHANNELS` (0 outside the box).
    """
    stem = grid.stem
    lo = stem.affine[:3, 3].astype(np.float32)
    hi = lo + np.float32(grid.spacing) * np.asarray([b.stop - b.start - 1 for b in stem.box], np.float32)
    inside = np.all((q >= lo) & (q <= hi), axis=-1)
    parts = {k: np.zeros(maps.shape[1:], np.float32) for k in PART_CHANNELS}
    if not inside.any():
        return parts
    sub = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(inside))
    names = BOX_CHANNELS + PART_CHANNELS
    values = sample(np.stack([box[k] for k in names]), stem.affine, q[sub])
    keep = inside[sub]
    for k, name in enumerate(names):
        target = maps[channel_index(grid, name)] if name in BOX_CHANNELS else parts[name]
        target[sub] = np.where(keep, values[k], target[sub])
    return parts


def _labels(grid: TemplateGrid, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and region label maps: the largest fraction / membership wins (background included)."""
    frac = [maps[channel_index(grid, t)] for t in ("csf", "gm", "wm")]
    tissue = np.argmax(np.stack([1.0 - sum(frac), *frac]), 0).astype(np.uint8)
    region_maps = maps[len(grid.names) - len(grid.region_ids) :]
    lut = np.asarray((0, *grid.region_ids), np.uint8)
    regions = lut[np.argmax(np.concatenate([1.0 - region_maps.sum(0, keepdims=True), region_maps]), 0)]
    return tissue, regions


def _anatomical_images(
    grid: TemplateGrid,
    frac: dict[str, np.ndarray],
    gm_parts: dict[str, np.ndarray],
    params: physics.TissueParameters,
    rng: dict[str, np.random.Generator],
    s: SimulationSettings,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """T1w and T2w: spin-echo partial-volume signal, scanner gain, bias field, artefacts, Rician noise."""
    bias = physics.bias_field(grid.shape, rng["bias"], s.bias_field)  # one receive field for both
    structures = s.structure_contrasts()
    images: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}
    for weighting in ("T1w", "T2w"):
        signals = physics.tissue_signals(params, weighting, structures)
        gain = 2000.0 * rng["bias"].uniform(0.8, 1.25) / max(signals[t] for t in physics.TISSUES)
        clean = physics.anatomical_image(frac, gm_parts, signals) * np.float32(gain)
        kind, artefact = physics.draw_artefact(rng["artefact"], s.artefact_rate if s.artefacts else 0.0)
        image = physics.apply_artefact(clean * bias, grid.affine, kind, artefact)
        relative = s.noise * rng["noise"].uniform(0.8, 1.25)
        sigma = relative * signals["wm"] * gain
        images[weighting] = _to_int16(physics.rician(image, sigma, rng["noise"]) if sigma > 0 else image)
        info[f"{weighting.lower()}_noise_rel"] = round(relative, 6)
        info[f"{weighting.lower()}_artefact"] = kind
    return images, info


def _gm_parts(grid: TemplateGrid, maps: np.ndarray, parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GM fraction of each structure with its own relaxation: subcortical nuclei, brainstem nuclei, iron nuclei."""
    outside_stem = maps[channel_index(grid, "gm")] - parts["gm_iron"] - parts["gm_nuclei"]
    out = {n: outside_stem * maps[channel_index(grid, f"region:{n}")] for n in rx.SUBCORTICAL}
    return {**out, "brainstem_nuclei": parts["gm_nuclei"], "iron_nuclei": parts["gm_iron"]}


def _structure_parameters(params: physics.TissueParameters, s: SimulationSettings) -> dict[str, float]:
    """T1/T2/PD of every structure with its own relaxation (for the truth table)."""
    out = {}
    for name, contrast in s.structure_contrasts().items():
        for key, value in rx.structure_parameters(params.as_dict(), contrast).items():
            out[f"{name}_{key}"] = round(value, 6)
    return out


def simulate_subject(index: int, group: str, settings: SimulationSettings) -> SubjectData:
    """Simulate subject ``index`` (1-based) of ``group`` (``HC`` or ``ALS``).

    Returns:
        The subject's images, label maps and truth row.
    """
    s = settings
    grid = template_grid(float(s.spacing))
    rng = _streams(s.seed, index)
    sex = "M" if rng["demographics"].uniform() < P_MALE else "F"
    age = int(np.clip(np.rint(rng["demographics"].normal(60.0, 10.0)), 30, 85))
    head = float(np.exp(rng["shape"].normal(0.0, s.head_size_sd)) * SEX_SCALE[sex])
    centre = brain_centre()
    warp = draw_warp(
        rng["shape"],
        grid,
        centre,
        scale=head,
        rotation_sd_deg=s.rotation_sd_deg,
        translation_sd_mm=s.translation_sd_mm,
        displacement_sd_mm=s.deformation_sd_mm,
        control_spacing_mm=s.deformation_spacing_mm,
    )
    tissue_params = physics.draw_tissue_parameters(rng["tissue"])
    dwi_params, distortion = draw_diffusion_parameters(rng["diffusion"])
    atrophy, cst_scale = _effects(rng["effect"], group == "ALS", s)
    motor_loss, cst_atrophy = _tissue_effects(rng, group == "ALS", s)
    placement = bs.place_nuclei(rng["nuclei"], s.nucleus_position_sd_mm, s.nucleus_size_sd)
    box = nm.brainstem_maps(grid.stem, placement, motor_loss, s.motor_nuclei_loss_tissue, np.sqrt(1 - cst_atrophy))

    # anatomy: one backward map for every channel; the atrophy is composed in template space
    q_healthy = template_coordinates(warp, grid.shape, grid.affine)
    shrink = float(np.sqrt(1.0 - atrophy))
    q = atrophy_coordinates(q_healthy, grid, shrink)
    maps = sample(grid.channels, grid.affine, q)
    parts = _brainstem_override(grid, maps, box, q)
    stem_idx = [channel_index(grid, f"region:{n}") for n in STEM_PARTS]
    healthy_stem = _healthy_stem(grid, stem_idx, q_healthy, maps) if shrink < 1.0 else maps[stem_idx]
    frac = {t: maps[channel_index(grid, t)] for t in ("csf", "gm", "wm")}
    cst, coherence = maps[channel_index(grid, "cst")], maps[channel_index(grid, "coherence")]
    tissue, regions = _labels(grid, maps)
    images, image_info = _anatomical_images(grid, frac, _gm_parts(grid, maps, parts), tissue_params, rng, s)

    # diffusion maps at diffusion resolution, on their own (misregistered) grid
    fa_sum, md_sum, brain = tissue_fa_md(frac, cst, coherence, dwi_params, cst_scale)
    fa, md, dwi_affine = diffusion_maps(
        fa_sum, md_sum, brain, grid.affine, s.dwi_spacing, dwi_params, distortion, np.asarray(centre), s.noise,
        rng["noise"],
    )  # fmt: skip

    voxel = float(s.spacing) ** 3
    regions_pv = {n: maps[channel_index(grid, f"region:{n}")] for n in (*STEM_PARTS, *rx.SUBCORTICAL)}
    healthy = {n: float(healthy_stem[k].sum() * voxel) for k, n in enumerate(STEM_PARTS)}
    lower = sum(float(regions_pv[n].sum() * voxel) for n in LOWER_STEM)
    lower_healthy = sum(healthy[n] for n in LOWER_STEM)
    in_cst = (cst >= 0.5) & (frac["wm"] >= 0.5)
    dwi = dwi_params.as_dict()
    volumes = truth_volumes(regions_pv, frac, parts, cst, voxel)
    template_stem = sum(grid.channel(f"region:{n}")[grid.stem.box] for n in STEM_PARTS)
    cst_template = float((template_stem * box["cst"]).sum() / (template_stem * box["cst_healthy"]).sum())
    truth: dict[str, Any] = {
        "group": group,
        "sex": sex,
        "age": age,
        "atrophy_factor": round(atrophy, 6),
        "lower_brainstem_volume_loss": round(1.0 - lower / lower_healthy, 6) if lower_healthy > 0 else 0.0,
        "cst_fa_scale": round(cst_scale, 6),
        "motor_nuclei_loss_factor": round(motor_loss, 6),
        "cst_atrophy_factor": round(cst_atrophy, 6),
        "cst_volume_loss": round(1.0 - cst_template, 6),
        "head_scale": round(head, 6),
        "brainstem_volume_mm3": volumes.pop("brainstem_volume_mm3"),
        **{f"{n}_volume_mm3": volumes.pop(f"{n}_volume_mm3") for n in STEM_PARTS},
        "lower_brainstem_volume_mm3": round(lower, 2),
        "lower_brainstem_volume_healthy_mm3": round(lower_healthy, 2),
        "brainstem_gm_volume_mm3": volumes.pop("brainstem_gm_volume_mm3"),
        "brainstem_wm_volume_mm3": volumes.pop("brainstem_wm_volume_mm3"),
        "gm_volume_mm3": round(float(frac["gm"].sum() * voxel), 2),
        "wm_volume_mm3": round(float(frac["wm"].sum() * voxel), 2),
        "csf_volume_mm3": round(float(frac["csf"].sum() * voxel), 2),
        **volumes,
        "cst_fa_mean": round(float((fa_sum[in_cst] / np.maximum(brain[in_cst], 1e-6)).mean()), 6),
        **{k: round(v, 6) for k, v in tissue_params.as_dict().items()},
        **_structure_parameters(tissue_params, s),
        **{k: " ".join(f"{x:.3f}" for x in v) if isinstance(v, tuple) else round(v, 9) for k, v in dwi.items()},
        **image_info,
    }
    return SubjectData(
        index=index,
        group=group,
        sex=sex,
        age=age,
        anat_affine=grid.affine.copy(),
        t1w=images["T1w"],
        t2w=images["T2w"],
        tissue=tissue,
        regions=regions,
        dwi_affine=dwi_affine,
        fa=fa,
        md=md,
        region_ids=grid.region_ids,
        truth=truth,
    )
