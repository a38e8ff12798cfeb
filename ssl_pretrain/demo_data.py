"""``bssl demo-data``: write the simulated demo cohort (a simulation, labelled as one) to ``data.root``.

``bssl demo-data data.root=DIR demo.n_controls=2 demo.n_patients=2`` — every ``demo.*`` key of
``configs/demo/default.yaml`` is a setting of :func:`ssl_pretrain.data.demo.simulate_cohort`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ssl_pretrain.data.demo import simulate_cohort
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.run_dir import run_context

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> Path:
    """Simulate the demo cohort described by ``cfg.demo`` into ``cfg.data.root``.

    Returns:
        The cohort's root directory.

    Raises:
        ConfigError: ``data.root`` is unset or a ``demo.*`` value is invalid.
        DataError: ``data.root`` is a non-empty directory that is not a demo cohort (and not ``overwrite``).
    """
    root = OmegaConf.select(cfg, "data.root")
    if root in (None, ""):
        raise ConfigError("data.root", "set the directory to write the demo cohort to, e.g. data.root=data/demo")
    demo = OmegaConf.to_container(cfg.demo, resolve=True)
    if not isinstance(demo, dict):
        raise ConfigError("demo", "must be a mapping of demo-cohort settings")
    overwrite = bool(OmegaConf.select(cfg, "overwrite", default=False))
    with run_context(cfg, "demo-data"):
        log.info("simulating the demo cohort (a SIMULATION) into %s", root)
        out = simulate_cohort(Path(str(root)), overwrite=overwrite, progress=sys.stderr.isatty(), **demo)  # type: ignore[arg-type]
    return out
