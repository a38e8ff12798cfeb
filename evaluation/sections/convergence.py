"""Convergence: each run's plateau test on its own training curve (DESIGN §10 rule 3), and the curves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from evaluation.captions import setting
from evaluation.design import convergence_rows, training_curves
from evaluation.figures import training_curves_png
from evaluation.report_html import e, missing, num, table
from evaluation.sections.base import Context, Section

LATE = ("last_fifth_gain", "last_fifth_loss_fall", "last_fifth_total_loss_fall")  # the table's last columns


def _fraction(rows: list[Mapping[str, Any]]) -> str:
    known = [r for r in rows if r.get("converged") is not None]
    good = sum(1 for r in known if r["converged"])
    text = f"{good}/{len(known)}" if known else "–"
    return f"<b style='color:#b00'>{text}</b>" if known and good < len(known) else text


def _table_rows(rows_in: list[Mapping[str, Any]], ks: list[str]) -> list[list[str]]:
    """Per arm (target runs) or source stage: the runs that passed, per k, and the largest late Dice gain."""
    out = []
    for role, init, stage in dict.fromkeys((r["role"], r["init"], r.get("stage")) for r in rows_in):
        mine = [r for r in rows_in if (r["role"], r["init"], r.get("stage")) == (role, init, stage)]
        label = e(init) if role == "target" else f"{e(init)} ({e(stage)} stage)"
        if role == "target":
            cells = [_fraction([r for r in mine if str(r["k"]) == k]) for k in ks]
        else:
            cells = [_fraction(mine)] + ["" for _ in ks[1:]]
        worst = [max((r.get(key) or 0.0 for r in mine), default=0.0) for key in LATE]
        out.append([label, *cells, *(num(w, 4) for w in worst)])
    return out


class Convergence(Section):
    """Per arm and k, how many runs passed the plateau test (``convergence``), and their ``training_curves``."""

    id = "convergence"
    title = "Convergence"
    captions: ClassVar[Mapping[str, str]] = {
        "training_curves": "Training loss (left) and Dice on the run's own labelled training subjects (right) of "
        "each arm's full-label target run (first seed) and of each source-stage run; dashed lines did not pass the "
        "plateau test (tissue loss on fixed training patches falling by 2 % or more, or Dice gaining 0.01 or more, "
        "over the last fifth of training).",
    }

    def compute(self, ctx: Context) -> dict[str, Any]:
        return {
            "convergence": convergence_rows(ctx.runs, ctx.target),
            "training_curves": training_curves(ctx.runs, ctx.target),
        }

    def draw(self, results: Mapping[str, Any]) -> dict[str, bytes]:
        curves = results.get("training_curves")
        return {"training_curves": training_curves_png(curves)} if curves else {}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        rows_in = results.get("convergence") or []
        if not rows_in:
            return missing("convergence records") + figures
        ks = sorted({str(r["k"]) for r in rows_in if r["role"] == "target"}, key=lambda k: (k == "all", k))
        header = ["arm", *(f"k = {e(k)}" for k in ks), "largest training-subject Dice gain in the last fifth",
                  "largest tissue-loss fall", "largest fall of both heads' loss (not tested)"]  # fmt: skip
        body = "<p>Each run tests its own training curve for a plateau, using no held-out label: over the last "
        body += "fifth of training the tissue head's loss on fixed training patches must fall by less than 2 % and "
        body += "the Dice on its labelled training subjects gain less than 0.01. The region head's loss is shown "
        body += "beside it but not tested: the study compares tissue. Cells count the runs that passed. An arm whose "
        body += "runs had not converged is flagged "
        body += "in red and is not ranked in the answer above: its Dice says how far its budget got, not how well its "
        body += "initialisation transfers.</p>"
        unconverged = sorted({r["init"] for r in rows_in if r.get("converged") is False and r["role"] == "target"})
        if unconverged:
            body += f'<p class="note">Not converged: {e(", ".join(unconverged))}. Train longer '
            target = e(setting(results, "curves.target") or "<target stage>")
            body += f"(<code>study.overrides.{target}=[trainer.max_steps=…]</code>) before reading their results.</p>"
        return body + figures + table(header, _table_rows(rows_in, ks))
