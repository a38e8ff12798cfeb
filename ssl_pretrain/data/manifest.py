"""The manifest: one :class:`SubjectRecord` per subject/session, from BIDS discovery or a TSV.

Every later stage reads data only through a manifest, so a real BIDS dataset, an explicit manifest
TSV and the simulated demo cohort all follow the same path.

Manifest TSV (tab-separated, UTF-8, one header line)::

    participant_id  session  group  T1w                       T2w  FA  MD  tissue  regions  tissue_tsv  regions_tsv  age
    sub-01          1        ALS    sub-01/anat/sub-01_T1w.nii.gz  …

``participant_id`` is required (``sub-`` prefix optional); ``session``, ``group``, the modality columns
(one per configured modality, named as in ``data.modalities``), the label maps ``tissue``/``regions``
and their tables ``tissue_tsv``/``regions_tsv`` (or the label schemes ``tissue_scheme``/``regions_scheme``
of maps without one: ``freesurfer``, ``fmriprep``), a tissue probability triplet
``tissue_CSF``/``tissue_GM``/``tissue_WM`` instead of a tissue map, are optional; any other column is a
covariate. Relative paths are relative to the manifest's directory; an empty cell or ``n/a`` means missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ssl_pretrain.atomic import write_text_atomic
from ssl_pretrain.data.labels import SCHEMES
from ssl_pretrain.errors import DataError

KNOWN_MODALITIES = ("T1w", "T2w", "FA", "MD")
PROBSEG_CLASSES = ("CSF", "GM", "WM")  # a tissue probability triplet (label-<class>_probseg), in this order
PROBSEG_COLUMNS = tuple(f"tissue_{c}" for c in PROBSEG_CLASSES)
LABEL_COLUMNS = ("tissue", "regions", "tissue_tsv", "regions_tsv", *PROBSEG_COLUMNS)
SCHEME_COLUMNS = ("tissue_scheme", "regions_scheme")
MISSING = ("", "n/a")  # BIDS writes n/a for a missing value


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
        tissue_scheme / regions_scheme: the label scheme of a map without a table (``freesurfer``, ``fmriprep``:
            :data:`ssl_pretrain.data.labels.SCHEMES`), or ``None``.
        tissue_probseg: CSF/GM/WM probability maps (class -> path) standing in for a tissue map, or empty.
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
    tissue_scheme: str | None = None
    regions_scheme: str | None = None
    tissue_probseg: dict[str, Path] = field(default_factory=dict)
    covariates: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``sub-XX`` or ``sub-XX_ses-YY``: unique within a dataset, used in file names."""
        return f"sub-{self.subject}" + (f"_ses-{self.session}" if self.session else "")

    def all_paths(self) -> list[Path]:
        """Every input file of this record (images, label maps and their tables)."""
        return list(self.files().values())

    def files(self) -> dict[str, Path]:
        """Every input file by role: modality names, then ``tissue``, ``regions``, ``tissue_tsv``, ``regions_tsv``,
        ``tissue_CSF``, ``tissue_GM``, ``tissue_WM``."""
        out = dict(self.images)
        for role in LABEL_COLUMNS:
            path = self.tissue_probseg.get(role[len("tissue_") :]) if role in PROBSEG_COLUMNS else getattr(self, role)
            if path is not None:
                out[role] = path
        return out


def read_tsv(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a BIDS-style TSV table strictly.

    Returns:
        ``(columns, rows)``: the header names and, per data row, ``(line number, {column: stripped cell})``.
        Blank lines are skipped.

    Raises:
        DataError: the file is missing, not UTF-8 text, not tab-separated, has an empty or repeated
            column name, or a row with the wrong number of fields (the message names the line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found" if not path.exists() else "not a regular file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DataError(path, f"cannot be read ({err.strerror}); check its permissions") from err
    except UnicodeDecodeError as err:
        raise DataError(path, f"not a UTF-8 text TSV file (undecodable byte at offset {err.start})") from err
    if "\x00" in text:
        raise DataError(path, "not a text TSV file (it holds NUL bytes)")
    lines = text.splitlines()
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines:
        raise DataError(path, "empty file: expected a tab-separated header line")
    columns = [c.strip() for c in lines[0].split("\t")]
    if len(columns) == 1 and any(sep in columns[0] for sep in (",", ";")):
        raise DataError(path, f"not tab-separated: the header '{lines[0][:80]}' has no tabs (a CSV file?)")
    for i, name in enumerate(columns):
        if not name:
            raise DataError(path, f"line 1: column {i + 1} has an empty name")
        if name in columns[:i]:
            raise DataError(path, f"line 1: column '{name}' appears twice")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) != len(columns):
            raise DataError(path, f"line {number} has {len(cells)} tab-separated fields, the header has {len(columns)}")
        rows.append((number, dict(zip(columns, cells, strict=True))))
    return columns, rows


def strip_prefix(value: str, prefix: str) -> str:
    """BIDS label without its entity prefix: ``strip_prefix("sub-01", "sub-") == "01"``."""
    return value[len(prefix) :] if value.startswith(prefix) else value


def _cell_path(manifest: Path, number: int, column: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = manifest.parent / path
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a regular file"
        raise DataError(manifest, f"line {number}, column '{column}': file {path} {what}")
    return path


def _scheme(manifest: Path, number: int, row: dict[str, str], column: str) -> str | None:
    value = row.get(column, "")
    if value in MISSING:
        return None
    if value not in SCHEMES:
        raise DataError(manifest, f"line {number}, column '{column}': '{value}' is not one of {sorted(SCHEMES)}")
    return value


def _probseg(manifest: Path, number: int, files: dict[str, Path]) -> dict[str, Path]:
    given = {c: files[f"tissue_{c}"] for c in PROBSEG_CLASSES if f"tissue_{c}" in files}
    if given and len(given) != len(PROBSEG_CLASSES):
        missing = [f"tissue_{c}" for c in PROBSEG_CLASSES if c not in given]
        raise DataError(manifest, f"line {number}: a tissue probability triplet needs columns {missing} too")
    return given


def read_manifest(path: str | Path, modalities: Sequence[str], *, require_group: bool = False) -> list[SubjectRecord]:
    """Read an explicit manifest TSV (format in the module docstring) into records.

    Args:
        path: the manifest TSV.
        modalities: the configured modalities; only these image columns are read (columns of other
            known modalities are ignored, unknown columns become covariates).
        require_group: every row must have a ``group``.

    Returns:
        One record per row, in file order; the files are checked to exist (not yet validated as NIfTI).

    Raises:
        DataError: naming the manifest, the line/column and the problem: no ``participant_id`` column,
            an empty id, a repeated subject/session, a listed file that does not exist, not a TSV.
    """
    path = Path(path).expanduser().absolute()
    columns, rows = read_tsv(path)
    if "participant_id" not in columns:
        raise DataError(path, f"no 'participant_id' column (columns: {', '.join(columns)}); is this a manifest TSV?")
    if require_group and "group" not in columns:
        raise DataError(path, "no 'group' column, but this command compares groups; add a group column (e.g. HC/ALS)")
    if not rows:
        raise DataError(path, "the manifest lists no subjects")
    modalities = list(modalities)
    ignored = set(KNOWN_MODALITIES) - set(modalities)
    reserved = {"participant_id", "session", "group", *modalities, *LABEL_COLUMNS, *SCHEME_COLUMNS}
    covariate_columns = [c for c in columns if c not in reserved and c not in ignored]
    file_columns = [c for c in columns if c in modalities or c in LABEL_COLUMNS]
    seen: dict[tuple[str, str | None], int] = {}
    records = []
    for number, row in rows:
        subject = strip_prefix(row["participant_id"], "sub-")
        if row["participant_id"] in MISSING or not subject:
            raise DataError(path, f"line {number}, column 'participant_id': empty participant id")
        session_label = strip_prefix(row.get("session", ""), "ses-")
        session = None if session_label in MISSING else session_label
        if (subject, session) in seen:
            ses = f" session {session}" if session else ""
            raise DataError(path, f"line {number} repeats sub-{subject}{ses} of line {seen[subject, session]}")
        seen[subject, session] = number
        group = row.get("group", "")
        if require_group and group in MISSING:
            raise DataError(path, f"line {number}, column 'group': no group for sub-{subject}")
        files = {c: _cell_path(path, number, c, row[c]) for c in file_columns if row[c] not in MISSING}
        records.append(
            SubjectRecord(
                subject=subject,
                session=session,
                group=None if group in MISSING else group,
                images={m: files[m] for m in modalities if m in files},
                tissue=files.get("tissue"),
                regions=files.get("regions"),
                tissue_tsv=files.get("tissue_tsv"),
                regions_tsv=files.get("regions_tsv"),
                tissue_scheme=_scheme(path, number, row, "tissue_scheme"),
                regions_scheme=_scheme(path, number, row, "regions_scheme"),
                tissue_probseg=_probseg(path, number, files),
                covariates={c: row[c] for c in covariate_columns if row[c] not in MISSING},
            )
        )
    return records


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies inside it, else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(Path(os.path.abspath(base))).as_posix()
    except ValueError:
        return str(path)


def write_manifest(records: Sequence[SubjectRecord], path: str | Path) -> None:
    """Write records as a manifest TSV (atomically) that :func:`read_manifest` reads back unchanged.

    Paths inside the manifest's directory are written relative to it, others absolute. Columns that
    no record uses are left out.

    Raises:
        ValueError: a value holds a tab or newline (it cannot be written as TSV).
    """
    path = Path(path)
    modalities: list[str] = [m for m in KNOWN_MODALITIES if any(m in r.images for r in records)]
    covariates: list[str] = []
    for record in records:
        modalities += [m for m in record.images if m not in modalities]
        covariates += [c for c in record.covariates if c not in covariates]
    columns = ["participant_id"]
    columns += ["session"] if any(r.session for r in records) else []
    columns += ["group"] if any(r.group for r in records) else []
    columns += modalities
    columns += [c for c in LABEL_COLUMNS if any(c in r.files() for r in records)]
    columns += [c for c in SCHEME_COLUMNS if any(getattr(r, c) for r in records)]
    columns += [c for c in covariates if c not in columns]
    lines = ["\t".join(columns)]
    for record in records:
        files = {role: _relative(p, path.parent) for role, p in record.files().items()}
        values = {"participant_id": f"sub-{record.subject}", "session": record.session or "", "group": record.group}
        values.update({c: getattr(record, c) for c in SCHEME_COLUMNS})
        row = [str(values.get(c) or files.get(c) or record.covariates.get(c, "")) for c in columns]
        for column, value in zip(columns, row, strict=True):
            if any(ch in value for ch in "\t\r\n"):
                raise ValueError(f"{record.key}: the '{column}' value {value!r} holds a tab or newline")
        lines.append("\t".join(row))
    write_text_atomic(path, "\n".join(lines) + "\n")
