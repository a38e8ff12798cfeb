"""Label efficiency: mean target Dice against the number of labelled target subjects k, per initialisation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from evaluation.captions import join, setting
from evaluation.figures import learning_curves_png
from evaluation.learning_curves import k_order, learning_curves
from evaluation.report_html import ci, details, e, missing, num, table
from evaluation.sections.base import Context, Section


def converged_cell(flag: Any) -> str:
    """``yes``, a red ``no`` or ``–`` for a run's (or an arm's) plateau test."""
    return {True: "yes", False: "<b style='color:#b00'>no</b>"}.get(flag, "–")


def _target(results: Mapping[str, Any]) -> str:
    """The target stage the curves were measured on (the evaluation's ``curves.target``)."""
    return str(setting(results, "curves.target") or "target stage")


def _curves_source(results: Mapping[str, Any]) -> str:
    curves = results.get("learning_curves") or []
    if not curves:
        return ""
    inits = list(dict.fromkeys(c["init"] for c in curves))
    ks = sorted({c["k"] for c in curves}, key=k_order)
    seeds = sorted({int(c["n_seeds"]) for c in curves if c.get("n_seeds") is not None})
    subjects = sorted({int(c["n_subjects"]) for c in curves if c.get("n_subjects") is not None})
    text = f"{len(inits)} initialisations ({join(inits)}) × k ∈ {{{join(ks)}}}"
    if seeds:
        text += f" × {'/'.join(map(str, seeds))} seeds"
    if subjects:
        text += f", {'/'.join(map(str, subjects))} test subjects"
    boot = setting(results, "bootstrap.n")
    return text + (f", {boot} bootstrap resamples" if boot else "")


def _row(c: Mapping[str, Any]) -> list[str]:
    pretrain_seeds = f" × {num(c['n_pretrain_seeds'])}" if c.get("n_pretrain_seeds", 1) > 1 else ""
    return [
        e(c["init"]),
        e(c["k"]),
        num(c.get("dice_mean")) + ci(c.get("ci95")),
        num(c.get("between_seed_sd")),
        " · ".join(f"{e(k)} {num(v.get('dice'))}" for k, v in (c.get("per_class") or {}).items()) or "–",
        num(c.get("fraction_of_full")) + ci(c.get("fraction_ci95")),
        f"{num(c.get('n_seeds'))}{pretrain_seeds}",
        num(c.get("n_subjects")),
        converged_cell(c.get("converged")),
    ]


class LearningCurves(Section):
    """One curve per initialisation with its hierarchical-bootstrap 95% CI (DESIGN §9 ``learning_curves``)."""

    id = "learning_curves"
    title = "Label efficiency"
    captions: ClassVar[Mapping[str, str]] = {
        "learning_curves": "{Target} fine-tuning from each initialisation with k labelled subjects (k = 0: the "
        "source stage's own head, no {target} label); mean GM/WM Dice over test subjects and seeds; bands are 95% "
        "CIs of a bootstrap that resamples test subjects, training seeds and pretraining seeds.",
    }

    def compute(self, ctx: Context) -> dict[str, Any]:
        if not ctx.target_rows:
            return {}
        return {"learning_curves": learning_curves(ctx.target_rows, n_boot=ctx.n_boot, seed=ctx.seed)}

    def draw(self, results: Mapping[str, Any]) -> dict[str, bytes]:
        curves = results.get("learning_curves")
        ylabel = f"{_target(results)} Dice (mean of GM, WM)"
        return {"learning_curves": learning_curves_png(curves, ylabel)} if curves else {}

    def caption(self, family: str, results: Mapping[str, Any]) -> str:
        target = _target(results)
        return self.captions[family].format(target=target, Target=target.capitalize())

    def provenance(self, family: str, results: Mapping[str, Any]) -> str:
        return _curves_source(results)

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        curves = results.get("learning_curves") or []
        if not curves:
            return missing("label-efficiency sweep") + figures
        header = ["initialisation", "k", "mean Dice [95% CI]", "between-seed SD", "Dice per class"]
        header += ["fraction of full-label Dice [95% CI]", "seeds (× pretraining)", "test subjects", "converged"]
        target = e(_target(results))
        body = f"<p>k = 0 is zero-shot transfer: the source stage's own segmentation head on the {target}, before "
        body += f"any {target} label. Intervals resample test subjects, training seeds (which also drew the labelled "
        body += "subjects) and pretraining seeds; the between-seed SD shows how much one training run varies.</p>"
        return body + figures + details("Numbers", table(header, [_row(c) for c in curves]))
