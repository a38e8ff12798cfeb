"""The demo cohort's template anatomy: tissue fractions, canonical regions and tract maps.

Built once per process from :mod:`~ssl_pretrain.data.demo.templates` (ICBM152 2009a + atlases) on the
ICBM 1 mm grid, then resampled to the output spacing (:func:`template_grid`). Rules:

* **Tissue fractions.** GM and WM are the ICBM152 probability maps; the brain mask is the template T1's
  non-zero support; CSF = mask - GM - WM (clipped at 0); background = 1 - CSF - GM - WM.
* **Brainstem tissue** (the ICBM GM map calls most of the brainstem grey, which is wrong): inside the
  brainstem the parenchyma fraction p = GM + WM is kept, and split into GM = p * n and WM = p * (1 - n),
  where n is the grey-matter nucleus map of :mod:`~ssl_pretrain.data.demo.brainstem` (0 on the
  corticospinal tract). The switch is blended over a 1 mm Gaussian at the brainstem's border.
* **Regions** (:data:`ssl_pretrain.data.labels.REGIONS`) from Neuromorphometrics: deep grey nuclei,
  cerebellum (hemispheres, cerebellar white matter, vermis), cerebrum split into ``cortex`` and
  ``cerebral_wm`` by the template's dominant tissue, brainstem = ``Brain_Stem`` plus the midbrain part
  of ``Ventral_DC``, divided into midbrain/pons/medulla (:func:`~.brainstem.split_brainstem`). The atlas
  ends at z = -66 mm, above the template's lowest slice; labels of the slice at z = -63 mm are carried
  down into the template's parenchyma below it.
* **Tract coherence** (drives FA in white matter): the maximum of the Juelich white-matter tract
  probabilities and the corticospinal tract; brainstem white matter has at least 0.3 (medial
  lemniscus, transverse pontine fibres and other brainstem tracts that no atlas here draws).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ssl_pretrain.data.demo import brainstem as bs
from ssl_pretrain.data.demo import nucleus_maps as nm
from ssl_pretrain.data.demo.templates import load_raw_templates
from ssl_pretrain.data.labels import REGION_INDEX, REGIONS

EXTRAPOLATE_BELOW_Z = -63.0  # atlas labels at this MNI z are carried down to the template's lowest slice
BRAINSTEM_TRACT_COHERENCE = nm.BRAINSTEM_TRACT_COHERENCE
ATROPHY_FALLOFF_MM = 3.0  # Gaussian fall-off of the atrophy deformation outside the pons + medulla
ATROPHY_MARGIN_MM = 3.0  # in-plane margin around the brainstem where the atrophy weight is still 1
ATROPHY_MARGIN_Z_MM = 1.5  # margin above the pons' top (into the midbrain) where it is still 1
GRID_MARGIN_MM = 12  # output field of view = template brain bounding box + this margin (mm)
TISSUE_CHANNELS = ("gm", "wm", "csf")
MAP_CHANNELS = ("cst", "coherence")
_NMM_RULES = (  # substring of a Neuromorphometrics name -> canonical region
    ("Thalamus", "thalamus"),
    ("Caudate", "caudate"),
    ("Putamen", "putamen"),
    ("Pallidum", "pallidum"),
    ("Cerebral_White_Matter", "cerebral_wm"),
    ("Cerebellum", "cerebellum"),
    ("Cerebellar", "cerebellum"),
)


@dataclass(frozen=True)
class Anatomy:
    """Template anatomy on the ICBM152 1 mm grid, cropped to the brain plus a margin (maps ``(X, Y, Z)``).

    Attributes:
        affine: voxel-to-MNI affine.
        gm, wm, csf: tissue fractions after the brainstem rule (float32, sum <= 1).
        t1: the template T1 intensity 0–1 (for figures).
        gm_icbm: the original ICBM GM map (for the documentation figure).
        regions: canonical region index per voxel (int16, 0 = none).
        cst: corticospinal-tract membership 0–1 (Juelich above the brainstem, modelled tube within it).
        coherence: white-matter tract coherence 0–1 (drives FA).
        nuclei: brainstem grey-matter nucleus membership 0–1.
        atrophy_weight: 1 in pons + medulla, Gaussian fall-off outside (where the atrophy warp acts).
        axis_z, axis_xy: lower-brainstem centre line, ``(Z,)`` heights and ``(Z, 2)`` centroids (mm).
        brain_bbox: MNI min and max corners (mm) of the template brain, ``(2, 3)``.
        parenchyma: ICBM GM + WM (the parenchyma fraction the brainstem rule keeps).
        stem_blend: the brainstem rule's blend (1 in the brainstem, Gaussian 1 mm edge).
        cst_atlas: Juelich corticospinal probability above the pons (0 below).
        tracts: Juelich probability of the other white-matter tracts.
    """

    affine: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    t1: np.ndarray
    gm_icbm: np.ndarray
    regions: np.ndarray
    cst: np.ndarray
    coherence: np.ndarray
    nuclei: np.ndarray
    atrophy_weight: np.ndarray
    axis_z: np.ndarray
    axis_xy: np.ndarray
    brain_bbox: np.ndarray
    parenchyma: np.ndarray
    stem_blend: np.ndarray
    cst_atlas: np.ndarray
    tracts: np.ndarray


def _atlas_regions(nmm: np.ndarray, names: dict[int, str], axes: tuple, gm, wm, csf) -> np.ndarray:
    lut = np.zeros(max(max(names), int(nmm.max())) + 1, np.int16)
    for idx, name in names.items():
        target = "cortex" if idx >= 100 else next((r for key, r in _NMM_RULES if key in name), None)
        if target is not None:
            lut[idx] = REGION_INDEX[target]
    regions = lut[nmm]
    cerebrum = np.isin(regions, [REGION_INDEX["cortex"], REGION_INDEX["cerebral_wm"]])
    tissue_known = np.maximum(gm, wm) >= csf
    regions[cerebrum & tissue_known & (wm > gm)] = REGION_INDEX["cerebral_wm"]
    regions[cerebrum & tissue_known & (gm >= wm)] = REGION_INDEX["cortex"]
    stem = np.isin(nmm, [i for i, n in names.items() if n == "Brain_Stem"])
    vdc = np.isin(nmm, _vdc_ids(names))
    for name, mask in bs.split_brainstem(stem, vdc, axes).items():
        regions[mask] = REGION_INDEX[name]
    return regions


def _vdc_ids(names: dict[int, str]) -> list[int]:
    return [i for i, n in names.items() if n.endswith("Ventral_DC")]


def _extrapolate_down(regions: np.ndarray, z: np.ndarray, parenchyma: np.ndarray) -> np.ndarray:
    k0 = int(np.argmin(np.abs(z - EXTRAPOLATE_BELOW_Z)))
    below = np.nonzero(z < z[k0])[0]
    for k in below:
        regions[:, :, k] = np.where(parenchyma[:, :, k], regions[:, :, k0], 0)
    return regions


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    found = ndi.find_objects(mask.astype(np.int8))[0]
    return tuple(
        slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(found, mask.shape, strict=True)
    )


def _atrophy_weight(stem: np.ndarray, z: np.ndarray, voxel_mm: np.ndarray) -> np.ndarray:
    """Where the atrophy warp acts: 1 on the pons and medulla and a margin around them, fading outside.

    In-plane, the weight is 1 within ``ATROPHY_MARGIN_MM`` of the brainstem's cross-section and falls off
    as a Gaussian (sigma ``ATROPHY_FALLOFF_MM``) beyond; along z it is 1 up to ``ATROPHY_MARGIN_Z_MM``
    above the pons' top and falls off the same way into the midbrain. The margins keep the weight at 1
    on the region's border after resampling to coarse grids, so pons + medulla shrink by exactly the
    configured factor.
    """
    box = _box(stem, int(6 * ATROPHY_FALLOFF_MM))
    d_xy = ndi.distance_transform_edt(~stem[box], sampling=(float(voxel_mm[0]), float(voxel_mm[1]), 1e6))
    d_xy = np.maximum(d_xy - ATROPHY_MARGIN_MM, 0.0)
    dz = np.maximum(z[box[2]][None, None, :] - (bs.PONS_TOP_Z + ATROPHY_MARGIN_Z_MM), 0.0)
    weight = np.zeros(stem.shape, np.float32)
    weight[box] = np.exp(-0.5 * (d_xy**2 + dz**2) / ATROPHY_FALLOFF_MM**2)
    return weight


@functools.lru_cache(maxsize=1)
def build_anatomy() -> Anatomy:
    """The template anatomy at 1 mm, cropped to the brain plus a margin (cached in-process)."""
    raw = load_raw_templates()
    mask_full = raw.t1 > 0
    crop = _box(mask_full, int(GRID_MARGIN_MM))
    affine = raw.affine.copy()
    affine[:3, 3] = raw.affine[:3, :3] @ [s.start for s in crop] + raw.affine[:3, 3]
    mask = mask_full[crop]
    axes = bs.world_axes(mask.shape, affine)
    gm, wm = raw.gm[crop] * mask, raw.wm[crop] * mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0).astype(np.float32)
    regions = _atlas_regions(raw.nmm[crop], raw.nmm_names, axes, gm, wm, csf)
    regions = _extrapolate_down(regions, axes[2], (gm + wm) >= 0.5)
    stem = np.isin(regions, [REGION_INDEX[n] for n in ("midbrain", "pons", "medulla")])

    # brainstem nuclei, CST and the tissue rule, computed in a box around the brainstem
    box = _box(stem, 8)
    nuclei = np.zeros(gm.shape, np.float32)
    tube = np.zeros(gm.shape, np.float32)
    box_axes = tuple(a[b] for a, b in zip(axes, box, strict=True))
    tube[box] = bs.cst_tube(bs.grid_xyz(box_axes))  # type: ignore[arg-type]
    inside = np.zeros(stem[box].shape, bool)
    masks = bs.nucleus_masks(box_axes)  # type: ignore[arg-type]
    for name, m in masks.items():
        inside |= m
        if name in bs.WHOLLY_MIDBRAIN:  # the diencephalic plane clips their rostral poles; keep them whole
            grab = m & (regions[box] == 0) & np.isin(raw.nmm[crop][box], _vdc_ids(raw.nmm_names))
            regions[box][grab] = REGION_INDEX["midbrain"]
    stem = np.isin(regions, [REGION_INDEX[n] for n in ("midbrain", "pons", "medulla")])
    nuclei[box] = ndi.gaussian_filter(inside.astype(np.float32), 0.5) * (1.0 - tube[box])
    above = (axes[2] > bs.PONS_TOP_Z)[None, None, :]
    cst_atlas = np.where(above, raw.cst[crop], 0.0).astype(np.float32)
    cst = np.maximum(cst_atlas, tube).astype(np.float32)
    beta = np.zeros(gm.shape, np.float32)
    beta[box] = np.clip(ndi.gaussian_filter(stem[box].astype(np.float32), 1.0), 0.0, 1.0)
    parenchyma = gm + wm
    gm_new = ((1 - beta) * gm + beta * parenchyma * nuclei).astype(np.float32)
    wm_new = (parenchyma - gm_new).astype(np.float32)
    coherence = np.maximum(np.maximum(raw.tracts[crop], cst), BRAINSTEM_TRACT_COHERENCE * beta).astype(np.float32)

    lower = np.isin(regions, [REGION_INDEX["pons"], REGION_INDEX["medulla"]])
    weight = _atrophy_weight(stem, axes[2], np.abs(np.diag(affine)[:3]))
    axis_z, axis_xy = bs.brainstem_axis(lower, axes)
    found = ndi.find_objects(mask.astype(np.int8))[0]
    bbox = np.array(
        [
            [a[f.start] for a, f in zip(axes, found, strict=True)],
            [a[f.stop - 1] for a, f in zip(axes, found, strict=True)],
        ]
    )
    return Anatomy(
        affine=affine,
        gm=gm_new,
        wm=wm_new,
        csf=csf,
        t1=raw.t1[crop],
        gm_icbm=gm.astype(np.float32),
        regions=regions,
        cst=cst,
        coherence=coherence,
        nuclei=nuclei,
        atrophy_weight=weight,
        axis_z=axis_z,
        axis_xy=axis_xy,
        brain_bbox=bbox.astype(np.float64),
        parenchyma=parenchyma.astype(np.float32),
        stem_blend=beta,
        cst_atlas=cst_atlas,
        tracts=raw.tracts[crop].astype(np.float32),
    )


@dataclass(frozen=True)
class TemplateGrid:
    """The template anatomy resampled to an output spacing, as stacked channels.

    Attributes:
        spacing: isotropic voxel size (mm).
        affine: voxel-to-MNI affine of the output grid (RAS, diagonal).
        channels: ``(C, X, Y, Z)`` float32: ``gm, wm, csf, cst, coherence`` then one soft membership
            per canonical region in :attr:`region_ids` (partial-volume fractions).
        names: channel names.
        region_ids: canonical region index of each region channel.
        atrophy_weight: ``(X, Y, Z)`` atrophy weight on this grid.
        axis_z, axis_xy: lower-brainstem centre line (mm).
        stem: template maps in a box around the brainstem, from which each subject's brainstem tissue is
            recomputed (:mod:`~ssl_pretrain.data.demo.nucleus_maps`); the channels hold the template's.
    """

    spacing: float
    affine: np.ndarray
    channels: np.ndarray
    names: tuple[str, ...]
    region_ids: tuple[int, ...]
    atrophy_weight: np.ndarray
    axis_z: np.ndarray
    axis_xy: np.ndarray
    stem: nm.StemBox

    @property
    def shape(self) -> tuple[int, int, int]:
        """Output grid shape ``(X, Y, Z)``."""
        return tuple(int(s) for s in self.channels.shape[1:])  # type: ignore[return-value]

    def channel(self, name: str) -> np.ndarray:
        """One channel by name, ``(X, Y, Z)``."""
        return self.channels[self.names.index(name)]


def _resample(vol: np.ndarray, factor: float) -> np.ndarray:
    """Down-sample a 1 mm map by ``factor``: block means for integer factors (exact partial volume),
    otherwise a Gaussian prefilter and linear interpolation. Voxel ``i`` of the output covers source
    voxels ``[i * factor, (i + 1) * factor)``."""
    shape = tuple(int(np.floor(n / factor)) for n in vol.shape)
    if abs(factor - round(factor)) < 1e-6:
        k = round(factor)
        if k == 1:
            return vol.astype(np.float32)
        cut = vol[: shape[0] * k, : shape[1] * k, : shape[2] * k]
        return (
            cut.reshape(shape[0], k, shape[1], k, shape[2], k).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)
        )
    sigma = float(np.sqrt(max(factor**2 - 1.0, 0.0)) / 2.355)
    smooth = ndi.gaussian_filter(vol, sigma, mode="constant")
    offset = [(factor - 1.0) / 2.0] * 3
    return ndi.affine_transform(smooth, [factor] * 3, offset, output_shape=shape, order=1, mode="constant").astype(
        np.float32
    )


@functools.lru_cache(maxsize=4)
def template_grid(spacing: float) -> TemplateGrid:
    """The template anatomy on an isotropic ``spacing`` mm grid covering the brain plus a margin."""
    anat = build_anatomy()
    src = float(abs(anat.affine[0, 0]))
    factor = float(spacing) / src
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = anat.affine[:3, 3] + (spacing - src) / 2.0
    region_ids = tuple(i for i in REGIONS if np.any(anat.regions == i))
    vols = [anat.gm, anat.wm, anat.csf, anat.cst, anat.coherence]
    vols += [(anat.regions == i).astype(np.float32) for i in region_ids]
    channels = np.stack([_resample(v, factor) for v in vols])
    np.clip(channels, 0.0, 1.0, out=channels)
    names = TISSUE_CHANNELS + MAP_CHANNELS + tuple(f"region:{REGIONS[i]}" for i in region_ids)
    stem = _stem_box(anat, channels, names, affine, factor)
    return TemplateGrid(
        spacing=float(spacing),
        affine=affine,
        channels=channels,
        names=names,
        region_ids=region_ids,
        atrophy_weight=_resample(anat.atrophy_weight, factor),
        axis_z=anat.axis_z,
        axis_xy=anat.axis_xy,
        stem=stem,
    )


def _stem_box(
    anat: Anatomy, channels: np.ndarray, names: tuple[str, ...], affine: np.ndarray, factor: float
) -> nm.StemBox:
    """Build the brainstem box and write the template's brainstem tissue into ``channels`` (in place).

    Inside the box, GM/WM/CSF, the corticospinal tract and the coherence are recomputed on the output grid
    by :func:`~ssl_pretrain.data.demo.nucleus_maps.brainstem_maps`, exactly as for a subject whose nuclei
    sit at the template positions, so a subject differs from the template only by what it draws.
    """
    maps = {
        "parenchyma": _resample(anat.parenchyma, factor),
        "blend": _resample(anat.stem_blend, factor),
        "gm_outside": _resample((1.0 - anat.stem_blend) * anat.gm_icbm, factor),
        "csf": channels[names.index("csf")],
        "cst_atlas": _resample(anat.cst_atlas, factor),
        "tracts": _resample(anat.tracts, factor),
    }
    stem_membership = sum(channels[names.index(f"region:{n}")] for n in ("midbrain", "pons", "medulla"))
    stem = nm.make_stem_box(stem_membership, affine, maps)  # type: ignore[arg-type]
    template = nm.brainstem_maps(stem)
    for name in ("gm", "wm", "csf", "cst", "coherence"):
        channels[names.index(name)][stem.box] = template[name]
    return stem
