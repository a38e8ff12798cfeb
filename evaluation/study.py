"""``bssl study``: the whole transfer study in one process, from (simulated) data to ``report.html``.

Data flow (each arrow is one or more stages of :mod:`evaluation.stages`, reused when already finished)::

    demo cohort (only if data.root is missing; a simulation)
      → pretrain: one run per SSL method a hypothesis names         (study.hypotheses.*.pretrain)
      → finetune stage=subcortical: one per initialisation that a hypothesis trains further
      → finetune stage=brainstem: every hypothesis × study.k × study.seeds   (the label-efficiency sweep)
      → predict: every subject, with the k=all brainstem model of study.predict_with
      → evaluate: transfer matrix, CKA, learning curves, paired tests, baselines, group analysis
      → <study run dir>/study.json + report.html (a copy of the evaluation's report)

Hypotheses come from ``configs/experiment/<name>.yaml`` (``experiment=[…]``); presets (``preset=quick``,
``preset=full``) set the steps and the network of every stage through ``study.overrides``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from evaluation.stages import Stage, compose_stage, run_stage
from finetune.selection import parse_k
from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.validate import dataset_fingerprint, load_records
from ssl_pretrain.errors import ConfigError, DataError
from ssl_pretrain.models.checkpoint import read_sidecar
from ssl_pretrain.run_dir import run_context, write_json_atomic

log = logging.getLogger(__name__)

DEFAULT_DEMO_ROOT = "data/demo"  # configs/data/default.yaml's data.root


def hypotheses(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """The study's hypotheses, checked: name → ``{pretrain: method | None, subcortical: bool}``.

    Raises:
        ConfigError: none is selected, or one names a method that ``configs/method/`` lacks.
    """
    raw = OmegaConf.to_container(cfg.study.hypotheses, resolve=True)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("experiment", "no hypothesis selected; e.g. experiment=[scratch,ssl_mae]")
    out = {}
    for name, spec in raw.items():
        method = spec.get("pretrain") if isinstance(spec, dict) else None
        if method is not None and not (CONFIG_DIR / "method" / f"{method}.yaml").is_file():
            known = sorted(p.stem for p in (CONFIG_DIR / "method").glob("*.yaml"))
            raise ConfigError(f"study.hypotheses.{name!s}.pretrain", f"unknown method {method!r} (known: {known})")
        out[str(name)] = {
            "pretrain": None if method is None else str(method),
            "subcortical": bool(spec.get("subcortical", False)),
        }
    return out


def needs_demo(cfg: DictConfig) -> bool:
    """Whether the study should simulate the demo cohort into ``data.root`` first (``study.simulate_demo``).

    Raises:
        DataError: ``data.root`` is missing and the study may not simulate there.
    """
    root = Path(str(cfg.data.root))
    if cfg.data.get("manifest") or (root.is_dir() and any(root.iterdir())):
        return False
    mode = str(cfg.study.simulate_demo).lower()
    if mode == "true" or (mode == "auto" and str(cfg.data.root).rstrip("/") == DEFAULT_DEMO_ROOT):
        return True
    what = "give a BIDS dataset (data.root=DIR), or set study.simulate_demo=true for the simulated cohort"
    raise DataError(root, f"does not exist or is empty: {what}")


def _overrides(cfg: DictConfig, stage: str) -> list[str]:
    common = list(cfg.study.overrides.common) if stage in ("pretrain", "subcortical", "brainstem") else []
    return common + list(cfg.study.overrides.get(stage) or [])


class Study:
    """Plans and runs the stages of one study config (see the module docstring)."""

    def __init__(self, cfg: DictConfig, fingerprint: str) -> None:
        self.cfg, self.fingerprint = cfg, fingerprint
        self.hypotheses = hypotheses(cfg)
        self.ks = [str(k) for k in cfg.study.k]
        for k in self.ks:
            parse_k(k)
        self.seeds = [int(s) for s in cfg.study.seeds]
        if not self.ks or not self.seeds:
            raise ConfigError("study.k / study.seeds", "need at least one k and one seed")
        self.done: list[Stage] = []
        self.reused = 0

    def _run(self, stage: Stage) -> Stage:
        self.reused += run_stage(stage, f"[{len(self.done) + 1}]")
        self.done.append(stage)
        return stage

    def pretrain(self) -> dict[str, Stage]:
        """One pretraining run per method the hypotheses name."""
        methods = sorted({h["pretrain"] for h in self.hypotheses.values() if h["pretrain"]})
        out = {}
        for method in methods:
            overrides = [f"method={method}", *_overrides(self.cfg, "pretrain")]
            stage = compose_stage(f"pretrain-{method}", "pretrain", overrides, self.cfg, self.fingerprint)
            stage.info["method"] = method
            out[method] = self._run(stage)
        return out

    def subcortical(self, encoders: Mapping[str, Stage]) -> dict[str | None, Stage]:
        """One subcortical-stage run per initialisation (scratch or a method) that a hypothesis trains further."""
        sources = sorted({h["pretrain"] for h in self.hypotheses.values() if h["subcortical"]}, key=str)
        out: dict[str | None, Stage] = {}
        for method in sources:
            init = str(encoders[method].path) if method else "scratch"
            name = f"subcortical-{'ssl_' + method if method else 'scratch'}"
            overrides = ["stage=subcortical", "labels.k=all", *_overrides(self.cfg, "subcortical")]
            after = [encoders[method]] if method else []
            info = {"init_from": method or "scratch"}
            stage = compose_stage(name, "finetune", overrides, self.cfg, self.fingerprint, {"init": init}, info, after)
            out[method] = self._run(stage)
        return out

    def brainstem(self, encoders: Mapping[str, Stage], subcortical: Mapping[str | None, Stage]) -> list[Stage]:
        """The label-efficiency sweep: every hypothesis × k × seed on the brainstem."""
        runs = []
        for name, h in self.hypotheses.items():
            source = subcortical[h["pretrain"]] if h["subcortical"] else encoders.get(h["pretrain"] or "")
            init = str(source.path) if source else "scratch"
            for k in self.ks:
                for seed in self.seeds:
                    overrides = ["stage=brainstem", f"labels.k={k}", f"labels.seed={seed}", f"seed={seed}"]
                    stage = compose_stage(
                        f"brainstem-{name}-k{k}-s{seed}", "finetune", overrides + _overrides(self.cfg, "brainstem"),
                        self.cfg, self.fingerprint, values={"init": init},
                        info={"hypothesis": name, "k": k, "seed": seed}, after=[source] if source else [],
                    )  # fmt: skip
                    runs.append(self._run(stage))
        return runs

    def predictor(self, brainstem: Sequence[Stage]) -> Stage:
        """The brainstem model that segments every subject: ``study.predict_with`` at the largest k, first seed."""
        k = "all" if "all" in self.ks else max(self.ks, key=int)
        candidates = {
            s.info["hypothesis"]: s for s in brainstem if s.info["k"] == k and s.info["seed"] == self.seeds[0]
        }
        choice = str(self.cfg.study.predict_with)
        if choice != "auto":
            if choice not in candidates:
                raise ConfigError(
                    "study.predict_with", f"{choice!r} is not a hypothesis of this study ({list(candidates)})"
                )
            return candidates[choice]

        def val_dice(stage: Stage) -> float:
            score = (read_sidecar(stage.path / "model.json").get("result") or {}).get("val_dice")
            return float("-inf") if score is None else float(score)

        best = max(candidates.values(), key=val_dice)
        log.info("study: predicting with %s (best validation Dice at k=%s)", best.name, k)
        return best

    def predict(self, model: Stage) -> Stage:
        values, info = {"predict.model": str(model.path)}, {"model": model.name}
        overrides = _overrides(self.cfg, "predict")
        stage = compose_stage("predict", "predict", overrides, self.cfg, self.fingerprint, values, info, [model])
        return self._run(stage)

    def evaluate(self) -> Stage:
        inputs = [s for s in self.done if s.command in ("pretrain", "finetune", "predict")]
        values = {"runs": [str(s.path) for s in inputs], "seed": self.seeds[0]}
        overrides = _overrides(self.cfg, "evaluate")
        stage = compose_stage("evaluate", "evaluate", overrides, self.cfg, self.fingerprint, values, after=inputs)
        return self._run(stage)


def _simulate_demo(cfg: DictConfig) -> Stage:
    stage = compose_stage("demo-data", "demo-data", [], cfg, "demo")
    run_stage(stage, "[0]")
    return stage


def run(cfg: DictConfig) -> Path:
    """Run the study of ``cfg`` (see the module docstring); returns its run directory (with ``report.html``)."""
    with run_context(cfg, "study") as out:
        demo = _simulate_demo(cfg) if needs_demo(cfg) else None
        fingerprint = dataset_fingerprint(load_records(cfg.data))
        study = Study(cfg, fingerprint)
        log.info(
            "study (preset %s): hypotheses %s, k %s, seeds %s on %s",
            cfg.study.preset, list(study.hypotheses), study.ks, study.seeds, cfg.data.root,
        )  # fmt: skip
        encoders = study.pretrain()
        subcortical = study.subcortical(encoders)
        brainstem = study.brainstem(encoders, subcortical)
        study.predict(study.predictor(brainstem))
        evaluation = study.evaluate()
        report = out / "report.html"
        shutil.copyfile(evaluation.path / "report.html", report)
        summary = {
            "preset": str(cfg.study.preset),
            "data_root": str(cfg.data.root),
            "simulated_demo": demo is not None or (Path(str(cfg.data.root)) / "derivatives" / "simulation").is_dir(),
            "hypotheses": study.hypotheses,
            "k": study.ks,
            "seeds": study.seeds,
            "stages": [s.record() for s in ([demo] if demo else []) + study.done],
            "reused": study.reused,
            "results": str(evaluation.path / "results.json"),
            "report": str(report),
        }
        write_json_atomic(out / "study.json", summary)
        log.info("study: %d stages (%d reused); report: %s", len(study.done), study.reused, report)
    print(f"report: {report}")
    return out
