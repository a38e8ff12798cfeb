"""Tissue classes and brain regions: the label conventions every stage shares.

Tissue (``*_desc-tissue_dseg``): 0 background, 1 CSF, 2 GM, 3 WM.

Regions (``*_desc-regions_dseg``): datasets name their labels in ``dseg.tsv``; names are matched to
the canonical regions below case-insensitively, ignoring hemisphere prefixes (``Left-Thalamus`` and
``thalamus_R`` are both ``thalamus``). Region *groups* ("subcortical", "brainstem") are what stages,
probes and metrics restrict themselves to.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

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
}
_HEMI = re.compile(r"^(left|right|lh|rh|l|r)[-_ ]+|[-_ ]+(left|right|lh|rh|l|r)$")


def canonical_region(name: str) -> str | None:
    """Map a ``dseg.tsv`` label name to a canonical region name, or ``None`` if it is not one."""
    key = _HEMI.sub("", name.strip().lower())
    key = _SYNONYMS.get(key, key)
    return key if key in REGION_INDEX else None


def region_group_indices(group: str) -> tuple[int, ...]:
    """Canonical region indices of a group (``subcortical``, ``brainstem``, or one region name).

    Raises:
        KeyError: the group is unknown.
    """
    if group not in REGION_GROUPS:
        raise KeyError(f"unknown region group '{group}'; known: {sorted(REGION_GROUPS)}")
    return tuple(REGION_INDEX[name] for name in REGION_GROUPS[group])


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
