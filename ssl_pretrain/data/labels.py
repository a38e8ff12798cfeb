"""Tissue classes and brain regions: the label conventions every stage shares.

Tissue (``*_desc-tissue_dseg``): 0 background, 1 CSF, 2 GM, 3 WM.

Regions (``*_desc-regions_dseg``): datasets name their labels in ``dseg.tsv``; names are matched to
the canonical regions below case-insensitively, ignoring hemisphere prefixes (``Left-Thalamus`` and
``thalamus_R`` are both ``thalamus``). Region *groups* ("subcortical", "brainstem") are what stages,
probes and metrics restrict themselves to.
"""

from __future__ import annotations

import re

TISSUE_CLASSES: dict[int, str] = {0: "background", 1: "CSF", 2: "GM", 3: "WM"}
TISSUE_INDEX: dict[str, int] = {name: idx for idx, name in TISSUE_CLASSES.items()}

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
