"""``bssl finetune stage=subcortical|brainstem init=scratch|PATH labels.k=K``: one supervised stage.

1. The dataset is validated, cached and split by ``data.split_seed`` (stratified by group) on *all*
   subjects, so the test split is the same for every stage, k and init; subjects without tissue labels
   or without the stage's ROI are left out of each split.
2. ``labels.k`` training subjects are chosen with ``labels.seed``, balanced across groups
   (:mod:`finetune.selection`); the other training subjects are not used by this stage.
3. The network of ``finetune.policy`` is built from ``model.*``, initialised from ``init``
   (:mod:`finetune.initialisation`) and trained on ROI-centred patches with the ROI-masked Dice+CE loss, on one
   schedule whatever the initialisation (``optim.*``). The weights kept are the last ones of the fixed
   schedule (``finetune.selection: last``, the default: no held-out label is read), or the best on at most
   ``finetune.val_subjects`` labelled validation subjects when asked (:mod:`finetune.weight_selection`);
   ``model.json`` records the rule and ``labels.seen``, every labelled subject the run used.
4. While it trains, the run records its loss and the Dice on its own labelled training subjects and
   tests for a plateau at the end (:mod:`finetune.convergence`): ``model.json``'s ``convergence``.
5. ``labels.k=0`` trains nothing: the initialisation's own segmentation head is scored on the stage's
   ROI (zero-shot transfer, e.g. a subcortical model on the brainstem); it needs a fine-tuned model as
   ``init``.
6. Outputs in the run directory: ``model.pt`` + ``model.json`` (the kept weights and their sidecar),
   ``metrics.csv`` (one row per test subject: Dice, HD95, predicted/true volumes per class inside the
   ROI), ``overlays.png``, ``summary.json``, and Lightning's training curves under ``train_log/`` (its own
   ``metrics.csv``, per step).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import lightning as L
import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict
from torch.utils.data import DataLoader

from finetune.convergence import ConvergenceMonitor, ConvergenceRule
from finetune.figures import overlay_figure
from finetune.inference import InferenceSettings
from finetune.initialisation import TASK, initialise
from finetune.metrics import mean_dice
from finetune.module import VAL_METRIC, SegmentationModule, WholeVolumes, roi_dice
from finetune.policy import build_segmentation_net, check_policy
from finetune.region_head import REGION_HEAD, RegionHeadLoss, region_columns
from finetune.roi import StageROI
from finetune.roi_loss import ROIDiceCELoss
from finetune.scoring import METRICS_FILE, score_subjects, write_metrics
from finetune.selection import group_counts, parse_k, select_labelled
from finetune.weight_selection import WeightSelection, best_weights, plan_selection
from ssl_pretrain.data.cache import preprocessing_settings
from ssl_pretrain.data.datamodule import BrainDataModule
from ssl_pretrain.data.grid import parse_patch_size, parse_spacing
from ssl_pretrain.data.labels import TISSUE_CLASSES
from ssl_pretrain.data.sampler import PatchDataset
from ssl_pretrain.errors import CheckpointError, ConfigError
from ssl_pretrain.models.checkpoint import save_weights
from ssl_pretrain.run_dir import run_context, write_json_atomic
from ssl_pretrain.training import build_trainer, resolve_accelerator, resolve_resume, seed_everything
from ssl_pretrain.training.compile import resolve_compile
from ssl_pretrain.training.memory_format import apply_memory_format, resolve_memory_format

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
OVERLAYS_FILE = "overlays.png"
SUMMARY_FILE = "summary.json"
N_CLASSES = len(TISSUE_CLASSES)
TRAIN_LOG_DIR = "train_log"  # Lightning's per-step training curves (its own metrics.csv)
FIXED_PATCH_SEED = 7919  # offsets the run seed for the convergence test's fixed training patches


def stage_roi(cfg: DictConfig) -> StageROI:
    """The stage's ROI from ``stage.*`` and ``data.spacing``.

    Raises:
        ConfigError: unknown ``stage.roi`` / ``stage.roi_exclude``, a negative margin, a bad ``roi_fraction``.
    """
    fraction = float(cfg.stage.get("roi_fraction", 0.8))
    if not 0 <= fraction <= 1:
        raise ConfigError("stage.roi_fraction", f"expected a fraction in [0, 1], got {fraction}")
    return StageROI.from_config(cfg.stage, parse_spacing(cfg.data.spacing))


def output_heads(cfg: DictConfig) -> tuple[int, ...]:
    """Channels of the network's heads: tissue, then the region head when ``regions.enabled`` (the default)."""
    enabled = cfg.get("regions", {}).get("enabled", True) if "regions" in cfg else False
    if not isinstance(enabled, bool):
        raise ConfigError("regions.enabled", f"expected true or false, got {enabled!r}")
    return (N_CLASSES, len(REGION_HEAD)) if enabled else (N_CLASSES,)


def stage_data_config(cfg: DictConfig) -> DictConfig:
    """``cfg.data`` with the stage's patch sampling (``data.roi`` = ``stage.roi``, ``data.roi_fraction``)."""
    data = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True)))
    with open_dict(data):
        data.roi = str(cfg.stage.roi)
        data.roi_fraction = float(cfg.stage.get("roi_fraction", 0.8))
    return data


def model_sidecar(
    cfg: DictConfig,
    dm: BrainDataModule,
    chosen: list[str],
    init_info: dict[str, Any],
    selection: WeightSelection | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The ``model.json`` content (beside what :func:`save_weights` fills in).

    ``labels.seen`` counts every labelled subject of the stage's ROI the run used: its ``labels.k`` training
    subjects plus the validation subjects that chose its weights (``selection``; ``None`` for ``k=0``).
    """
    data = cfg.data
    return {
        "task": TASK,
        "modalities": dm.modalities,
        "classes": [TISSUE_CLASSES[i] for i in sorted(TISSUE_CLASSES)],
        "heads": {"tissue": [TISSUE_CLASSES[i] for i in sorted(TISSUE_CLASSES)], "regions": list(REGION_HEAD)}
        if len(output_heads(cfg)) == 2
        else {"tissue": [TISSUE_CLASSES[i] for i in sorted(TISSUE_CLASSES)]},
        "spacing": parse_spacing(data.spacing),
        "patch_size": list(parse_patch_size(data.patch_size)),
        "normalisation": OmegaConf.to_container(data.normalisation, resolve=True) if "normalisation" in data else None,
        "preprocessing": preprocessing_settings(data),
        "method": "supervised",
        "stage": str(cfg.stage.name),
        "stage_config": OmegaConf.to_container(cfg.stage, resolve=True),
        "policy": str(cfg.finetune.policy),
        "init": init_info,
        "labels": {
            "k": "all" if parse_k(cfg.labels.k) is None else int(cfg.labels.k),
            "seed": int(cfg.labels.seed),
            "seen": len(chosen) + (len(selection.val_subjects) if selection else 0),
        },
        "init_label": cfg.get("init_label") or None,
        "compute_matched": bool(cfg.get("compute_matched", False)),
        "selection": selection.record() if selection else {"rule": "zero-shot", "description": "no training"},
        "labelled_subjects": chosen,
        "labelled_groups": group_counts(chosen, {s.key: s.group for s in dm.train_subjects}),
        "seeds": {"seed": int(cfg.seed), "labels": int(cfg.labels.seed), "split": int(data.split_seed)},
        "val_subjects": [s.key for s in dm.val_subjects],
        "crossfit": None if dm.crossfit is None else {"folds": dm.crossfit[0], "fold": dm.crossfit[1]},
        "test_subjects": [s.key for s in dm.test_subjects],
        "data_fingerprint": dm.fingerprint,
        "data_root": str(data.get("root")),
        **extra,
    }


def _datamodules(cfg: DictConfig) -> tuple[BrainDataModule, list[str], list[str]]:
    """The stage's data module (one, set up once) restricted to the ``labels.k`` chosen training subjects, their
    keys, and the keys of every labelled subject of the train split (the candidates they were chosen from).

    With ``labels.k=0`` no subject is chosen and the module keeps every labelled subject (only its test subjects
    are used).
    """
    data = stage_data_config(cfg)
    dm = BrainDataModule(data, cfg.paths.cache_dir, roi=data.roi, labelled_only=True, seed=int(cfg.seed))
    dm.setup()
    candidates = [(s.key, s.group) for s in dm.train_subjects]
    chosen = select_labelled(candidates, cfg.labels.k, int(cfg.labels.seed))
    if chosen:
        dm.restrict_training(chosen)  # the dataset is read once; the split and its candidates stay
    log.info(
        "stage %s: %d labelled of %d labelled training subjects (%s), %d validation, %d test",
        cfg.stage.name,
        len(chosen),
        len(candidates),
        group_counts(chosen, dict(candidates)),
        len(dm.val_subjects),
        len(dm.test_subjects),
    )
    return dm, chosen, [key for key, _ in candidates]


def optim_config(cfg: DictConfig) -> DictConfig:
    """``cfg.optim`` resolved and checked: one schedule whatever the initialisation (DESIGN §10 rule 1).

    ``optim.encoder_lr_scale`` is a number for every run; it no longer depends on ``init`` (an earlier
    ``auto`` gave pretrained encoders a tenth of scratch's learning rate, so the arms of a transfer study
    differed in more than their initialisation).

    Raises:
        ConfigError: ``optim.encoder_lr_scale`` is not a number in [0, 1].
    """
    optim = cast(DictConfig, OmegaConf.create(OmegaConf.to_container(cfg.optim, resolve=True)))
    value = optim.get("encoder_lr_scale", 1.0)
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = float("nan")
    if isinstance(value, bool) or not 0.0 <= scale <= 1.0:
        raise ConfigError(
            "optim.encoder_lr_scale",
            f"expected a number in [0, 1] (the same for every initialisation), got {value!r}",
        )
    optim.encoder_lr_scale = scale
    return optim


def _write_outputs(
    cfg: DictConfig,
    out: Path,
    module: SegmentationModule,
    dm: BrainDataModule,
    chosen: list[str],
    init_info: dict[str, Any],
    optim: DictConfig,
    selection: WeightSelection | None,
    selected: tuple[str, float | None],
    steps: int,
    convergence: dict[str, Any] | None,
    train_split: list[str],
) -> None:
    """Score the test subjects and write model.pt/json, metrics.csv, overlays.png and summary.json."""
    roi, policy = module.roi, module.policy
    device = next(module.net.parameters()).device
    scored = bool(cfg.eval.get("test", True))
    rows, cases = (
        score_subjects(
            module.net,
            dm.test_subjects,
            roi,
            module.inference,
            device,
            hd95=bool(cfg.eval.hd95),
            n_overlays=overlay_count(cfg.eval.n_overlays),
            t1w_only=bool(cfg.eval.get("t1w_only", False)),
        )
        if scored
        else ([], [])
    )
    summary: dict[str, Any] = {
        "weights": selected[0],
        "val_dice": selected[1],
        "steps": steps,
        "n_test": len(rows),
        "test_dice_mean": mean_dice(rows),
    }
    for cls in ("GM", "WM", "CSF"):
        summary[f"test_dice_{cls}"] = mean_dice(rows, (cls,))
    for column in region_columns():
        values = [float(r[column]) for r in rows if column in r and np.isfinite(float(r[column]))]  # type: ignore[arg-type]
        if values:
            summary[f"test_{column}"] = float(np.mean(values))
    if convergence is not None:
        summary["converged"] = convergence["converged"]
    extra = {
        "result": summary,
        "optim": OmegaConf.to_container(optim, resolve=True),
        "convergence": convergence,
        "train_subjects": train_split,
    }
    meta = model_sidecar(cfg, dm, chosen, init_info, selection, extra)
    save_weights(module.net.cpu(), out / MODEL_FILE, meta)
    if rows:
        write_metrics(out / METRICS_FILE, rows)
        title = f"stage {roi.name}, init {init_info['init']}, k={meta['labels']['k']}, policy {policy}"
        if cases:  # eval.n_overlays=0 draws none
            overlay_figure(out / OVERLAYS_FILE, cases, suptitle=title)
    elif scored:
        log.warning("no labelled test subject: %s and %s not written", METRICS_FILE, OVERLAYS_FILE)
    write_json_atomic(out / SUMMARY_FILE, summary)
    if not scored:
        log.info("test subjects not scored (eval.test=false): %s and %s not written", METRICS_FILE, OVERLAYS_FILE)
        return
    shown = {k: round(v, 4) for k, v in summary.items() if k.startswith("test_dice")}
    log.info("test Dice in the %s ROI (%d subjects): %s", roi.group, len(rows), shown)


def _zero_shot_check(init_info: dict[str, Any], init: Any) -> None:
    """``labels.k=0`` scores an initialisation's own head: refuse one that has none."""
    if init_info.get("loaded") != "model":
        raise CheckpointError(
            init or "scratch",
            "labels.k=0 (zero-shot) scores the initialisation's own segmentation head, but this init has none: "
            "give a `bssl finetune` run (e.g. the subcortical stage) as init=, or use labels.k >= 1",
        )


def _train(
    cfg: DictConfig, out: Path, module: SegmentationModule, dm: BrainDataModule, selection: WeightSelection
) -> tuple[L.Trainer, tuple[str, float | None], dict[str, Any]]:
    """Fit ``module`` on the chosen subjects; returns the trainer, the weights kept and the convergence verdict."""
    rule = ConvergenceRule.from_config(cfg.finetune.get("convergence"))
    patches = PatchDataset(
        dm.train_subjects, dm.patch_size, roi=dm.roi, roi_fraction=dm.roi_fraction, length=rule.fixed_patches,
        seed=int(cfg.seed) + FIXED_PATCH_SEED,
    )  # fmt: skip
    fixed = [patches[i] for i in range(len(patches))]  # unaugmented, all modalities, the same at every checkpoint

    subjects = dm.train_subjects if rule.dice_on == "patches" else dm.train_subjects[: rule.max_subjects]

    def measure(pl_module: L.LightningModule) -> dict[str, float]:
        scores = module.fixed_patch_scores(fixed)
        if rule.dice_on == "subjects":
            values = [roi_dice(module.net, s, module.roi, module.inference, pl_module.device)["dice"] for s in subjects]
            finite = [v for v in values if np.isfinite(v)]
            scores["dice"] = float(np.mean(finite)) if finite else float("nan")
        return {"tissue": scores["tissue"], "total": scores["loss"], "dice": scores["dice"]}

    monitor = ConvergenceMonitor(rule, measure, int(cfg.trainer.max_steps), [s.key for s in subjects])
    validates = selection.uses_validation
    val_loader = DataLoader(WholeVolumes(selection.val_subjects), batch_size=None) if validates else None
    trainer = build_trainer(
        cfg,
        out,
        monitor=VAL_METRIC if validates else None,
        monitor_mode="max",
        log_dir=out / TRAIN_LOG_DIR,
        extra_callbacks=[monitor, *selection.callbacks()],
    )
    trainer.fit(
        module,
        train_dataloaders=dm.train_dataloader(),
        val_dataloaders=val_loader,
        ckpt_path=resolve_resume(cfg.get("resume"), out, cfg),
    )
    selected = best_weights(trainer, module) if validates else ("last", None)
    verdict = monitor.summary()
    log.info(
        "weights kept: %s; converged: %s (loss fall %.4f, training-subject Dice gain %.4f over the last %.0f%%)",
        selected[0], verdict["converged"], verdict["loss_fall"], verdict["train_dice_gain"], 100 * rule.window,
    )  # fmt: skip
    return trainer, selected, verdict


def overlay_count(value: Any) -> int:
    """``eval.n_overlays``: test subjects drawn in overlays.png (0: no figure).

    Raises:
        ConfigError: not an integer >= 0.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError("eval.n_overlays", f"expected an integer >= 0 (0: no overlays.png), got {value!r}")
    return value


def run(cfg: DictConfig) -> Path:
    """Train one stage (or, with ``labels.k=0``, score its initialisation) and write its artefacts."""
    policy = check_policy(str(cfg.finetune.policy))
    k = parse_k(cfg.labels.k)
    overlay_count(cfg.eval.n_overlays)  # before training, not after it
    accelerator = resolve_accelerator(cfg.trainer.accelerator)
    compile_net = resolve_compile(cfg.trainer.get("compile", False), accelerator)  # before any run folder exists
    with run_context(cfg, "finetune") as out:
        seed_everything(int(cfg.seed), deterministic=cfg.trainer.get("deterministic") is True)
        roi = stage_roi(cfg)
        dm, chosen, train_split = _datamodules(cfg)
        heads = output_heads(cfg)
        net = build_segmentation_net(cfg.model, len(dm.modalities), sum(heads), policy)
        init_info = initialise(net, cfg.get("init"), dm.modalities)
        layout = resolve_memory_format(cfg.trainer.get("memory_format", "auto"), accelerator)
        apply_memory_format(net, layout)
        stride = int(np.prod(cfg.model.strides))
        inference = InferenceSettings.from_config(cfg.inference, dm.patch_size, stride, heads)
        loss = ROIDiceCELoss(N_CLASSES, **cast(dict, OmegaConf.to_container(cfg.loss, resolve=True)))
        optim = optim_config(cfg)
        seed = int(cfg.labels.seed)
        selection = None if k == 0 else plan_selection(cfg.finetune, dm.val_subjects, len(chosen), seed)
        module = SegmentationModule(
            net,
            policy=policy,
            roi=roi,
            loss=loss,
            optim_cfg=optim,
            total_steps=int(cfg.trainer.max_steps),
            inference=inference,
            val_subjects=selection.val_subjects if selection else (),
            region_loss=RegionHeadLoss() if len(heads) == 2 else None,
            lambda_regions=float(cfg.regions.get("lambda", 1.0)) if "regions" in cfg else 1.0,
            compile_net=compile_net,
        )
        selected: tuple[str, float | None]
        if selection is None:
            _zero_shot_check(init_info, cfg.get("init"))
            log.info("labels.k=0: scoring %s on the %s ROI without training (zero-shot)", cfg.get("init"), roi.group)
            selected, steps, verdict, writes = ("init (zero-shot, no training)", None), 0, None, True
        else:
            trainer, selected, verdict = _train(cfg, out, module, dm, selection)
            steps, writes = int(trainer.global_step), trainer.is_global_zero
        if writes:
            _write_outputs(
                cfg, out, module, dm, chosen, init_info, optim, selection, selected, steps, verdict, train_split
            )
    return out
