"""Patch augmentation with TorchIO: spatial transforms, intensity transforms and MRI artefacts.

:func:`build_augment` turns ``data.augmentation`` into one ``tio.Compose`` applied to each patch
(image as a ``tio.ScalarImage``, tissue/regions as ``tio.LabelMap`` s, so labels follow the spatial
transforms with nearest-neighbour interpolation). Order: optional elastic deformation (off by
default: slow), left-right flip (axis 0 of the RAS cache grid), random affine (small scales and
rotations) fused with the crop to the patch size (:class:`RandomAffineCrop`: the same parameter draws
and the same resampling as ``tio.RandomAffine``/``tio.Affine``, checked against it in the tests, but it
computes only the output patch), then intensity transforms on the final patch: bias field, gamma,
Gaussian noise, and at low probability motion and ghosting artefacts.

Spatial transforms need context around the patch, or rotated corners would be filled with padding:
the sampler cuts ``patch + 2 * augment_margin(...)`` voxels, the spatial transforms act on that, and
:class:`RandomAffineCrop` returns the centre ``patch`` voxels. Every transform draws from torch's
global generator; the sampler seeds it per item inside ``torch.random.fork_rng`` so items are
reproducible.

Config (``data.augmentation``; each ``p`` is the probability of applying that transform to a patch)::

    affine:     {p, scales, degrees}               # scale factors in [1-s, 1+s], rotations in [-d, d] deg
    elastic:    {p, num_control_points, max_displacement}   # displacement in mm
    flip:       {p}                                # left-right
    bias_field: {p, coefficients}
    gamma:      {p, log_gamma}                     # gamma = exp(U(-g, g)); sign-preserving on negatives
    noise:      {p, std}                           # in normalised intensity units
    motion:     {p, degrees, translation, num_transforms}
    ghosting:   {p, num_ghosts, intensity}
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torchio as tio
from scipy.spatial.transform import Rotation
from torchio.transforms.augmentation import RandomTransform
from torchio.transforms.spatial_transform import SpatialTransform

from ssl_pretrain.errors import ConfigError

_KNOWN = {
    "affine": {"p", "scales", "degrees"},
    "elastic": {"p", "num_control_points", "max_displacement"},
    "flip": {"p"},
    "bias_field": {"p", "coefficients"},
    "gamma": {"p", "log_gamma"},
    "noise": {"p", "std"},
    "motion": {"p", "degrees", "translation", "num_transforms"},
    "ghosting": {"p", "num_ghosts", "intensity"},
}


def _section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    section = dict(cfg.get(name) or {})
    unknown = set(section) - _KNOWN[name]
    if unknown:
        raise ConfigError(f"data.augmentation.{name}", f"unknown keys {sorted(unknown)}; known: {sorted(_KNOWN[name])}")
    p = float(section.get("p", 0.0))
    if not 0 <= p <= 1:
        raise ConfigError(f"data.augmentation.{name}.p", f"expected a probability in [0, 1], got {p}")
    section["p"] = p
    return section


def _check_cfg(cfg: Mapping[str, Any]) -> None:
    unknown = set(cfg) - set(_KNOWN)
    if unknown:
        raise ConfigError("data.augmentation", f"unknown transforms {sorted(unknown)}; known: {sorted(_KNOWN)}")


def _pair(section: dict[str, Any], name: str, default: Any, key: str) -> tuple[float, float] | float:
    """A TorchIO range parameter ``section[name]``: a number or a ``[low, high]`` pair."""
    value = section.get(name, default)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ConfigError(f"data.augmentation.{key}.{name}", f"expected a number or [low, high], got {list(value)}")
        return float(value[0]), float(value[1])
    return float(value)


class RandomAffineCrop(RandomTransform, SpatialTransform):
    """TorchIO's random affine fused with the centre crop to the patch size.

    With probability ``affine_probability`` it draws per-axis scale factors ``U(scales)`` and Euler angles
    ``U(degrees)`` (degrees) exactly as ``tio.RandomAffine`` does and resamples the input about its
    centre with the same transform as ``tio.Affine`` (content scaled by ``s`` and rotated); otherwise it
    only crops. Either way the output is the central ``patch_size`` voxels, computed directly with one
    ``grid_sample`` for all image channels (trilinear) and one for label maps (nearest), instead of
    resampling the whole context box and cropping afterwards (about 5x less work than
    ``RandomAffine`` + ``CropOrPad`` on a patch with its context margin). Always applied (``p=1``);
    the input must be at least ``patch_size`` per axis.
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        scales: float | tuple[float, float] = 0.1,
        degrees: float | tuple[float, float] = 10.0,
        affine_probability: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patch_size = tuple(int(n) for n in patch_size)
        self.scales = self.parse_params(scales, 1, "scales", min_constraint=0)
        self.degrees = self.parse_params(degrees, 0, "degrees")
        self.affine_probability = self.parse_probability(affine_probability)

    def _base_grid(self) -> torch.Tensor:
        """``(X, Y, Z, 3)`` normalised output coordinates in grid_sample's ``(z, y, x)`` order (cached)."""
        if getattr(self, "_grid", None) is None:
            axes = [torch.linspace(-1, 1, n) if n > 1 else torch.zeros(1) for n in self.patch_size]
            zyx = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)
            self._grid = zyx.contiguous()
        return self._grid

    def draw(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(scales (3,), degrees (3,))`` of one draw, or ``None`` when only cropping."""
        if torch.rand(1).item() >= self.affine_probability:
            return None
        scales = np.asarray(self.sample_uniform_sextet(self.scales), dtype=np.float64)
        degrees = np.asarray(self.sample_uniform_sextet(self.degrees), dtype=np.float64)
        return scales, degrees

    @staticmethod
    def output_to_input(scales: np.ndarray, degrees: np.ndarray) -> np.ndarray:
        """3x3 map from output to input offsets (mm, RAS, about the centre), as ``tio.Affine`` resamples.

        ``tio.Affine`` moves content by ``T(x) = S R x`` (SimpleITK: Euler rotation ``Rz Rx Ry``, then
        scaling), and samples the input at ``T^-1(p) = R^-1 S^-1 p``.
        """
        ax, ay, az = np.radians(degrees)
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        rotation = rz @ rx @ ry
        return np.linalg.inv(np.diag(scales) @ rotation)

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        subject.check_consistent_spatial_shape()
        shape = np.asarray(subject.spatial_shape)
        out = np.asarray(self.patch_size)
        if np.any(shape < out):
            raise ValueError(f"input {tuple(shape)} is smaller than the patch {tuple(out)}")
        first = next(iter(subject.get_images(intensity_only=False)))
        spacing = np.asarray(first.spacing, dtype=np.float64)
        params = self.draw()
        matrix = np.eye(3) if params is None else self.output_to_input(*params)
        # input voxel = centre_in + diag(1/spacing) @ M @ diag(spacing) @ (output voxel - centre_out)
        voxel_map = np.diag(1 / spacing) @ matrix @ np.diag(spacing)
        lo = (shape - out) // 2  # the output box in the input; its centre is the centre of the transform
        centre_out = (out - 1) / 2
        centre_in = lo + centre_out
        # the same map in grid_sample's normalised coordinates (align_corners=True), axes reversed to (z, y, x)
        extent = np.maximum(shape - 1, 1).astype(np.float64)
        theta = np.zeros((3, 4))
        theta[:, :3] = np.diag(2 / extent) @ voxel_map @ np.diag((out - 1) / 2)
        theta[:, 3] = 2 * centre_in / extent - 1
        theta = np.concatenate([theta[::-1, 2::-1], theta[::-1, 3:]], axis=1)
        norm = (self._base_grid() @ torch.from_numpy(theta[:, :3].T).float() + torch.from_numpy(theta[:, 3]).float())[
            None
        ]
        shift = np.eye(4)
        shift[:3, 3] = lo
        for image in subject.get_images(intensity_only=False):
            data = image.data
            image.affine = image.affine @ shift  # the output grid is the box [lo, lo + out) of the input
            if params is None:
                data = data[:, lo[0] : lo[0] + out[0], lo[1] : lo[1] + out[1], lo[2] : lo[2] + out[2]]
                image.set_data(data.clone())
                continue
            label = image[tio.TYPE] != tio.INTENSITY
            sampled = torch.nn.functional.grid_sample(
                data[None].float(),
                norm,
                mode="nearest" if label else "bilinear",
                padding_mode="zeros" if label else "border",
                align_corners=True,
            )[0]
            image.set_data(sampled.round().to(data.dtype) if label else sampled)
        return subject


def build_augment(cfg: Mapping[str, Any], patch_size: Sequence[int]) -> tio.Compose:
    """The augmentation pipeline of ``data.augmentation`` for patches of ``patch_size`` voxels.

    Args:
        cfg: the ``data.augmentation`` mapping (see the module docstring).
        patch_size: final patch shape ``(X, Y, Z)``; the input must be ``patch_size + 2 * augment_margin``.

    Returns:
        A ``tio.Compose`` mapping a ``tio.Subject`` with a ``(C, X+2m, Y+2m, Z+2m)`` ScalarImage (and
        optional LabelMaps) to one with ``(C, X, Y, Z)`` tensors (``m`` from :func:`augment_margin`; any
        input at least the patch size works, the centre is kept). Transforms work in place (``copy=False``).

    Raises:
        ConfigError: an unknown transform or key, a probability outside [0, 1], or a value TorchIO rejects.
    """
    _check_cfg(cfg)
    spatial: list[tio.Transform] = []
    intensity: list[tio.Transform] = []
    try:
        if (s := _section(cfg, "elastic"))["p"] > 0:
            spatial.append(
                tio.RandomElasticDeformation(
                    num_control_points=int(s.get("num_control_points", 7)),
                    max_displacement=float(s.get("max_displacement", 5.0)),
                    p=s["p"],
                    copy=False,
                )
            )
        if (s := _section(cfg, "flip"))["p"] > 0:
            spatial.append(tio.RandomFlip(axes=(0,), flip_probability=s["p"], copy=False))
        s = _section(cfg, "affine")
        spatial.append(  # always: it also crops the context margin away
            RandomAffineCrop(
                patch_size,
                scales=_pair(s, "scales", 0.1, "affine"),
                degrees=_pair(s, "degrees", 10, "affine"),
                affine_probability=s["p"],
                copy=False,
            )
        )
        if (s := _section(cfg, "bias_field"))["p"] > 0:
            intensity.append(
                tio.RandomBiasField(coefficients=_pair(s, "coefficients", 0.3, "bias_field"), p=s["p"], copy=False)
            )
        if (s := _section(cfg, "gamma"))["p"] > 0:
            intensity.append(tio.RandomGamma(log_gamma=_pair(s, "log_gamma", 0.2, "gamma"), p=s["p"], copy=False))
        if (s := _section(cfg, "noise"))["p"] > 0:
            intensity.append(tio.RandomNoise(std=_pair(s, "std", 0.03, "noise"), p=s["p"], copy=False))
        if (s := _section(cfg, "motion"))["p"] > 0:
            intensity.append(
                tio.RandomMotion(
                    degrees=_pair(s, "degrees", 3, "motion"),
                    translation=_pair(s, "translation", 3, "motion"),
                    num_transforms=int(s.get("num_transforms", 2)),
                    p=s["p"],
                    copy=False,
                )
            )
        if (s := _section(cfg, "ghosting"))["p"] > 0:
            ghosts = _pair(s, "num_ghosts", (2, 6), "ghosting")
            intensity.append(
                tio.RandomGhosting(
                    num_ghosts=(int(ghosts[0]), int(ghosts[1])) if isinstance(ghosts, tuple) else int(ghosts),
                    intensity=_pair(s, "intensity", (0.2, 0.5), "ghosting"),
                    p=s["p"],
                    copy=False,
                )
            )
    except (ValueError, TypeError) as err:
        raise ConfigError("data.augmentation", f"TorchIO rejects a value: {err}") from err
    return tio.Compose([*spatial, *intensity], copy=False)


def augment_margin(cfg: Mapping[str, Any], patch_size: Sequence[int], spacing: float) -> tuple[int, int, int]:
    """Voxels of context to cut on each side of a patch so spatial transforms never pad inside it.

    Bounds where the corners of the output patch come from under the largest scale-down and rotation
    of ``data.augmentation.affine`` (all sign combinations of the extreme Euler angles), plus the
    elastic displacement, plus one voxel for interpolation.

    Returns:
        ``(mx, my, mz)``; zeros when no spatial transform is enabled.
    """
    _check_cfg(cfg)
    half = (np.asarray(patch_size, dtype=np.float64) - 1) / 2
    reach = half.copy()
    affine, elastic = _section(cfg, "affine"), _section(cfg, "elastic")
    if affine["p"] == 0 and elastic["p"] == 0:
        return (0, 0, 0)
    if affine["p"] > 0:
        scales, degrees = _pair(affine, "scales", 0.1, "affine"), _pair(affine, "degrees", 10, "affine")
        smallest = min(scales) if isinstance(scales, tuple) else 1.0 - scales
        biggest = max(abs(v) for v in degrees) if isinstance(degrees, tuple) else abs(degrees)
        corners = np.array(list(itertools.product(*[(-h, h) for h in half])))
        for signs in itertools.product((-1.0, 0.0, 1.0), repeat=3):
            rot = Rotation.from_euler("xyz", np.asarray(signs) * biggest, degrees=True).as_matrix()
            reach = np.maximum(reach, np.abs(corners @ rot.T).max(axis=0) / max(smallest, 1e-3))
    if elastic["p"] > 0:
        reach = reach + float(elastic.get("max_displacement", 5.0)) / spacing
    margin = np.ceil(reach - half).astype(int) + 1
    return tuple(int(m) for m in margin)  # type: ignore[return-value]
