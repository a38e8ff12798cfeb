"""Atomic file writes: write a temporary file beside the target, then rename it onto the target.

A reader (or a later run) sees either the old file or the complete new one, never half a file; a write
that fails or is interrupted leaves the old file as it was and removes its temporary file. A process
killed hard cannot remove it: :func:`remove_stale_temporaries` does, for a directory one process owns.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

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
