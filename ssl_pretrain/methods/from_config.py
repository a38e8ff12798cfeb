"""Methods from config: ``configs/method/<name>.yaml`` names its class with ``_target_``.

The methods there are the config folder's files (:func:`available_methods`); ``bssl pretrain --help`` lists
the same folder. A config's ``_target_`` is located with Hydra's ``instantiate`` (``_partial_``: the class is
looked up under Hydra's target policy and nothing is constructed, never ``eval``), and the class, a
:class:`~ssl_pretrain.methods.base.PretrainMethod`, checks the config and builds itself from it.

Configs recorded before methods carried ``_target_`` (a run's ``config.yaml``, a checkpoint's
hyperparameters, an ``encoder.json``) name the method by ``name`` only: its class is then the
``_target_`` of ``configs/method/<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.methods.base import Patch, PretrainMethod
from ssl_pretrain.methods.masking import as_block


def available_methods(config_dir: Path = CONFIG_DIR) -> tuple[str, ...]:
    """The method configs of ``config_dir/method/`` (their file names without ``.yaml``), sorted."""
    return tuple(sorted(p.stem for p in (config_dir / "method").glob("*.yaml")))


def _recorded_target(name: object, config_dir: Path) -> str:
    """The ``_target_`` of ``configs/method/<name>.yaml``, for a config that names its method only."""
    known = available_methods(config_dir)
    if name not in known:
        raise ConfigError("method.name", f"unknown method {name!r}; choose one of {', '.join(known)}")
    recorded = OmegaConf.load(config_dir / "method" / f"{name}.yaml")
    target = recorded.get("_target_") if isinstance(recorded, DictConfig) else None
    if not target:
        raise ConfigError("method._target_", f"configs/method/{name}.yaml names no class (_target_)")
    return str(target)


def method_class(cfg: DictConfig, config_dir: Path = CONFIG_DIR) -> type[PretrainMethod]:
    """The :class:`PretrainMethod` subclass a ``method`` config names, its ``views`` (if given) checked.

    Args:
        cfg: the ``method`` config group: ``_target_`` (or, as recorded by older runs, only ``name``).
        config_dir: where ``method/<name>.yaml`` is looked up for a config without ``_target_``.

    Raises:
        ConfigError: an unknown name, a ``_target_`` that does not import or is no method class, a
            ``views`` the class does not train on.
    """
    target = str(cfg.get("_target_") or _recorded_target(cfg.get("name"), config_dir))
    try:
        located = instantiate({"_target_": target, "_partial_": True}).func
    except InstantiationException as err:  # the cause says why: no such module or attribute, a blocked target
        reason = " ".join(str(err.__cause__ or err).split())
        raise ConfigError("method._target_", f"cannot locate {target!r}: {reason}") from None
    if not (isinstance(located, type) and issubclass(located, PretrainMethod)):
        raise ConfigError("method._target_", f"{target} is not a PretrainMethod (ssl_pretrain.methods.base)")
    located.check_views(cfg)
    return located


def check_method_config(method_cfg: DictConfig, patch_size: int | Sequence[int], batch_size: int) -> None:
    """Raise :class:`ConfigError` for a method config that cannot train on patches of ``patch_size``.

    Args:
        method_cfg: the ``method`` config group.
        patch_size: ``data.patch_size`` (int or three ints).
        batch_size: ``data.batch_size``.
    """
    cls = method_class(method_cfg)
    patch = as_block(patch_size) if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
    cls.check_config(method_cfg, cast(Patch, patch), batch_size)


def build_method(method_cfg: DictConfig, model_cfg: DictConfig, in_channels: int) -> PretrainMethod:
    """The method a ``method`` config names, on a fresh backbone from ``model_cfg``.

    Args:
        method_cfg: the ``method`` config group.
        model_cfg: the ``model`` config group (backbone width and depth).
        in_channels: number of input modalities C.

    Raises:
        ConfigError: see :func:`method_class`; settings the class refuses while building.
        TypeError: a method class whose instances have no ``encoder`` module.
    """
    method = method_class(method_cfg).from_config(method_cfg, model_cfg, in_channels)
    if not isinstance(getattr(method, "encoder", None), nn.Module):
        raise TypeError(f"{type(method).__name__} has no encoder module (PretrainMethod's contract)")
    return method
