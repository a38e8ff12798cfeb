"""``bssl study``: run the whole study (:func:`evaluation.study.run`), or with ``study.plan_only=true`` print its
plan and run nothing (:func:`evaluation.plan.plan`).

The command's own module, so that the study (which the plan composes) does not import the plan back.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from evaluation import study
from evaluation.plan import plan


def run(cfg: DictConfig) -> Path | None:
    """The study's run directory (with ``report.html``), or None after printing the plan."""
    if cfg.study.get("plan_only"):
        plan(cfg)
        return None
    return study.run(cfg)
