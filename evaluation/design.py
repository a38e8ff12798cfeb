"""What the evaluated runs show about the experiment's design (DESIGN §9 ``design``, §10 rules 1–4).

Read from the runs themselves, not from the study's intentions, so that runs gathered by hand are held to
the same rules:

* ``target_steps`` / ``encoder_lr_scale`` / ``warmup_steps`` per arm, and ``equal_schedules``: whether the
  arms' target runs at each (k, seed) have the same resolved config except where their weights start
  (:func:`evaluation.protocol.differences`) and, for compute-matched arms, their steps;
  ``schedule_differences`` lists what differs otherwise;
* ``same_labelled_subjects``: whether every arm's run at each (k, seed) saw the same labelled subjects;
* ``selection`` per arm and ``max_labelled_seen`` per k: the most labelled target subjects any run at that k
  used (training + selection), and ``labels_bounded_by_k`` whether that never exceeds k;
* ``source_roi_excludes_target``: whether every source stage's ROI excluded the target region;
* ``supervised_steps_total`` per arm: supervised steps of its longest chain (source stages + target).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

from evaluation.protocol import MATCHED, STEPS, differences, flat
from evaluation.runs import Run
from ssl_pretrain.data.labels import region_group_indices

CONFIG_FILE = "config.yaml"


def _per_arm(values: dict[str, set[Any]]) -> dict[str, Any]:
    """One value per arm where all its runs agree, else the sorted list of what they used."""
    return {arm: next(iter(v)) if len(v) == 1 else sorted(v, key=str) for arm, v in values.items()}


def _config(run: Run) -> dict[str, Any]:
    path = run.path / CONFIG_FILE
    return flat(OmegaConf.to_container(OmegaConf.load(path), resolve=False)) if path.is_file() else {}  # type: ignore[arg-type]


def _matched(run: Run) -> bool:
    return bool(run.sidecar.get("compute_matched"))


def _excludes(source: dict[str, Any], target: str) -> bool:
    stage = source.get("stage_config") or {}
    if not stage.get("roi_exclude"):
        return False
    try:
        return set(region_group_indices(target)) <= set(region_group_indices(str(stage["roi_exclude"])))
    except KeyError:
        return False


def _schedules(target: Sequence[Run]) -> list[str]:
    """Keys in which arms' runs at one (k, seed) differ beyond their initialisation (and matched steps)."""
    found: list[str] = []
    groups: dict[tuple[str, int], list[Run]] = {}
    for run in target:
        if run.k != "0":
            groups.setdefault((run.k, run.seed), []).append(run)
    for (k, seed), runs in groups.items():
        configs = [(r, _config(r)) for r in runs]
        reference = next(((r, c) for r, c in configs if not _matched(r)), configs[0])
        for run, cfg in configs:
            if not cfg or not reference[1]:
                continue
            ignore = ("seed", "labels.seed", "labels.k") + ((STEPS, MATCHED) if _matched(run) else ())
            for key in differences(reference[1], cfg, allowed=ignore):
                found.append(f"k={k}, seed {seed}: {reference[0].label} vs {run.label}: {key}")
    return sorted(set(found))


def _same_labels(target: Sequence[Run]) -> bool:
    chosen: dict[tuple[str, int], set[tuple[str, ...]]] = {}
    for run in target:
        if run.k != "0":
            chosen.setdefault((run.k, run.seed), set()).add(tuple(run.sidecar.get("labelled_subjects") or ()))
    return all(len(v) == 1 for v in chosen.values())


def design_summary(runs: Sequence[Run], target: str) -> dict[str, Any]:
    """The ``design`` section of ``results.json`` (module docstring); empty without target-stage runs."""
    target_runs = [r for r in runs if r.kind == "finetune" and r.stage == target]
    if not target_runs:
        return {}
    steps: dict[str, set[Any]] = {}
    scale: dict[str, set[Any]] = {}
    warmup: dict[str, set[Any]] = {}
    selection: dict[str, set[Any]] = {}
    chain: dict[str, set[Any]] = {}
    seen: dict[str, int] = {}
    for run in target_runs:
        if run.k == "0":
            selection.setdefault(run.label, set()).add("zero-shot (k = 0, no training)")
            continue
        optim = run.sidecar.get("optim") or {}
        steps.setdefault(run.label, set()).add(run.steps)
        scale.setdefault(run.label, set()).add(optim.get("encoder_lr_scale"))
        warmup.setdefault(run.label, set()).add(optim.get("warmup_steps"))
        selection.setdefault(run.label, set()).add((run.sidecar.get("selection") or {}).get("description", "unknown"))
        chain.setdefault(run.label, set()).add(run.supervised_steps)
        labels = run.sidecar.get("labels") or {}
        used = int(labels.get("seen", len(run.sidecar.get("labelled_subjects") or [])))
        seen[run.k] = max(seen.get(run.k, 0), used)
    sources = [s for r in target_runs for _, s in r.sources if s.get("task") == "segmentation"]
    differing = _schedules(target_runs)
    bounded = all(k == "all" or used <= int(k) for k, used in seen.items())
    return {
        "target": target,
        "target_steps": _per_arm(steps),
        "encoder_lr_scale": _per_arm(scale),
        "warmup_steps": _per_arm(warmup),
        "equal_schedules": not differing,
        "schedule_differences": differing,
        "same_labelled_subjects": _same_labels(target_runs),
        "selection": _per_arm(selection),
        "max_labelled_seen": seen,
        "labels_bounded_by_k": bounded,
        "source_roi_excludes_target": all(_excludes(s, target) for s in sources) if sources else None,
        "supervised_steps_total": _per_arm(chain),
    }


def _downsample(points: Sequence[Sequence[float]], n: int = 200) -> list[list[float]]:
    """At most ``n`` points of a curve: the mean of consecutive bins (a training loss is noisy per step)."""
    if len(points) <= n:
        return [list(p) for p in points]
    bins = [points[round(i * len(points) / n) : round((i + 1) * len(points) / n)] for i in range(n)]
    return [[float(b[-1][0]), float(sum(p[1] for p in b) / len(b))] for b in bins if b]


def convergence_rows(runs: Sequence[Run], target: str) -> list[dict[str, Any]]:
    """DESIGN §9 ``convergence``: one row per trained run of the target and source stages."""
    rows = []
    for run in runs:
        conv = run.sidecar.get("convergence") if run.kind == "finetune" else None
        if not conv:
            continue
        rows.append(
            {
                "stage": run.stage,
                "role": "target" if run.stage == target else "source",
                "init": run.label,
                "k": run.k,
                "seed": run.seed,
                "pretrain_seed": run.pretrain_seed,
                "converged": conv.get("converged"),
                "last_fifth_gain": conv.get("train_dice_gain"),
                "last_fifth_loss_fall": conv.get("loss_fall"),
                "last_fifth_total_loss_fall": conv.get("total_loss_fall"),  # both heads (described, not tested)
                "tested_loss": conv.get("loss", "total"),  # runs from before the setting tested both heads
                "steps": conv.get("steps"),
                "run": str(run.path),
            }
        )
    return rows


def training_curves(runs: Sequence[Run], target: str) -> dict[str, dict[str, Any]]:
    """Loss and training-subject Dice curves of each arm's full-label target run (first seed) and of each
    source-stage run, for the report's figure (``{label: {"stage", "loss", "train_dice", "converged"}}``)."""
    out: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: (r.seed, str(r.path))):
        conv = run.sidecar.get("convergence") if run.kind == "finetune" else None
        if not conv or (run.stage == target and run.k != "all"):
            continue
        label = run.label if run.stage == target else f"{run.label} ({run.stage} stage)"
        out.setdefault(
            label,
            {
                "stage": run.stage,
                "seed": run.seed,
                "loss": _downsample(conv.get("loss") or []),
                "train_dice": conv.get("train_dice") or [],
                "converged": conv.get("converged"),
            },
        )
    return out
