"""Self-supervised objectives, one file each: ``mae``, ``simclr``, ``mae_simclr``, ``vicreg`` (+ ``local_vicreg``).

Every method is an ``nn.Module`` with

- ``name`` (its ``method.name``) and ``views`` (1: batches carry ``image``; 2: also ``image_b``),
- ``encoder``: the encoder it trains (what ``bssl pretrain`` saves),
- ``forward(batch, generator=None) -> dict[str, Tensor]`` with the scalar ``"loss"`` to minimise and
  detached components to log (``generator`` seeds random masks),
- contrastive methods also have ``embed(image) -> (pooled features (B, F), projection (B, D))``.

:func:`build_method` turns a ``method`` config (configs/method/*.yaml) into one.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig
from torch import nn

from ssl_pretrain.errors import ConfigError
from ssl_pretrain.methods.local_vicreg import LocalVICRegLoss
from ssl_pretrain.methods.mae import MAE, MAELoss
from ssl_pretrain.methods.mae_simclr import MAESimCLR
from ssl_pretrain.methods.masking import as_block
from ssl_pretrain.methods.pooling import POOL_STAGES, POOLINGS
from ssl_pretrain.methods.simclr import SimCLR
from ssl_pretrain.methods.vicreg import HEAD_NORMS, VICReg

METHODS = ("mae", "simclr", "mae_simclr", "vicreg")
PretrainMethod = MAE | SimCLR | MAESimCLR | VICReg
ContrastiveMethod = SimCLR | MAESimCLR | VICReg  # methods with embed()
__all__ = [
    "MAE",
    "METHODS",
    "ContrastiveMethod",
    "MAELoss",
    "MAESimCLR",
    "PretrainMethod",
    "SimCLR",
    "VICReg",
    "build_method",
    "check_method_config",
]


def check_method_config(method_cfg: DictConfig, patch_size: int | Sequence[int], batch_size: int) -> None:
    """Raise ConfigError for a method config that cannot train on patches of ``patch_size``.

    Args:
        method_cfg: the ``method`` config group.
        patch_size: ``data.patch_size`` (int or three ints).
        batch_size: ``data.batch_size``.
    """
    name = method_cfg.get("name")
    if name not in METHODS:
        raise ConfigError("method.name", f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    patch = as_block(patch_size) if isinstance(patch_size, int) else tuple(int(p) for p in patch_size)
    if "mae" in name.split("_"):
        ratio = float(method_cfg.mask_ratio)
        if not 0.0 < ratio < 1.0:
            raise ConfigError("method.mask_ratio", f"must lie strictly between 0 and 1, got {ratio}")
        try:
            block = as_block(method_cfg.mask_block)
        except (ValueError, TypeError) as err:
            raise ConfigError("method.mask_block", str(err)) from None
        if any(p % b for p, b in zip(patch, block, strict=True)):
            raise ConfigError("method.mask_block", f"{block} does not divide data.patch_size {patch}")
    if name != "mae":
        _check_two_view(name, method_cfg, batch_size)


def _check_two_view(name: str, method_cfg: DictConfig, batch_size: int) -> None:
    """The contrastive and VICReg settings of :func:`check_method_config`."""
    if batch_size < 2:
        raise ConfigError("data.batch_size", f"{name} needs at least 2 samples per batch, got {batch_size}")
    for key, allowed in (("pooling", POOLINGS), ("pool_stages", POOL_STAGES)):
        value = method_cfg.get(key, allowed[0])
        if value not in allowed:
            raise ConfigError(f"method.{key}", f"must be one of {', '.join(allowed)}, got {value!r}")
    if name == "vicreg":
        if method_cfg.head.get("norm", "none") not in HEAD_NORMS:
            raise ConfigError(
                "method.head.norm", f"must be one of {', '.join(HEAD_NORMS)}, got {method_cfg.head.norm!r}"
            )
        alpha = float((method_cfg.get("local") or {}).get("alpha", 1.0))
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError("method.local.alpha", f"must lie in [0, 1] (1: no local term), got {alpha}")
        return
    if float(method_cfg.temperature) <= 0:
        raise ConfigError("method.temperature", f"must be > 0, got {method_cfg.temperature}")
    size = method_cfg.get("memory_bank_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError("method.memory_bank_size", f"must be an integer >= 0 (0: no bank), got {size!r}")
    momentum = float(method_cfg.get("momentum", 0.0))
    if not 0.0 <= momentum < 1.0:
        raise ConfigError("method.momentum", f"must lie in [0, 1) (0: no momentum encoder), got {momentum}")


def _simclr(encoder: nn.Module, cfg: DictConfig) -> SimCLR:
    head = cfg.head
    return SimCLR(
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


def _mae(model_cfg: DictConfig, cfg: DictConfig, in_channels: int) -> MAE:
    from ssl_pretrain.models.unet import build_unet

    unet = build_unet(model_cfg, in_channels, in_channels)
    try:
        return MAE(
            unet,
            in_channels,
            mask_ratio=float(cfg.mask_ratio),
            mask_block=as_block(cfg.mask_block),
            norm_target=bool(cfg.get("norm_target", False)),
            mask_token=bool(cfg.get("mask_token", True)),
            cross_modal=bool(cfg.get("cross_modal", True)),
            sparse_norm=bool(cfg.get("sparse_norm", False)),
        )
    except ValueError as err:
        if "sparse normalisation" in str(err):
            raise ConfigError("method.sparse_norm", str(err)) from None
        raise


def _local_term(cfg: DictConfig, feature_channels: Sequence[int]) -> LocalVICRegLoss | None:
    """VICRegL's local term from ``method.local`` (None when absent or ``alpha`` is 1)."""
    local = cfg.get("local")
    if not local or float(local.get("alpha", 1.0)) >= 1.0:
        return None
    stages = local.get("stages")
    stages = list(range(len(feature_channels) - 1)) if stages is None else [int(s) for s in stages]
    try:
        return LocalVICRegLoss(
            feature_channels,
            stages or [0],
            hidden_dim=int(local.hidden_dim),
            output_dim=int(local.output_dim),
            positions=int(local.positions),
            matches=int(local.matches),
            lambda_param=float(cfg.lambda_param),
            mu_param=float(cfg.mu_param),
            nu_param=float(cfg.nu_param),
        )
    except ValueError as err:
        raise ConfigError("method.local", str(err)) from None


def build_method(method_cfg: DictConfig, model_cfg: DictConfig, in_channels: int) -> PretrainMethod:
    """Build the method named by ``method_cfg.name`` on a fresh backbone from ``model_cfg``.

    Args:
        method_cfg: the ``method`` config group.
        model_cfg: the ``model`` config group (backbone width and depth).
        in_channels: number of input modalities C.
    """
    from ssl_pretrain.models.unet import build_encoder

    name = method_cfg.get("name")
    if name == "mae":
        return _mae(model_cfg, method_cfg, in_channels)
    if name == "simclr":
        return _simclr(build_encoder(model_cfg, in_channels), method_cfg)
    if name == "mae_simclr":
        mae = _mae(model_cfg, method_cfg, in_channels)
        weights = method_cfg.weights
        return MAESimCLR(mae, _simclr(mae.encoder, method_cfg), float(weights.mae), float(weights.simclr))
    if name == "vicreg":
        head = method_cfg.head
        encoder = build_encoder(model_cfg, in_channels)
        return VICReg(
            encoder,
            hidden_dim=int(head.hidden_dim),
            output_dim=int(head.output_dim),
            num_layers=int(head.num_layers),
            lambda_param=float(method_cfg.lambda_param),
            mu_param=float(method_cfg.mu_param),
            nu_param=float(method_cfg.nu_param),
            gather_distributed=bool(method_cfg.gather_distributed),
            head_norm=str(head.get("norm", "none")),
            local=_local_term(method_cfg, encoder.feature_channels),
            alpha=float((method_cfg.get("local") or {}).get("alpha", 1.0)),
            pooling=str(method_cfg.get("pooling", "mean")),
            pool_stages=str(method_cfg.get("pool_stages", "last")),
        )
    raise ConfigError("method.name", f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
