"""Weight files: a state dict (``<name>.pt``) beside a JSON sidecar (``<name>.json``).

``save_weights`` writes both atomically. ``load_weights`` loads with ``weights_only=True`` (a file that
needs arbitrary unpickling is refused), checks the architecture against the sidecar and the tensor
shapes, and **adapts the input layer by modality name** when the checkpoint was trained on other
modalities than the model reads:

- a modality in both keeps its first-layer weights (moved to the model's channel position);
- a modality only the model reads gets **zero** weights. Zero (not the mean of the others) because the
  data contract codes a missing modality as a zero channel and training drops modalities at random:
  with zero weights the adapted model computes exactly what the checkpoint's model computed on the
  same inputs with that modality absent, so nothing it learned is disturbed, and fine-tuning learns
  the new channel's weights from there;
- a modality only the checkpoint has is dropped, which again equals the checkpoint's model fed a zero
  channel for it.

Sidecar keys (``meta`` of :func:`save_weights` plus what it fills in): ``format``, ``architecture``
(``{"class": ..., "config": {...}}``), ``modalities`` (channel order), ``spacing``, ``normalisation``,
``method``, ``stage``, ``data_fingerprint``, ``version`` (toolkit), ``created`` (UTC ISO time),
``input_weight_key``.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import ssl_pretrain
from ssl_pretrain.atomic import file_mode
from ssl_pretrain.errors import CheckpointError
from ssl_pretrain.run_dir import read_run_record

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "bssl-weights-1"
RUN_DIR_FILES = ("encoder.pt", "model.pt")  # what a run directory holds, looked up in this order
# Architecture keys that do not change which tensors exist or what they mean.
_ARCH_KEYS_IGNORED = ("in_channels", "dropout")
_NOT_WEIGHTS = "; give a run directory of bssl pretrain/finetune, or the encoder.pt / model.pt in it"


@dataclass
class LoadReport:
    """What :func:`load_weights` did.

    Attributes:
        path: the ``.pt`` file that was loaded.
        sidecar: its JSON sidecar.
        prefix: the key prefix selected from the checkpoint (``""`` for the whole state dict).
        source_modalities: the checkpoint's input channels, in order.
        target_modalities: the model's input channels, in order.
        kept: modalities whose first-layer weights were copied.
        zero_initialised: modalities the checkpoint lacks (first-layer weights set to 0).
        dropped: checkpoint modalities the model does not read.
        missing_keys: model tensors left as initialised (only with ``strict_arch=False``).
        unexpected_keys: checkpoint tensors not used (only with ``strict_arch=False``).
    """

    path: Path
    sidecar: dict[str, Any]
    prefix: str
    source_modalities: list[str]
    target_modalities: list[str]
    kept: list[str] = field(default_factory=list)
    zero_initialised: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)

    @property
    def adapted(self) -> bool:
        """Whether the input layer was rebuilt (other modalities, or another order)."""
        return self.source_modalities != self.target_modalities


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a weights file: ``x/encoder.pt -> x/encoder.json``."""
    return Path(path).with_suffix(".json")


def _write_atomic(path: Path, write: Any) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # as the umask says (mkstemp made it 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def architecture_of(module: nn.Module) -> dict[str, Any]:
    """``{"class": name, "config": hyperparameters}`` of a model (``config`` is empty without ``arch_config``)."""
    return {"class": type(module).__name__, "config": dict(getattr(module, "arch_config", {}))}


def save_weights(module: nn.Module, path: str | Path, meta: Mapping[str, Any]) -> None:
    """Write ``module``'s state dict to ``path`` (``.pt``) and its sidecar beside it (``.json``), atomically.

    Args:
        module: the model (e.g. a ``ResEncoder`` or ``UNet``).
        path: the weights file, ending in ``.pt``.
        meta: sidecar content. ``modalities`` (the input channel order) is required; ``spacing``,
            ``normalisation``, ``method``, ``stage``, ``data_fingerprint`` are recorded when given (``None``
            otherwise). ``architecture``, ``version``, ``created``, ``format`` and ``input_weight_key`` are
            filled in unless given.

    Raises:
        ValueError: ``path`` does not end in ``.pt``, or ``modalities`` is missing or does not match the
            module's input channels.
    """
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"weights files end in .pt, got {path}")
    modalities = list(meta.get("modalities") or [])
    if not modalities:
        raise ValueError("meta['modalities'] (input channel order) is required")
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    in_key = getattr(module, "input_weight_key", None)
    if in_key is not None and in_key in state and state[in_key].shape[1] != len(modalities):
        raise ValueError(f"{len(modalities)} modalities {modalities} for {state[in_key].shape[1]} input channels")
    sidecar: dict[str, Any] = {
        "format": WEIGHTS_FORMAT,
        "architecture": architecture_of(module),
        "modalities": modalities,
        "spacing": None,
        "normalisation": None,
        "method": None,
        "stage": None,
        "data_fingerprint": None,
        "version": ssl_pretrain.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input_weight_key": in_key,
        **dict(meta),
    }
    text = json.dumps(sidecar, indent=2, default=str) + "\n"
    _write_atomic(path, lambda fh: torch.save(state, fh))
    _write_atomic(sidecar_path(path), lambda fh: fh.write(text.encode()))


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """The JSON sidecar of a weights file (``path`` may be the ``.pt`` or the ``.json``).

    Raises:
        CheckpointError: the sidecar is missing, not JSON, or not a weights sidecar.
    """
    json_path = sidecar_path(path)
    if not json_path.is_file():
        given = Path(path)
        if given != json_path and given.is_file() and not zipfile.is_zipfile(given):
            raise CheckpointError(
                given, f"not a PyTorch weights file (not the zip archive torch.save writes){_NOT_WEIGHTS}"
            )
        raise CheckpointError(
            given if given.is_file() else json_path,
            f"sidecar missing: no {json_path.name} beside it; bssl weights come as <name>.pt beside <name>.json "
            "(architecture, modalities)",
        )
    try:
        sidecar = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(json_path, f"sidecar is not readable JSON ({err})") from None
    if (
        not isinstance(sidecar, dict)
        or not isinstance(sidecar.get("modalities"), list)
        or "architecture" not in sidecar
    ):
        raise CheckpointError(json_path, "not a bssl weights sidecar (needs 'architecture' and 'modalities')")
    return sidecar


def resolve_weights_path(path: str | Path, prefer: Sequence[str] = RUN_DIR_FILES) -> Path:
    """The ``.pt`` file meant by ``path``: the file itself, or the first of ``prefer`` inside a run directory.

    Raises:
        CheckpointError: nothing there, a JSON file, a directory without weights, or a run directory whose
            ``run.json`` does not say the run finished.
    """
    path = Path(path)
    if path.is_dir():
        record = read_run_record(path)
        if record is not None and record.get("status") != "complete":
            raise CheckpointError(
                path,
                f"this run did not finish (its run.json says '{record.get('status')}'): its weights are not final; "
                "resume it (resume=auto) or pick a finished run",
            )
        for name in prefer:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(path, f"no weights in this directory (looked for {', '.join(prefer)})")
    if not path.exists():
        raise CheckpointError(path, "does not exist (expected a run directory, an encoder.pt or a model.pt)")
    if path.suffix == ".json":
        raise CheckpointError(path, "is a JSON file, not weights: pass the .pt file beside it or the run directory")
    return path


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a ``.pt`` file, loaded with ``weights_only=True``.

    Raises:
        CheckpointError: the file is not a PyTorch weights file, needs unsafe unpickling, or does not hold a
            ``{name: tensor}`` dict.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise CheckpointError(path, "not a PyTorch weights file, or truncated (not the zip archive torch.save writes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise CheckpointError(
                path,
                "refused: it holds pickled Python objects beyond tensors, and weights are only loaded with "
                "weights_only=True (a state dict of tensors); re-save it with save_weights",
            ) from None
        raise CheckpointError(path, f"not a PyTorch weights file ({err})") from None
    except Exception as err:  # torch raises RuntimeError, KeyError, EOFError, … for damaged archives
        reason = str(err).split("\n", 1)[0]
        raise CheckpointError(
            path, f"not a PyTorch weights file, or truncated ({type(err).__name__}: {reason})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError(path, f"holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _select_prefix(state: dict[str, Tensor], prefix: str, path: Path) -> dict[str, Tensor]:
    if not prefix:
        return state
    selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not selected:
        raise CheckpointError(path, f"no tensors under the prefix '{prefix}'")
    return selected


def _infer_prefix(source_class: str, module: nn.Module, path: Path) -> str:
    """``"encoder."`` to load a U-Net checkpoint's encoder into an encoder; ``""`` for like into like."""
    target_class = type(module).__name__
    if source_class == "UNet" and target_class == "ResEncoder":
        return "encoder."
    if source_class == "ResEncoder" and target_class == "UNet":
        raise CheckpointError(
            path,
            "holds an encoder only; load it into the U-Net's encoder (load_weights(model.encoder, ...)) "
            "and leave the decoder freshly initialised",
        )
    return ""


def _arch_differences(sidecar: dict[str, Any], module: nn.Module, prefix: str) -> list[str]:
    source = dict(sidecar.get("architecture", {}).get("config", {}))
    target = dict(getattr(module, "arch_config", {}))
    keys = set(target) if prefix else set(source) | set(target)  # a sub-module compares its own keys
    keys -= set(_ARCH_KEYS_IGNORED)
    return [
        f"model.{k}={source.get(k)!r} in the checkpoint, {target.get(k)!r} here"
        for k in sorted(keys)
        if source.get(k) != target.get(k)
    ]


def _adapt_input(
    weight: Tensor, source: list[str], target: list[str], key: str, path: Path
) -> tuple[Tensor, list[str], list[str], list[str]]:
    """Rebuild an input-layer weight ``(out, len(source), *k)`` as ``(out, len(target), *k)`` by modality name."""
    if weight.shape[1] != len(source):
        raise CheckpointError(
            path,
            f"sidecar lists {len(source)} modalities {source} but '{key}' has {weight.shape[1]} input channels",
        )
    kept = [m for m in target if m in source]
    if not kept:
        raise CheckpointError(
            path,
            f"shares no modality with the model: checkpoint {source}, model {target}; "
            "set data.modalities to include one of the checkpoint's, or start from scratch (init=scratch)",
        )
    adapted = weight.new_zeros((weight.shape[0], len(target), *weight.shape[2:]))
    for j, name in enumerate(target):
        if name in source:
            adapted[:, j] = weight[:, source.index(name)]
    zeroed = [m for m in target if m not in source]
    dropped = [m for m in source if m not in target]
    return adapted, kept, zeroed, dropped


def _shape_error(
    path: Path, key: str, ckpt: tuple[int, ...], model: tuple[int, ...], diffs: list[str]
) -> CheckpointError:
    detail = f" ({'; '.join(diffs)})" if diffs else ""
    return CheckpointError(
        path,
        f"architecture mismatch: parameter '{key}' has shape {ckpt} in the checkpoint but {model} in the model"
        f"{detail}. Build the model with the checkpoint's model.* settings (see {sidecar_path(path).name}) "
        "or start from scratch (init=scratch)",
    )


def load_weights(
    module: nn.Module,
    path: str | Path,
    *,
    modalities: Sequence[str],
    prefix: str | None = None,
    strict_arch: bool = True,
) -> LoadReport:
    """Load weights into ``module`` in place, adapting the input layer by modality name.

    Args:
        module: the target model (a ``ResEncoder``, a ``UNet``, or any module with ``input_weight_key``).
        path: a run directory (``encoder.pt`` is used for an encoder target and ``model.pt`` for anything
            else, falling back to the other), an ``encoder.pt`` or a ``model.pt``.
        modalities: the module's input channels, in order (e.g. ``data.modalities``).
        prefix: take only the checkpoint tensors under this key prefix (stripped), e.g. ``"encoder."``.
            By default it is inferred: ``"encoder."`` when a ``UNet`` checkpoint is loaded into a
            ``ResEncoder``, else ``""``.
        strict_arch: require the sidecar's architecture settings and the tensor names to match (only the
            input channels may differ). With ``False`` only shapes of shared tensors must agree; missing
            and unexpected tensors are reported instead of refused.

    Returns:
        A :class:`LoadReport` (also logged when the input layer was adapted).

    Raises:
        CheckpointError: not a weights file, a refused pickle, a missing/invalid sidecar, or an
            architecture mismatch (naming the first mismatching parameter and both shapes).
        ValueError: ``modalities`` has duplicates or does not match the module's input channels.
    """
    target = [str(m) for m in modalities]
    if len(set(target)) != len(target):
        raise ValueError(f"duplicate modality names in {target}")
    is_encoder = type(module).__name__ == "ResEncoder"
    pt = resolve_weights_path(path, RUN_DIR_FILES if is_encoder else RUN_DIR_FILES[::-1])
    state = load_state_dict(pt)
    sidecar = read_sidecar(pt)
    source = [str(m) for m in sidecar["modalities"]]
    source_class = str(sidecar["architecture"].get("class", ""))
    if prefix is None:
        prefix = _infer_prefix(source_class, module, pt)
    state = _select_prefix(state, prefix, pt)

    model_state = module.state_dict()
    in_key = getattr(module, "input_weight_key", None)
    if in_key is not None and in_key in model_state and model_state[in_key].shape[1] != len(target):
        raise ValueError(
            f"{len(target)} modalities {target} for a model with {model_state[in_key].shape[1]} input channels"
        )
    diffs = _arch_differences(sidecar, module, prefix)
    report = LoadReport(pt, sidecar, prefix, source, target)

    if in_key is not None and in_key in state:
        state[in_key], report.kept, report.zero_initialised, report.dropped = _adapt_input(
            state[in_key], source, target, in_key, pt
        )
    for key, value in model_state.items():
        if key in state and tuple(state[key].shape) != tuple(value.shape):
            raise _shape_error(pt, key, tuple(state[key].shape), tuple(value.shape), diffs)
    report.missing_keys = [k for k in model_state if k not in state]
    report.unexpected_keys = [k for k in state if k not in model_state]
    if strict_arch:
        if report.missing_keys or report.unexpected_keys:
            which = (
                f"the model's '{report.missing_keys[0]}' is not in the checkpoint"
                if report.missing_keys
                else f"the checkpoint's '{report.unexpected_keys[0]}' is not in the model"
            )
            detail = f" ({'; '.join(diffs)})" if diffs else ""
            raise CheckpointError(
                pt,
                f"architecture mismatch: {which}{detail}. Build the model with the checkpoint's model.* settings "
                f"(see {sidecar_path(pt).name}) or start from scratch (init=scratch)",
            )
        if diffs:
            raise CheckpointError(
                pt, f"architecture mismatch: {'; '.join(diffs)}. Build the model with the checkpoint's settings"
            )
    module.load_state_dict({k: v for k, v in state.items() if k in model_state}, strict=False)
    if report.adapted:
        log.info(
            "%s: input layer adapted from %s to %s (kept %s, zero-initialised %s, dropped %s)",
            pt,
            source,
            target,
            report.kept,
            report.zero_initialised,
            report.dropped,
        )
    if sidecar.get("version") != ssl_pretrain.__version__:
        log.warning("%s was written by bssl %s (this is %s)", pt, sidecar.get("version"), ssl_pretrain.__version__)
    return report
