"""Report sections on how the experiment was run: its design (DESIGN §10 rules 1–4) and its convergence."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.report_html import details, e, missing, num, section, table


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


def design_section(results: Mapping[str, Any]) -> str:
    """Whether the arms differ only in their initialisation, and what each arm's chain cost in supervised steps."""
    d = results.get("design") or {}
    if not d:
        return section("design", "Design of the transfer experiment", missing("target-stage runs"))
    arms = list(dict.fromkeys([*(d.get("target_steps") or {}), *(d.get("selection") or {})]))
    rows = [
        [
            f"<b>{e(a)}</b>",
            _value((d.get("target_steps") or {}).get(a)),
            _value((d.get("warmup_steps") or {}).get(a)),
            _value((d.get("encoder_lr_scale") or {}).get(a)),
            _value((d.get("selection") or {}).get(a)),
            _value((d.get("supervised_steps_total") or {}).get(a)),
        ]
        for a in arms
    ]
    header = ["arm", f"{e(d.get('target', 'target'))} steps", "warm-up", "encoder lr scale", "weights kept"]
    header += ["supervised steps of the whole chain"]
    seen = d.get("max_labelled_seen") or {}
    body = "<p>A comparison of initialisations means something only if the arms differ in nothing else: the same "
    body += "target schedule (steps, learning rates, warm-up, encoder learning-rate scale), the same labelled "
    body += "subjects for each k and seed, weights kept without extra labels, a source stage that never saw the "
    body += "target region, and a compute-matched control (<code>scratch_matched</code>: from scratch, as many "
    body += "supervised steps as the longest chain) that tells &lsquo;more supervised training helps&rsquo; apart "
    body += "from &lsquo;the source stage&rsquo;s knowledge transfers&rsquo;. These checks read the runs "
    body += "themselves.</p><ul>"
    checks = [
        ("equal_schedules", "Every arm runs the same target schedule",
         "The arms' target schedules differ (below): their comparison also compares the schedules"),
        ("same_labelled_subjects", "Every arm saw the same labelled subjects at each k and seed",
         "Arms saw different labelled subjects at the same k and seed"),
        ("labels_bounded_by_k", "No run used more labelled target subjects than its k",
         "Some runs used more labelled target subjects than their k (selection on validation labels)"),
        ("source_roi_excludes_target", "The source stages' ROI excluded the target region",
         "A source stage's ROI included part of the target region: it saw target labels"),
    ]  # fmt: skip
    body += "".join(_check(d.get(key), yes, no) for key, yes, no in checks)
    body += "</ul>" + table(header, rows)
    if seen:
        body += table(["k", "most labelled target subjects any run used"], ([e(k), e(v)] for k, v in seen.items()))
    differences = d.get("schedule_differences") or []
    if differences:
        items = "".join(f"<li>{e(x)}</li>" for x in differences)
        body += details(f"{len(differences)} schedule differences", f"<ul>{items}</ul>")
    return section("design", "Design of the transfer experiment", body)


def _fraction(rows: list[Mapping[str, Any]]) -> str:
    known = [r for r in rows if r.get("converged") is not None]
    good = sum(1 for r in known if r["converged"])
    text = f"{good}/{len(known)}" if known else "–"
    return f"<b style='color:#b00'>{text}</b>" if known and good < len(known) else text


def convergence_section(results: Mapping[str, Any], figs: str) -> str:
    """The training curves and, per arm and k, how many runs passed the plateau test."""
    rows_in = results.get("convergence") or []
    if not rows_in:
        return section("convergence", "Convergence", missing("convergence records") + figs)
    keys = list(dict.fromkeys((r["role"], r["init"], r.get("stage")) for r in rows_in))
    ks = sorted({str(r["k"]) for r in rows_in if r["role"] == "target"}, key=lambda k: (k == "all", k))
    table_rows = []
    for role, init, stage in keys:
        mine = [r for r in rows_in if (r["role"], r["init"], r.get("stage")) == (role, init, stage)]
        label = e(init) if role == "target" else f"{e(init)} ({e(stage)} stage)"
        if role == "target":
            cells = [_fraction([r for r in mine if str(r["k"]) == k]) for k in ks]
        else:
            cells = [_fraction(mine)] + ["" for _ in ks[1:]]
        worst = max((r.get("last_fifth_gain") or 0.0 for r in mine), default=0.0)
        table_rows.append([label, *cells, num(worst, 4)])
    header = ["arm", *(f"k = {e(k)}" for k in ks), "largest training-subject Dice gain in the last fifth"]
    body = "<p>Each run tests its own training curve for a plateau, using no held-out label: over the last fifth "
    body += "of training its loss must fall by less than 2 % and the Dice on its labelled training subjects gain "
    body += "less than 0.01. Cells count the runs that passed. An arm whose runs had not converged is flagged "
    body += "in red and is not ranked in the answer above: its Dice says how far its budget got, not how well its "
    body += "initialisation transfers.</p>"
    unconverged = sorted({r["init"] for r in rows_in if r.get("converged") is False and r["role"] == "target"})
    if unconverged:
        body += f'<p class="note">Not converged: {e(", ".join(unconverged))}. Train longer '
        body += "(<code>study.overrides.brainstem=[trainer.max_steps=…]</code>) before reading their results.</p>"
    return section("convergence", "Convergence", body + figs + table(header, table_rows))
