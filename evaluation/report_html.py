"""Small HTML building blocks of ``report.html``: escaped text, numbers with CIs, p-values, tables, sections."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np


def e(x: Any) -> str:
    """``x`` as escaped HTML text."""
    return html.escape(str(x))


def num(x: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals (integers as they are); ``–`` for None, NaN and infinities."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(x)
    return f"{float(x):.{digits}f}"


def ci(bounds: Any, digits: int = 3) -> str:
    """`` [lo, hi]`` of a two-number interval, or '' when there is none."""
    if not bounds or len(bounds) != 2 or any(v is None for v in bounds):
        return ""
    return f" [{num(bounds[0], digits)}, {num(bounds[1], digits)}]"


def pval(p: Any) -> str:
    """A p-value to three decimals (``<0.001`` below that); ``–`` when there is none."""
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "–"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


def duration(seconds: Any) -> str:
    """Wall-clock seconds in words: ``42 s``, ``12 min 5 s``, ``3 h 07 min``; ``–`` when unknown."""
    if seconds is None or (isinstance(seconds, float) and not math.isfinite(seconds)):
        return "–"
    s = round(float(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """An HTML table (scrolling sideways when wider than the page); cells are already-escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def section(sid: str, title: str, body: str) -> str:
    """A ``<section>`` with an id and a heading."""
    return f'<section id="{sid}"><h2>{e(title)}</h2>{body}</section>'


def details(label: str, body: str) -> str:
    """A collapsed block (``<details>``) that opens on click, for long tables behind a figure."""
    return f"<details><summary>{e(label)}</summary>{body}</details>"


def missing(what: str) -> str:
    """The line a section shows when its part of the evaluation was not run."""
    return f'<p class="missing">Not part of this evaluation ({e(what)} not run or not configured).</p>'


def matrix_tables(
    matrices: Mapping[str, Mapping[str, Mapping[str, Any]]],
    corner: str,
    cis: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
) -> str:
    """One table per ``{name: {row: {column: value}}}`` matrix, with its CI per cell where ``cis`` has one."""
    out = ""
    for name, matrix in matrices.items():
        cols = list(dict.fromkeys(c for r in matrix.values() for c in r))
        bounds = (cis or {}).get(name) or {}
        rows = (
            [f"<b>{e(r)}</b>", *(num(matrix[r].get(c)) + ci((bounds.get(r) or {}).get(c)) for c in cols)]
            for r in matrix
        )
        out += f"<h4>{e(name)}</h4>" + table([e(corner), *(e(c) for c in cols)], rows)
    return out
