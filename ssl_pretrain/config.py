"""Where the Hydra configs live, which options a group has, and how tests and ``bssl study`` compose them without
a Hydra app (with the running app's ``hydra.searchpath`` when inside one)."""

from __future__ import annotations

import copy
import importlib.resources
from collections import OrderedDict
from collections.abc import Sequence
from importlib.resources.abc import Traversable
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


SEARCHPATH = "hydra.searchpath"


def search_path() -> list[str]:
    """The config folders ``hydra.searchpath`` adds to the running Hydra app (e.g. ``bssl study
    hydra.searchpath=[file://DIR]`` with a lab's own ``DIR/stage/*.yaml``); ``[]`` outside an app."""
    return [str(p) for p in HydraConfig.get().searchpath] if HydraConfig.initialized() else []


def _sets_search_path(overrides: Sequence[str]) -> bool:
    return any(o.lstrip("+~").startswith(SEARCHPATH) for o in overrides)


def _with_search_path(overrides: Sequence[str]) -> list[str]:
    """``overrides``, plus the running app's ``hydra.searchpath`` unless they set one (a command composed from
    within ``bssl study`` finds the same config folders as the study)."""
    extra = search_path()
    if not extra or _sets_search_path(overrides):
        return list(overrides)
    return [*overrides, f"{SEARCHPATH}=[{','.join(repr(p) for p in extra)}]"]


def _folder(entry: str) -> Traversable:
    """A ``hydra.searchpath`` entry (``file://DIR``, ``pkg://package``, or a plain path) as a folder to read."""
    scheme, sep, where = entry.partition("://")
    if sep and scheme == "pkg":
        return importlib.resources.files(where.strip("/").replace("/", "."))
    return Path(where if sep else entry)


def _roots() -> list[Traversable]:
    return [CONFIG_DIR, *(_folder(e) for e in search_path())]


def config_options(group: str) -> list[str]:
    """The options of a config group: ``configs/<group>/*.yaml`` and ``<group>/*.yaml`` in every folder of the
    running app's ``hydra.searchpath``, sorted."""
    names = set()
    for root in _roots():
        folder = root / group
        if folder.is_dir():
            names |= {f.name[: -len(".yaml")] for f in folder.iterdir() if f.name.endswith(".yaml")}
    return sorted(names)


def load_option(group: str, option: str) -> DictConfig:
    """``<group>/<option>.yaml`` as written (no defaults list applied), from the first folder that has it:
    ``configs/`` first, then the running app's ``hydra.searchpath`` (as Hydra would find it).

    Raises:
        FileNotFoundError: no folder has it.
    """
    for root in _roots():
        file = root / group / f"{option}.yaml"
        if file.is_file():
            loaded = OmegaConf.create(file.read_text())
            assert isinstance(loaded, DictConfig)
            return loaded
    raise FileNotFoundError(f"no config {group}/{option}.yaml in {[str(r) for r in _roots()]}")


def compose_config(command: str, overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """Compose ``configs/<command>.yaml`` with ``overrides`` as ``bssl <command>`` would.

    Args:
        command: entry config name (``pretrain``, ``finetune``, …).
        overrides: Hydra override strings, e.g. ``["data.root=/data/bids", "method=simclr"]``. Inside a Hydra
            app the app's ``hydra.searchpath`` is added unless they give one (:func:`search_path`).
        output_dir: the run directory (replaces the ``${hydra:runtime.output_dir}`` of a real run).
    """
    overrides = _with_search_path(overrides)
    if GlobalHydra.instance().is_initialized():  # inside a Hydra app (bssl study): its config dir is ours
        cfg = compose(config_name=command, overrides=list(overrides))
    else:
        cfg = _compose_configs_dir(command, tuple(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg


_COMPOSED: OrderedDict[tuple[object, ...], DictConfig] = OrderedDict()
_COMPOSED_MAX = 128


def _configs_stamp() -> tuple[tuple[str, int, int], ...]:
    """Every ``configs/**/*.yaml`` with its modification time and size: a composed config is reused only while
    none of its possible sources changed."""
    files = sorted(CONFIG_DIR.rglob("*.yaml"))
    return tuple((str(f.relative_to(CONFIG_DIR)), (st := f.stat()).st_mtime_ns, st.st_size) for f in files)


def _compose_configs_dir(command: str, overrides: tuple[str, ...]) -> DictConfig:
    """Compose from ``configs/`` outside a Hydra app, memoised per (command, overrides, state of configs/).

    A study composes each of its stage configs more than once (planning, hashing, running; every re-run of the
    study in one process), and one Hydra composition costs about 0.25 s, 30× a copy. Overrides that add a
    ``hydra.searchpath`` folder are never memoised (its files are not stamped). Each caller gets its own copy.
    """
    if _sets_search_path(overrides):
        return _compose_once(command, overrides)
    key = (command, overrides, _configs_stamp())
    if key not in _COMPOSED:
        _COMPOSED[key] = _compose_once(command, overrides)
        while len(_COMPOSED) > _COMPOSED_MAX:
            _COMPOSED.popitem(last=False)
    _COMPOSED.move_to_end(key)
    return copy.deepcopy(_COMPOSED[key])


def _compose_once(command: str, overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=command, overrides=list(overrides))


def to_flat_dict(cfg: DictConfig) -> dict[str, object]:
    """The resolved config as a plain dict (for JSON sidecars and reports)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
