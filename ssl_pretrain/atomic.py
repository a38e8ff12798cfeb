"""Atomic file writes: write a temporary file beside the target, then rename it onto the target.

A reader (or a later run) sees either the old file or the complete new one, never half a file; a write
that fails or is interrupted leaves the old file as it was and removes its temporary file. A process
killed hard cannot remove it: :func:`remove_stale_temporaries` does, for a directory one process owns.

The file gets the mode any new file gets, ``0o666 & ~umask`` (:func:`file_mode`): ``tempfile.mkstemp``
creates its file owner-only (0600), which would hide a lab's results from its colleagues on a shared
cluster; the umask, not this module, decides who may read them.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """This process's umask (read from ``/proc/self/status`` where it exists, so no thread sees it change)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new regular file under the current umask: ``0o666 & ~umask`` (0644 under umask 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """The mode of a new directory under the current umask: ``0o777 & ~umask`` (0755 under umask 022)."""
    return 0o777 & ~current_umask()


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it gets :func:`file_mode` and is renamed onto ``path``.

    Args:
        path: the final file (its directory is created).
        suffix: the temporary file's suffix, for writers that choose a format by it (``.png``, ``.nii.gz``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())  # mkstemp made it 0600; a writer may also have replaced it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# what atomic_path (and tempfile.mkstemp beside a target) names its temporary files: ".<name>.<8 random chars><suffix>"
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>(\.[A-Za-z0-9]+)+)$")


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that interrupted atomic writes left under ``directory`` (recursively).

    A process killed hard (``SIGKILL``, out of memory, node failure) between creating a temporary file and
    renaming it leaves the temporary behind. Only call this while no other process writes into
    ``directory`` (e.g. holding its run lock, :func:`ssl_pretrain.run_dir.run_context`): another writer's
    temporary would be deleted under it.

    Returns:
        The files deleted.
    """
    removed = []
    for path in Path(directory).rglob(".*"):
        if path.is_file() and not path.is_symlink() and _TEMPORARY.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
