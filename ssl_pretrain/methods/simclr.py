"""SimCLR: contrastive learning between two augmented views of the same subject.

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020 (https://arxiv.org/abs/2002.05709). The encoder features of each view are
pooled to one vector, projected by lightly's ``SimCLRProjectionHead`` and compared with lightly's
``NTXentLoss``; under DDP the negatives are gathered from every process (``gather_distributed``).

3D batches hold 2–8 patches, so in-batch NT-Xent has 2–14 negatives. With ``memory_bank_size = K > 0``
lightly's ``NTXentLoss`` takes its negatives from a queue of the last K second-view projections instead,
as MoCo does (He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020, https://arxiv.org/abs/1911.05722). The second view (the key) is then embedded by a
*momentum* copy of the encoder and head, an exponential moving average of the trained ones
(``momentum`` m, lightly's ``update_momentum`` in :meth:`SimCLR.before_training_step`, before every training
forward), so the queued keys change
slowly and stay comparable (MoCo's ablation: m = 0, a queue of keys from the trained network itself,
fails to converge). The queue (``loss.memory_bank.bank`` and its pointer) is registered as persistent
state and the momentum copy is ordinary (frozen) parameters, so both are saved in checkpoints and a
resumed run continues with the same negatives and keys.

The method configs use in-batch negatives (``memory_bank_size: 0``, ``momentum: 0``): on the demo cohort a
queue opens a shortcut (below) and its projections collapse, while the frozen encoder's probes gain as much
without one. Measured with the quick study's model and data block, 200 steps, seeds 0 and 1, GM/WM probe gap
over the random encoder (subcortical all / T1w input; brainstem all / T1w):

=========================  ==============================  ==============================  ======================
run                        seed 0                          seed 1                          uniformity (s0 / s1)
=========================  ==============================  ==============================  ======================
queue 256, m 0.99          +0.092 +0.145 / +0.080 +0.110   +0.140 +0.130 / +0.152 +0.110   -0.005 / -0.006
in-batch                   +0.092 +0.127 / +0.120 +0.130   +0.135 +0.155 / +0.105 +0.102   -1.274 / -0.779
MAE+SimCLR, queue          +0.060 +0.128 / +0.103 +0.112                                   -0.011
MAE+SimCLR, in-batch       +0.078 +0.152 / +0.083 +0.067                                   -0.762
=========================  ==============================  ==============================  ======================

Each gap's 95 % CI over the 4 validation subjects is ±0.02-0.1 wide; uniformity of the trained validation
projections (init -0.215 / -0.235; near 0: collapsed).

The pooled vector (``pooling`` of ``pool_stages``, :mod:`ssl_pretrain.methods.pooling`) is in the method
configs the maximum of every encoder stage (``mean`` of ``last``, SimCLR's, is the class default): instance
norm fixes each channel's spatial mean, so SimCLR's average of the deepest stage is nearly the same vector for
every patch (at initialisation, pooled vectors of different demo-cohort patches have cosine 0.97-0.98 with
``mean``, 0.93-0.94 with ``max`` of all stages).

Measured on the demo cohort (quick-preset model on 24³ patches, 200 steps, batch 2), when a queue was the
default: with the 256-entry queue and momentum 0.99 the projections collapse with either pooling (alignment /
uniformity end at 0.000 / -0.001 with ``mean``, 0.002 / -0.006 with ``max`` of all stages) while the loss
settles below its collapsed value ln 257 (at 4.2-4.3, by moving all embeddings away from the queue's stale
keys, as measured below). With in-batch negatives (``memory_bank_size=0 momentum=0``) ``mean`` does not
collapse but does not learn either (validation loss 1.16, above chance ln 3), while ``max`` of all stages is
the one variant whose validation loss fell below chance (0.99; uniformity -0.92, encoder alignment 0.20
against 0.59 with ``mean``). The frozen encoder's GM/WM probe gaps over the random encoder were 0.00 to +0.15
for every variant, with overlapping CIs (table in pooling.py). The run's ``embedding_quality.json``
(alignment/uniformity) shows it; read SimCLR's results with it.

What the collapse is not (same settings, modality subsets T1w 0.25 / all 0.5 / random 0.25, one run each,
``bssl pretrain method=simclr`` with the quick study's model and data block and ``trainer.max_steps=200``):
trained validation projections end collapsed, alignment / uniformity 0.001-0.008 / -0.003 to -0.015, with a
queue of 32 (each key at most 16 steps old, well inside momentum 0.99's 100-step time constant), with momentum
0.999, and at τ = 0.2 (MoCo v2's, for a queue) and 0.1; in-batch negatives (``memory_bank_size=0 momentum=0``)
did not collapse (0.478 / -0.701). So neither the queue's length, nor the key encoder's lag, nor τ explains it.
What does (default settings, the study's shares T1w 0.4 / all 0.4 / random 0.2, 200 steps, every training
step's query batch recorded against the queue it met): the two patches of a batch start nearly one vector
(cosine 0.95 at initialisation: instance norm and pooling leave little between patches) and stay one (0.997 by
step 30, 1.000 from step 100), while their cosine with the queue falls with an entry's age. At step 150 the
newest sixty-fourth of the queue has cosine 0.43 with the queries and the oldest half -0.66; at step 200 0.71
and -0.51. The embedding drifts as training goes on, and that lowers the loss (the stale keys drift away)
without telling instances apart: a shortcut that the queue opens and in-batch negatives close (all of them
are from the same step). Adding the batch's other keys and queries as negatives beside the queue did not
close it (at step 200: batch cosine 0.999, newest 0.74, oldest half -0.41; 2 same-step negatives against 256
queued ones). :meth:`queue_by_age` writes this reading into every run's ``embedding_quality.json``.

The frozen encoder learned under every variant. Its GM/WM probe gaps over the random encoder (subcortical all
inputs / T1w input; brainstem all / T1w) were +0.065 to +0.092 / +0.125 to +0.155; +0.058 to +0.123 / +0.090
to +0.117 over the five queue variants, and +0.085 / +0.128; +0.015 / +0.075 in-batch, each with a 95 % CI
±0.04-0.1 wide, so they overlap. Collapse is then a property of the projection head's output, which
fine-tuning drops, more than of the encoder.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from omegaconf import DictConfig
from torch import Tensor, nn

from ssl_pretrain.data.batch import IMAGE, IMAGE_B
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.methods.base import ContrastiveMethod, Patch
from ssl_pretrain.methods.pooling import check_pooling_config, pooled_dim, pooled_features
from ssl_pretrain.models.unet import build_encoder


def persist_memory_bank(loss: nn.Module) -> None:
    """Register a lightly loss's memory-bank buffers (``bank``, ``bank_ptr``) as persistent state.

    Lightly registers them with ``persistent=False``, so they would be missing from checkpoints and a resumed
    run would restart from a fresh random queue; registering the same tensors again with
    ``persistent=True`` (``nn.Module.register_buffer``) puts them in the state dict.
    """
    bank = getattr(loss, "memory_bank", None)
    if bank is None or bank.size == (0,):
        return
    for name in ("bank", "bank_ptr"):
        bank.register_buffer(name, getattr(bank, name), persistent=True)


def check_ntxent(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a ``method.temperature``, ``memory_bank_size`` or ``momentum`` out of range."""
    if float(cfg.temperature) <= 0:
        raise ConfigError("method.temperature", f"must be > 0, got {cfg.temperature}")
    size = cfg.get("memory_bank_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError("method.memory_bank_size", f"must be an integer >= 0 (0: no bank), got {size!r}")
    momentum = float(cfg.get("momentum", 0.0))
    if not 0.0 <= momentum < 1.0:
        raise ConfigError("method.momentum", f"must lie in [0, 1) (0: no momentum encoder), got {momentum}")


class SimCLR(ContrastiveMethod):
    """The SimCLR objective around an encoder with multi-scale outputs.

    Args:
        encoder: ``(B, C, X, Y, Z) -> list`` of feature maps, fine to coarse, with ``feature_channels``.
        hidden_dim / output_dim / num_layers / batch_norm: the projection head (lightly's
            ``SimCLRProjectionHead``; ``num_layers=2`` is SimCLR v1).
        temperature: NT-Xent temperature τ.
        gather_distributed: gather negatives from all processes under DDP (and the queue's new entries).
        memory_bank_size: negatives kept in lightly's memory bank (0: in-batch negatives only).
        momentum: EMA factor of the key encoder and head (0: the second view goes through the trained
            network, as in SimCLR; MoCo uses 0.99–0.999).
        pooling / pool_stages: how feature maps become the head's input
            (:mod:`ssl_pretrain.methods.pooling`: ``mean`` | ``max`` | ``meanmax`` of ``last`` | ``all`` stages).
    """

    name: ClassVar[str] = "simclr"
    views: ClassVar[int] = 2

    def __init__(
        self,
        encoder: nn.Module,
        hidden_dim: int = 256,
        output_dim: int = 128,
        num_layers: int = 2,
        batch_norm: bool = True,
        temperature: float = 0.5,
        gather_distributed: bool = True,
        memory_bank_size: int = 0,
        momentum: float = 0.0,
        pooling: str = "mean",
        pool_stages: str = "last",
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if min(hidden_dim, output_dim) < 1 or num_layers < 2:
            raise ValueError("the projection head needs hidden_dim, output_dim >= 1 and num_layers >= 2")
        self.encoder = encoder
        self.pooling, self.pool_stages = pooling, pool_stages
        feature_dim = pooled_dim(cast(Sequence[int], encoder.feature_channels), pooling, pool_stages)
        self.head = SimCLRProjectionHead(feature_dim, hidden_dim, output_dim, num_layers, batch_norm)
        if memory_bank_size < 0:
            raise ValueError(f"memory_bank_size must be >= 0, got {memory_bank_size}")
        bank = (int(memory_bank_size), output_dim) if memory_bank_size else 0
        self.loss = NTXentLoss(temperature=temperature, memory_bank_size=bank, gather_distributed=gather_distributed)
        persist_memory_bank(self.loss)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.momentum_encoder: nn.Module | None = None
        self.momentum_head: nn.Module | None = None
        if self.momentum > 0:
            self.momentum_encoder, self.momentum_head = copy.deepcopy(encoder), copy.deepcopy(self.head)
            deactivate_requires_grad(self.momentum_encoder)
            deactivate_requires_grad(self.momentum_head)

    @classmethod
    def from_config(cls, cfg: DictConfig, model_cfg: DictConfig, in_channels: int) -> SimCLR:
        """SimCLR on a fresh encoder from ``model_cfg`` (keys of configs/method/simclr.yaml)."""
        return cls.on_encoder(build_encoder(model_cfg, in_channels), cfg)

    @classmethod
    def on_encoder(cls, encoder: nn.Module, cfg: DictConfig) -> SimCLR:
        """SimCLR around an existing ``encoder`` (MAE + SimCLR shares the U-Net's), from the ``method`` keys."""
        head = cfg.head
        return cls(
            encoder,
            hidden_dim=int(head.hidden_dim),
            output_dim=int(head.output_dim),
            num_layers=int(head.num_layers),
            batch_norm=bool(head.batch_norm),
            temperature=float(cfg.temperature),
            gather_distributed=bool(cfg.gather_distributed),
            memory_bank_size=int(cfg.get("memory_bank_size", 0)),
            momentum=float(cfg.get("momentum", 0.0)),
            pooling=str(cfg.get("pooling", "mean")),
            pool_stages=str(cfg.get("pool_stages", "last")),
        )

    @classmethod
    def check_config(cls, cfg: DictConfig, patch: Patch, batch_size: int) -> None:
        """Two samples per batch at least, the pooling (:func:`check_pooling_config`) and the NT-Xent settings."""
        cls.require_batch(batch_size)
        check_pooling_config(cfg)
        check_ntxent(cfg)

    def before_training_step(self, step: int, total_steps: int) -> None:
        """Move the momentum copy towards the trained network, ``θ_k ← m θ_k + (1 − m) θ`` (without one: nothing).

        Called before each training forward; validation and evaluation leave the copy alone.
        """
        if self.momentum_encoder is None or self.momentum_head is None:
            return
        update_momentum(self.encoder, self.momentum_encoder, self.momentum)
        update_momentum(self.head, self.momentum_head, self.momentum)

    def keys(self, image: Tensor) -> Tensor:
        """Second-view projections ``(B, D)``: from the momentum copy (no gradient) when there is one."""
        if self.momentum_encoder is None or self.momentum_head is None:
            return self.embed(image)[1]
        with torch.no_grad():
            return self.momentum_head(pooled_features(self.momentum_encoder, image, self.pooling, self.pool_stages))

    def queue_by_age(self, projections: Tensor, parts: int = 4) -> dict[str, Any] | None:
        """Mean cosine of ``projections`` ``(N, D)`` with the queue's entries by age (no queue: ``None``).

        The queue is cut into ``parts`` equal runs of entries, oldest first (the entry at the write pointer is
        the oldest). An embedding that tells instances apart has about the same cosine with every part; one
        that drifts with training time is nearer the newest keys than the oldest, and so lowers NT-Xent by a
        key's age instead of its instance: a shortcut. Entries never written since initialisation are
        lightly's random unit vectors (cosine about 0 with anything).
        """
        bank = getattr(self.loss, "memory_bank", None)
        if bank is None or bank.size == (0,):
            return None
        if not 1 <= parts <= bank.size[0]:
            raise ValueError(f"parts must lie in [1, {bank.size[0]}], got {parts}")
        entries = bank.bank.detach().float().cpu()  # (K, D), unit rows
        oldest_first = torch.roll(entries, -int(bank.bank_ptr), dims=0)
        cosine = nn.functional.normalize(projections.float().cpu(), dim=1) @ oldest_first.T  # (N, K)
        by_part = [float(c.mean()) for c in cosine.mean(0).tensor_split(parts)]
        return {
            "reference": (
                "mean cosine of the validation projections with the queue's entries, oldest part first; about "
                "equal parts: keys told apart by instance; rising to the newest: an embedding that drifts with "
                "training time lowers the loss by telling keys by their age"
            ),
            "cosine_oldest_to_newest": by_part,
            "newest_minus_oldest": by_part[-1] - by_part[0],
            "queue_size": int(bank.size[0]),
            "n": int(projections.shape[0]),
        }

    def forward(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Loss of one two-view batch: ``{"loss": …, "simclr": …}``. ``generator`` is unused."""
        _, z_a = self.embed(batch[IMAGE])
        z_b = self.keys(batch[IMAGE_B])
        with torch.autocast(z_a.device.type, enabled=False):  # similarities / τ in fp32, also under bf16
            loss = self.loss(z_a.float(), z_b.float())
        return {"loss": loss, "simclr": loss.detach()}
