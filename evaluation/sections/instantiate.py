"""The report's sections from config: ``report.sections`` of ``configs/evaluate.yaml``, in the order shown.

Each entry is a name of ``configs/report/section/<name>.yaml`` (or of ``report/section/<name>.yaml`` in a lab's
``hydra.searchpath`` folder) or an inline config with a ``_target_``
(e.g. ``{_target_: mylab.sections.Atrophy}``); both are built with :func:`hydra.utils.instantiate`, as
lightning-hydra-template builds its callbacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluation.sections.base import Section
from ssl_pretrain.config import CONFIG_DIR, config_options, load_option
from ssl_pretrain.errors import ConfigError

GROUP = "report/section"
SECTION_DIR = CONFIG_DIR / GROUP
KEY = "report.sections"


def section_config(entry: Any) -> DictConfig:
    """The config of one ``report.sections`` entry: the named file's (``report/section/<name>.yaml`` of
    ``configs/`` or of a folder in the running app's ``hydra.searchpath``, as stages and hypotheses are found),
    or the entry itself."""
    if isinstance(entry, str):
        if entry not in config_options(GROUP):
            known = ", ".join(config_options(GROUP))
            raise ConfigError(
                KEY, f"no section named {entry!r} ({GROUP}/ in configs/ and hydra.searchpath has: {known})"
            )
        return load_option(GROUP, entry)
    if isinstance(entry, Mapping) and "_target_" in entry:
        return entry if isinstance(entry, DictConfig) else OmegaConf.create(dict(entry))
    raise ConfigError(KEY, f"an entry must be a section name or a config with a _target_, not {entry!r}")


def _checked(sections: Sequence[Section]) -> list[Section]:
    """``sections``, once each id and HTML id is known to be unique and every required section listed."""
    ids = [s.id for s in sections]
    for what, values in (("id", ids), ("HTML id", [s.html_id for s in sections])):
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ConfigError(KEY, f"sections share the {what} {repeated}; list each section once")
    for s in sections:
        absent = [r for r in s.requires if r not in ids]
        if absent:
            raise ConfigError(KEY, f"section {s.id!r} reads the results of {absent}: list them too")
    return list(sections)


def instantiate_sections(entries: Iterable[Any]) -> list[Section]:
    """The sections of ``entries`` (names or ``_target_`` configs), in their order."""
    sections = []
    for entry in entries:
        section = instantiate(section_config(entry))
        if not isinstance(section, Section):
            raise ConfigError(KEY, f"{entry!r} builds a {type(section).__name__}, not an evaluation Section")
        sections.append(section)
    return _checked(sections)


def default_sections() -> list[Section]:
    """The sections ``configs/evaluate.yaml`` lists (the report's default layout)."""
    return instantiate_sections(OmegaConf.load(CONFIG_DIR / "evaluate.yaml").report.sections)


def computation_order(sections: Sequence[Section]) -> list[Section]:
    """``sections`` with each one after the sections it requires (otherwise in their listed order)."""
    by_id = {s.id: s for s in sections}
    ordered: list[Section] = []

    def visit(section: Section, path: tuple[str, ...]) -> None:
        if section in ordered:
            return
        if section.id in path:
            raise ConfigError(KEY, f"sections require each other in a circle: {' → '.join((*path, section.id))}")
        for required in section.requires:
            visit(by_id[required], (*path, section.id))
        ordered.append(section)

    for section in sections:
        visit(section, ())
    return ordered


def draw_figures(sections: Sequence[Section], results: Mapping[str, Any]) -> dict[str, bytes]:
    """Every figure that ``results`` alone determines, section by section."""
    return {key: png for section in sections for key, png in section.draw(results).items()}
