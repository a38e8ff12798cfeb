"""User-facing errors.

Every problem a user can fix (a bad file, a bad config value, an incompatible checkpoint) raises a
:class:`BsslError` whose message names the file or key and says what is wrong. The ``bssl`` command
prints that message and exits with status 2, without a traceback unless ``--verbose`` is given.

A file system that refuses a write (disk full, quota exceeded, read-only, no permission) surfaces as an
``OSError`` wherever the write happens; :func:`resource_error` turns it into a :class:`ResourceError`
naming the path and what to do (free space, or point ``paths.runs_dir`` / ``paths.cache_dir`` elsewhere).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path


class BsslError(Exception):
    """A problem the user can fix; its message is shown as is."""


class DataError(BsslError):
    """A bad input file or dataset layout.

    Args:
        path: the offending file or directory.
        problem: what is wrong with it (and, ideally, what to do).
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(BsslError):
    """A bad configuration value; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"config key '{key}': {problem}")


class CheckpointError(BsslError):
    """A weights file that cannot be loaded into the requested model."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ResourceError(BsslError):
    """The file system refused an operation the user can make possible: disk full, read-only, no permission.

    Args:
        path: the file or directory concerned, or ``None`` when the system did not say (a failed ``write``).
        problem: what happened and what to do.
    """

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path is not None else problem)


_NO_SPACE = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}
_NOT_WRITABLE = {
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


def _inside(path: Path, directory: Path) -> bool:
    path, directory = Path(os.path.abspath(path)), Path(os.path.abspath(directory))
    return path == directory or directory in path.parents


def resource_error(err: OSError, places: Mapping[str, str | Path] | None = None) -> ResourceError | None:
    """The user-facing form of a full, read-only or forbidden file system; ``None`` for any other ``OSError``.

    Args:
        err: the error raised by a write (or a read).
        places: config key -> directory the command writes under, e.g. ``{"paths.runs_dir": run_dir,
            "paths.cache_dir": cache_dir}``; the message suggests the key whose directory holds the path.
            ``None`` (or empty): not known yet, both keys are suggested.

    Returns:
        A :class:`ResourceError` naming the path (or, when the system gave none, the command's directories)
        and what to do.
    """
    problem = _NO_SPACE.get(err.errno or 0) or _NOT_WRITABLE.get(err.errno or 0)
    if problem is None:
        return None
    dirs = {key: Path(str(d)) for key, d in (places or {}).items() if d}
    path = Path(os.fsdecode(err.filename)) if err.filename is not None else None
    keys = [key for key, d in dirs.items() if path is not None and _inside(path, d)]
    if path is not None and dirs and not keys:  # outside every output: an input or a system file
        fix = "free some space there" if err.errno in _NO_SPACE else "check its permissions"
        return ResourceError(path, f"{problem}; {fix}")
    keys = keys or list(dirs) or ["paths.runs_dir", "paths.cache_dir"]
    other = " / ".join(f"{key}=<another directory>" for key in keys)
    fix = f"free some space, or choose {other}" if err.errno in _NO_SPACE else f"choose a writable directory: {other}"
    if path is None:
        where = ", ".join(f"{d} ({key})" for key, d in dirs.items()) or "the run or cache directory"
        return ResourceError(None, f"{problem} while writing under {where}; {fix}")
    return ResourceError(path, f"{problem}; {fix}")
