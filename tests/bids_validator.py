"""The official BIDS validator (``bids-validator-deno``, a dev dependency that runs offline) as a test helper.

:func:`validate` runs it on one dataset (raw or derivative: each derivative dataset is validated on its own)
and returns its issues; tests assert that no error is reported. Where the validator cannot run at all (not
installed, or its bundled runtime does not start on this platform) the test is skipped with the reason.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Report:
    """What the validator found in one dataset."""

    dataset: Path
    issues: list[dict[str, object]]
    summary: dict[str, object]

    def errors(self) -> list[str]:
        """``CODE location`` of every error."""
        return [f"{i.get('code')} {i.get('location')}" for i in self.issues if i.get("severity") == "error"]

    def warnings(self) -> list[str]:
        """``CODE location`` of every warning."""
        return [f"{i.get('code')} {i.get('location')}" for i in self.issues if i.get("severity") == "warning"]


@functools.cache
def validator() -> tuple[list[str] | None, str]:
    """The command that runs the validator, or ``None`` and why it cannot run."""
    found = shutil.which("bids-validator-deno") or str(Path(sys.executable).parent / "bids-validator-deno")
    if not Path(found).is_file():
        return None, "bids-validator-deno is not installed (pip install -e '.[dev]')"
    try:
        proc = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"bids-validator-deno does not start: {err}"
    if proc.returncode != 0:
        return None, f"bids-validator-deno does not start: {(proc.stderr or proc.stdout).strip()[:300]}"
    return [found], ""


def validate(dataset: Path) -> Report:
    """Run the BIDS validator on ``dataset`` alone (JSON output) and return its issues."""
    command, why = validator()
    if command is None:
        pytest.skip(why)
    proc = subprocess.run(
        [*command, "--format", "json", "--no-color", str(dataset)], capture_output=True, text=True, timeout=600
    )
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"the validator printed no JSON (exit {proc.returncode}): {proc.stderr[-2000:]}") from None
    return Report(Path(dataset), list(result["issues"]["issues"]), dict(result["summary"]))
