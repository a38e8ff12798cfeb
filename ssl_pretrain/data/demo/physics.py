"""MR signal of the demo cohort: spin-echo T1w/T2w from tissue fractions, bias field, noise, artefacts.

Reference values: ``reference/mri_physics.md`` (3 T rows: ASLDRO, phantomas, Stanisz 2005; PD also from
BrainWeb). Per subject, each parameter is drawn inside the range the sources span. Most of that spread
is systematic (the mapping method shifts all tissues together), so one shared quantile per parameter
kind (T1, T2, PD) is drawn per subject and each tissue adds a small independent jitter; this keeps the
physical ordering (WM T1 < GM T1 < CSF T1, PD WM < GM < CSF) that independent draws would break.

Signal (spin echo): ``S_t = PD_t * (1 - exp(-TR / T1_t)) * exp(-TE / T2_t)``; a voxel's signal is the
fraction-weighted sum over CSF, WM and the grey-matter structures (partial volume). Grey matter is not one
tissue: each structure (cortex, each subcortical nucleus, brainstem nuclei, iron-rich brainstem nuclei)
has its own T1/T2/PD, set by a relative contrast on top of the drawn cortex and WM values
(:mod:`~ssl_pretrain.data.demo.relaxometry`). White matter keeps WM parameters everywhere, the brainstem
included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import torch
import torchio as tio

from ssl_pretrain.data.demo.relaxometry import Contrast, structure_parameters

# 3 T ranges (ms; PD relative to CSF = 1)
T1_RANGE = {"gm": (1330.0, 1820.0), "wm": (830.0, 1084.0), "csf": (3000.0, 3500.0)}
T2_RANGE = {"gm": (99.0, 110.0), "wm": (69.0, 80.0), "csf": (250.0, 300.0)}
PD_RANGE = {"gm": (0.75, 0.86), "wm": (0.65, 0.77), "csf": (1.0, 1.0)}
T1W_TR, T1W_TE = (500.0, 700.0), (10.0, 15.0)
T2W_TR, T2W_TE = (4000.0, 6000.0), (80.0, 120.0)
QUANTILE_JITTER = 0.1  # per-tissue jitter around the subject's shared quantile
TISSUES = ("csf", "gm", "wm")


@dataclass(frozen=True)
class TissueParameters:
    """One subject's relaxation times (ms), proton densities and sequence timings (ms)."""

    gm_t1_ms: float
    gm_t2_ms: float
    gm_pd: float
    wm_t1_ms: float
    wm_t2_ms: float
    wm_pd: float
    csf_t1_ms: float
    csf_t2_ms: float
    csf_pd: float
    t1w_tr_ms: float
    t1w_te_ms: float
    t2w_tr_ms: float
    t2w_te_ms: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict (for the truth table)."""
        return asdict(self)


def draw_tissue_parameters(rng: np.random.Generator) -> TissueParameters:
    """Draw a subject's tissue parameters and sequence timings (fixed number of draws)."""
    values: dict[str, float] = {}
    for kind, ranges in (("t1_ms", T1_RANGE), ("t2_ms", T2_RANGE), ("pd", PD_RANGE)):
        shared = rng.uniform()
        for tissue in TISSUES:
            lo, hi = ranges[tissue]
            u = float(np.clip(shared + rng.normal(0.0, QUANTILE_JITTER), 0.0, 1.0))
            values[f"{tissue}_{kind}"] = lo + u * (hi - lo)
    for name, (lo, hi) in (("t1w_tr_ms", T1W_TR), ("t1w_te_ms", T1W_TE), ("t2w_tr_ms", T2W_TR), ("t2w_te_ms", T2W_TE)):
        values[name] = float(rng.uniform(lo, hi))
    return TissueParameters(**values)


def spin_echo(pd: float, t1: float, t2: float, tr: float, te: float) -> float:
    """Spin-echo signal ``PD (1 - exp(-TR/T1)) exp(-TE/T2)`` (times in ms)."""
    return float(pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2))


def tissue_signals(
    params: TissueParameters, weighting: str, structures: Mapping[str, Contrast] | None = None
) -> dict[str, float]:
    """Pure-tissue signals for ``weighting`` ``"T1w"`` or ``"T2w"``: tissue or structure -> signal.

    Keys ``csf``, ``gm`` (cortex), ``wm``, plus one per entry of ``structures`` (its relative contrast).
    """
    tr, te = (params.t1w_tr_ms, params.t1w_te_ms) if weighting == "T1w" else (params.t2w_tr_ms, params.t2w_te_ms)
    p = params.as_dict()
    out = {t: spin_echo(p[f"{t}_pd"], p[f"{t}_t1_ms"], p[f"{t}_t2_ms"], tr, te) for t in TISSUES}
    for name, contrast in (structures or {}).items():
        v = structure_parameters(p, contrast)
        out[name] = spin_echo(v["pd"], v["t1_ms"], v["t2_ms"], tr, te)
    return out


def anatomical_image(
    fractions: Mapping[str, np.ndarray], gm_parts: Mapping[str, np.ndarray], signals: Mapping[str, float]
) -> np.ndarray:
    """Noise-free partial-volume image.

    Args:
        fractions: ``csf``, ``gm``, ``wm`` fractions, each ``(X, Y, Z)``.
        gm_parts: structure -> the part of the GM fraction that belongs to it, ``(X, Y, Z)`` (their sum
            never exceeds ``gm``); the rest of the GM is cortex-like.
        signals: pure-tissue and structure signals (:func:`tissue_signals`), with a key per ``gm_parts``.

    Returns:
        ``(X, Y, Z)`` float32 signal (0 in background).
    """
    image = np.float32(signals["csf"]) * fractions["csf"] + np.float32(signals["wm"]) * fractions["wm"]
    rest = fractions["gm"].astype(np.float32, copy=True)
    for name, part in gm_parts.items():
        image = image + np.float32(signals[name]) * part
        rest -= part
    return (image + np.float32(signals["gm"]) * np.clip(rest, 0.0, None)).astype(np.float32)


def bias_field(shape: tuple[int, int, int], rng: np.random.Generator, strength: float, order: int = 3) -> np.ndarray:
    """Smooth multiplicative receive-field inhomogeneity, ``(X, Y, Z)`` float32.

    TorchIO's ``BiasField`` model, ``exp(sum_{i+j+k <= order} c_ijk x^i y^j z^k)`` over coordinates scaled
    to [-1, 1], evaluated separably (much faster than the full-volume sum); coefficients are uniform in
    ``[-strength, strength]`` from ``rng``, so the field is reproducible.
    """
    terms = [(i, j, k) for i in range(order + 1) for j in range(order + 1 - i) for k in range(order + 1 - i - j)]
    coefficients = rng.uniform(-strength, strength, len(terms))
    powers = [np.linspace(-1.0, 1.0, n)[None, :] ** np.arange(order + 1)[:, None] for n in shape]  # (order+1, n)
    table = np.zeros((order + 1,) * 3)
    for (i, j, k), c in zip(terms, coefficients, strict=True):
        table[i, j, k] = c
    log_field = np.einsum("ijk,ix,jy,kz->xyz", table, *powers, optimize=True)
    return np.exp(log_field).astype(np.float32)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma`` per channel."""
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)


ARTEFACTS = ("none", "motion", "ghosting")


def draw_artefact(rng: np.random.Generator, rate: float) -> tuple[str, dict[str, object]]:
    """Choose an artefact (``none``/``motion``/``ghosting``) and its parameters (fixed number of draws)."""
    u, pick = rng.uniform(), rng.uniform()
    degrees = rng.uniform(-3.0, 3.0, (2, 3))
    translation = rng.uniform(-3.0, 3.0, (2, 3))
    times = np.sort(rng.uniform(0.2, 0.8, 2))
    ghosts, axis, intensity = int(rng.integers(2, 7)), int(rng.integers(1, 3)), float(rng.uniform(0.3, 0.7))
    if u >= rate:
        return "none", {}
    if pick < 0.5:
        return "motion", {"degrees": degrees, "translation": translation, "times": times}
    return "ghosting", {"num_ghosts": ghosts, "axis": axis, "intensity": intensity}


def apply_artefact(image: np.ndarray, affine: np.ndarray, kind: str, params: dict[str, object]) -> np.ndarray:
    """Apply a k-space artefact with TorchIO's deterministic transforms (``Motion``, ``Ghosting``)."""
    if kind == "none":
        return image
    subject = tio.Subject(img=tio.ScalarImage(tensor=torch.from_numpy(image[None].copy()), affine=affine))
    if kind == "motion":
        transform: tio.Transform = tio.Motion(
            degrees=np.asarray(params["degrees"], np.float64),
            translation=np.asarray(params["translation"], np.float64),
            times=np.asarray(params["times"], np.float64),
            image_interpolation="linear",
        )
    elif kind == "ghosting":
        transform = tio.Ghosting(
            num_ghosts=int(params["num_ghosts"]),  # type: ignore[call-overload]
            axis=int(params["axis"]),  # type: ignore[call-overload]
            intensity=float(params["intensity"]),  # type: ignore[arg-type]
            restore=0.02,
        )
    else:
        raise ValueError(f"unknown artefact '{kind}'")
    image_out = cast(tio.ScalarImage, cast(tio.Subject, transform(subject))["img"])
    out = image_out.data[0].numpy()
    return np.clip(out, 0.0, None).astype(np.float32)
