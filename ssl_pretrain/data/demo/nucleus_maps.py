"""Per-subject brainstem tissue: jittered nuclei, motor-neuron loss and corticospinal atrophy, in a box.

Only a box around the brainstem depends on where a subject's nuclei sit, so only that box is recomputed
per subject (:func:`brainstem_maps`), in template space and on the output grid, before the subject's
warp. The nuclei are drawn as ellipsoids on a supersampled grid (voxels of at most 1 mm, aligned with
the output voxels), softened with a 0.5 mm Gaussian, cut by the corticospinal tube and block-averaged,
so the maps are partial volumes. The brainstem tissue rule of :mod:`~ssl_pretrain.data.demo.anatomy`
then gives, with ``beta`` the brainstem blend and ``p`` the parenchyma fraction::

    GM = (1 - beta) * GM_icbm + beta * p * N        WM = p - GM        (N = nucleus membership)

Lower-motor-neuron loss (ALS) removes a fraction of the motor nuclei's GM; the lost part becomes WM-like
(gliotic) tissue or CSF (``loss_to``). Corticospinal atrophy narrows the tract's brainstem tube (area
times ``radius_scale**2``); the vacated cross-section keeps its tissue (white matter of other tracts), so
only the tract membership, and with it FA, changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ssl_pretrain.data.demo import brainstem as bs

BOX_MARGIN_MM = 8.0  # margin of the box around the brainstem (nuclei never reach it)
SOFT_EDGE_MM = 0.5  # Gaussian edge of the nuclei
LOSS_TISSUES = ("wm", "csf")


@dataclass(frozen=True)
class StemBox:
    """Template maps on the output grid inside a box around the brainstem (all ``(X, Y, Z)`` of the box).

    Attributes:
        box: index box of the output grid.
        affine: voxel-to-MNI affine of the box (output spacing).
        fine: supersampling factor per axis (fine voxels of ``spacing / fine`` mm).
        fine_axes: fine voxel-centre coordinates (mm) along x, y, z.
        parenchyma: template GM + WM fraction (before the brainstem rule).
        blend: brainstem blend ``beta`` (1 inside the brainstem, Gaussian 1 mm edge).
        gm_outside: ``(1 - beta) * GM_icbm`` (grey matter that the brainstem rule leaves alone).
        csf: template CSF fraction.
        cst_atlas: Juelich corticospinal probability above the pons (0 below).
        tracts: Juelich probability of the other white-matter tracts.
        tube_fine: template corticospinal tube on the fine grid.
    """

    box: tuple[slice, slice, slice]
    affine: np.ndarray
    fine: int
    fine_axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    parenchyma: np.ndarray
    blend: np.ndarray
    gm_outside: np.ndarray
    csf: np.ndarray
    cst_atlas: np.ndarray
    tracts: np.ndarray
    tube_fine: np.ndarray


def make_stem_box(stem: np.ndarray, affine: np.ndarray, maps: dict[str, np.ndarray]) -> StemBox:
    """The box around the brainstem membership ``stem`` of an output grid with ``affine``.

    Args:
        stem: ``(X, Y, Z)`` brainstem membership on the output grid.
        affine: output grid affine (axis-aligned, isotropic).
        maps: full-grid ``parenchyma``, ``blend``, ``gm_outside``, ``csf``, ``cst_atlas``, ``tracts``.
    """
    spacing = float(abs(affine[0, 0]))
    margin = int(np.ceil(BOX_MARGIN_MM / spacing))
    found = ndi.find_objects((stem > 0).astype(np.int8))[0]
    box = tuple(
        slice(max(f.start - margin, 0), min(f.stop + margin, n)) for f, n in zip(found, stem.shape, strict=True)
    )
    box_affine = affine.copy()
    box_affine[:3, 3] = affine[:3, 3] + np.diag(affine)[:3] * [b.start for b in box]
    fine = max(1, round(spacing))
    offsets = spacing * ((np.arange(fine) + 0.5) / fine - 0.5)
    axes = bs.world_axes(tuple(b.stop - b.start for b in box), box_affine)
    fine_axes = tuple((a[:, None] + offsets[None, :]).ravel().astype(np.float32) for a in axes)
    return StemBox(
        box=box,  # type: ignore[arg-type]
        affine=box_affine,
        fine=fine,
        fine_axes=fine_axes,  # type: ignore[arg-type]
        tube_fine=bs.cst_tube(bs.grid_xyz(fine_axes)),  # type: ignore[arg-type]
        **{k: np.ascontiguousarray(maps[k][box], np.float32) for k in ("parenchyma", "blend", "gm_outside", "csf",
                                                                     "cst_atlas", "tracts")},
    )  # fmt: skip


def _block_mean(vol: np.ndarray, k: int) -> np.ndarray:
    if k == 1:
        return vol.astype(np.float32)
    s = tuple(n // k for n in vol.shape)
    return vol.reshape(s[0], k, s[1], k, s[2], k).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def group_memberships(stem: StemBox, placement: list[bs.PlacedNucleus]) -> dict[str, np.ndarray]:
    """Membership (0–1, partial volume on the box) of each nucleus group (:data:`brainstem.NUCLEUS_GROUPS`).

    The union of all nuclei is softened once and shared between the groups in proportion to their own
    softened masks, so overlapping edges never sum above 1; the corticospinal tube is never grey matter.
    """
    sigma = SOFT_EDGE_MM * stem.fine / float(abs(stem.affine[0, 0]))
    masks = bs.nucleus_masks(stem.fine_axes, placement)
    groups = {g: np.zeros(stem.tube_fine.shape, bool) for g in bs.NUCLEUS_GROUPS}
    for name, mask in masks.items():
        groups[bs.group_of(name)] |= mask
    total = ndi.gaussian_filter(np.logical_or.reduce(list(groups.values())).astype(np.float32), sigma)
    soft = {g: ndi.gaussian_filter(m.astype(np.float32), sigma) for g, m in groups.items()}
    norm = np.maximum(sum(soft.values()), 1e-6)
    keep = total * (1.0 - stem.tube_fine) / norm
    return {g: _block_mean(keep * soft[g], stem.fine) for g in bs.NUCLEUS_GROUPS}


def brainstem_maps(
    stem: StemBox,
    placement: list[bs.PlacedNucleus] | None = None,
    motor_loss: float = 0.0,
    loss_to: str = "wm",
    cst_radius_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """Tissue, tract and nucleus-group maps of one subject on the box (template space).

    Args:
        stem: the template box (:func:`make_stem_box`).
        placement: the subject's nuclei (:func:`brainstem.place_nuclei`); the template's if ``None``.
        motor_loss: fraction of the motor nuclei's GM lost (lower motor neurons, ALS).
        loss_to: what the lost GM becomes: ``wm`` (gliotic, WM-like) or ``csf``.
        cst_radius_scale: corticospinal tube radius factor (1 = healthy).

    Returns:
        ``gm``, ``wm``, ``csf``, ``cst``, ``coherence`` and the GM fractions ``gm_iron`` (red nucleus,
        substantia nigra), ``gm_nuclei`` (all other brainstem nuclei), ``gm_motor`` (what remains of the
        motor nuclei, part of ``gm_nuclei``), ``gm_spared`` (oculomotor and abducens, part of
        ``gm_nuclei``), ``cst_healthy`` (the tract before atrophy), each ``(X, Y, Z)`` of the box.
    """
    if loss_to not in LOSS_TISSUES:
        raise ValueError(f"loss_to must be one of {LOSS_TISSUES}, got {loss_to!r}")
    n = group_memberships(stem, bs.place_nuclei() if placement is None else placement)
    bp = stem.blend * stem.parenchyma
    lost = bp * n["motor"] * np.float32(motor_loss)
    out = {
        "gm_iron": bp * n["iron"],
        "gm_motor": bp * n["motor"] - lost,
        "gm_spared": bp * n["spared"],
    }
    out["gm_nuclei"] = bp * n["other"] + out["gm_motor"] + out["gm_spared"]
    out["gm"] = stem.gm_outside + out["gm_iron"] + out["gm_nuclei"]
    to_csf = lost if loss_to == "csf" else np.zeros_like(lost)
    out["wm"] = np.clip(stem.parenchyma - out["gm"] - to_csf, 0.0, 1.0)
    out["csf"] = stem.csf + to_csf
    healthy = _block_mean(stem.tube_fine, stem.fine)
    tube = healthy if cst_radius_scale == 1.0 else _block_mean(
        bs.cst_tube(bs.grid_xyz(stem.fine_axes), cst_radius_scale), stem.fine
    )  # fmt: skip
    out["cst"] = np.maximum(stem.cst_atlas, tube)
    out["cst_healthy"] = np.maximum(stem.cst_atlas, healthy)
    out["coherence"] = np.maximum(np.maximum(stem.tracts, out["cst"]), BRAINSTEM_TRACT_COHERENCE * stem.blend)
    return {k: v.astype(np.float32) for k, v in out.items()}


BRAINSTEM_TRACT_COHERENCE = 0.3  # brainstem WM coherence floor (same rule as the template anatomy)
