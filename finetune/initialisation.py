"""Where a segmentation network's weights come from: ``init=scratch | PATH``, and ``bssl predict model=PATH``.

``PATH`` may be

- a pretraining run directory or its ``encoder.pt``: the encoder is loaded, the decoder (or linear head)
  stays freshly initialised;
- a fine-tuning run directory or its ``model.pt`` (e.g. the subcortical model as the start of the
  brainstem stage): the whole network is loaded when it has the same form (a U-Net into a U-Net, a
  linear probe into a linear probe), else only its encoder.

Weights load by tensor name with ``weights_only=True``; the input layer is adapted by modality name when
the checkpoint read other modalities (:func:`ssl_pretrain.models.checkpoint.load_weights`); a checkpoint
of another architecture raises :class:`~ssl_pretrain.errors.CheckpointError` naming the parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from finetune.policy import build_segmentation_net, encoder_of
from ssl_pretrain.errors import CheckpointError, ConfigError
from ssl_pretrain.models.checkpoint import load_weights as _load_weights
from ssl_pretrain.models.checkpoint import read_sidecar, resolve_weights_path

log = logging.getLogger(__name__)

SCRATCH = "scratch"
TASK = "segmentation"  # the ``task`` a fine-tuned model's sidecar records
MODEL_FILE = "model.pt"
ENCODER_FILE = "encoder.pt"


def is_segmentation_model(sidecar: dict[str, Any]) -> bool:
    """Whether a sidecar describes a fine-tuned segmentation model (``bssl finetune``'s ``model.json``)."""
    return sidecar.get("task") == TASK


def resolve_init(init: str | Path) -> Path:
    """The weights file of ``init``: a file as is; in a directory ``model.pt`` if it is a fine-tuned
    model, else ``encoder.pt`` (a pretraining run's ``model.pt`` is its reconstruction network).

    Raises:
        CheckpointError: nothing loadable there.
    """
    path = Path(str(init)).expanduser()
    if path.is_dir() and (path / MODEL_FILE).is_file():
        try:
            if is_segmentation_model(read_sidecar(path / MODEL_FILE)):
                return path / MODEL_FILE
        except CheckpointError:
            pass
    return resolve_weights_path(path, (ENCODER_FILE, MODEL_FILE))


def initialise(net: nn.Module, init: str | Path | None, modalities: Sequence[str]) -> dict[str, Any]:
    """Load ``init`` into ``net`` (in place) and describe what was done.

    Args:
        net: a policy's network (:func:`finetune.policy.build_segmentation_net`), with ``.encoder``.
        init: ``scratch`` (or ``None``) or a path (see the module docstring).
        modalities: the network's input channels, in order (``data.modalities``).

    Returns:
        The ``init`` record of the run's sidecar: ``{"init", "path", "loaded", "source_method",
        "source_stage", "source_modalities", "zero_initialised", "dropped"}`` (``{"init": "scratch"}``).

    Raises:
        CheckpointError: not a weights file, a refused pickle, or an incompatible architecture.
    """
    if init is None or str(init) == SCRATCH:
        return {"init": SCRATCH}
    pt = resolve_init(init)
    sidecar = read_sidecar(pt)
    source_class = str(sidecar["architecture"].get("class", ""))
    whole = is_segmentation_model(sidecar) and source_class == type(net).__name__
    if whole:
        report = _load_weights(net, pt, modalities=modalities)
    else:
        prefix = "" if source_class == "ResEncoder" else "encoder."
        report = _load_weights(encoder_of(net), pt, modalities=modalities, prefix=prefix)
    loaded = "model" if whole else "encoder"
    log.info("init: %s of %s (%s, stage %s)", loaded, pt, sidecar.get("method"), sidecar.get("stage"))
    return {
        "init": str(init),
        "path": str(pt.resolve()),
        "loaded": loaded,
        "source_method": sidecar.get("method"),
        "source_stage": sidecar.get("stage"),
        "source_modalities": report.source_modalities,
        "zero_initialised": report.zero_initialised,
        "dropped": report.dropped,
        "source_spacing": sidecar.get("spacing"),
    }


def heads_of(sidecar: dict[str, Any]) -> tuple[int, ...]:
    """Channels of a fine-tuned model's heads (tissue, then regions), from its sidecar; a model written before
    the region head existed has one head of all its output channels."""
    heads = sidecar.get("heads") or {}
    if "tissue" in heads:
        return (len(heads["tissue"]),) + ((len(heads["regions"]),) if "regions" in heads else ())
    return (int(sidecar["architecture"]["config"]["out_channels"]),)


def load_segmentation_model(path: str | Path) -> tuple[nn.Module, dict[str, Any], Path]:
    """A fine-tuned model for prediction, built from its sidecar and loaded.

    Args:
        path: a fine-tuning run directory or its ``model.pt``.

    Returns:
        ``(net, sidecar, weights file)``; the net is in eval mode on the CPU.

    Raises:
        CheckpointError: not a fine-tuned segmentation model (e.g. a pretraining encoder), or unloadable.
    """
    pt = resolve_init(path)
    sidecar = read_sidecar(pt)
    if not is_segmentation_model(sidecar):
        raise CheckpointError(
            pt,
            "is not a fine-tuned segmentation model (a pretraining encoder?); bssl predict needs the model.pt "
            "of a `bssl finetune` run, e.g. model=runs/finetune/<time>",
        )
    arch = dict(sidecar["architecture"].get("config") or {})
    modalities = [str(m) for m in sidecar["modalities"]]
    try:
        net = build_segmentation_net(arch, len(modalities), int(arch["out_channels"]), str(sidecar.get("policy")))
    except (KeyError, ValueError, TypeError, ConfigError) as err:
        raise CheckpointError(pt, f"its sidecar does not describe a buildable network ({err})") from None
    _load_weights(net, pt, modalities=modalities)
    return net.eval(), sidecar, pt
