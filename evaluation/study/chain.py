"""``bssl study``: the whole transfer study, from (simulated) data to ``report.html``.

Data flow (each arrow is one or more stages of :mod:`evaluation.study.stages`, reused when already finished)::

    demo cohort (only if data.root is missing; a simulation)
      → pretrain: one run per SSL method a hypothesis names, per pretraining seed (study.pretrain_seeds)
      → source stages (e.g. finetune stage=subcortical): one per chain of stages a hypothesis trains first
      → the target stage (study.target, e.g. brainstem):
          k = 0 for every arm with a segmentation head (zero-shot), then every hypothesis × k × seed
      → cross-fitted predict: K folds; each fold's subjects are predicted by the study.predict_with arm's chain
        retrained on the other folds only (study.crossfit_folds), so no subject is predicted by a model that saw it
      → evaluate: design, convergence, learning curves, paired tests, transfer, baselines, group analysis
      → <study run dir>/study.json + report.html (a copy of the evaluation's report)

The rules of an honest transfer experiment (DESIGN §10) hold by construction: every arm gets the same
target schedule (checked before anything trains, :mod:`evaluation.protocol`), a compute-matched
control (``match_compute``) trains from scratch for as many supervised steps as the longest chain, each
seed fixes the labelled subjects of every arm alike, and a k-label run reads no other label.
Where the stages run is the runner's business (``study.launcher``, :mod:`evaluation.study.launch`): one after another
in this process, or as submitit jobs (local processes or SLURM) in dependency waves; ``bssl study
study.plan_only=true`` prints the stages and their cost instead (:mod:`evaluation.study.plan`, chosen by the command's
module :mod:`evaluation.study.command`).
Hypotheses come from ``configs/hypothesis/<name>.yaml`` (:mod:`evaluation.study.hypotheses`); presets
(``preset=quick``, ``preset=full``) set the steps and the network of every stage through ``study.overrides``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from evaluation.protocol import check_arms
from evaluation.study.hypotheses import Hypothesis, hypotheses, source_label
from evaluation.study.launch import Inline, Runner, make_runner
from evaluation.study.stages import Stage, compose_stage, run_stage
from finetune.selection import parse_k
from ssl_pretrain.config import config_options
from ssl_pretrain.data.split import crossfit_folds
from ssl_pretrain.data.validate import dataset_fingerprint, load_records
from ssl_pretrain.errors import ConfigError, DataError
from ssl_pretrain.run_dir import run_context, write_json_atomic

log = logging.getLogger(__name__)

DEFAULT_DEMO_ROOT = "data/demo"  # configs/data/default.yaml's data.root
TRAINING = ("pretrain", "source", "target")  # stages that get study.overrides.common
SourceKey = tuple[str | None, int | None, tuple[str, ...]]  # (method, pretraining seed, stages so far)


def _managed(root: str) -> bool:
    """Whether ``data.root`` is where the study keeps simulated cohorts: ``data/demo`` or ``data/demo-<name>``."""
    name = root.rstrip("/")
    return name == DEFAULT_DEMO_ROOT or name.startswith(f"{DEFAULT_DEMO_ROOT}-")


def check_demo_settings(cfg: DictConfig) -> None:
    """Refuse a simulated cohort in a study-managed ``data.root`` that was simulated with other ``demo.*`` settings.

    Without this a sweep over ``demo.brainstem_contrast`` (or a changed default) would silently reuse the cohort
    of another setting. Roots the user gave (not ``data/demo*``) are the user's data: not checked.

    Raises:
        ConfigError: naming the first differing ``demo.*`` key, both values and what to do.
    """
    root = Path(str(cfg.data.root))
    effects = root / "derivatives" / "simulation" / "effects.json"
    if not _managed(str(cfg.data.root)) or str(cfg.study.simulate_demo).lower() == "false" or not effects.is_file():
        return
    recorded = json.loads(effects.read_text()).get("settings") or {}
    wanted = cast(dict[str, Any], OmegaConf.to_container(cfg.demo, resolve=True))
    for key, value in wanted.items():
        if key not in recorded or recorded[key] != value:
            had = f"with demo.{key}={recorded[key]!r}" if key in recorded else f"without demo.{key}"
            raise ConfigError(
                f"demo.{key}",
                f"{root} holds a demo cohort simulated {had}, not {value!r}: give this study its own data.root "
                f"(e.g. {DEFAULT_DEMO_ROOT}-<name>, simulated on first use) or remove {root}",
            )


def needs_demo(cfg: DictConfig) -> bool:
    """Whether the study should simulate the demo cohort into ``data.root`` first (``study.simulate_demo``).

    ``auto`` simulates into a missing ``data/demo`` or ``data/demo-<name>`` (so a sweep over ``demo.*`` keeps one
    cohort per setting, e.g. ``data.root='data/demo-c${demo.brainstem_contrast}'``); ``true`` into any missing root.

    Raises:
        DataError: ``data.root`` is missing and the study may not simulate there.
        ConfigError: a study-managed cohort was simulated with other settings (:func:`check_demo_settings`).
    """
    root = Path(str(cfg.data.root))
    if cfg.data.get("manifest") or (root.is_dir() and any(root.iterdir())):
        check_demo_settings(cfg)
        return False
    mode = str(cfg.study.simulate_demo).lower()
    if mode == "true" or (mode == "auto" and _managed(str(cfg.data.root))):
        return True
    what = "give a BIDS dataset (data.root=DIR), or set study.simulate_demo=true for the simulated cohort"
    raise DataError(root, f"does not exist or is empty: {what}")


def _ints(cfg: DictConfig, key: str) -> list[int]:
    values = list(cfg.study.get(key) or [])
    if not values or any(isinstance(v, bool) or not isinstance(v, int) for v in values):
        raise ConfigError(f"study.{key}", f"expected a non-empty list of integers, got {values!r}")
    return [int(v) for v in values]


class Study:
    """Plans and runs the stages of one study config (see the module docstring)."""

    def __init__(self, cfg: DictConfig, fingerprint: str, runner: Runner | None = None) -> None:
        self.cfg, self.fingerprint = cfg, fingerprint
        self.runner = runner or Inline()
        self.hypotheses = hypotheses(cfg)
        self.target = str(cfg.study.target)
        if self.target not in config_options("stage"):
            raise ConfigError("study.target", f"no stage config configs/stage/{self.target}.yaml")
        self.ks = [str(k) for k in cfg.study.k]
        for k in self.ks:
            parse_k(k)
        if not [k for k in self.ks if parse_k(k) != 0]:
            raise ConfigError("study.k", "needs at least one k >= 1 (or all) besides the zero-shot k = 0")
        self.seeds = _ints(cfg, "seeds")
        self.pretrain_seeds = _ints(cfg, "pretrain_seeds")
        self.t1w_only_k = [str(k) for k in cfg.study.get("t1w_only_k", ["all"]) or []]
        for k in self.t1w_only_k:  # a k the study does not run scores nothing; a value that is no k is refused
            try:
                parse_k(k)
            except ConfigError:
                raise ConfigError("study.t1w_only_k", f"expected integers >= 0 or 'all', got {k!r}") from None
        self.done: list[Stage] = []
        self._stage_cfgs: dict[str, DictConfig] = {}

    # -- composing ---------------------------------------------------------------------------------

    def _overrides(self, kind: str, stage: str) -> list[str]:
        overrides = self.cfg.study.overrides
        common = list(overrides.common) if kind in TRAINING else []
        return common + list(overrides.get(stage) or [])

    @property
    def reused(self) -> int:
        return self.runner.reused

    def _stage(
        self,
        kind: str,
        name: str,
        command: str,
        overrides: Sequence[str],
        values: Mapping[str, Any] | None = None,
        info: Mapping[str, Any] | None = None,
        after: Sequence[Stage] = (),
    ) -> Stage:
        """Compose a stage of ``kind`` (pretrain, source, target, predict, evaluate) once the stages it reads
        have finished, and hand it to the runner (which runs it now or in its wave, :mod:`evaluation.study.launch`)."""
        self.runner.ready(after)
        info = {**(info or {}), "kind": kind}
        stage = compose_stage(name, command, overrides, self.cfg, self.fingerprint, values, info, after)
        self.runner.submit(stage, after, f"[{len(self.done) + 1}]")
        self.done.append(stage)
        return stage

    def all_stages(self, records: Sequence[Any]) -> Stage:
        """Every stage of the study, in order (module docstring); returns the evaluation stage."""
        encoders = self.pretrain()
        sources = self.sources(encoders)
        targets = self.targets(encoders, sources)
        if self.cfg.study.get("crossfit_folds"):
            self.crossfit(records, encoders)
        else:
            self.predict(self.predictor(targets))
        evaluation = self.evaluate()
        self.runner.finish()
        return evaluation

    def _pseeds(self, h: Hypothesis) -> list[int | None]:
        return list(self.pretrain_seeds) if h.pretrain else [None]

    @property
    def stage_names(self) -> list[str]:
        """The supervised stages the study trains: each hypothesis' source stages in order, then the target."""
        return list(dict.fromkeys([s for h in self.hypotheses for s in h.sources] + [self.target]))

    def stage_config(self, stage: str) -> DictConfig:
        """The ``bssl finetune`` config a supervised stage composes to, with the study's overrides (composed once)."""
        if stage not in self._stage_cfgs:
            overrides = [f"stage={stage}", *self._overrides("source", stage)]
            self._stage_cfgs[stage] = compose_stage(stage, "finetune", overrides, self.cfg, self.fingerprint).cfg
        return self._stage_cfgs[stage]

    def _steps_of(self, stage: str) -> int:
        """The ``trainer.max_steps`` a stage's config composes to (source stages and the target)."""
        return int(self.stage_config(stage).trainer.max_steps)

    def supervised_steps(self, h: Hypothesis) -> int:
        """Supervised optimiser steps of an arm's whole chain (source stages + target)."""
        if h.match_compute:
            return max(self.supervised_steps(o) for o in self.hypotheses if not o.match_compute)
        return sum(self._steps_of(s) for s in h.sources) + self._steps_of(self.target)

    def _target_overrides(self, h: Hypothesis, k: str, seed: int) -> list[str]:
        overrides = [f"stage={self.target}", f"labels.k={k}", f"labels.seed={seed}", f"seed={seed}"]
        overrides += self._overrides("target", self.target)
        if str(k) not in self.t1w_only_k:
            overrides.append("eval.t1w_only=false")  # scoring restricted to what the report reads (study.t1w_only_k)
        if h.match_compute:
            overrides += [f"trainer.max_steps={self.supervised_steps(h)}", "compute_matched=true"]
        return overrides

    def check_design(self) -> None:
        """Refuse a study whose arms would differ in more than their initialisation (before anything trains)."""
        for k in (k for k in self.ks if parse_k(k) != 0):
            arms = []
            for h in self.hypotheses:
                overrides = self._target_overrides(h, k, self.seeds[0])
                stage = compose_stage(h.name, "finetune", overrides, self.cfg, self.fingerprint, {"init": "scratch"})
                arms.append((h.name, stage.cfg, h.match_compute))
            check_arms(arms, f"k={k}, seed {self.seeds[0]}")

    # -- stages ------------------------------------------------------------------------------------

    def pretrain(self) -> dict[tuple[str, int], Stage]:
        """One pretraining run per method the hypotheses name, per pretraining seed."""
        methods = sorted({h.pretrain for h in self.hypotheses if h.pretrain})
        out = {}
        for method in methods:
            for pseed in self.pretrain_seeds:
                name = f"pretrain-{method}" + (f"-p{pseed}" if len(self.pretrain_seeds) > 1 else "")
                overrides = [f"method={method}", f"seed={pseed}", *self._overrides("pretrain", "pretrain")]
                info = {"method": method, "pretrain_seed": pseed}
                out[(method, pseed)] = self._stage("pretrain", name, "pretrain", overrides, info=info)
        return out

    def sources(self, encoders: Mapping[tuple[str, int], Stage]) -> dict[SourceKey, Stage]:
        """Every chain of source stages the hypotheses train, each prefix once (shared between arms)."""
        out: dict[SourceKey, Stage] = {}
        for h in self.hypotheses:
            for pseed in self._pseeds(h):
                previous = encoders.get((h.pretrain, pseed)) if h.pretrain and pseed is not None else None
                for i, stage_name in enumerate(h.sources):
                    key: SourceKey = (h.pretrain, pseed, h.sources[: i + 1])
                    if key not in out:
                        label = source_label(h.pretrain, h.sources[: i + 1])
                        name = label.replace("+", "-") + (
                            f"-p{pseed}" if len(self.pretrain_seeds) > 1 and h.pretrain else ""
                        )
                        overrides = [f"stage={stage_name}", "labels.k=all", *self._overrides("source", stage_name)]
                        values = {"init": str(previous.path) if previous else "scratch", "init_label": label}
                        info = {"init_from": h.base, "source": label, "pretrain_seed": pseed}
                        after = [previous] if previous else []
                        out[key] = self._stage("source", name, "finetune", overrides, values, info, after)
                    previous = out[key]
        return out

    def _start(self, h: Hypothesis, pseed: int | None, encoders: Mapping, sources: Mapping) -> Stage | None:
        if h.sources:
            return sources[(h.pretrain, pseed, h.sources)]
        return encoders[(h.pretrain, pseed)] if h.pretrain and pseed is not None else None

    def targets(self, encoders: Mapping[tuple[str, int], Stage], sources: Mapping[SourceKey, Stage]) -> list[Stage]:
        """The target stage: k = 0 for arms with a head, then every hypothesis × k × seed (× pretraining seed)."""
        runs = []
        for h in self.hypotheses:
            for pseed in self._pseeds(h):
                start = self._start(h, pseed, encoders, sources)
                suffix = f"-p{pseed}" if pseed is not None and len(self.pretrain_seeds) > 1 else ""
                for k in self.ks:
                    zero = parse_k(k) == 0
                    if zero and not h.has_head:
                        continue
                    for seed in self.seeds[:1] if zero else self.seeds:
                        overrides = self._target_overrides(h, k, seed)
                        values = {"init": str(start.path) if start else "scratch", "init_label": h.name}
                        info = {"hypothesis": h.name, "k": k, "seed": seed, "pretrain_seed": pseed}
                        name = f"{self.target}-{h.name}-k{k}-s{seed}{suffix}"
                        after = [start] if start else []
                        runs.append(self._stage("target", name, "finetune", overrides, values, info, after))
        return runs

    def prediction_arm(self) -> Hypothesis:
        """The arm whose models segment every subject for the group analysis (``study.predict_with``).

        ``auto`` is a choice made before any result exists (no label chooses it): the first hypothesis, in the
        study's order, that trains a source stage (else the first hypothesis).

        Raises:
            ConfigError: ``study.predict_with`` names no hypothesis of the study.
        """
        choice = str(self.cfg.study.predict_with)
        if choice == "auto":
            choice = next((h.name for h in self.hypotheses if h.has_head), self.hypotheses[0].name)
        arm = next((h for h in self.hypotheses if h.name == choice), None)
        if arm is None:
            names = [h.name for h in self.hypotheses]
            raise ConfigError("study.predict_with", f"{choice!r} is not a hypothesis of this study ({names})")
        return arm

    def crossfit(self, records: Sequence[Any], encoders: Mapping[tuple[str, int], Stage]) -> list[Stage]:
        """Cross-fitted predictions of every subject (DESIGN §10 rule 6): ``study.crossfit_folds`` group-stratified
        folds; for fold j the prediction arm's whole supervised chain (its source stages and the target at
        k = all, first seed) is trained on the other folds' labelled subjects only, without validation, and
        predicts fold j. Pretraining (unlabelled images) is shared. The folds' chains advance side by side (one
        stage of every fold, then the next), so a job launcher runs them at once. Returns the predict stages.
        """
        arm, folds = self.prediction_arm(), int(self.cfg.study.crossfit_folds)
        parts = crossfit_folds(records, folds, int(self.cfg.data.split_seed))
        pseed = self.pretrain_seeds[0] if arm.pretrain else None
        # each fold scores its held-out subjects once, over whole volumes, in predict: not in the fine-tuning ROI too
        fold = [[f"data.crossfit.folds={folds}", f"data.crossfit.fold={j}", "eval.test=false"] for j in range(folds)]
        start = encoders.get((arm.pretrain, pseed)) if arm.pretrain and pseed is not None else None
        previous: list[Stage | None] = [start] * folds
        for i, stage_name in enumerate(arm.sources):
            label = source_label(arm.pretrain, arm.sources[: i + 1])
            for j in range(folds):
                overrides = [f"stage={stage_name}", "labels.k=all", *self._overrides("source", stage_name), *fold[j]]
                before = previous[j]
                values = {"init": str(before.path) if before else "scratch", "init_label": label}
                info = {"crossfit_fold": j, "source": label}
                name = f"crossfit{j}-{label.replace('+', '-')}"
                previous[j] = self._stage(
                    "source", name, "finetune", overrides, values, info, [before] if before else []
                )
        models = []
        for j in range(folds):
            before = previous[j]
            overrides = [*self._target_overrides(arm, "all", self.seeds[0]), *fold[j]]
            values = {"init": str(before.path) if before else "scratch", "init_label": arm.name}
            info = {"crossfit_fold": j, "hypothesis": arm.name}
            name = f"crossfit{j}-{self.target}-{arm.name}"
            models.append(self._stage("target", name, "finetune", overrides, values, info, [before] if before else []))
        return [self.predict(m, f"predict-fold{j}", [s.key for s in parts[j]], j) for j, m in enumerate(models)]

    def predictor(self, targets: Sequence[Stage]) -> Stage:
        """Without cross-fitting (``study.crossfit_folds: null``): the prediction arm's k=all target model of the
        first seed, which trained on some of the subjects it then predicts (the group analysis says so)."""
        k = "all" if "all" in self.ks else max(self.ks, key=int)
        arm = self.prediction_arm()
        for s in targets:
            first = s.info["pretrain_seed"] in (None, self.pretrain_seeds[0])
            if s.info["hypothesis"] == arm.name and s.info["k"] == k and s.info["seed"] == self.seeds[0] and first:
                return s
        raise ConfigError("study.predict_with", f"{arm.name!r} has no k={k} run in this study")

    def predict(
        self, model: Stage, name: str = "predict", subjects: Sequence[str] | None = None, fold: int | None = None
    ) -> Stage:
        values: dict[str, Any] = {"predict.model": str(model.path)}
        if subjects is not None:
            values["predict.subjects"] = list(subjects)
        info = {"model": model.name, **({"crossfit_fold": fold} if fold is not None else {})}
        return self._stage("predict", name, "predict", self._overrides("predict", "predict"), values, info, [model])

    def evaluate(self) -> Stage:
        # each cross-fitted fold's chain together, as composed fold by fold before the folds ran side by side
        done = sorted(self.done, key=lambda s: int(s.info.get("crossfit_fold", -1)))
        inputs = [s for s in done if s.command in ("pretrain", "finetune", "predict")]
        overrides = self._overrides("evaluate", "evaluate")
        values = {"runs": [str(s.path) for s in inputs], "seed": self.seeds[0], **self._evaluated_stages(overrides)}
        return self._stage("evaluate", "evaluate", "evaluate", overrides, values, after=inputs)

    def _evaluated_stages(self, overrides: Sequence[str]) -> dict[str, Any]:
        """What the evaluation reads of the study's stages: ``curves.target``, and each stage it trains in
        ``baselines.stages`` and its ROI in ``probe.regions``, each appended only where the evaluate config
        (with ``study.overrides.evaluate``) lacks it, so a study of the stages it already names composes as before."""
        cfg = compose_stage("evaluate", "evaluate", overrides, self.cfg, self.fingerprint).cfg
        values: dict[str, Any] = {"curves.target": self.target}
        rois = [str(self.stage_config(s).stage.roi) for s in self.stage_names]
        for key, wanted in (("baselines.stages", self.stage_names), ("probe.regions", rois)):
            listed = [str(v) for v in OmegaConf.select(cfg, key)]
            missing = [v for v in dict.fromkeys(wanted) if v not in listed]
            if missing:
                values[key] = listed + missing
        return values

    def design(self) -> dict[str, Any]:
        """What each arm's chain costs in supervised steps (``study.json``)."""
        return {h.name: {"supervised_steps": self.supervised_steps(h), **h.record()} for h in self.hypotheses}


def _simulate_demo(cfg: DictConfig) -> Stage:
    stage = compose_stage("demo-data", "demo-data", [], cfg, "demo")
    run_stage(stage, "[0]")
    return stage


def run(cfg: DictConfig) -> Path:
    """Run the study of ``cfg`` (see the module docstring); returns its run directory (with ``report.html``).

    ``bssl study study.plan_only=true`` prints the plan instead (:mod:`evaluation.study.command`).
    """
    with run_context(cfg, "study") as out:
        runner = make_runner(cfg, out)
        demo = _simulate_demo(cfg) if needs_demo(cfg) else None
        records = load_records(cfg.data)
        fingerprint = dataset_fingerprint(records)
        study = Study(cfg, fingerprint, runner)
        study.check_design()
        log.info(
            "study (preset %s): hypotheses %s, target %s, k %s, seeds %s, pretraining seeds %s on %s",
            cfg.study.preset, [h.name for h in study.hypotheses], study.target, study.ks, study.seeds,
            study.pretrain_seeds, cfg.data.root,
        )  # fmt: skip
        evaluation = study.all_stages(records)
        report = out / "report.html"
        shutil.copyfile(evaluation.path / "report.html", report)
        summary = {
            "preset": str(cfg.study.preset),
            "data_root": str(cfg.data.root),
            "simulated_demo": demo is not None or (Path(str(cfg.data.root)) / "derivatives" / "simulation").is_dir(),
            "hypotheses": study.design(),
            "target": study.target,
            "k": study.ks,
            "seeds": study.seeds,
            "pretrain_seeds": study.pretrain_seeds,
            "stages": [s.record() for s in ([demo] if demo else []) + study.done],
            "launcher": str(cfg.study.get("launcher", "inline")),
            "reused": study.reused,
            "results": str(evaluation.path / "results.json"),
            "report": str(report),
        }
        write_json_atomic(out / "study.json", summary)
        log.info("study: %d stages (%d reused); report: %s", len(study.done), study.reused, report)
    print(f"report: {report}")
    return out
