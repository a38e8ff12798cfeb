"""Self-supervised objectives, one file each: ``mae``, ``simclr``, ``mae_simclr``, ``vicreg`` (+ ``local_vicreg``).

Every method is a :class:`~ssl_pretrain.methods.base.PretrainMethod` (an ``nn.Module``) named by the
``_target_`` of its ``configs/method/<name>.yaml``; the class owns its views, its config checks, its
construction and its hooks (:mod:`ssl_pretrain.methods.base`). Methods with embeddings of two views
(``embed(image) -> (pooled features (B, F), projection (B, D))``) are
:class:`~ssl_pretrain.methods.base.ContrastiveMethod`\\ s.

A new method is one file here (its class), one config in ``configs/method/`` and one test:
:func:`build_method`, :func:`check_method_config` and ``bssl pretrain`` find it through the config's
``_target_``, and :data:`METHODS` (the config folder) lists it.
"""

from __future__ import annotations

from ssl_pretrain.methods.base import ContrastiveMethod, PretrainMethod
from ssl_pretrain.methods.from_config import available_methods, build_method, check_method_config, method_class
from ssl_pretrain.methods.mae import MAE, MAELoss
from ssl_pretrain.methods.mae_simclr import MAESimCLR
from ssl_pretrain.methods.simclr import SimCLR
from ssl_pretrain.methods.vicreg import VICReg

METHODS = available_methods()  # the files of configs/method/
__all__ = [
    "MAE",
    "METHODS",
    "ContrastiveMethod",
    "MAELoss",
    "MAESimCLR",
    "PretrainMethod",
    "SimCLR",
    "VICReg",
    "available_methods",
    "build_method",
    "check_method_config",
    "method_class",
]
