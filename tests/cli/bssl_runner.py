"""Run ``bssl`` as a user would: in a subprocess (``python -m ssl_pretrain``) or in-process through ``main``.

A subprocess pays the torch/Lightning import (seconds) but proves what a terminal shows; in-process runs
go through the same ``main`` (Hydra included) and cost only the command's own work.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from ssl_pretrain.cli import main

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    """What a ``bssl`` invocation left: exit status, standard output and standard error."""

    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        """stdout and stderr together (Hydra logs to stdout, errors go to stderr)."""
        return self.out + self.err

    def error_lines(self) -> list[str]:
        """The non-empty lines of stderr."""
        return [line for line in self.err.splitlines() if line.strip()]


def run_subprocess(args: Sequence[str], timeout: float = 300) -> Result:
    """``python -m ssl_pretrain <args>`` from the repository root, as a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_pretrain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run_in_process(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> Result:
    """``bssl <args>`` through :func:`ssl_pretrain.cli.main` in this process.

    Restores what a Hydra app changes globally (root logger handlers and level, ``sys.argv``, the global
    Hydra instance) so later tests and ``compose_config`` are unaffected. An exception that escapes
    ``main`` (a traceback a user would see) propagates and fails the test.
    """
    root = logging.getLogger()
    handlers, level, argv = list(root.handlers), root.level, list(sys.argv)
    capsys.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = _exit_code(exc)
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        sys.argv = argv
        GlobalHydra.instance().clear()
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_one_clear_error(result: Result, *named: str | Path, problem: str) -> str:
    """Assert a failed run that printed one error line naming ``named`` and ``problem``, and no traceback.

    The error line is the last line of stderr (Lightning may print its device banner before it).

    Returns:
        The error line.
    """
    assert result.code != 0, f"exit status 0; output:\n{result.output}"
    assert "Traceback" not in result.output, result.output
    lines = result.error_lines()
    errors = [line for line in lines if line.startswith("bssl ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one error line, last, got:\n{result.err}"
    line = errors[0]
    for name in named:
        assert str(name) in line, f"{name} not named in: {line}"
    assert problem.lower() in line.lower(), f"'{problem}' not in: {line}"
    return line


def run_dirs(runs_dir: Path, command: str) -> list[Path]:
    """The run directories ``bssl <command>`` made under ``paths.runs_dir``."""
    return sorted(p for p in (runs_dir / command).glob("*") if p.is_dir())


def permissions_enforced() -> bool:
    """Whether this process is refused a chmod 000 file (not so for root with CAP_DAC_OVERRIDE)."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        probe.write_text("x")
        probe.chmod(0)
        try:
            probe.read_text()
        except PermissionError:
            return True
        finally:
            probe.chmod(0o600)
    return False
