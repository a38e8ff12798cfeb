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
