"""Diffusion-tensor maps (FA, MD) of the demo cohort, at diffusion resolution on their own grid.

Per tissue (``reference/mri_physics.md``): MD about 0.7e-3 mm²/s in WM, 0.8e-3 in GM, 3.0e-3 in CSF; FA
about 0.15 in GM (noise floor), under 0.1 in CSF. White-matter FA rises with tract coherence ``c``
(0–1, from the tract atlases): ``FA_WM = FA_base + (FA_tract - FA_base) * c``, so whole-brain WM sits
near 0.45 and the brainstem corticospinal tract near 0.65. A patient's corticospinal FA is scaled by
``1 - reduction * cst`` (``cst`` = tract membership). A voxel's FA and MD are the fraction-weighted
tissue values averaged over the diffusion voxel (partial volume at diffusion resolution).

The diffusion grid has its own voxel size (default 2.5 mm) and a small rigid misregistration to the
anatomy plus a smooth EPI-like distortion along the phase-encoding (y) axis: the header claims voxel
``p`` but its content comes from ``T(p) + d(p)``. Outside the brain mask both maps are 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ssl_pretrain.data.demo.deform import grid_points, rotation_matrix, smooth_field

FA_RANGES = {"csf": (0.03, 0.08), "gm": (0.12, 0.18), "wm_base": (0.38, 0.45), "tract": (0.65, 0.75)}
MD_RANGES = {"csf": (2.8e-3, 3.2e-3), "gm": (0.78e-3, 0.88e-3), "wm": (0.66e-3, 0.74e-3)}
MISREGISTRATION_SD = (1.0, 1.0)  # rotation (degrees), translation (mm), per axis
DISTORTION_SD_MM = 1.0  # smooth displacement along y
DISTORTION_CONTROL_MM = 40.0


@dataclass(frozen=True)
class DiffusionParameters:
    """One subject's tissue FA/MD values (MD in mm²/s) and diffusion-grid misregistration."""

    fa_csf: float
    fa_gm: float
    fa_wm_base: float
    fa_tract: float
    md_csf: float
    md_gm: float
    md_wm: float
    dwi_rotation_deg: tuple[float, float, float]
    dwi_translation_mm: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for the truth table)."""
        return asdict(self)


def draw_diffusion_parameters(rng: np.random.Generator) -> tuple[DiffusionParameters, np.ndarray]:
    """Draw tissue FA/MD, the rigid misregistration and the distortion control lattice (fixed draws)."""
    fa = {k: float(rng.uniform(*r)) for k, r in FA_RANGES.items()}
    md = {k: float(rng.uniform(*r)) for k, r in MD_RANGES.items()}
    rot = np.clip(rng.normal(0.0, 1.0, 3), -3, 3) * MISREGISTRATION_SD[0]
    trans = np.clip(rng.normal(0.0, 1.0, 3), -3, 3) * MISREGISTRATION_SD[1]
    control = rng.normal(0.0, DISTORTION_SD_MM, (1, 6, 7, 6)).astype(np.float32)
    params = DiffusionParameters(
        fa_csf=fa["csf"],
        fa_gm=fa["gm"],
        fa_wm_base=fa["wm_base"],
        fa_tract=fa["tract"],
        md_csf=md["csf"],
        md_gm=md["gm"],
        md_wm=md["wm"],
        dwi_rotation_deg=tuple(float(v) for v in rot),  # type: ignore[arg-type]
        dwi_translation_mm=tuple(float(v) for v in trans),  # type: ignore[arg-type]
    )
    return params, control


def tissue_fa_md(
    fractions: dict[str, np.ndarray], cst: np.ndarray, coherence: np.ndarray, p: DiffusionParameters, cst_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraction-weighted FA and MD numerators and the brain fraction, at anatomical resolution.

    Returns:
        ``(fa_sum, md_sum, brain)``, each ``(X, Y, Z)``: dividing the sums by ``brain`` gives the voxel's
        FA and MD; keeping them separate lets partial volume be averaged at diffusion resolution.
    """
    fa_wm = p.fa_wm_base + (p.fa_tract - p.fa_wm_base) * coherence
    fa_wm = fa_wm * (1.0 - (1.0 - cst_scale) * cst)
    fa_sum = fractions["csf"] * p.fa_csf + fractions["gm"] * p.fa_gm + fractions["wm"] * fa_wm
    md_sum = fractions["csf"] * p.md_csf + fractions["gm"] * p.md_gm + fractions["wm"] * p.md_wm
    brain = fractions["csf"] + fractions["gm"] + fractions["wm"]
    return fa_sum.astype(np.float32), md_sum.astype(np.float32), brain.astype(np.float32)


def dwi_grid(anat_shape: tuple[int, int, int], anat_affine: np.ndarray, spacing: float) -> tuple[tuple, np.ndarray]:
    """Diffusion grid covering the anatomical field of view at ``spacing`` mm: ``(shape, affine)``."""
    extent = (np.asarray(anat_shape) - 1) * np.abs(np.diag(anat_affine)[:3])
    shape = tuple(int(v) for v in np.floor(extent / spacing).astype(int) + 1)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = anat_affine[:3, 3]
    return shape, affine


def diffusion_maps(
    fa_sum: np.ndarray,
    md_sum: np.ndarray,
    brain: np.ndarray,
    anat_affine: np.ndarray,
    spacing: float,
    params: DiffusionParameters,
    distortion: np.ndarray,
    centre_mm: np.ndarray,
    noise: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FA and MD on the diffusion grid.

    Args:
        fa_sum, md_sum, brain: from :func:`tissue_fa_md` on the anatomical grid.
        anat_affine: anatomical grid affine (axis-aligned).
        spacing: diffusion voxel size (mm).
        params: the subject's diffusion parameters (misregistration).
        distortion: ``(1, nx, ny, nz)`` control lattice of the y distortion (mm).
        centre_mm: centre of the misregistration rotation.
        noise: relative noise (FA gets N(0, noise); MD gets multiplicative N(1, noise)).
        rng: noise generator.

    Returns:
        ``(fa, md, affine)``: ``(X', Y', Z')`` float32 maps (MD in mm²/s) and the diffusion grid's affine.
    """
    anat_spacing = float(abs(anat_affine[0, 0]))
    sigma_mm = np.sqrt(max(spacing**2 - anat_spacing**2, 0.0)) / 2.355
    shape, affine = dwi_grid(fa_sum.shape, anat_affine, spacing)  # type: ignore[arg-type]
    p = grid_points(shape, affine)
    rot = rotation_matrix(params.dwi_rotation_deg).astype(np.float32)
    c = np.asarray(centre_mm, np.float32)
    q = (p - c) @ rot.T + c + np.asarray(params.dwi_translation_mm, np.float32)
    q[..., 1] += smooth_field(distortion, shape)[0]
    idx = np.moveaxis((q - anat_affine[:3, 3].astype(np.float32)) / np.float32(anat_spacing), -1, 0)
    out = []
    for vol in (fa_sum, md_sum, brain):
        smooth = ndi.gaussian_filter(vol, sigma_mm / anat_spacing, mode="constant") if sigma_mm > 0 else vol
        out.append(ndi.map_coordinates(smooth, idx, order=1, mode="constant", cval=0.0).astype(np.float32))
    fa_s, md_s, frac = out
    inside = frac > 0.5
    safe = np.where(inside, frac, 1.0)
    fa = np.where(inside, fa_s / safe + rng.normal(0.0, noise, shape).astype(np.float32), 0.0)
    md = np.where(inside, md_s / safe * (1.0 + rng.normal(0.0, noise, shape).astype(np.float32)), 0.0)
    return np.clip(fa, 0.0, 1.0).astype(np.float32), np.clip(md, 0.0, None).astype(np.float32), affine
