"""What was run: the data, the settings of the evaluation and every run directory behind the numbers, with the
wall-clock time of each run (``results["compute"]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evaluation.captions import flatten
from evaluation.report_html import details, duration, e, missing, table
from evaluation.sections.base import Section

# Settings of the evaluation itself shown here (the full config is in results.json).
EVALUATE_SETTINGS = (
    "data.split_seed", "data.test_fraction", "data.modalities", "curves.classes", "bootstrap.n", "probe.probe",
    "probe.voxels_per_subject", "probe.max_subjects", "baselines.methods", "group.control", "group.covariates",
)  # fmt: skip


def _settings(results: Mapping[str, Any], flat: dict[str, Any]) -> str:
    evaluation = flatten(results.get("evaluate_config") or {})
    flat.update({k: evaluation[k] for k in EVALUATE_SETTINGS if k in evaluation and k not in flat})
    return table(["setting", "value"], ([e(k), e(v)] for k, v in flat.items())) if flat else missing("config")


def _times(compute: Mapping[str, Any]) -> str:
    if not compute:
        return ""
    rows = ([e(k), duration(v.get("seconds")), e(v.get("device", ""))] for k, v in compute.items())
    return details(f"Wall-clock time of each of the {len(compute)} runs", table(["run", "time", "device"], rows))


class WhatWasRun(Section):
    """The configuration and the runs (results.json's ``config``, ``evaluate_config`` and ``compute``)."""

    id = "what_was_run"
    title = "What was run"

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        flat = flatten(results.get("config") or {})
        runs = flat.pop("runs", None)
        body = "<p>Every number above comes from the runs listed here; re-running with other seeds gives other "
        body += "numbers, which is why each carries its 95% confidence interval.</p>" + _settings(results, flat)
        if runs:
            items = "".join(f"<li>{e(r)}</li>" for r in runs)
            body += details(f"{len(runs)} run directories", f"<ul>{items}</ul>")
        return body + _times(results.get("compute") or {})
