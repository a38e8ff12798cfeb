"""The manifest: one :class:`SubjectRecord` per subject/session, from BIDS discovery or a TSV.

Every later stage reads data only through a manifest, so a real BIDS dataset, an explicit manifest
TSV and the simulated demo cohort all follow the same path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SubjectRecord:
    """Inputs of one subject/session. Any modality or label map may be missing.

    Attributes:
        subject: BIDS label without ``sub-`` (e.g. ``"01"``).
        session: BIDS label without ``ses-``, or ``None``.
        group: participant group from ``participants.tsv`` (e.g. ``"ALS"``/``"HC"``), or ``None``.
        images: modality name (``T1w``, ``T2w``, ``FA``, ``MD``) -> NIfTI path.
        tissue: tissue ``dseg`` NIfTI (0 bg, 1 CSF, 2 GM, 3 WM), or ``None``.
        regions: regions ``dseg`` NIfTI, or ``None``.
        tissue_tsv / regions_tsv: the label tables (index -> name) of those maps.
        covariates: further ``participants.tsv`` columns (age, sex, …) as strings.
    """

    subject: str
    session: str | None = None
    group: str | None = None
    images: dict[str, Path] = field(default_factory=dict)
    tissue: Path | None = None
    regions: Path | None = None
    tissue_tsv: Path | None = None
    regions_tsv: Path | None = None
    covariates: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``sub-XX`` or ``sub-XX_ses-YY``: unique within a dataset, used in file names."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    def all_paths(self) -> list[Path]:
        """Every input file of this record (images, label maps and their tables)."""
        paths = list(self.images.values())
        paths += [p for p in (self.tissue, self.regions, self.tissue_tsv, self.regions_tsv) if p is not None]
        return paths
