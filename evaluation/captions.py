"""Figure captions for ``report.html``: what each figure shows, and what it was made from.

Every caption has three parts: what the figure shows (its section's ``captions``), what it was made from (the
runs, seeds, subjects and settings behind it, read from ``results.json`` by its section's ``provenance``), and
the run summary of the whole evaluation (data, seeds: :func:`run_summary`), joined by :func:`figure_caption`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (empty mappings stay as values)."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_summary(results: Mapping[str, Any]) -> str:
    """One line saying what was run (preset, seeds, data), appended to every caption."""
    flat = flatten(results.get("config") or {})
    wanted = [k for k in flat if k.split(".")[-1] in ("preset", "seeds", "seed", "root", "probe", "n_voxels")]
    parts = [f"{k}={flat[k]}" for k in wanted[:6]]
    return "; ".join(parts) if parts else "configuration in the 'What was run' section"


def setting(results: Mapping[str, Any], key: str) -> Any:
    """A setting of the evaluation's own config (``evaluate_config``), by dotted key."""
    return flatten(results.get("evaluate_config") or {}).get(key)


def join(values: Iterable[Any]) -> str:
    """``a, b, c``."""
    return ", ".join(str(v) for v in values)


def figure_caption(shows: str, source: str, results: Mapping[str, Any]) -> str:
    """The full caption: what the figure ``shows``, what it was made from (``source``, if known), the run."""
    made = f" Made from: {source}." if source else ""
    return f"{shows}{made} Run: {run_summary(results)}."
