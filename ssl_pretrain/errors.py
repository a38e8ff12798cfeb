"""User-facing errors.

Every problem a user can fix (a bad file, a bad config value, an incompatible checkpoint) raises a
:class:`BsslError` whose message names the file or key and says what is wrong. The ``bssl`` command
prints that message and exits with status 2, without a traceback unless ``--verbose`` is given.
"""

from __future__ import annotations

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
