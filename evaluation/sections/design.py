"""Design of the transfer experiment: whether the arms differ only in their initialisation (DESIGN §10 rules 1–4)
and what each arm's chain cost in supervised steps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.design import design_summary
from evaluation.report_html import details, e, missing, num, table
from evaluation.sections.base import Context, Section

CHECKS = (
    ("equal_schedules", "Every arm runs the same target schedule",
     "The arms' target schedules differ (below): their comparison also compares the schedules"),
    ("same_labelled_subjects", "Every arm saw the same labelled subjects at each k and seed",
     "Arms saw different labelled subjects at the same k and seed"),
    ("labels_bounded_by_k", "No run used more labelled target subjects than its k",
     "Some runs used more labelled target subjects than their k (selection on validation labels)"),
    ("source_roi_excludes_target", "The source stages' ROI excluded the target region",
     "A source stage's ROI included part of the target region: it saw target labels"),
)  # fmt: skip


def _value(v: Any) -> str:
    if isinstance(v, list):
        return " / ".join(e(x) for x in v)
    if isinstance(v, float):
        return num(v, 3)
    return e("–" if v is None else v)


def _check(ok: Any, yes: str, no: str) -> str:
    if ok is None:
        return f"<li>{e(yes)}: not recorded by these runs.</li>"
    mark = "✔" if ok else "✘"
    return f"<li><b>{mark}</b> {e(yes if ok else no)}</li>"


def _arm_rows(d: Mapping[str, Any]) -> list[list[str]]:
    arms = list(dict.fromkeys([*(d.get("target_steps") or {}), *(d.get("selection") or {})]))
    keys = ("target_steps", "warmup_steps", "encoder_lr_scale", "selection", "supervised_steps_total")
    return [[f"<b>{e(a)}</b>", *(_value((d.get(key) or {}).get(a)) for key in keys)] for a in arms]


class Design(Section):
    """The checks of DESIGN §10 read from the runs themselves (``results["design"]``)."""

    id = "design"
    title = "Design of the transfer experiment"

    def compute(self, ctx: Context) -> dict[str, Any]:
        return {"design": design_summary(ctx.runs, ctx.target)}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        d = results.get("design") or {}
        if not d:
            return missing("target-stage runs")
        header = ["arm", f"{e(d.get('target', 'target'))} steps", "warm-up", "encoder lr scale", "weights kept"]
        header += ["supervised steps of the whole chain"]
        body = "<p>A comparison of initialisations means something only if the arms differ in nothing else: the "
        body += "same target schedule (steps, learning rates, warm-up, encoder learning-rate scale), the same labelled "
        body += "subjects for each k and seed, weights kept without extra labels, a source stage that never saw the "
        body += "target region, and a compute-matched control (<code>scratch_matched</code>: from scratch, as many "
        body += "supervised steps as the longest chain) that tells &lsquo;more supervised training helps&rsquo; "
        body += "apart from &lsquo;the source stage&rsquo;s knowledge transfers&rsquo;. These checks read the runs "
        body += "themselves.</p><ul>"
        body += "".join(_check(d.get(key), yes, no) for key, yes, no in CHECKS)
        body += "</ul>" + table(header, _arm_rows(d))
        seen = d.get("max_labelled_seen") or {}
        if seen:
            body += table(["k", "most labelled target subjects any run used"], ([e(k), e(v)] for k, v in seen.items()))
        differences = d.get("schedule_differences") or []
        if differences:
            items = "".join(f"<li>{e(x)}</li>" for x in differences)
            body += details(f"{len(differences)} schedule differences", f"<ul>{items}</ul>")
        return body
