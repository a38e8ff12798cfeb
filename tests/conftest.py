"""Session-wide fixtures shared by every test module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# The tiny demo cohort every module may use: 2 controls + 2 patients at 3 mm (builds in seconds).
DEMO_SETTINGS: dict[str, Any] = {"n_controls": 2, "n_patients": 2, "spacing": 3.0, "seed": 0}


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny simulated BIDS demo cohort (2 HC + 2 ALS, 3 mm, seed 0), written once per session.

    Treat it as read-only: it is shared by every test that asks for it.
    """
    from ssl_pretrain.data.demo import simulate_cohort

    return simulate_cohort(tmp_path_factory.mktemp("demo") / "cohort", **DEMO_SETTINGS)


@pytest.fixture
def header_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path header validation opens (``load_header``/``check_header``), with a fresh memo of passed records."""
    from ssl_pretrain.data import validate

    reads: list[Path] = []
    monkeypatch.setattr(validate, "_validated", set())
    real_load, real_check = validate.load_header, validate.check_header

    def counted_load(path: str | Path) -> object:
        reads.append(Path(path))
        return real_load(path)

    def counted_check(path: str | Path, img: object = None, **kwargs: bool) -> object:
        reads.append(Path(path))
        return real_check(path, img, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(validate, "load_header", counted_load)
    monkeypatch.setattr(validate, "check_header", counted_check)
    return reads
