"""Training infrastructure shared by pretraining and fine-tuning (PyTorch Lightning).

- :func:`build_trainer` (:mod:`.trainer`): a ``Trainer`` from the ``trainer`` config group with atomic
  ``checkpoints/last.ckpt`` every N steps and at the end, ``metrics.csv``, lr monitoring, precision/accelerator
  resolution, DDP.
- :func:`resolve_resume` (:mod:`.resume`): ``resume=auto|PATH`` -> the checkpoint to continue from.
- :func:`build_optimizer`, :func:`param_groups` (:mod:`.optim`): AdamW, linear warmup + cosine decay per step.
- :func:`seed_everything` (:mod:`.trainer`).
"""

from ssl_pretrain.training.callbacks import AtomicCheckpointIO, RNGStateCallback, RunCheckpoint, SamplerPositionCallback
from ssl_pretrain.training.logger import ResumableCSVLogger
from ssl_pretrain.training.optim import WarmupCosineSchedule, build_optimizer, param_groups
from ssl_pretrain.training.resume import checkpoint_problem, resolve_resume
from ssl_pretrain.training.trainer import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    build_trainer,
    resolve_accelerator,
    resolve_precision,
    seed_everything,
)

__all__ = [
    "BEST_CHECKPOINT",
    "CHECKPOINT_DIR",
    "LAST_CHECKPOINT",
    "AtomicCheckpointIO",
    "RNGStateCallback",
    "ResumableCSVLogger",
    "RunCheckpoint",
    "SamplerPositionCallback",
    "WarmupCosineSchedule",
    "build_optimizer",
    "build_trainer",
    "checkpoint_problem",
    "param_groups",
    "resolve_accelerator",
    "resolve_precision",
    "resolve_resume",
    "seed_everything",
]
