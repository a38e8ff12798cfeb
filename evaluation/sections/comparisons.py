"""Paired comparisons of initialisations at each k: Dice differences paired over test subjects, Holm-corrected."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.learning_curves import comparisons
from evaluation.report_html import ci, details, e, missing, num, pval, table
from evaluation.sections.base import Context, Section


def holm_note(comps: list[Mapping[str, Any]]) -> str:
    """Why a corrected p may not reach 0.05: the family size and the smallest exact Wilcoxon p."""
    per_k = any(c.get("holm_family") == "k" for c in comps)
    m = max((int(c["holm_m"]) for c in comps if c.get("holm_m")), default=0) if per_k else 0
    m = m or sum(1 for c in comps if c.get("p") is not None)
    n = min((int(c["n_subjects"]) for c in comps if c.get("n_subjects")), default=0)
    if not m or not n:
        return ""
    floor = min(1.0, m * 2.0 / 2**n)
    family = f"up to m = {m} comparisons at the same k" if per_k else f"all m = {m} comparisons of this table"
    text = f" Holm's correction runs over {family}. With n = {n} test subjects the "
    text += f"smallest exact Wilcoxon p is {pval(2.0 / 2**n)}, so no corrected p can fall below {pval(floor)} here"
    return text + (": more test subjects are needed to show any difference." if floor >= 0.05 else ".")


def _row(c: Mapping[str, Any]) -> list[str]:
    return [
        e(c["k"]),
        f"{e(c['a'])} − {e(c['b'])}",
        num(c.get("delta")) + ci(c.get("ci95")),
        pval(c.get("p")),
        pval(c.get("p_holm")),
        num(c.get("n_subjects")),
    ]


class Comparisons(Section):
    """Every pair of initialisations at every k (DESIGN §9 ``comparisons``)."""

    id = "comparisons"
    title = "Paired comparisons"

    def compute(self, ctx: Context) -> dict[str, Any]:
        if not ctx.target_rows:
            return {}
        family = str(ctx.cfg.curves.get("holm_family", "all"))
        return {"comparisons": comparisons(ctx.target_rows, n_boot=ctx.n_boot, seed=ctx.seed, holm_family=family)}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        comps = results.get("comparisons") or []
        if not comps:
            return missing("comparisons")
        body = "<p>Difference in mean Dice (a − b; positive = a better), paired over test subjects; two-sided "
        body += f"Wilcoxon signed-rank p and its Holm-corrected value.{holm_note(comps)}</p>"
        header = ["k", "a − b", "difference [95% CI]", "p", "p (Holm)", "test subjects"]
        return body + details(f"{len(comps)} comparisons", table(header, [_row(c) for c in comps]))
