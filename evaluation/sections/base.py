"""What a report section is: one unit that computes its keys of ``results.json``, draws its figures and
renders its part of ``report.html``.

A section is a subclass of :class:`Section` in a file of its own under :mod:`evaluation.sections`, listed in
``report.sections`` of ``configs/evaluate.yaml`` (the order shown). ``bssl evaluate`` hands each section a
:class:`Context` (the config, the runs, what earlier sections found) and merges what :meth:`Section.compute`
returns into ``results.json``; the report then draws each section's figures from those results
(:meth:`Section.draw`) and wraps what :meth:`Section.render` returns in a ``<section>`` whose heading, like
its entry in the report's navigation, is :attr:`Section.title`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, TypeVar

from omegaconf import DictConfig

from evaluation.recorded_split import split_of
from evaluation.runs import Run, finetune_rows
from ssl_pretrain.data.cache import CachedSubject

T = TypeVar("T")


@dataclass
class Context:
    """What every section computes from.

    Attributes:
        cfg: the ``bssl evaluate`` config.
        runs: the benchmark runs (cross-fitted prediction models left out).
        results: ``results.json`` so far: the evaluation's header and the keys of the sections computed before.
        figures: figure key -> PNG bytes of figures that need more than ``results`` (images, per-subject tables),
            drawn while computing.
    """

    cfg: DictConfig
    runs: list[Run]
    results: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def n_boot(self) -> int:
        return int(self.cfg.bootstrap.n)

    @property
    def classes(self) -> list[str]:
        """The classes averaged into a run's Dice (``curves.classes``)."""
        return list(self.cfg.curves.classes)

    @property
    def target(self) -> str:
        """The stage whose runs make the label-efficiency curves (``curves.target``)."""
        return str(self.cfg.curves.target)

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        """Per-test-subject Dice rows of every fine-tuning run, for the classes of :attr:`classes`."""
        classes = self.classes
        return [row for r in self.runs if r.kind == "finetune" for row in finetune_rows(r) if row["class"] in classes]

    @cached_property
    def target_rows(self) -> list[dict[str, Any]]:
        """The :attr:`rows` in the target region."""
        return [row for row in self.rows if row["region"] == self.target]

    @cached_property
    def splits(self) -> dict[str, list[CachedSubject]]:
        """The cached subjects of each split (the runs' recorded split; read on first use)."""
        return split_of(self.cfg, self.runs)

    def once(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()``, run once per evaluation for ``key`` (a measurement shared by several sections)."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]  # type: ignore[no-any-return]


class Section(ABC):
    """One part of the report: its id, title, results, figures, captions and HTML.

    Class attributes:
        id: the section's key in ``results.json`` (a section may add companion keys beside it, e.g. CIs).
        title: the heading, and the label in the report's navigation.
        anchor: the HTML id (default: ``id`` with ``-`` for ``_``).
        requires: ids of the sections whose results :meth:`compute` reads; they are computed first.
        captions: figure key, or the start of one, -> what such a figure shows. A figure whose key starts with
            one of them is placed in this section.
    """

    id: ClassVar[str]
    title: ClassVar[str]
    anchor: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    captions: ClassVar[Mapping[str, str]] = {}

    @property
    def html_id(self) -> str:
        """The id of the section's ``<section>`` element (the target of its navigation link)."""
        return self.anchor or self.id.replace("_", "-")

    def compute(self, ctx: Context) -> dict[str, Any]:
        """The keys this section adds to ``results.json`` (none by default)."""
        return {}

    def draw(self, results: Mapping[str, Any]) -> dict[str, bytes]:
        """Figure key -> PNG bytes of the figures that ``results`` alone determines (none by default)."""
        return {}

    def family(self, key: str) -> str | None:
        """The entry of :attr:`captions` that figure ``key`` belongs to, or None when it is not this section's."""
        return next((f for f in self.captions if key.startswith(f)), None)

    def caption(self, family: str, results: Mapping[str, Any]) -> str:
        """What a figure of ``family`` shows: its :attr:`captions` entry (a section may word it from ``results``)."""
        return self.captions[family]

    def provenance(self, family: str, results: Mapping[str, Any]) -> str:
        """What a figure of ``family`` was made from, in words ('' when ``results`` does not say)."""
        return ""

    @abstractmethod
    def render(self, results: Mapping[str, Any], figures: str) -> str:
        """The section's HTML body (its heading is added around it); ``figures`` is its figures' HTML."""
