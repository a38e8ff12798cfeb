"""Fixtures of the reliability tests: one small synthetic cohort, reference runs, one thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import PRETRAIN, PRETRAIN_STEPS, data_overrides, single_thread
from tests.synthetic import write_synthetic_bids


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Every test here computes on one thread, like the ``bssl`` subprocesses it compares with."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six labelled synthetic subjects (sub-03 without FA/MD); read-only."""
    root = tmp_path_factory.mktemp("reliability") / "bids"
    return write_synthetic_bids(root, n_subjects=6, shape=(24, 28, 24), missing={"03": ["FA", "MD"]})


@pytest.fixture(scope="session")
def pretrain_reference(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted, deterministic ``bssl pretrain`` run of 6 steps (in this process)."""
    from ssl_pretrain import pretrain
    from ssl_pretrain.config import compose_config

    base = tmp_path_factory.mktemp("pretrain-reference")
    overrides = [*data_overrides(cohort, base / "cache", base / "runs"), *PRETRAIN, *PRETRAIN_STEPS]
    with single_thread():
        return pretrain.run(compose_config("pretrain", overrides, output_dir=base / "runs" / "pretrain" / "straight"))
