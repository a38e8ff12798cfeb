"""Structure-specific relaxation of grey matter: relative contrasts and the published values behind them.

Every grey-matter structure gets its own T1, T2 and PD, expressed as a *relative contrast* ``c`` on top
of the subject's drawn cortex (``gm_*``) and white-matter (``wm_*``) values::

    T1_structure = T1_wm + c_T1 * (T1_cortex - T1_wm)        (likewise T2 and PD)

so ``c = 1`` is cortical grey matter, ``c = 0`` is white matter and ``c < 0`` lies beyond white matter
(the iron-rich pallidum is darker than white matter on T2w at 3 T). The defaults are derived in
:data:`LITERATURE` from published relaxometry (``docs/demo_cohort.md`` shows the table); where no
readable published value exists, the default is the centre of the range the sources bound, and the row
says so. Which value is used is always a ``demo.*`` config key, so a study can sweep it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ssl_pretrain.errors import ConfigError

SUBCORTICAL = ("thalamus", "caudate", "putamen", "pallidum")
CONTRAST_RANGE = (-2.0, 2.0)
MIN_FRACTION_OF_WM = 0.2  # a structure's T1/T2/PD is never below this fraction of the subject's WM value
PARAMETERS = ("t1", "t2", "pd")


@dataclass(frozen=True)
class Contrast:
    """Relative contrast of one structure per parameter (1 = cortex, 0 = white matter)."""

    t1: float
    t2: float
    pd: float

    def as_dict(self) -> dict[str, float]:
        """``{"t1": …, "t2": …, "pd": …}``."""
        return {"t1": self.t1, "t2": self.t2, "pd": self.pd}


@dataclass(frozen=True)
class Source:
    """One row of the literature table (``docs/demo_cohort.md``).

    Attributes:
        structure: ``cortex``, ``white matter``, a subcortical nucleus or ``brainstem nuclei`` /
            ``iron-rich brainstem nuclei``.
        parameter: ``t1``, ``t2`` or ``pd``.
        source: citation.
        field: field strength.
        values: what the source reports, as read.
        contrast: the relative contrast derived from it, or ``None`` where the row only bounds a range.
    """

    structure: str
    parameter: str
    source: str
    field: str
    values: str
    contrast: float | None


def _c(value: float, wm: float, cortex: float) -> float:
    return round((value - wm) / (cortex - wm), 2)


# Gelman et al., Radiology 1999;210:759-767 (abstract): R2 at 3.0 T, 6 adults, GESFIDE.
_GELMAN_T2_MS = {"cortex": 1000 / 14.4, "wm": 1000 / 18.0, "pallidum": 1000 / 25.8}
# Rooney et al. 2007 (3 T inversion-recovery T1), as transcribed in public simulation code that cites
# PubMed 18259791; the paper itself could not be read here.
_ROONEY_T1_MS = {"cortex": 1607.0, "wm": 838.0, "putamen": 1332.0, "caudate": 1395.0}
UNKNOWN_CENTRE = 0.5  # default where no readable value exists: the centre of the range [0, 1] the sources bound

LITERATURE: tuple[Source, ...] = (
    Source("cortex / white matter / pallidum", "t2", "Gelman et al., Radiology 1999 (abstract)", "3 T",
           "R2 prefrontal cortex 14.4, frontal WM 18.0, globus pallidus 25.8 s^-1 (T2 69.4 / 55.6 / 38.8 ms)",
           None),
    Source("pallidum", "t2", "Gelman et al., Radiology 1999 (abstract)", "3 T", "T2 38.8 ms vs WM 55.6, cortex 69.4",
           _c(_GELMAN_T2_MS["pallidum"], _GELMAN_T2_MS["wm"], _GELMAN_T2_MS["cortex"])),
    Source("putamen", "t1", "Rooney et al., MRM 2007 (via a transcription; verify)", "3 T",
           "T1 putamen 1332, cortical GM 1607, WM 838 ms",
           _c(_ROONEY_T1_MS["putamen"], _ROONEY_T1_MS["wm"], _ROONEY_T1_MS["cortex"])),
    Source("caudate", "t1", "Rooney et al., MRM 2007 (via a transcription; verify)", "3 T",
           "T1 caudate head 1395, cortical GM 1607, WM 838 ms",
           _c(_ROONEY_T1_MS["caudate"], _ROONEY_T1_MS["wm"], _ROONEY_T1_MS["cortex"])),
    Source("thalamus", "t1", "Deoni et al., Hum Brain Mapp 2005 (abstract)", "1.5 T",
           "thalamic nuclei T1 700-1400 ms, T2 89-122 ms (one volunteer): WM-like to GM-like", None),
    Source("brainstem nuclei", "t1", "Deistung et al., Front Hum Neurosci 2013 (abstract)", "7 T",
           "R1 maps and T2w of the brainstem show 'rather homogeneous contrast'; the inferior olive is "
           "visible on R1: contrast weaker than cortex but above 0", None),
    Source("iron-rich brainstem nuclei", "t1/t2", "Hashido & Saito, PLoS One 2016 (abstract)", "3 T",
           "substantia nigra pars compacta: higher T1 than the cerebral peduncles, lower T2", None),
)  # fmt: skip

DEFAULT_SUBCORTICAL: dict[str, dict[str, float]] = {
    # T1 from the table; T2 and PD take the T1 value where no separate value was readable.
    "thalamus": {"t1": UNKNOWN_CENTRE, "t2": UNKNOWN_CENTRE, "pd": UNKNOWN_CENTRE},
    "caudate": {"t1": 0.72, "t2": 0.72, "pd": 0.72},
    "putamen": {"t1": 0.64, "t2": 0.64, "pd": 0.64},
    "pallidum": {"t1": UNKNOWN_CENTRE, "t2": -1.21, "pd": UNKNOWN_CENTRE},
}
DEFAULT_BRAINSTEM = UNKNOWN_CENTRE
# Iron-rich brainstem nuclei (red nucleus, substantia nigra): T2 as the pallidum (iron shortens T2, Gelman
# 1999: grey-matter R2 rises linearly with iron); T1 and PD as the other brainstem nuclei.
DEFAULT_IRON = {"t1": UNKNOWN_CENTRE, "t2": -1.21, "pd": UNKNOWN_CENTRE}


def parse_contrast(key: str, value: object) -> Contrast:
    """A contrast setting: one number (used for T1, T2 and PD) or a mapping with keys ``t1``, ``t2``, ``pd``.

    Raises:
        ConfigError: naming ``demo.<key>``, for a non-number, an unknown or missing parameter, or a value
            outside :data:`CONTRAST_RANGE`.
    """
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - set(PARAMETERS))
        missing = [p for p in PARAMETERS if p not in value]
        if unknown or missing:
            raise ConfigError(f"demo.{key}", f"needs keys t1, t2, pd (unknown: {unknown}, missing: {missing})")
        values = {p: value[p] for p in PARAMETERS}
    else:
        values = dict.fromkeys(PARAMETERS, value)
    lo, hi = CONTRAST_RANGE
    for p, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
            raise ConfigError(f"demo.{key}", f"{p} contrast must be a number, got {v!r}")
        if not lo <= v <= hi:
            raise ConfigError(f"demo.{key}", f"{p} contrast must lie in [{lo}, {hi}], got {v!r}")
    return Contrast(**{p: float(v) for p, v in values.items()})  # type: ignore[arg-type]


def parse_subcortical(value: object) -> dict[str, Contrast]:
    """``demo.subcortical_contrast``: a mapping from each subcortical nucleus to its contrast."""
    if not isinstance(value, Mapping):
        raise ConfigError("demo.subcortical_contrast", f"must map {', '.join(SUBCORTICAL)} to contrasts")
    unknown = sorted(set(map(str, value)) - set(SUBCORTICAL))
    if unknown:
        raise ConfigError("demo.subcortical_contrast", f"unknown structure(s) {unknown}; known: {list(SUBCORTICAL)}")
    merged = {**DEFAULT_SUBCORTICAL, **value}
    return {name: parse_contrast(f"subcortical_contrast.{name}", merged[name]) for name in SUBCORTICAL}


def structure_parameters(params: Mapping[str, float], contrast: Contrast) -> dict[str, float]:
    """T1 (ms), T2 (ms) and PD of a structure from the subject's cortex (``gm_*``) and WM (``wm_*``) values.

    Each value is ``wm + c * (cortex - wm)``, floored at :data:`MIN_FRACTION_OF_WM` of the WM value.
    """
    out = {}
    for p, key in (("t1", "t1_ms"), ("t2", "t2_ms"), ("pd", "pd")):
        wm, cortex = params[f"wm_{key}"], params[f"gm_{key}"]
        c = getattr(contrast, p)
        out[key] = max(wm + c * (cortex - wm), MIN_FRACTION_OF_WM * wm)
    return out
