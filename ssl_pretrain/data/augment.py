"""Patch augmentation with TorchIO: spatial transforms, intensity transforms and MRI artefacts.

:func:`build_augment` turns ``data.augmentation`` into one ``tio.Compose`` applied to each patch
(image as a ``tio.ScalarImage``, tissue/regions as ``tio.LabelMap`` s, so labels follow the spatial
transforms with nearest-neighbour interpolation). Order: optional elastic deformation (off by
default: slow), left-right flip (axis 0 of the RAS cache grid), random affine (small scales and
rotations) fused with the crop to the patch size (:class:`RandomAffineCrop`: the same parameter draws
and the same resampling as ``tio.RandomAffine``/``tio.Affine``, checked against it in the tests, but it
computes only the output patch), then intensity transforms on the final patch: bias field, gamma,
Gaussian noise, and at low probability motion and ghosting artefacts. The bias field and the noise are
TorchIO's, drawn as TorchIO draws them and computed faster (:mod:`ssl_pretrain.data.intensity`).

Spatial transforms need context around the patch, or rotated corners would be filled with padding:
the sampler cuts ``patch + 2 * augment_margin(...)`` voxels, the spatial transforms act on that, and
:class:`RandomAffineCrop` returns the centre ``patch`` voxels. Every transform draws from torch's
global generator; the sampler seeds it per item inside ``torch.random.fork_rng`` so items are
reproducible. The sampler applies the spatial part (:func:`split_augment`) first, keeps a copy as the
clean reconstruction target, then the intensity part.

Two-view (contrastive) samplers add :func:`build_view_augment` (``data.view_augmentation``): a strong
intensity augmentation applied to *each* view independently and always (p = 1), so the two views of a
subject never share a gain, bias field, gamma or noise draw and cannot be matched by their histograms.

Only TorchIO's public API is used: :class:`RandomAffineCrop` subclasses ``tio.SpatialTransform`` and
implements ``apply_transform`` (TorchIO's documented extension point) with its own parameter draws;
``tests/ssl_pretrain/data/test_augment.py`` checks it against ``tio.Affine``.

Config (``data.augmentation``; each ``p`` is the probability of applying that transform to a patch)::

    affine:     {p, scales, degrees}               # scale factors in [1-s, 1+s], rotations in [-d, d] deg
    elastic:    {p, num_control_points, max_displacement}   # displacement in mm
    flip:       {p}                                # left-right
    bias_field: {p, coefficients}
    gamma:      {p, log_gamma}                     # gamma = exp(U(-g, g)); sign-preserving on negatives
    noise:      {p, std}                           # in normalised intensity units
    motion:     {p, degrees, translation, num_transforms}
    ghosting:   {p, num_ghosts, intensity}

``data.view_augmentation`` (two-view methods only; every transform always applied)::

    gain:       {log_gain}      # each channel times exp(U(-g, g))
    bias_field: {coefficients}  # as tio.RandomBiasField (SeparableBiasField)
    gamma:      {log_gamma}     # tio.RandomGamma
    noise:      {std}           # as tio.RandomNoise (LocalSeedNoise), std drawn in [low, high] (normalised units)
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
import torchio as tio
from scipy.spatial.transform import Rotation

from ssl_pretrain.data.intensity import LocalSeedNoise, SeparableBiasField
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
VIEW_KEY = "data.view_augmentation"
_VIEW_KNOWN = {"gain": {"log_gain"}, "bias_field": {"coefficients"}, "gamma": {"log_gamma"}, "noise": {"std"}}


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


def _pair(
    section: dict[str, Any], name: str, default: Any, key: str, prefix: str = "data.augmentation"
) -> tuple[float, float] | float:
    """A TorchIO range parameter ``section[name]``: a number or ``[low, high]`` (errors name ``prefix.key.name``)."""
    value = section.get(name, default)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise ConfigError(f"{prefix}.{key}.{name}", f"expected a number or [low, high], got {list(value)}")
        return float(value[0]), float(value[1])
    return float(value)


def _sextet(value: float | Sequence[float], around: float, name: str) -> tuple[float, ...]:
    """A range per axis as six numbers ``(lo_x, hi_x, lo_y, hi_y, lo_z, hi_z)``, as ``tio.RandomAffine`` reads it:
    ``v`` means ``[around - v, around + v]``, a pair ``[lo, hi]`` holds for every axis, six numbers are per axis."""
    values = [float(value)] if isinstance(value, numbers.Real) else [float(v) for v in cast(Sequence[float], value)]
    if len(values) == 1:
        lo, hi = around - abs(values[0]), around + abs(values[0])
        return (lo, hi) * 3
    if len(values) == 2:
        return (values[0], values[1]) * 3
    if len(values) == 6:
        return tuple(values)
    raise ValueError(f"{name} must be a number, [low, high] or six numbers, got {value!r}")


class RandomAffineCrop(tio.SpatialTransform):
    """A random affine (as ``tio.RandomAffine`` draws and ``tio.Affine`` resamples) fused with the centre crop.

    With probability ``affine_probability`` it draws per-axis scale factors ``U(scales)`` and Euler angles
    ``U(degrees)`` (degrees), one uniform draw per axis from torch's global generator as
    ``tio.RandomAffine`` does, and resamples the input about its centre with the same transform as
    ``tio.Affine`` (content scaled by ``s`` and rotated); otherwise it only crops. Either way the output is
    the central ``patch_size`` voxels, computed directly with one ``grid_sample`` for all image channels
    (trilinear) and one for label maps (nearest), instead of resampling the whole context box and cropping
    afterwards (about 5x less work than ``RandomAffine`` + ``CropOrPad`` on a patch with its context
    margin). Always applied (``p=1``); the input must be at least ``patch_size`` per axis.

    Args:
        patch_size: output shape ``(X, Y, Z)``.
        scales: ``s`` (factors in ``[1 - s, 1 + s]``), ``[low, high]`` or six numbers (per axis).
        degrees: ``d`` (angles in ``[-d, d]``), ``[low, high]`` or six numbers.
        affine_probability: probability of drawing an affine (else only the crop).
        **kwargs: ``tio.Transform`` keyword arguments (e.g. ``copy=False``).
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        scales: float | Sequence[float] = 0.1,
        degrees: float | Sequence[float] = 10.0,
        affine_probability: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patch_size = tuple(int(n) for n in patch_size)
        self.scales = _sextet(scales, 1.0, "scales")
        if min(self.scales) <= 0:
            raise ValueError(f"scales must stay above 0, got {self.scales}")
        self.degrees = _sextet(degrees, 0.0, "degrees")
        if not 0.0 <= float(affine_probability) <= 1.0:
            raise ValueError(f"affine_probability must lie in [0, 1], got {affine_probability}")
        self.affine_probability = float(affine_probability)
        self.args_names = ["patch_size", "scales", "degrees", "affine_probability"]  # TorchIO's history

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
        scales = np.asarray(_uniform_per_axis(self.scales), dtype=np.float64)
        degrees = np.asarray(_uniform_per_axis(self.degrees), dtype=np.float64)
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
            label = isinstance(image, tio.LabelMap)
            sampled = torch.nn.functional.grid_sample(
                data[None].float(),
                norm,
                mode="nearest" if label else "bilinear",
                padding_mode="zeros" if label else "border",
                align_corners=True,
            )[0]
            image.set_data(sampled.round().to(data.dtype) if label else sampled)
        return subject


def _uniform_per_axis(sextet: Sequence[float]) -> tuple[float, float, float]:
    """One ``U(lo, hi)`` draw per axis from torch's global generator (as ``tio.RandomAffine``)."""
    x, y, z = (torch.empty(1).uniform_(lo, hi).item() for lo, hi in zip(sextet[::2], sextet[1::2], strict=True))
    return x, y, z


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
                SeparableBiasField(coefficients=_pair(s, "coefficients", 0.3, "bias_field"), p=s["p"], copy=False)
            )
        if (s := _section(cfg, "gamma"))["p"] > 0:
            intensity.append(tio.RandomGamma(log_gamma=_pair(s, "log_gamma", 0.2, "gamma"), p=s["p"], copy=False))
        if (s := _section(cfg, "noise"))["p"] > 0:
            intensity.append(LocalSeedNoise(std=_pair(s, "std", 0.03, "noise"), p=s["p"], copy=False))
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


def split_augment(augment: tio.Transform | None) -> tuple[tio.Compose | None, tio.Compose | None]:
    """``(spatial, intensity)`` parts of an augmentation, each a ``tio.Compose`` or ``None`` when empty.

    A ``tio.Compose`` is split by transform type (``tio.SpatialTransform`` or not), keeping the order;
    :func:`build_augment` puts every spatial transform first, so applying the two parts one after the
    other is the whole augmentation. Any other transform counts as spatial if it is a
    ``tio.SpatialTransform``, else as intensity.
    """
    if augment is None:
        return None, None
    transforms = list(augment.transforms) if isinstance(augment, tio.Compose) else [augment]
    spatial = [t for t in transforms if isinstance(t, tio.SpatialTransform)]
    intensity = [t for t in transforms if not isinstance(t, tio.SpatialTransform)]
    if spatial and intensity and transforms.index(intensity[0]) < transforms.index(spatial[-1]):
        raise ValueError("an intensity transform comes before a spatial one; the clean target needs spatial first")
    return (
        tio.Compose(spatial, copy=False) if spatial else None,
        tio.Compose(intensity, copy=False) if intensity else None,
    )


class RandomGain:
    """Multiply each channel by ``exp(U(-log_gain, log_gain))`` (torch's global generator); zeros stay zero.

    A callable for ``tio.Lambda`` (picklable, so DataLoader workers can hold it).
    """

    def __init__(self, log_gain: float) -> None:
        if log_gain < 0:
            raise ValueError(f"log_gain must be >= 0, got {log_gain}")
        self.log_gain = float(log_gain)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gain = torch.empty(x.shape[0]).uniform_(-self.log_gain, self.log_gain).exp().to(x.dtype)
        return x * gain.view(-1, *([1] * (x.ndim - 1)))


def build_view_augment(cfg: Mapping[str, Any] | None) -> tio.Compose | None:
    """The per-view intensity augmentation of two-view samplers (``data.view_augmentation``).

    Every listed transform is applied to every view (p = 1), each view with its own draws: gain, bias
    field, gamma, noise, in that order. ``None`` (or an empty mapping) disables it.

    Raises:
        ConfigError: an unknown transform or key, or a value TorchIO rejects.
    """
    if not cfg:
        return None
    unknown = set(cfg) - set(_VIEW_KNOWN)
    if unknown:
        raise ConfigError(
            "data.view_augmentation", f"unknown transforms {sorted(unknown)}; known: {sorted(_VIEW_KNOWN)}"
        )
    sections = {}
    for name in cfg:
        section = dict(cfg.get(name) or {})
        bad = set(section) - _VIEW_KNOWN[name]
        if bad:
            raise ConfigError(
                f"data.view_augmentation.{name}", f"unknown keys {sorted(bad)}; known: {sorted(_VIEW_KNOWN[name])}"
            )
        sections[name] = section
    transforms: list[tio.Transform] = []
    try:
        if "gain" in sections:
            transforms.append(
                tio.Lambda(
                    RandomGain(float(sections["gain"].get("log_gain", 0.2))), types_to_apply=[tio.INTENSITY], copy=False
                )
            )
        if "bias_field" in sections:
            coefficients = _pair(sections["bias_field"], "coefficients", 0.5, "bias_field", VIEW_KEY)
            transforms.append(SeparableBiasField(coefficients=coefficients, copy=False))
        if "gamma" in sections:
            log_gamma = _pair(sections["gamma"], "log_gamma", 0.3, "gamma", VIEW_KEY)
            transforms.append(tio.RandomGamma(log_gamma=log_gamma, copy=False))
        if "noise" in sections:
            std = _pair(sections["noise"], "std", (0.0, 0.05), "noise", VIEW_KEY)
            transforms.append(LocalSeedNoise(std=std, copy=False))
    except (ValueError, TypeError) as err:
        raise ConfigError("data.view_augmentation", f"TorchIO rejects a value: {err}") from err
    return tio.Compose(transforms, copy=False) if transforms else None


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
