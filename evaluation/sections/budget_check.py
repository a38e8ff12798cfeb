"""Budget check: does the same arm trained longer still score higher on the test subjects?

The convergence test (:mod:`evaluation.sections.convergence`) reads each run's own training loss, and under a
cosine schedule the last fifth of training moves slowly whatever the budget: a run can pass it far from the
plateau of the outcome. The compute-matched control is the scratch arm trained as long as the longest chain
(DESIGN §10 rule 2), the same schedule otherwise, so the study already holds the outcome-level test. At each k
where both ran, ``budget_check`` records the longer arm's Dice difference over the shorter one, paired over test
subjects and seeds (the ``comparisons`` entry), and ``budget_short``: True when the data support a gain (CI
above 0, Holm p < 0.05). Then the target budget is short of the plateau, and differences between arms at that
budget can be training that one arm had and another had not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evaluation.learning_curves import k_order, normalise_k, paired_difference, supported
from evaluation.report_html import ci, e, missing, num, pval, table
from evaluation.runs import Run
from evaluation.sections.base import Context, Section


def _init(run: Run) -> str | None:
    init = (run.sidecar.get("init") or {}).get("init")
    return None if init is None else str(init)


def _steps(runs: Sequence[Run]) -> list[int]:
    return sorted({int(r.steps) for r in runs if r.steps is not None})


def _check(
    k: str, arm: str, longer: str, runs: tuple[list[Run], list[Run]], comps: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The row of one k: ``runs`` are the longer arm's and the shorter arm's target runs at ``k``."""
    long_steps, short_steps = _steps(runs[0]), _steps(runs[1])
    pair = paired_difference(comps, normalise_k(k), longer, arm)
    delta, bounds, p = (pair or {}).get("delta"), (pair or {}).get("ci95"), (pair or {}).get("p_holm")
    return {
        "k": normalise_k(k),
        "arm": arm,
        "longer": longer,
        "steps": short_steps,
        "longer_steps": long_steps,
        "ratio": long_steps[-1] / short_steps[-1] if long_steps and short_steps else None,
        "delta": delta,
        "ci95": bounds,
        "p_holm": p,
        "n_subjects": (pair or {}).get("n_subjects"),
        "budget_short": None if delta is None else bool(supported(bounds, p) and delta > 0),
    }


def budget_checks(runs: Sequence[Run], target: str, comps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per compute-matched arm and k (k > 0) that its shorter arm also ran.

    The shorter arm of a compute-matched arm is the arm of the target stage that starts from the same
    initialisation (``init`` in ``model.json``, e.g. ``scratch``) without the ``compute_matched`` flag.

    Returns:
        Dicts with ``k``, ``arm`` and ``longer`` (arm names), ``steps`` and ``longer_steps`` (the target runs'
        optimiser steps), ``ratio`` (longest of ``longer`` over longest of ``arm``), ``delta`` (longer − arm),
        ``ci95``, ``p_holm``, ``n_subjects`` and ``budget_short`` (None where the comparison is missing).
    """
    target_runs = [r for r in runs if r.kind == "finetune" and r.stage == target and r.k != "0"]
    matched = [r for r in target_runs if r.sidecar.get("compute_matched")]
    rows = []
    for longer in dict.fromkeys(r.label for r in matched):
        mine = [r for r in matched if r.label == longer]
        inits = {_init(r) for r in mine}
        shorter = [r for r in target_runs if not r.sidecar.get("compute_matched") and _init(r) in inits]
        for arm in dict.fromkeys(r.label for r in shorter):
            theirs = [r for r in shorter if r.label == arm]
            for k in sorted({r.k for r in mine} & {r.k for r in theirs}, key=_k_key):
                at_k = ([r for r in mine if r.k == k], [r for r in theirs if r.k == k])
                rows.append(_check(k, arm, longer, at_k, comps))
    return rows


def _k_key(k: str) -> tuple[int, float]:
    return k_order(normalise_k(k))


def _steps_text(steps: Sequence[int]) -> str:
    return "/".join(f"{s:,}" for s in steps) if steps else "?"


def _sentence(row: Mapping[str, Any]) -> str:
    ratio = f"{row['ratio']:.1f}× as long" if row.get("ratio") else "longer"
    text = f"k = {e(row['k'])}: {e(row['longer'])} ({e(row['arm'])} trained {ratio}, {_steps_text(row['longer_steps'])}"
    text += f" against {_steps_text(row['steps'])} steps) scores {num(row.get('delta'))}{ci(row.get('ci95'))}"
    text += f" (p Holm {pval(row.get('p_holm'))}) "
    if row.get("budget_short") is None:
        return text + "– no paired comparison was made, so the budget was not checked."
    if row["budget_short"]:
        return text + "<b style='color:#b00'>higher: the budget is short of the plateau.</b>"
    return text + "– no gain from training longer that these data support."


def budget_note(results: Mapping[str, Any]) -> str:
    """A warning for the report's answer when the budget check failed at some k ('' otherwise)."""
    short = [r for r in results.get("budget_check") or [] if r.get("budget_short")]
    if not short:
        return ""
    ks = ", ".join(dict.fromkeys(str(r["k"]) for r in short))
    return (
        f'<p class="note">Budget check failed at k = {e(ks)}: {_sentence(short[0])} At this budget a difference '
        f"between arms can be training that one had and another had not (<a href='#{BudgetCheck().html_id}'>"
        f"{BudgetCheck.title}</a>).</p>"
    )


class BudgetCheck(Section):
    """The compute-matched control against its shorter arm (``budget_check``): is the target budget long enough?"""

    id = "budget_check"
    title = "Budget check"
    requires = ("comparisons",)

    def compute(self, ctx: Context) -> dict[str, Any]:
        return {"budget_check": budget_checks(ctx.runs, ctx.target, ctx.results.get("comparisons") or [])}

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        rows = results.get("budget_check") or []
        if not rows:
            return missing("a compute-matched control beside the arm it lengthens")
        body = "<p>The convergence test reads each run's training loss. This check reads the outcome: the "
        body += "compute-matched control is the same arm trained longer, on the same schedule otherwise. If it "
        body += "scores higher on the test subjects by a difference these data support (CI above 0, p Holm < 0.05), "
        body += "the target budget has not reached the plateau, whatever the loss test says. Then compare arms with "
        body += "the control, not with the shorter arm, or train longer "
        body += "(<code>study.overrides.&lt;target&gt;=[trainer.max_steps=…]</code>).</p><ul>"
        body += "".join(f"<li>{_sentence(r)}</li>" for r in rows) + "</ul>"
        header = ["k", "arm", "steps", "trained longer", "steps", "longer − arm [95% CI]", "p (Holm)", "budget"]
        cells = [
            [
                e(r["k"]),
                e(r["arm"]),
                _steps_text(r["steps"]),
                e(r["longer"]),
                _steps_text(r["longer_steps"]),
                num(r.get("delta")) + ci(r.get("ci95")),
                pval(r.get("p_holm")),
                {True: "<b style='color:#b00'>short</b>", False: "no gain shown", None: "–"}[r.get("budget_short")],
            ]
            for r in rows
        ]
        return body + table(header, cells)
