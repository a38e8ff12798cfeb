"""BIDS discovery: a dataset directory -> one :class:`SubjectRecord` per subject/session.

What is found (DESIGN §5); the dataset is only read, never written:

- raw images ``sub-<s>/[ses-<t>/]anat/sub-<s>[_ses-<t>][_…]_<modality>.nii[.gz]`` for each configured
  modality (``T1w``, ``T2w``, or any other raw suffix such as ``FLAIR``);
- diffusion maps anywhere under ``derivatives/`` in BEP016 style,
  ``sub-<s>[_ses-<t>][_space-T1w]_model-<m>_param-<p>_dwimap.nii[.gz]``: ``param-fa`` is modality ``FA``,
  ``param-md`` is ``MD`` (the parameter is matched to the modality name case-insensitively);
- label maps anywhere under ``derivatives/``: ``…_desc-tissue_dseg.nii[.gz]`` and ``…_desc-regions_dseg``,
  each with its table found by BIDS inheritance: the same-stem ``.tsv`` beside it, else the most specific
  applicable ``*dseg.tsv`` (e.g. ``desc-tissue_dseg.tsv``, ``dseg.tsv``) in a parent directory up to the
  root of that derivative dataset (the directory holding its ``dataset_description.json``);
- ``participants.tsv``: ``group`` and further columns (age, sex, …) as covariates.

Derivative files are assigned to subjects and sessions by their ``sub-``/``ses-`` entities, and only
files in native space are used: no ``space-`` entity, or ``space-T1w`` / ``space-orig``. Derivative
datasets whose ``dataset_description.json`` names a pipeline of ``skip_generated_by`` in ``GeneratedBy``
(default: this toolkit, ``brainstem-ssl``: its own predictions, e.g. ``derivatives/bssl``) are never read,
so a model's output never becomes a later run's input.

When several files qualify for one subject/session and modality (or label map), the rule is:
keep diffusion maps of the tensor model (``model-tensor``/``model-dti``) if any; keep ``space-T1w`` if any;
then, if the remaining files differ only in their ``run-`` entity, take the lowest run (with a warning).
Anything still ambiguous (e.g. two ``acq-`` variants, or a raw ``anat`` file and a derivative of the same
modality) is a :class:`DataError` naming the files: list the chosen files in a manifest TSV
(``data.manifest=…``) instead.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ssl_pretrain.data.manifest import MISSING, SubjectRecord, read_tsv, strip_prefix
from ssl_pretrain.errors import DataError

log = logging.getLogger(__name__)

NATIVE_SPACES = (None, "T1w", "orig")  # derivative ``space-`` values taken as the subject's native space
TENSOR_MODELS = ("tensor", "dti")
LABEL_DESCS = ("tissue", "regions")
_EXTENSIONS = (".nii.gz", ".nii", ".tsv")
SKIP_GENERATED_BY = ("brainstem-ssl",)  # pipelines whose derivatives are outputs, never inputs


@dataclass(frozen=True)
class BidsName:
    """A parsed BIDS file name: ``sub-01_ses-1_desc-tissue_dseg.nii.gz``."""

    entities: dict[str, str]
    suffix: str
    extension: str

    @property
    def subject(self) -> str | None:
        return self.entities.get("sub")

    @property
    def session(self) -> str | None:
        return self.entities.get("ses")


def parse_name(name: str) -> BidsName | None:
    """Parse ``key-value`` entities, the suffix and the extension of a BIDS file name (``None`` if it is not one)."""
    extension = next((e for e in _EXTENSIONS if name.endswith(e)), None)
    if extension is None:
        return None
    parts = name[: -len(extension)].split("_")
    suffix = parts.pop()
    if "-" in suffix or not suffix:
        return None
    entities: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("-")
        if not sep or not key or not value or key in entities:
            return None
        entities[key] = value
    return BidsName(entities, suffix, extension)


def read_dseg_tsv(path: str | Path) -> dict[int, str]:
    """Read a ``dseg.tsv`` label table: columns ``index`` and ``name`` (others, e.g. ``color``, ignored).

    Returns:
        label index -> name.

    Raises:
        DataError: naming the file and the problem: missing columns, a non-integer or negative index,
            an empty name, a repeated index, or no rows.
    """
    path = Path(path)
    columns, rows = read_tsv(path)
    for column in ("index", "name"):
        if column not in columns:
            raise DataError(path, f"a dseg.tsv needs columns 'index' and 'name'; it has {', '.join(columns)}")
    table: dict[int, str] = {}
    for number, row in rows:
        try:
            index = int(row["index"])
        except ValueError:
            raise DataError(path, f"line {number}: index '{row['index']}' is not an integer") from None
        if index < 0:
            raise DataError(path, f"line {number}: negative index {index}")
        if not row["name"]:
            raise DataError(path, f"line {number}: empty name for index {index}")
        if index in table:
            raise DataError(path, f"line {number}: index {index} is listed twice ('{table[index]}', '{row['name']}')")
        table[index] = row["name"]
    if not table:
        raise DataError(path, "the label table has no rows")
    return table


@dataclass(frozen=True)
class _Candidate:
    path: Path
    name: BidsName


def _session_dirs(subject_dir: Path) -> list[tuple[str | None, Path]]:
    out: list[tuple[str | None, Path]] = [(None, subject_dir)]
    out += [(strip_prefix(d.name, "ses-"), d) for d in sorted(subject_dir.glob("ses-*")) if d.is_dir()]
    return out


def _raw_candidates(root: Path, modalities: Sequence[str]) -> dict[tuple[str, str | None], dict[str, list[_Candidate]]]:
    found: dict[tuple[str, str | None], dict[str, list[_Candidate]]] = defaultdict(lambda: defaultdict(list))
    for subject_dir in sorted(root.glob("sub-*")):
        if not subject_dir.is_dir():
            continue
        subject = strip_prefix(subject_dir.name, "sub-")
        for session, session_dir in _session_dirs(subject_dir):
            anat = session_dir / "anat"
            if not anat.is_dir():
                continue
            for path in sorted(anat.iterdir()):
                name = parse_name(path.name)
                if name is None or name.extension == ".tsv" or name.suffix not in modalities:
                    continue
                if name.subject != subject or name.session != session:
                    log.warning("%s: sub-/ses- entities do not match its directory; skipped", path)
                    continue
                found[subject, session][name.suffix].append(_Candidate(path, name))
    return found


def generated_by_names(dataset: Path) -> list[str]:
    """The pipeline names in ``GeneratedBy`` of ``dataset/dataset_description.json`` (empty if none or unreadable)."""
    try:
        entries = json.loads((dataset / "dataset_description.json").read_text()).get("GeneratedBy", [])
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(entries, list):
        return []
    return [str(e["Name"]) for e in entries if isinstance(e, dict) and "Name" in e]


def _derivative_candidates(
    root: Path, modalities: Sequence[str], skip_generated_by: Sequence[str] = SKIP_GENERATED_BY
) -> dict[tuple[str, str | None], dict[str, list[_Candidate]]]:
    found: dict[tuple[str, str | None], dict[str, list[_Candidate]]] = defaultdict(lambda: defaultdict(list))
    derivatives = root / "derivatives"
    if not derivatives.is_dir():
        return found
    by_param = {m.lower(): m for m in modalities}
    skipped: dict[Path, bool] = {}
    for path in sorted(derivatives.rglob("sub-*.nii*")):
        name = parse_name(path.name)
        if name is None or name.extension == ".tsv" or name.subject is None or path.is_dir():
            continue
        dataset = _dataset_root(path, derivatives)
        if dataset not in skipped:
            skipped[dataset] = bool(set(generated_by_names(dataset)) & set(skip_generated_by))
            if skipped[dataset]:
                log.info("%s: skipped (generated by %s)", dataset, ", ".join(generated_by_names(dataset)))
        if skipped[dataset]:
            continue
        if name.entities.get("space") not in NATIVE_SPACES:
            continue
        if name.suffix == "dwimap" and name.entities.get("param", "").lower() in by_param:
            role = by_param[name.entities["param"].lower()]
        elif name.suffix == "dseg" and name.entities.get("desc") in LABEL_DESCS:
            role = name.entities["desc"]
        else:
            continue
        found[name.subject, name.session][role].append(_Candidate(path, name))
    return found


def _choose(root: Path, key: str, role: str, candidates: list[_Candidate]) -> Path:
    """One file out of the candidates, by the rule in the module docstring."""
    mixed = len({c.name.suffix for c in candidates}) > 1  # e.g. a raw anat FA beside a derivative dwimap
    if len(candidates) > 1 and not mixed and candidates[0].name.suffix == "dwimap":
        tensor = [c for c in candidates if c.name.entities.get("model", "").lower() in TENSOR_MODELS]
        candidates = tensor or candidates
    if len(candidates) > 1 and not mixed:
        registered = [c for c in candidates if c.name.entities.get("space") == "T1w"]
        candidates = registered or candidates
    if len(candidates) > 1:
        without_run = [{k: v for k, v in c.name.entities.items() if k != "run"} for c in candidates]
        runs = [c.name.entities.get("run") for c in candidates]
        same = not mixed and all(e == without_run[0] for e in without_run)
        if same and all(r is not None and r.isdigit() for r in runs):
            best = min(candidates, key=lambda c: int(c.name.entities["run"]))
            skipped = ", ".join(str(c.path) for c in candidates if c is not best)
            log.warning("%s %s: several runs; using %s and skipping %s", key, role, best.path, skipped)
            return best.path
        listing = "; ".join(str(c.path) for c in candidates)
        raise DataError(
            root,
            f"{key}: {len(candidates)} candidate {role} files ({listing}); keep one, or list the chosen files "
            "in a manifest TSV and set data.manifest",
        )
    return candidates[0].path


def _dataset_root(path: Path, derivatives: Path) -> Path:
    """The derivative dataset holding ``path``: nearest parent with ``dataset_description.json``."""
    for parent in path.parents:
        if parent == derivatives or (parent / "dataset_description.json").is_file():
            return parent
        if derivatives not in parent.parents:
            break
    return derivatives


def find_dseg_table(path: Path, stop: Path) -> Path | None:
    """The ``dseg.tsv`` of a label map by BIDS inheritance (module docstring), or ``None``.

    Args:
        path: the ``*_dseg.nii[.gz]`` file.
        stop: the highest directory searched (the root of its derivative dataset).

    Raises:
        DataError: two equally specific tables apply at the same level.
    """
    name = parse_name(path.name)
    if name is None:
        return None
    entities = set(name.entities.items())
    directory = path.parent
    while True:
        applicable: list[tuple[int, Path]] = []
        for tsv in directory.glob("*dseg.tsv"):
            table = parse_name(tsv.name)
            if table is not None and table.suffix == "dseg" and set(table.entities.items()) <= entities:
                applicable.append((len(table.entities), tsv))
        if applicable:
            applicable.sort(key=lambda t: (-t[0], t[1].name))
            if len(applicable) > 1 and applicable[0][0] == applicable[1][0]:
                raise DataError(
                    path, f"two label tables apply equally: {applicable[0][1]} and {applicable[1][1]}; remove one"
                )
            return applicable[0][1]
        if directory == stop or stop not in directory.parents:
            return None
        directory = directory.parent


def read_participants(root: Path, *, require_group: bool) -> dict[str, tuple[str | None, dict[str, str]]]:
    """``participants.tsv`` as ``subject label -> (group, covariates)``.

    A missing file or ``group`` column is a :class:`DataError` if ``require_group``, else a warning.
    """
    path = root / "participants.tsv"
    if not path.exists():
        if require_group:
            raise DataError(path, "not found; group comparisons need it with columns participant_id and group")
        log.warning("%s not found: participant groups and covariates are unknown", path)
        return {}
    columns, rows = read_tsv(path)
    if "participant_id" not in columns:
        raise DataError(path, f"no 'participant_id' column (columns: {', '.join(columns)})")
    group_column = next((c for c in columns if c.lower() == "group"), None)
    if group_column is None:
        if require_group:
            raise DataError(path, f"no 'group' column (columns: {', '.join(columns)}); add one, e.g. HC/ALS")
        log.warning("%s has no 'group' column: participant groups are unknown", path)
    out: dict[str, tuple[str | None, dict[str, str]]] = {}
    lines: dict[str, int] = {}
    for number, row in rows:
        subject = strip_prefix(row["participant_id"], "sub-")
        if not subject or row["participant_id"] in MISSING:
            raise DataError(path, f"line {number}: empty participant_id")
        if subject in out:
            raise DataError(path, f"line {number} repeats sub-{subject} of line {lines[subject]}")
        lines[subject] = number
        group = row[group_column] if group_column else ""
        covariates = {c: v for c, v in row.items() if c not in ("participant_id", group_column) and v not in MISSING}
        out[subject] = (None if group in MISSING else group, covariates)
    return out


def discover(
    root: str | Path,
    modalities: Sequence[str],
    *,
    require_group: bool = False,
    skip_generated_by: Sequence[str] = SKIP_GENERATED_BY,
) -> list[SubjectRecord]:
    """Index a BIDS dataset into one record per subject/session (rules in the module docstring).

    Args:
        root: the BIDS dataset directory.
        modalities: the modalities to look for (e.g. ``["T1w", "T2w", "FA", "MD"]``).
        require_group: every subject must have a group in ``participants.tsv`` (else a warning only).
        skip_generated_by: derivative datasets generated by these pipelines are not read.

    Returns:
        Records sorted by subject and session; a record has whichever modalities and label maps exist.

    Raises:
        DataError: ``root`` is not a directory or holds no subject files; ambiguous candidate files;
            a malformed ``participants.tsv``; missing groups when ``require_group``.
    """
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "dataset directory not found"
        raise DataError(root, f"{problem}; set data.root to a BIDS dataset (`bssl demo-data` writes the demo cohort)")
    modalities = list(modalities)
    raw = _raw_candidates(root, modalities)
    derived = _derivative_candidates(root, modalities, skip_generated_by)
    keys = sorted(set(raw) | set(derived), key=lambda k: (k[0], k[1] or ""))
    if not keys:
        raise DataError(
            root,
            f"no subjects found: expected sub-*/[ses-*/]anat/sub-*_<{'|'.join(modalities)}>.nii[.gz] "
            "or diffusion/label maps under derivatives/; is this a BIDS dataset?",
        )
    participants = read_participants(root, require_group=require_group)
    derivatives = root / "derivatives"
    records = []
    for subject, session in keys:
        key = f"sub-{subject}" + (f"_ses-{session}" if session else "")
        roles: dict[str, list[_Candidate]] = defaultdict(list)
        for found in (raw.get((subject, session), {}), derived.get((subject, session), {})):
            for role, candidates in found.items():
                roles[role] += candidates
        files = {role: _choose(root, key, role, candidates) for role, candidates in roles.items()}
        labels = {d: files.pop(d, None) for d in LABEL_DESCS}
        tables = {
            d: find_dseg_table(p, _dataset_root(p, derivatives)) if p is not None else None for d, p in labels.items()
        }
        group, covariates = participants.get(subject, (None, {}))
        records.append(
            SubjectRecord(
                subject=subject,
                session=session,
                group=group,
                images={m: files[m] for m in modalities if m in files},
                tissue=labels["tissue"],
                regions=labels["regions"],
                tissue_tsv=tables["tissue"],
                regions_tsv=tables["regions"],
                covariates=dict(covariates),
            )
        )
    if participants:
        unlisted = sorted({r.subject for r in records} - set(participants))
        if unlisted:
            log.warning("%s does not list: %s", root / "participants.tsv", ", ".join(f"sub-{s}" for s in unlisted))
    if require_group:
        no_group = sorted({r.key for r in records if r.group is None})
        if no_group:
            raise DataError(root / "participants.tsv", f"no group for {', '.join(no_group)}; fill its group column")
    return records
