"""Tissue classes and brain regions: the label conventions every stage shares.

Tissue (``*_desc-tissue_dseg``): 0 background, 1 CSF, 2 GM, 3 WM.

Regions (``*_desc-regions_dseg``): datasets name their labels in ``dseg.tsv``; names are matched to
the canonical regions below case-insensitively, ignoring hemisphere prefixes (``Left-Thalamus`` and
``thalamus_R`` are both ``thalamus``). Region *groups* ("subcortical", "brainstem") are what stages,
probes and metrics restrict themselves to.

Common label schemes of other tools map onto these classes by name (:func:`tissue_class`,
:func:`region_of`), and a map that comes without a ``dseg.tsv`` is read with a named scheme
(:data:`SCHEMES`):

- ``freesurfer``: FreeSurfer's ``aseg`` / SynthSeg / FastSurfer labels (FreeSurferColorLUT.txt), e.g.
  fMRIPrep's ``desc-aseg_dseg``. Tissue classes follow sMRIPrep's ``_aseg_to_three`` (smriprep,
  ``workflows/anatomical.py``: cortex, subcortical nuclei, hippocampus, amygdala, cerebellar cortex GM;
  cerebral/cerebellar WM, ventral DC, WM hypointensities, corpus callosum WM; ventricles and CSF CSF;
  optic chiasm background) **except the brainstem**: FreeSurfer labels the whole brainstem (``Brain-Stem``
  16; ``Midbrain``/``Pons``/``Medulla``/``SCP`` 173-178 of its brainstem module) as one structure,
  without its grey nuclei, and sMRIPrep's "all white matter" would be taken as a brainstem GM/WM
  reference by this toolkit. Those labels have no tissue class: a tissue map holding them is an error
  until the user maps them (``data.labels.tissue.names``, e.g. ``{Brain-Stem: WM}``). As regions they are
  the brainstem (and its parts).
- ``fmriprep``: fMRIPrep's / sMRIPrep's ``dseg`` (FSL FAST): 1 GM, 2 WM, 3 CSF (sMRIPrep, "according to
  BIDS-Derivatives"); its ``label-CSF|GM|WM_probseg`` triplets are read by
  :mod:`ssl_pretrain.data.label_maps`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

TISSUE_CLASSES: dict[int, str] = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
TISSUE_INDEX: dict[str, int] = {name: idx for idx, name in TISSUE_CLASSES.items()}
# BIDS "Common image-derived labels" (BIDS 1.9, derivatives/imaging): abbreviation and generic index per class,
# written as the abbreviation / mapping columns of dseg.tsv and as a 4D probseg's LabelMap.
TISSUE_ABBREVIATIONS: dict[int, str] = {0: "BG", 1: "CSF", 2: "GM", 3: "WM"}
TISSUE_BIDS_INDEX: dict[int, int] = {0: 0, 1: 3, 2: 1, 3: 2}
# Display colours (dseg.tsv color column, FSLeyes/ITK-SNAP tables, figures): CSF blue, GM red, WM yellow, chosen
# to stand out on a grey-scale T1w (FreeSurfer's grey/white-ish tissue colours vanish over one).
TISSUE_COLOURS: dict[int, str] = {0: "#000000", 1: "#3373ff", 2: "#f24033", 3: "#ffe64d"}

# Canonical region labels written by the demo cohort and used inside the cache.
REGIONS: dict[int, str] = {
    1: "thalamus",
    2: "caudate",
    3: "putamen",
    4: "pallidum",
    5: "brainstem",  # brainstem where midbrain/pons/medulla are not distinguished
    6: "midbrain",
    7: "pons",
    8: "medulla",
    9: "cortex",
    10: "cerebral_wm",
    11: "cerebellum",
}
REGION_INDEX: dict[str, int] = {name: idx for idx, name in REGIONS.items()}
# Region display colours: FreeSurferColorLUT.txt where FreeSurfer has the structure (Left-Thalamus 0 118 14,
# Left-Caudate 122 186 220, Left-Putamen 236 13 176, Left-Pallidum 12 48 255, Brain-Stem 119 159 176,
# Left-Cerebral-Cortex 205 62 78, Left-Cerebral-White-Matter 245 245 245, Left-Cerebellum-Cortex 230 148 34);
# midbrain, pons and medulla from ColorBrewer's Dark2 (distinct from the brainstem's grey-blue).
REGION_COLOURS: dict[int, str] = {
    0: "#000000",
    1: "#00760e",
    2: "#7abadc",
    3: "#ec0db0",
    4: "#0c30ff",
    5: "#779fb0",
    6: "#d95f02",
    7: "#7570b3",
    8: "#1b9e77",
    9: "#cd3e4e",
    10: "#f5f5f5",
    11: "#e69422",
}

REGION_GROUPS: dict[str, tuple[str, ...]] = {
    "subcortical": ("thalamus", "caudate", "putamen", "pallidum"),
    "brainstem": ("brainstem", "midbrain", "pons", "medulla"),
    "lower_brainstem": ("pons", "medulla"),
    "cerebrum": ("cortex", "cerebral_wm"),  # cortex and cerebral WM are each nearly one tissue alone
    "cortex": ("cortex",),
    "cerebral_wm": ("cerebral_wm",),
    "cerebellum": ("cerebellum",),
}
# Single regions are groups of one, so every canonical name is also a valid ROI.
for _name in REGIONS.values():
    REGION_GROUPS.setdefault(_name, (_name,))

_SYNONYMS = {
    "brain-stem": "brainstem",
    "brain_stem": "brainstem",
    "brain stem": "brainstem",
    "mesencephalon": "midbrain",
    "medulla_oblongata": "medulla",
    "medulla oblongata": "medulla",
    "globus_pallidus": "pallidum",
    "globus pallidus": "pallidum",
    "thalamus_proper": "thalamus",
    "thalamus-proper": "thalamus",
    "cerebral_cortex": "cortex",
    "cerebral-cortex": "cortex",
    "cerebral cortex": "cortex",
    "cerebral_white_matter": "cerebral_wm",
    "cerebral-white-matter": "cerebral_wm",
    "cerebral white matter": "cerebral_wm",
    "white_matter": "cerebral_wm",
    "cerebellum_cortex": "cerebellum",
    "cerebellum-cortex": "cerebellum",
    "cerebellum_white_matter": "cerebellum",
    "cerebellum-white-matter": "cerebellum",
    "scp": "brainstem",  # FreeSurfer brainstem module: superior cerebellar peduncle
}
TISSUE_SYNONYMS = {
    "bg": "background",
    "unknown": "background",
    "clear label": "background",
    "csf": "CSF",
    "cerebrospinal fluid": "CSF",
    "gm": "GM",
    "grey matter": "GM",
    "gray matter": "GM",
    "wm": "WM",
    "white matter": "WM",
}
# FreeSurferColorLUT.txt value -> (name, tissue class or None); tissue as sMRIPrep's _aseg_to_three maps it,
# brainstem labels without one (module docstring).
FREESURFER_LABELS: dict[int, tuple[str, str | None]] = {
    0: ("Unknown", "background"),
    2: ("Left-Cerebral-White-Matter", "WM"),
    3: ("Left-Cerebral-Cortex", "GM"),
    4: ("Left-Lateral-Ventricle", "CSF"),
    5: ("Left-Inf-Lat-Vent", "CSF"),
    7: ("Left-Cerebellum-White-Matter", "WM"),
    8: ("Left-Cerebellum-Cortex", "GM"),
    10: ("Left-Thalamus", "GM"),
    11: ("Left-Caudate", "GM"),
    12: ("Left-Putamen", "GM"),
    13: ("Left-Pallidum", "GM"),
    14: ("3rd-Ventricle", "CSF"),
    15: ("4th-Ventricle", "CSF"),
    16: ("Brain-Stem", None),
    17: ("Left-Hippocampus", "GM"),
    18: ("Left-Amygdala", "GM"),
    24: ("CSF", "CSF"),
    26: ("Left-Accumbens-area", "GM"),
    28: ("Left-VentralDC", "WM"),
    30: ("Left-vessel", "GM"),
    31: ("Left-choroid-plexus", "GM"),
    41: ("Right-Cerebral-White-Matter", "WM"),
    42: ("Right-Cerebral-Cortex", "GM"),
    43: ("Right-Lateral-Ventricle", "CSF"),
    44: ("Right-Inf-Lat-Vent", "CSF"),
    46: ("Right-Cerebellum-White-Matter", "WM"),
    47: ("Right-Cerebellum-Cortex", "GM"),
    49: ("Right-Thalamus", "GM"),
    50: ("Right-Caudate", "GM"),
    51: ("Right-Putamen", "GM"),
    52: ("Right-Pallidum", "GM"),
    53: ("Right-Hippocampus", "GM"),
    54: ("Right-Amygdala", "GM"),
    58: ("Right-Accumbens-area", "GM"),
    60: ("Right-VentralDC", "WM"),
    62: ("Right-vessel", "GM"),
    63: ("Right-choroid-plexus", "GM"),
    72: ("5th-Ventricle", "CSF"),
    77: ("WM-hypointensities", "WM"),
    78: ("Left-WM-hypointensities", "WM"),
    79: ("Right-WM-hypointensities", "WM"),
    80: ("non-WM-hypointensities", "GM"),
    85: ("Optic-Chiasm", "background"),
    173: ("Midbrain", None),
    174: ("Pons", None),
    175: ("Medulla", None),
    178: ("SCP", None),
    251: ("CC_Posterior", "WM"),
    252: ("CC_Mid_Posterior", "WM"),
    253: ("CC_Central", "WM"),
    254: ("CC_Mid_Anterior", "WM"),
    255: ("CC_Anterior", "WM"),
}
_FREESURFER_TISSUE = {name.lower(): tissue for name, tissue in FREESURFER_LABELS.values()}
_FREESURFER_TISSUE.update({"left-thalamus-proper": "GM", "right-thalamus-proper": "GM"})  # FreeSurfer <= 6
_FREESURFER_NAMES = set(_FREESURFER_TISSUE)
# Tables of maps that come without a dseg.tsv (module docstring).
SCHEMES: dict[str, dict[int, str]] = {
    "freesurfer": {value: name for value, (name, _) in FREESURFER_LABELS.items()},
    "fmriprep": {0: "background", 1: "GM", 2: "WM", 3: "CSF"},
}
_CORTEX = re.compile(r"^ctx[-_](lh|rh)[-_]")  # FreeSurfer aparc cortical parcels (aparc+aseg)
_HEMI = re.compile(r"^(left|right|lh|rh|l|r)[-_ ]+|[-_ ]+(left|right|lh|rh|l|r)$")


def canonical_region(name: str) -> str | None:
    """Map a ``dseg.tsv`` label name to a canonical region name, or ``None`` if it is not one."""
    if _CORTEX.match(name.strip().lower()):
        return "cortex"
    key = _HEMI.sub("", name.strip().lower())
    key = _SYNONYMS.get(key, key)
    return key if key in REGION_INDEX else None


def _lookup(extra: Mapping[str, str] | None, name: str) -> str | None:
    for key, value in (extra or {}).items():
        if str(key).strip().lower() == name.strip().lower():
            return str(value)
    return None


def tissue_class(name: str, extra: Mapping[str, str] | None = None) -> int | None:
    """The tissue class (0 background, 1 CSF, 2 GM, 3 WM) of a label name, or ``None`` if it has none.

    Args:
        name: a ``dseg.tsv`` or scheme name (``GM``, ``Gray Matter``, ``Left-Cerebral-Cortex``, ``ctx-lh-insula``).
        extra: the user's names -> class (``data.labels.tissue.names``), tried first.

    Raises:
        ValueError: ``extra`` maps the name to something that is not a tissue class.
    """
    chosen = _lookup(extra, name)
    if chosen is not None:
        index = {k.lower(): v for k, v in TISSUE_INDEX.items()}.get(TISSUE_SYNONYMS.get(chosen.lower(), chosen).lower())
        if index is None:
            raise ValueError(f"'{name}' is mapped to '{chosen}', not one of {list(TISSUE_INDEX)}")
        return index
    key = name.strip().lower()
    canon = TISSUE_SYNONYMS.get(key, name.strip())
    if canon.lower() in {k.lower() for k in TISSUE_INDEX}:
        return {k.lower(): v for k, v in TISSUE_INDEX.items()}[canon.lower()]
    if key in _FREESURFER_NAMES:
        tissue = _FREESURFER_TISSUE[key]
        return None if tissue is None else TISSUE_INDEX[tissue]
    return TISSUE_INDEX["GM"] if _CORTEX.match(key) else None


def region_of(name: str, extra: Mapping[str, str] | None = None) -> int:
    """The canonical region index of a label name (0 when it is no canonical region).

    Args:
        name: a ``dseg.tsv`` or scheme name.
        extra: the user's names -> canonical region (``data.labels.regions.names``), tried first.

    Raises:
        ValueError: ``extra`` maps the name to something that is not a canonical region.
    """
    chosen = _lookup(extra, name)
    if chosen is not None:
        if chosen in ("background", "none", ""):
            return 0
        region = canonical_region(chosen)
        if region is None:
            raise ValueError(f"'{name}' is mapped to '{chosen}', not one of {sorted(REGION_INDEX)}")
        return REGION_INDEX[region]
    region = canonical_region(name)
    return REGION_INDEX[region] if region else 0


def region_group_indices(group: str) -> tuple[int, ...]:
    """Canonical region indices of a group (``subcortical``, ``brainstem``, or one region name).

    Raises:
        KeyError: the group is unknown.
    """
    if group not in REGION_GROUPS:
        raise KeyError(f"unknown region group '{group}'; known: {sorted(REGION_GROUPS)}")
    return tuple(REGION_INDEX[name] for name in REGION_GROUPS[group])


def inside_group(indices: Sequence[int], group: str | None) -> bool:
    """Whether every region index in ``indices`` belongs to the region group ``group`` (``False`` without a
    group): e.g. whether a measured region lies inside the ROI a model was trained in."""
    members = set(region_group_indices(group)) if group else set()
    return bool(members) and set(indices) <= members


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """``"#3373ff"`` -> ``(51, 115, 255)``."""
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def tissue_dseg_tsv() -> str:
    """The ``dseg.tsv`` of the tissue classes: ``index name abbreviation color mapping`` (BIDS 1.9 columns)."""
    rows = ["index\tname\tabbreviation\tcolor\tmapping"]
    for i, name in sorted(TISSUE_CLASSES.items()):
        rows.append(f"{i}\t{name}\t{TISSUE_ABBREVIATIONS[i]}\t{TISSUE_COLOURS[i]}\t{TISSUE_BIDS_INDEX[i]}")
    return "\n".join(rows) + "\n"


def regions_dseg_tsv(indices: Iterable[int]) -> str:
    """The ``dseg.tsv`` of the canonical regions ``indices`` (and background): ``index name color``."""
    rows = ["index\tname\tcolor", f"0\tbackground\t{REGION_COLOURS[0]}"]
    rows += [f"{i}\t{REGIONS[i]}\t{REGION_COLOURS[i]}" for i in sorted(set(indices) - {0})]
    return "\n".join(rows) + "\n"
