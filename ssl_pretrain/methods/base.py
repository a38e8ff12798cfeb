"""What every self-supervised method is: the base class a ``configs/method/*.yaml`` names with ``_target_``.

A method class owns everything ``bssl pretrain`` needs to know about it, so that a new method is one file,
one config and one test:

- **its batches**: :attr:`PretrainMethod.views` (1: batches carry ``image``; 2: also ``image_b``) and
  :attr:`PretrainMethod.clean_target` (batches carry ``target``, the patch before intensity augmentation);
  the patch sampler is set up from them;
- **its config checks**: :meth:`PretrainMethod.check_config`, run before preprocessing and training;
- **its construction**: :meth:`PretrainMethod.from_config`, from the ``method`` and ``model`` groups;
- **its hooks**: :meth:`PretrainMethod.before_training_step` (e.g. a momentum encoder's EMA update) and
  :meth:`PretrainMethod.reconstructor` (the masked autoencoder whose reconstructions the run's figures
  and evidence show, if any); methods with embeddings of two views derive from :class:`ContrastiveMethod`.

``forward(batch, generator=None) -> dict[str, Tensor]`` returns the scalar ``"loss"`` to minimise and
detached components to log (``generator`` seeds random masks); ``encoder`` is what pretraining leaves behind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_pretrain.errors import ConfigError
from ssl_pretrain.methods.pooling import pooled_features

if TYPE_CHECKING:
    from ssl_pretrain.methods.mae import MAE

Patch = tuple[int, int, int]


class PretrainMethod(nn.Module, ABC):
    """A self-supervised objective around the encoder it trains (see the module docstring).

    Class attributes:
        name: the method's name (``method.name`` of its config; runs are labelled ``ssl_<name>``).
        views: patches per sample in a batch: 1 (``image``) or 2 (``image`` and ``image_b``).
        clean_target: batches also carry ``target``, the patch before intensity augmentation and dropout.

    Every method also has ``encoder``, the ``nn.Module`` it pretrains (what ``bssl pretrain`` saves): a
    submodule (``self.encoder = encoder``) or a property (MAE's is its U-Net's encoder), so the state-dict
    keys stay those of the module that holds it.
    """

    name: ClassVar[str]
    views: ClassVar[int] = 1
    clean_target: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: DictConfig, model_cfg: DictConfig, in_channels: int) -> PretrainMethod:
        """The method on a fresh backbone.

        Args:
            cfg: the ``method`` config group (this class's ``configs/method/<name>.yaml``).
            model_cfg: the ``model`` config group (backbone width and depth).
            in_channels: number of input modalities C.
        """

    @classmethod
    def check_config(cls, cfg: DictConfig, patch: Patch, batch_size: int) -> None:
        """Raise :class:`ConfigError` (naming the key) for settings that cannot train; the base checks nothing.

        Args:
            cfg: the ``method`` config group.
            patch: ``data.patch_size`` as three ints.
            batch_size: ``data.batch_size``.
        """

    @classmethod
    def check_views(cls, cfg: DictConfig) -> None:
        """Raise :class:`ConfigError` when the config's optional ``views`` is not :attr:`views`."""
        views = cfg.get("views", cls.views)
        if views != cls.views:
            raise ConfigError("method.views", f"{cls.name} trains on {cls.views} view(s) per sample, got {views!r}")

    @classmethod
    def require_batch(cls, batch_size: int, minimum: int = 2) -> None:
        """Raise :class:`ConfigError` for ``data.batch_size`` below ``minimum`` (in-batch statistics)."""
        if batch_size < minimum:
            raise ConfigError(
                "data.batch_size", f"{cls.name} needs at least {minimum} samples per batch, got {batch_size}"
            )

    def before_training_step(self, step: int, total_steps: int) -> None:
        """Called before the forward of every training micro-batch (not in validation); does nothing here.

        Args:
            step: the optimiser step the micro-batch belongs to (0-based).
            total_steps: optimiser steps of the whole run (for schedules such as BYOL's momentum).
        """

    def reconstructor(self) -> MAE | None:
        """The masked autoencoder whose reconstructions the run's figures and evidence show (None: none)."""
        return None

    @abstractmethod
    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``{"loss": scalar to minimise, <component>: detached scalar, …}`` of one batch."""


class ContrastiveMethod(PretrainMethod):
    """A two-view method with embeddings: runs also report alignment and uniformity of its views.

    The default :meth:`embed` pools the encoder's feature maps (``self.pooling`` of ``self.pool_stages``,
    :mod:`ssl_pretrain.methods.pooling`) and projects them with ``self.head``; a method built otherwise
    overrides it.
    """

    views: ClassVar[int] = 2
    head: nn.Module
    pooling: str = "mean"
    pool_stages: str = "last"

    def embed(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(pooled encoder features (B, F), projection (B, D))`` of a batch of views ``(B, C, X, Y, Z)``."""
        features = pooled_features(cast(nn.Module, self.encoder), image, self.pooling, self.pool_stages)
        return features, self.head(features)

    def queue_by_age(self, projections: Tensor, parts: int = 4) -> dict[str, Any] | None:
        """How ``projections`` ``(N, D)`` relate to a queue of negatives by the entries' age; ``None`` without a
        queue (the default). SimCLR's (:meth:`ssl_pretrain.methods.simclr.SimCLR.queue_by_age`) is the example."""
        return None
