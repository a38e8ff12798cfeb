"""``bssl study``: run the whole study (:func:`evaluation.study.chain.run`), or with ``study.plan_only=true`` print its
plan and run nothing (:func:`evaluation.study.plan.plan`).

The command's own module, so that the study (which the plan composes) does not import the plan back.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from evaluation.study import chain
from evaluation.study.plan import plan


def discard_job_folder() -> None:
    """Remove the folder Hydra made for this job when it holds nothing but Hydra's own files (``.hydra/`` and the
    job's log): a plan writes nothing, so it leaves no run behind. Anything else in the folder keeps it."""
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    out = Path(hydra.runtime.output_dir)
    own = {".hydra", f"{hydra.job.name}.log"}
    if out.is_dir() and all(p.name in own for p in out.iterdir()):
        shutil.rmtree(out)


def run(cfg: DictConfig) -> Path | None:
    """The study's run directory (with ``report.html``), or None after printing the plan."""
    if cfg.study.get("plan_only"):
        plan(cfg)
        discard_job_folder()
        return None
    return chain.run(cfg)
