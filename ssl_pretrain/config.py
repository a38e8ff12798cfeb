"""Where the Hydra configs live and how tests and ``bssl study`` compose them without a Hydra app."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def compose_config(command: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """Compose ``configs/<command>.yaml`` with ``overrides`` as ``bssl <command>`` would.

    Args:
        command: entry config name (``pretrain``, ``finetune``, …).
        overrides: Hydra override strings, e.g. ``["data.root=/data/bids", "method=simclr"]``.
        output_dir: the run directory (replaces the ``${hydra:runtime.output_dir}`` of a real run).
    """
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (bssl study): its config dir is ours
        cfg = compose(config_name=command, overrides=list(overrides))
    else:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name=command, overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


def to_flat_dict(cfg: DictConfig) -> dict[str, object]:
    """The resolved config as a plain dict (for JSON sidecars and reports)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
