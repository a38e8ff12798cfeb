"""The Lightning module of ``bssl pretrain``: one self-supervised method, its optimiser and its logs.

Random masks (and VICRegL's sampled positions) are drawn from a generator seeded by ``(seed, global step,
micro-batch, rank)`` (training) or ``(seed, batch index, rank)`` (validation), not from the global RNG: a
resumed run draws the same masks as an uninterrupted one, and the validation loss is measured on the same
masks every time. Other state a method keeps between steps (SimCLR's memory bank) is registered as
persistent buffers, so it is in the checkpoint and a resumed run continues it. Before every training forward
the method's :meth:`~ssl_pretrain.methods.base.PretrainMethod.before_training_step` hook runs (SimCLR's
momentum update).
Mixed precision (bf16 on CUDA) comes from the Trainer's ``precision``; losses are computed in fp32.
Epochs reach the patch sampler through Lightning, which calls ``set_epoch`` on the train loader's
:class:`~ssl_pretrain.data.sampler.EpochSampler` at every epoch start, so this module needs no hook for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ssl_pretrain.data.batch import IMAGE
from ssl_pretrain.methods.base import ContrastiveMethod, PretrainMethod
from ssl_pretrain.methods.from_config import build_method

TRAIN_STREAM, VAL_STREAM = 0, 1


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class PretrainModule(L.LightningModule):
    """Self-supervised pretraining of a 3D encoder.

    Args:
        method_cfg: the ``method`` config group (configs/method/*.yaml).
        model_cfg: the ``model`` config group (backbone).
        optim_cfg: the ``optim`` config group (AdamW, warmup, cosine), passed to
            :func:`ssl_pretrain.training.build_optimizer`.
        in_channels: number of input modalities C.
        seed: seeds the mask generators.

    Batches follow :mod:`ssl_pretrain.data.batch`; two-view methods need ``image_b``.
    Logged: ``train/loss`` and ``train/<component>`` per step, ``val/loss`` and ``val/<component>`` per
    validation run.
    """

    def __init__(
        self,
        method_cfg: Mapping[str, Any],
        model_cfg: Mapping[str, Any],
        optim_cfg: Mapping[str, Any],
        in_channels: int,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "method_cfg": _plain(method_cfg),
                "model_cfg": _plain(model_cfg),
                "optim_cfg": _plain(optim_cfg),
                "in_channels": int(in_channels),
                "seed": int(seed),
            }
        )
        self.method: PretrainMethod = build_method(
            OmegaConf.create(_plain(method_cfg)), OmegaConf.create(_plain(model_cfg)), in_channels
        )
        self.optim_cfg = OmegaConf.create(_plain(optim_cfg))
        self.seed = int(seed)
        self._steps_total: int | None = None

    @property
    def encoder(self) -> nn.Module:
        """The encoder being pretrained."""
        return cast(nn.Module, self.method.encoder)

    def generator(self, stream: int, *index: int) -> torch.Generator:
        """A CPU generator seeded by ``(seed, stream, *index, rank)``."""
        entropy = [self.seed, stream, *(int(i) for i in index), int(self.global_rank)]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)

    def _log_outputs(self, prefix: str, out: Mapping[str, Tensor], batch_size: int, train: bool) -> None:
        for name, value in out.items():
            self.log(
                f"{prefix}/{name}",
                value.detach().float(),
                on_step=train,
                on_epoch=not train,
                prog_bar=name == "loss",
                batch_size=batch_size,
                sync_dist=not train,
            )

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        """The method's loss on one batch (logged as ``train/*``)."""
        accumulate = getattr(self.trainer, "accumulate_grad_batches", 1) if self._trainer is not None else 1
        self.method.before_training_step(self.global_step, self.steps_total)
        out = self.method(batch, self.generator(TRAIN_STREAM, self.global_step, batch_idx % accumulate))
        self._log_outputs("train", out, batch[IMAGE].shape[0], train=True)
        return out["loss"]

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        """The method's loss on a fixed validation patch batch, with masks fixed per batch index."""
        out = self.method(batch, self.generator(VAL_STREAM, batch_idx))
        self._log_outputs("val", out, batch[IMAGE].shape[0], train=False)

    def total_steps(self) -> int:
        """Optimiser steps of the whole run (``trainer.max_steps``, else estimated from epochs)."""
        max_steps = int(self.trainer.max_steps)
        return max_steps if max_steps > 0 else int(self.trainer.estimated_stepping_batches)

    @property
    def steps_total(self) -> int:
        """:meth:`total_steps`, worked out once per module (the hooks' ``total_steps``)."""
        if self._steps_total is None:
            self._steps_total = self.total_steps()
        return self._steps_total

    def configure_optimizers(self) -> Any:
        """AdamW + warmup + cosine over the run, from ``optim_cfg`` (no weight decay on biases, norms, mask tokens)."""
        from ssl_pretrain.training import build_optimizer, param_groups

        return build_optimizer(param_groups(self.method, self.optim_cfg), self.optim_cfg, self.total_steps())

    def embed_loader(self, loader: Sequence[Mapping[str, Tensor]] | Any) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Embeddings of every two-view batch of ``loader`` (contrastive methods), in eval mode.

        Returns:
            ``(features_a, features_b, projections_a, projections_b)``, each ``(N, ·)`` on the CPU.
        """
        from ssl_pretrain.data.batch import IMAGE_B

        method = self.method
        if not isinstance(method, ContrastiveMethod):
            raise TypeError(f"{method.name} has no embeddings of two views")
        was_training = method.training
        method.eval()
        parts: list[list[Tensor]] = [[], [], [], []]
        with torch.no_grad():
            for batch in loader:
                f_a, p_a = method.embed(batch[IMAGE].to(self.device))
                f_b, p_b = method.embed(batch[IMAGE_B].to(self.device))
                for store, value in zip(parts, (f_a, f_b, p_a, p_b), strict=True):
                    store.append(value.float().cpu())
        method.train(was_training)
        if not parts[0]:
            raise ValueError("no batches to embed")
        return tuple(torch.cat(p) for p in parts)  # type: ignore[return-value]
