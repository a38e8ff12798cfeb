"""The report's answer: for each number of labelled target subjects k, which initialisation is best, by how
much (difference with its 95% CI, Holm-corrected p) and what its chain of runs cost in compute."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.captions import setting
from evaluation.learning_curves import best_init_per_k, supported
from evaluation.report_html import ci, duration, e, missing, num, pval, table
from evaluation.sections.base import Context, Section
from evaluation.sections.budget_check import budget_note
from evaluation.sections.comparisons import holm_note
from evaluation.sections.compute import Compute


def _unranked(b: Mapping[str, Any]) -> str:
    names = b.get("unranked") or []
    return f" Not ranked (not converged): {e(', '.join(names))}." if names else ""


def _seconds(b: Mapping[str, Any], cost: Mapping[str, Any]) -> Any:
    return b.get("compute_seconds", (cost.get(str(b["best"])) or {}).get("seconds"))


def _verdict(b: Mapping[str, Any], cost: Mapping[str, Any]) -> str:
    """One sentence on the best initialisation at one k."""
    if b.get("best") is None:
        return f"k = {e(b['k'])}: no initialisation converged, so none is ranked.{_unranked(b)}"
    text = f"k = {e(b['k'])}: <b>{e(b['best'])}</b> reaches Dice {num(b.get('dice_mean'))}{ci(b.get('ci95'))}"
    if b.get("runner_up") is not None and b.get("delta") is not None:
        bounds, p = b.get("delta_ci95") or [None, None], b.get("p_holm")
        text += f", {num(b['delta'])}{ci(bounds)} above {e(b['runner_up'])} (p Holm {pval(p)}): "
        text += "a difference these data support" if supported(bounds, p) else "not a difference these data can confirm"
    ref = b.get("vs_reference")
    if ref and ref.get("init") != b.get("runner_up") and ref.get("delta") is not None:
        text += f"; {num(ref['delta'])}{ci(ref.get('ci95'))} above {e(ref['init'])} (p Holm {pval(ref.get('p_holm'))})"
    seconds = _seconds(b, cost)
    if seconds is not None:
        text += f". It cost {duration(seconds)} of compute"
    return text + "." + _unranked(b)


def _row(b: Mapping[str, Any], cost: Mapping[str, Any]) -> list[str]:
    frac, ref = b.get("fraction_of_full"), b.get("vs_reference") or {}
    return [
        e(b["k"]),
        f"<b>{e(b['best'])}</b>" if b.get("best") is not None else "none converged",
        num(b.get("dice_mean")) + ci(b.get("ci95")),
        num(None if frac is None else 100 * frac, 1) + ("%" if frac is not None else ""),
        e(b.get("runner_up") or "–"),
        num(b.get("delta")) + ci(b.get("delta_ci95")),
        pval(b.get("p_holm")),
        num(ref.get("delta")) + ci(ref.get("ci95")) if ref else "–",
        pval(ref.get("p_holm")) if ref else "–",
        duration(_seconds(b, cost)),
    ]


class BestPerK(Section):
    """The best initialisation per k (DESIGN §9 ``best_per_k``), from the curves, comparisons and compute."""

    id = "best_per_k"
    title = "Which initialisation is best"
    requires = ("learning_curves", "comparisons", "compute")

    def compute(self, ctx: Context) -> dict[str, Any]:
        if "learning_curves" not in ctx.results:
            return {}
        best = best_init_per_k(ctx.results["learning_curves"], ctx.results.get("comparisons") or [])
        per_init = ctx.results.get("compute_per_init") or {}
        for b in best:
            b["compute_seconds"] = (per_init.get(b["best"]) or {}).get("seconds")
        return {"best_per_k": best}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        curves, comps = results.get("learning_curves") or [], results.get("comparisons") or []
        best = results.get("best_per_k") or (best_init_per_k(curves, comps) if curves else [])
        if not best:
            return missing("label-efficiency sweep")
        cost = results.get("compute_per_init") or {}
        header = ["k", "best", "Dice [95% CI]", "of its full-label Dice", "runner-up", "best − runner-up [95% CI]"]
        header += ["p (Holm)", "best − scratch [95% CI]", "p (Holm)", "compute of best"]
        target = e(setting(results, "curves.target") or "target-stage subject")
        body = f"<p>For each number of labelled {target}s k: the initialisation with the highest mean GM/WM Dice over "
        body += "test subjects, its margin over the next best and over training from scratch (paired over test "
        body += f"subjects), and the compute its whole chain of runs took (see <a href='#{Compute().html_id}'>"
        body += f"{Compute.title}</a>). A difference whose CI includes 0, or whose p (Holm) is ≥ 0.05, is not shown "
        body += "by these data." + holm_note(comps) + "</p><ul>"
        body += "".join(f"<li>{_verdict(b, cost)}</li>" for b in best) + "</ul>" + budget_note(results)
        return body + table(header, [_row(b, cost) for b in best])
