"""Brainstem anatomy of the demo template: subdivisions, grey-matter nuclei and the corticospinal tract.

The ICBM152 GM probability map calls most of the brainstem grey matter, which is anatomically wrong:
the brainstem is mostly white-matter tracts with embedded nuclei. The demo therefore *re-defines*
tissue inside the brainstem (see :func:`ssl_pretrain.data.demo.anatomy.build_anatomy`): white matter by
default, grey matter only inside the nuclei listed in :data:`NUCLEI`, and the corticospinal tract
(:data:`CST_PATH`) always white matter. Positions are approximate MNI coordinates (mm, RAS) of each
structure's centre, from standard brainstem anatomy (relative positions as in neuroanatomy atlases, e.g.
the inferior olive dorsolateral to the pyramid in the rostral medulla), checked to lie inside the
template's brainstem at the levels where the structure belongs; ``docs/demo_cohort.md`` lists them and
``docs/demo_brainstem_tissue.png`` shows them. They are a model, not a probabilistic atlas.

Subdivision: Neuromorphometrics labels one ``Brain_Stem`` plus a ``Ventral_DC`` (ventral diencephalon)
that also holds the anterior midbrain (cerebral peduncles, substantia nigra, red nucleus). The
template's ventral (anterior) contour of the brainstem gives two axial landmarks: the superior pontine
sulcus (the pontine bulge starts) at MNI z = -21 mm and the inferior pontine sulcus (it ends) at
z = -46 mm. The midbrain/diencephalon border is the plane through the posterior commissure and the
caudal edge of the mammillary bodies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

PONS_TOP_Z = -21.0  # superior pontine sulcus (pontomesencephalic junction), MNI z in mm
PONS_BOTTOM_Z = -46.0  # inferior pontine sulcus (pontomedullary junction)
# Midbrain part of Ventral_DC: below the plane through the posterior commissure (y=-26, z=-2) and the
# caudal edge of the mammillary bodies (y=-12, z=-14), i.e. z < -2 - (12/14) * (y + 26).
DIENCEPHALON_PLANE = ((-26.0, -2.0), (-12.0, -14.0))
MIDBRAIN_HALF_WIDTH = 16.0  # |x| limit (mm) of the midbrain part of Ventral_DC (excludes the lateral geniculate)


NUCLEUS_GROUPS = ("iron", "motor", "spared", "other")


@dataclass(frozen=True)
class Nucleus:
    """A grey-matter structure modelled as an ellipsoid (mirrored to both sides unless on the midline).

    Attributes:
        name: anatomical name.
        region: ``midbrain``, ``pons`` or ``medulla``.
        centre: right-side MNI centre (x, y, z) in mm.
        radii: semi-axes (mm) along x, y, z before rotation.
        tilt_deg: rotation about the x axis (positive tips the long axis anterior-superior), degrees.
        yaw_deg: rotation about the z axis (positive turns the y axis toward +x), degrees.
        group: ``iron`` (iron-rich: own relaxation knob), ``motor`` (lower motor neurons lost in ALS),
            ``spared`` (ocular motor nuclei, spared in ALS: the within-brainstem control) or ``other``.
    """

    name: str
    region: str
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    tilt_deg: float = 0.0
    yaw_deg: float = 0.0
    group: str = "other"


NUCLEI: tuple[Nucleus, ...] = (
    # midbrain
    Nucleus("red nucleus", "midbrain", (5.0, -19.0, -8.0), (3.5, 4.0, 4.0), group="iron"),
    Nucleus("substantia nigra", "midbrain", (10.0, -16.0, -11.0), (2.5, 7.0, 3.0), 20.0, 30.0, group="iron"),
    Nucleus("superior colliculus", "midbrain", (4.0, -33.0, -4.0), (3.5, 2.5, 2.5)),
    Nucleus("inferior colliculus", "midbrain", (5.0, -37.0, -11.0), (3.5, 2.5, 2.5)),
    # oculomotor (III) nucleus: paramedian, ventral to the periaqueductal grey at the superior colliculus
    Nucleus("oculomotor nucleus (III)", "midbrain", (2.5, -26.5, -7.0), (1.5, 1.5, 3.0), group="spared"),
    # pons: pontine nuclei of the basis pontis around the CST fascicles, and tegmental nuclei
    Nucleus("pontine nuclei (paramedian)", "pons", (3.5, -19.0, -33.0), (2.5, 4.0, 8.0)),
    Nucleus("pontine nuclei (ventral)", "pons", (7.0, -15.5, -33.0), (5.0, 2.0, 8.0)),
    Nucleus("pontine nuclei (lateral)", "pons", (13.0, -21.0, -32.0), (3.0, 4.5, 7.0)),
    Nucleus("locus coeruleus", "pons", (5.0, -37.0, -24.0), (1.5, 1.5, 4.0)),
    Nucleus("motor trigeminal nucleus (V)", "pons", (8.0, -29.0, -30.0), (2.0, 2.0, 2.5), group="motor"),
    # abducens (VI): dorsomedial under the facial colliculus; facial (VII): ventrolateral tegmentum, caudal pons
    Nucleus("abducens nucleus (VI)", "pons", (3.5, -35.0, -38.0), (1.5, 1.5, 2.0), group="spared"),
    Nucleus("facial nucleus (VII)", "pons", (7.0, -31.0, -41.0), (2.0, 2.0, 3.0), group="motor"),
    Nucleus("vestibular nuclei", "pons", (9.0, -38.0, -42.0), (3.0, 2.5, 5.0)),
    # medulla
    Nucleus("inferior olive", "medulla", (7.0, -38.0, -53.0), (2.5, 2.5, 6.0)),
    Nucleus("hypoglossal nucleus (XII)", "medulla", (2.0, -43.0, -51.0), (1.5, 1.5, 5.0), group="motor"),
    Nucleus("dorsal motor nucleus of the vagus", "medulla", (4.5, -43.5, -50.0), (1.0, 1.5, 4.0)),
    # nucleus ambiguus (IX/X): a thin column in the ventrolateral reticular formation, dorsolateral to the olive
    Nucleus("nucleus ambiguus (IX/X)", "medulla", (7.5, -42.0, -50.0), (1.25, 1.25, 5.0), group="motor"),
    Nucleus("gracile/cuneate nuclei", "medulla", (4.0, -42.0, -61.0), (2.5, 2.0, 4.0)),
)

# Midbrain nuclei assigned wholly to the midbrain region where the atlas puts them in Ventral_DC.
WHOLLY_MIDBRAIN = ("red nucleus", "substantia nigra")

# Periaqueductal grey: a tube of this radius around the cerebral aqueduct (midline polyline).
PAG_PATH: tuple[tuple[float, float, float], ...] = ((0.0, -31.0, -3.0), (0.0, -34.0, -12.0), (0.0, -37.0, -18.0))
PAG_RADIUS = 3.5

# Corticospinal tract below the Juelich atlas (which stops near z = -24): right-side polyline through the
# cerebral peduncle, the basis pontis and the medullary pyramid (mirrored for the left), with the tube
# radius (mm) at each point. Above z = -14 the Juelich probability map takes over.
CST_PATH: tuple[tuple[float, float, float, float], ...] = (
    (14.5, -15.0, -14.0, 3.5),
    (13.5, -16.5, -20.0, 3.5),
    (10.5, -19.0, -26.0, 3.0),
    (9.0, -21.0, -32.0, 3.0),
    (8.0, -23.0, -38.0, 3.0),
    (6.0, -26.0, -44.0, 2.75),
    (4.0, -32.0, -50.0, 2.5),
    (3.5, -35.5, -56.0, 2.5),
    (3.0, -38.5, -62.0, 2.25),
    (2.5, -41.0, -72.0, 2.25),
)


def world_axes(shape: tuple[int, ...], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNI coordinates (mm) of the voxel centres along each axis of an axis-aligned grid (three 1D arrays)."""
    return tuple(  # type: ignore[return-value]
        (np.arange(n, dtype=np.float32) * np.float32(affine[i, i]) + np.float32(affine[i, 3]))
        for i, n in enumerate(shape)
    )


def grid_xyz(axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Voxel-centre coordinates ``(X, Y, Z, 3)`` float32 of the grid spanned by ``axes``."""
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _broadcast(axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y, z = axes
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _rotation(tilt_deg: float, yaw_deg: float) -> np.ndarray:
    t, y = np.deg2rad(tilt_deg), np.deg2rad(yaw_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    rz = np.array([[np.cos(y), np.sin(y), 0], [-np.sin(y), np.cos(y), 0], [0, 0, 1]])
    return rz @ rx


def _soft(inside: np.ndarray, sigma_vox: float) -> np.ndarray:
    return ndi.gaussian_filter(inside.astype(np.float32), sigma_vox) if sigma_vox > 0 else inside.astype(np.float32)


def _span(axis: np.ndarray, lo: float, hi: float) -> slice:
    idx = np.nonzero((axis >= lo) & (axis <= hi))[0]
    return slice(int(idx[0]), int(idx[-1]) + 1) if len(idx) else slice(0, 0)


@dataclass(frozen=True)
class PlacedNucleus:
    """One side of a nucleus as placed in one subject (template space, mm).

    Attributes:
        nucleus: the template nucleus.
        centre: ``(3,)`` MNI centre of this side (mirrored, then jittered).
        radii: ``(3,)`` semi-axes (scaled).
        rotation: ``(3, 3)`` orientation (mirrored for the left side).
    """

    nucleus: Nucleus
    centre: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray


def place_nuclei(
    rng: np.random.Generator | None = None, position_sd_mm: float = 0.0, size_sd: float = 0.0
) -> list[PlacedNucleus]:
    """Both sides of every nucleus, each side jittered independently.

    Each side's centre moves by ``N(0, position_sd_mm)`` per axis and each semi-axis is scaled by
    ``exp(N(0, size_sd))``. The same number of draws is made whatever the values (6 per side), so the
    stream stays aligned when a setting changes; without ``rng`` the template placement is returned.
    """
    out = []
    mirror = np.diag([-1.0, 1.0, 1.0])
    for nuc in NUCLEI:
        rot = _rotation(nuc.tilt_deg, nuc.yaw_deg)
        for side in (1.0, -1.0):
            shift, scale = (np.zeros(3), np.zeros(3)) if rng is None else (rng.normal(0, 1, 3), rng.normal(0, 1, 3))
            centre = np.array([side * nuc.centre[0], nuc.centre[1], nuc.centre[2]]) + position_sd_mm * shift
            radii = np.asarray(nuc.radii, np.float64) * np.exp(size_sd * scale)
            out.append(PlacedNucleus(nuc, centre, radii, rot if side > 0 else mirror @ rot @ mirror))
    return out


def nucleus_masks(
    axes: tuple[np.ndarray, np.ndarray, np.ndarray], placement: list[PlacedNucleus] | None = None
) -> dict[str, np.ndarray]:
    """Binary masks of every nucleus (both sides) and of the periaqueductal grey.

    Args:
        axes: voxel-centre coordinates (MNI mm) along x, y, z of an axis-aligned grid.
        placement: where each nucleus side sits (:func:`place_nuclei`); the template placement if ``None``.

    Returns:
        name -> ``(X, Y, Z)`` bool mask on that grid (1 = inside the nucleus).
    """
    shape = tuple(len(a) for a in axes)
    masks: dict[str, np.ndarray] = {nuc.name: np.zeros(shape, bool) for nuc in NUCLEI}
    for placed in place_nuclei() if placement is None else placement:
        reach = float(placed.radii.max())
        box = tuple(_span(a, c - reach, c + reach) for a, c in zip(axes, placed.centre, strict=True))
        if any(b.stop <= b.start for b in box):
            continue
        xyz = grid_xyz(tuple(a[b] for a, b in zip(axes, box, strict=True)))  # type: ignore[arg-type]
        local = (xyz - placed.centre.astype(np.float32)) @ placed.rotation.astype(np.float32)
        masks[placed.nucleus.name][box] |= ((local / placed.radii.astype(np.float32)) ** 2).sum(-1) <= 1.0
    masks["periaqueductal grey"] = polyline_distance(grid_xyz(axes), np.asarray(PAG_PATH)) <= PAG_RADIUS
    return masks


def group_of(name: str) -> str:
    """Nucleus group (:data:`NUCLEUS_GROUPS`) of a mask name from :func:`nucleus_masks`."""
    return next((n.group for n in NUCLEI if n.name == name), "other")


def polyline_distance(xyz: np.ndarray, points: np.ndarray, radii: np.ndarray | None = None) -> np.ndarray:
    """Distance (mm) from each voxel to a polyline; with ``radii``, distance to the tube's surface.

    Args:
        xyz: ``(X, Y, Z, 3)`` coordinates.
        points: ``(N, 3)`` polyline vertices.
        radii: ``(N,)`` tube radius at each vertex (interpolated along each segment), or ``None``.
    """
    best = np.full(xyz.shape[:3], np.inf, np.float32)
    for i in range(len(points) - 1):
        a, b = points[i].astype(np.float32), points[i + 1].astype(np.float32)
        ab = b - a
        t = np.clip(((xyz - a) @ ab) / float(ab @ ab), 0.0, 1.0)
        d = np.linalg.norm(xyz - (a + t[..., None] * ab), axis=-1)
        if radii is not None:
            d = d - (radii[i] + t * (radii[i + 1] - radii[i]))
        best = np.minimum(best, d)
    return best


def cst_tube(xyz: np.ndarray, radius_scale: float = 1.0) -> np.ndarray:
    """Corticospinal-tract membership (0–1) of the brainstem segment, both sides.

    1 inside the tube, Gaussian fall-off (sigma 1 mm) outside it. ``radius_scale`` shrinks the whole
    profile about the centre line (radius and edge alike), so every cross-section's membership integral
    scales by ``radius_scale**2`` (a patient's corticospinal atrophy).
    """
    path = np.asarray(CST_PATH, np.float32)
    out = np.zeros(xyz.shape[:3], np.float32)
    for side in (1.0, -1.0):
        pts = path[:, :3] * np.array([side, 1.0, 1.0], np.float32)
        d = np.maximum(polyline_distance(xyz, pts, path[:, 3] * np.float32(radius_scale)) / radius_scale, 0.0)
        out = np.maximum(out, np.exp(-0.5 * d**2))
    return out


def split_brainstem(stem: np.ndarray, vdc: np.ndarray, axes: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
    """Midbrain / pons / medulla masks from the atlas brainstem and ventral-DC masks.

    Args:
        stem: atlas brainstem mask ``(X, Y, Z)``.
        vdc: atlas ventral-diencephalon mask (its part caudal to the diencephalic plane is midbrain).
        axes: voxel-centre coordinates (MNI mm) along x, y, z.
    """
    x, y, z = _broadcast(axes)  # type: ignore[arg-type]
    (y0, z0), (y1, z1) = DIENCEPHALON_PLANE
    below_plane = z < z0 + (z1 - z0) / (y1 - y0) * (y - y0)
    whole = stem | (vdc & below_plane & (np.abs(x) <= MIDBRAIN_HALF_WIDTH))
    return {
        "midbrain": whole & (z >= PONS_TOP_Z),
        "pons": whole & (z < PONS_TOP_Z) & (z >= PONS_BOTTOM_Z),
        "medulla": whole & (z < PONS_BOTTOM_Z),
    }


def brainstem_axis(
    lower: np.ndarray, axes: tuple[np.ndarray, ...], sigma_mm: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Centre line of the lower brainstem: per axial slice centroid (x, y), smoothed along z.

    Args:
        lower: pons + medulla mask on an axis-aligned 1 mm grid.
        axes: voxel-centre coordinates (mm) along x, y, z of that grid.
        sigma_mm: Gaussian smoothing of the centroid curve along z.

    Returns:
        ``(z_mm, centre_xy)``: slice heights ``(Z,)`` and centroids ``(Z, 2)`` (edge values outside the mask).
    """
    x, y, _ = _broadcast(axes)  # type: ignore[arg-type]
    z_mm = np.asarray(axes[2], np.float64)
    counts = lower.sum(axis=(0, 1)).astype(np.float64)
    has = counts > 0
    cx = (lower * x).sum(axis=(0, 1)) / np.maximum(counts, 1)
    cy = (lower * y).sum(axis=(0, 1)) / np.maximum(counts, 1)
    ks = np.nonzero(has)[0]
    centre = np.stack([np.interp(np.arange(len(z_mm)), ks, cx[ks]), np.interp(np.arange(len(z_mm)), ks, cy[ks])], 1)
    spacing = abs(float(z_mm[1] - z_mm[0])) if len(z_mm) > 1 else 1.0
    centre = ndi.gaussian_filter1d(centre, sigma_mm / spacing, axis=0, mode="nearest")
    return z_mm, centre
