"""What produced a result: the toolkit's version and git revision, and the versions of the libraries that
decide its numbers (torch, MONAI, TorchIO, Lightning, lightly, nibabel).

Recorded in every run's ``run.json`` (:mod:`ssl_pretrain.run_dir`) and in the ``GeneratedBy`` of every
BIDS derivative the toolkit writes (predictions, the demo cohort's derivatives). Versions are read from
the installed distributions' metadata, so nothing heavy is imported; the git revision is read only when
the toolkit runs from a git checkout (``git`` on the path), else it is left out.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import ssl_pretrain

TOOLKIT = "brainstem-ssl"
# distribution name -> the name a methods section uses
LIBRARIES: dict[str, str] = {
    "torch": "torch",
    "monai": "MONAI",
    "torchio": "TorchIO",
    "lightning": "Lightning",
    "lightly": "lightly",
    "nibabel": "nibabel",
}
_CHECKOUT = Path(__file__).resolve().parent.parent


def library_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`LIBRARIES` (``None`` when one is not installed)."""
    versions: dict[str, str | None] = {}
    for dist, name in LIBRARIES.items():
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.lru_cache(maxsize=1)
def git_revision(checkout: Path = _CHECKOUT) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout the toolkit runs from, or ``None``.

    ``dirty`` is true when tracked files differ from the commit (the results may not be reproducible from
    the commit alone). ``None`` for an installed wheel, or where ``git`` is missing or fails.
    """
    if not (checkout / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(status.strip())} if commit else None


def provenance() -> dict[str, Any]:
    """``{"version", "git", "libraries"}``: the toolkit version, :func:`git_revision` and :func:`library_versions`."""
    return {"version": ssl_pretrain.__version__, "git": git_revision(), "libraries": library_versions()}


def generated_by(description: str, name: str = TOOLKIT) -> dict[str, Any]:
    """One ``GeneratedBy`` entry of a BIDS ``dataset_description.json`` for this toolkit.

    ``Name``, ``Version`` and ``Description`` are the BIDS fields (BIDS 1.9, "Derived dataset
    and pipeline description"); the git revision and library versions go into the ``Description`` text
    (in words, for a reader) and into ``Libraries`` / ``GitRevision`` (machine-readable; extra fields of a
    GeneratedBy object are allowed by the schema).

    Args:
        description: what the run did (e.g. ``"bssl predict with …/model.pt"``).
        name: the pipeline name (``brainstem-ssl``; the demo cohort writes ``brainstem-ssl demo-data``).
    """
    info = provenance()
    libraries = {k: v for k, v in info["libraries"].items() if v is not None}
    words = ", ".join(f"{k} {v}" for k, v in libraries.items())
    git = info["git"]
    revision = f"; git {git['commit'][:12]}{' (modified)' if git['dirty'] else ''}" if git else ""
    entry: dict[str, Any] = {
        "Name": name,
        "Version": info["version"],
        "Description": f"{description} ({words}{revision})",
        "Libraries": libraries,
    }
    if git:
        entry["GitRevision"] = git["commit"] + ("-dirty" if git["dirty"] else "")
    return entry
