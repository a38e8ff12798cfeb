"""Transfer hypotheses of a study: where an arm's weights start, as data (``configs/hypothesis/<name>.yaml``).

A hypothesis names

* ``pretrain``: a self-supervised method (``configs/method/<name>.yaml``) or ``null``;
* ``sources``: the supervised source stages trained before the target, in order (``configs/stage/<name>.yaml``,
  e.g. ``[subcortical]``; ``[]`` for none);
* ``match_compute``: train from scratch on the target for as many supervised steps as the longest chain of
  the study's other arms (source stages + target), the control that tells "more supervised training helps"
  apart from "what the source taught transfers" (DESIGN §10 rule 2). It may not pretrain or have sources.

An arm with a source stage has a segmentation head before it sees the target, so it gets a zero-shot
point (k = 0) on the target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_pretrain.config import config_options
from ssl_pretrain.errors import ConfigError

KEYS = ("pretrain", "sources", "match_compute")


@dataclass(frozen=True)
class Hypothesis:
    """One arm of the transfer study (see the module docstring)."""

    name: str
    pretrain: str | None = None
    sources: tuple[str, ...] = ()
    match_compute: bool = False

    @property
    def has_head(self) -> bool:
        """Whether the arm reaches the target with a trained segmentation head (a zero-shot point)."""
        return bool(self.sources)

    @property
    def base(self) -> str:
        """Where its weights start before any supervised stage: ``scratch`` or ``ssl_<method>``."""
        return f"ssl_{self.pretrain}" if self.pretrain else "scratch"

    def record(self) -> dict[str, Any]:
        """Its entry in ``study.json``."""
        return {"pretrain": self.pretrain, "sources": list(self.sources), "match_compute": self.match_compute}


def source_label(pretrain: str | None, sources: tuple[str, ...]) -> str:
    """The name of a chain of source stages, as reports name encoders: ``subcortical`` (from scratch),
    ``ssl_mae+subcortical``, ``ssl_mae+cerebellum+subcortical``."""
    return "+".join(([f"ssl_{pretrain}"] if pretrain else []) + list(sources))


def _known(group: str) -> list[str]:
    """The options of a config group, the app's ``hydra.searchpath`` folders included (a lab's own stages)."""
    return config_options(group)


def _one(name: str, spec: Any) -> Hypothesis:
    key = f"study.hypotheses.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(key, f"expected a mapping with {', '.join(KEYS)}, got {spec!r}")
    if "subcortical" in spec:
        raise ConfigError(f"{key}.subcortical", "replaced by sources: [subcortical] (an ordered list of stages)")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", f"not a hypothesis setting (known: {', '.join(KEYS)})")
    method = spec.get("pretrain")
    if method is not None and str(method) not in _known("method"):
        raise ConfigError(f"{key}.pretrain", f"unknown method {method!r} (known: {_known('method')})")
    sources = spec.get("sources") or []
    if isinstance(sources, str) or not all(isinstance(s, str) for s in sources):
        raise ConfigError(f"{key}.sources", f"expected a list of stage names, got {sources!r}")
    for stage in sources:
        if stage not in _known("stage"):
            raise ConfigError(f"{key}.sources", f"unknown stage {stage!r} (known: {_known('stage')})")
    match = spec.get("match_compute", False)
    if not isinstance(match, bool):
        raise ConfigError(f"{key}.match_compute", f"expected true or false, got {match!r}")
    if match and (method is not None or sources):
        raise ConfigError(
            f"{key}.match_compute", "a compute-matched control trains from scratch: no pretrain, no sources"
        )
    return Hypothesis(str(name), None if method is None else str(method), tuple(sources), match)


def hypotheses(cfg: DictConfig) -> list[Hypothesis]:
    """The study's hypotheses, checked, in config order.

    Raises:
        ConfigError: none is selected, or one names an unknown method or stage or a bad setting.
    """
    raw = OmegaConf.to_container(cfg.study.hypotheses, resolve=True)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("hypothesis", "no hypothesis selected; e.g. hypothesis=[scratch,ssl_mae]")
    out = [_one(str(name), spec) for name, spec in raw.items()]
    if all(h.match_compute for h in out):
        raise ConfigError("hypothesis", "a compute-matched control needs at least one other hypothesis to match")
    return out
