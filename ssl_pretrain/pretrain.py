"""``bssl pretrain``: self-supervised pretraining of a 3D encoder on every unlabelled volume of a dataset.

``bssl pretrain data.root=DIR method=mae|simclr|mae_simclr|vicreg [preset=cpu|gpu] [resume=auto|PATH]``
composes configs/pretrain.yaml and calls :func:`run`, which trains a
:class:`~ssl_pretrain.methods.module.PretrainModule` on patches from
:class:`~ssl_pretrain.data.datamodule.BrainDataModule` (as many views and targets as the method's class asks
for; ``method=`` takes any file of configs/method/) and leaves in the run directory:

- ``encoder.pt`` + ``encoder.json``: the encoder's state dict (loads with ``weights_only=True``) and its
  sidecar (architecture, modalities in channel order, spacing, normalisation, method, data fingerprint,
  toolkit version), written by :func:`ssl_pretrain.models.checkpoint.save_weights`;
- ``metrics.csv`` (per-step ``train/*``, per-validation ``val/*``, learning rate) and ``loss_curve.png``;
- methods that reconstruct (a ``reconstructor()``: MAE, MAE + SimCLR): ``mae_reconstruction.png`` (input /
  masked / reconstruction slices through the brainstem of a validation subject) and ``mae_cross_modal.png``
  (every modality predicted from T1w alone);
- ``embedding_quality.json``: the run's evidence (:mod:`ssl_pretrain.evidence`, schema there): frozen
  GM/WM linear probes in the subcortical ROI and the brainstem against the randomly initialised encoder,
  with CIs over validation subjects; for MAE methods the cross-modal reconstruction error from T1w alone
  against the per-modality mean predictor; for two-view methods also alignment and uniformity (Wang &
  Isola 2020) of the validation embeddings, trained and at initialisation;
- ``checkpoints/last.ckpt`` (resumable), ``config.yaml``, ``run.json``, ``run.log``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.data.datamodule import BrainDataModule
from ssl_pretrain.data.grid import read_box
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.evidence import EVIDENCE_FILE, evidence_report, evidence_settings, summary_lines
from ssl_pretrain.figures import embedding_quality, plot_loss_curve, plot_mae_reconstruction
from ssl_pretrain.methods import MAE, ContrastiveMethod, check_method_config, method_class
from ssl_pretrain.methods.masking import denormalise_blocks
from ssl_pretrain.methods.module import PretrainModule
from ssl_pretrain.models.checkpoint import save_weights
from ssl_pretrain.run_dir import run_context, write_json_atomic
from ssl_pretrain.training import build_trainer, resolve_resume, seed_everything

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.pt"
FIGURE_ROI = "brainstem"


def _encoder_meta(cfg: DictConfig, dm: BrainDataModule, steps: int) -> dict[str, Any]:
    return {
        "modalities": dm.modalities,
        "spacing": dm.spacing,
        "normalisation": OmegaConf.to_container(cfg.data.get("normalisation"), resolve=True)
        if cfg.data.get("normalisation") is not None
        else None,
        "method": OmegaConf.to_container(cfg.method, resolve=True),
        "data_fingerprint": dm.fingerprint,
        "patch_size": list(dm.patch_size),
        "pretrain": {"steps": int(steps), "seed": int(cfg.seed), "data_root": str(cfg.data.root)},
    }


def figure_patch(subject: CachedSubject, patch_size: Iterable[int], roi: str = FIGURE_ROI) -> tuple[np.ndarray, str]:
    """A patch of ``subject`` centred on its ``roi`` (the ROI voxel nearest the ROI's centroid).

    Falls back to the brain mask's centre when the subject has no region labels or an empty ROI.

    Returns:
        ``(image (C, X, Y, Z) float32, description of the centre)``.
    """
    size = np.asarray(list(patch_size), dtype=int)
    where = "brain centre"
    voxels = np.zeros((0, 3), dtype=int)
    if subject.regions is not None:
        voxels = np.argwhere(np.isin(np.asarray(subject.regions), region_group_indices(roi)))
        where = roi
    if len(voxels) == 0:
        voxels = np.argwhere(np.asarray(subject.brain) > 0)
        where = "brain centre"
    if len(voxels) == 0:
        centre = np.asarray(subject.image.shape[1:]) // 2
    else:
        centroid = voxels.mean(axis=0)
        centre = voxels[np.argmin(((voxels - centroid) ** 2).sum(axis=1))]
    image = read_box(subject.image, centre - size // 2, size, fill=subject.background, dtype=np.float32)
    return image, f"{where} at voxel {tuple(int(c) for c in centre)}"


def _mae_of(module: PretrainModule) -> MAE:
    mae = module.method.reconstructor()
    if mae is None:
        raise TypeError(f"{module.method.name} does not reconstruct masked input")
    return mae


def write_mae_figure(module: PretrainModule, dm: BrainDataModule, path: Path, seed: int) -> Path:
    """``mae_reconstruction.png`` for the first validation subject (the first training subject if none)."""
    mae = _mae_of(module)
    subjects = dm.val_subjects or dm.train_subjects
    subject = subjects[0]
    patch, where = figure_patch(subject, dm.patch_size)
    device = next(module.parameters()).device
    image = torch.from_numpy(patch)[None].to(device)
    presence = torch.from_numpy(subject.presence.astype(np.float32))[None].to(device)
    generator = torch.Generator().manual_seed(seed)
    was_training = mae.training
    mae.eval()
    with torch.no_grad():
        mask = mae.draw_mask(image, generator)
        masked, pred = mae.reconstruct(image, mask, presence)
        if mae.loss.norm_target:
            pred = denormalise_blocks(pred.float(), image, mae.mask_block, mae.loss.eps)
        pasted = image * (1 - mask) + pred.float() * mask
    mae.train(was_training)
    split = "validation" if dm.val_subjects else "training"
    title = (
        f"MAE reconstruction, {split} subject {subject.key}, patch centred on the {where}; "
        f"mask ratio {mae.mask_ratio:g}, block {mae.mask_block[0]}"
        + ("; masked blocks de-normalised with their true mean/std" if mae.loss.norm_target else "")
    )
    return plot_mae_reconstruction(
        image[0].cpu().numpy(),
        masked[0].float().cpu().numpy(),
        pasted[0].cpu().numpy(),
        [bool(p) for p in subject.presence],
        dm.modalities,
        path,
        title,
    )


def write_cross_modal_figure(module: PretrainModule, dm: BrainDataModule, path: Path, source: str) -> Path | None:
    """``mae_cross_modal.png``: every acquired modality predicted from ``source`` alone, unmasked (or None)."""
    mae = _mae_of(module)
    subjects = [s for s in (dm.val_subjects or dm.train_subjects) if source in dm.modalities]
    subjects = [s for s in subjects if s.presence[dm.modalities.index(source)]]
    if not subjects:
        return None
    subject, src = subjects[0], dm.modalities.index(source)
    patch, where = figure_patch(subject, dm.patch_size)
    device = next(module.parameters()).device
    image = torch.from_numpy(patch)[None].to(device)
    shown = torch.zeros_like(image)
    shown[:, src] = image[:, src]
    presence = torch.zeros(1, image.shape[1], device=device)
    presence[0, src] = 1.0
    was_training = mae.training
    mae.eval()
    with torch.no_grad():
        _, pred = mae.reconstruct(shown, torch.zeros_like(image[:, :1]), presence)
        if mae.loss.norm_target:
            pred = denormalise_blocks(pred.float(), image, mae.mask_block, mae.loss.eps)
    mae.train(was_training)
    title = (
        f"MAE cross-modal prediction from {source} alone (no mask), subject {subject.key}, patch centred on the "
        f"{where}" + ("; blocks de-normalised with their true mean/std" if mae.loss.norm_target else "")
    )
    return plot_mae_reconstruction(
        image[0].cpu().numpy(),
        shown[0].float().cpu().numpy(),
        pred[0].float().cpu().numpy(),
        [bool(p) for p in subject.presence],
        dm.modalities,
        path,
        title,
        columns=("truth", f"input ({source} only)", "prediction"),
    )


def embedding_report(
    module: PretrainModule, dm: BrainDataModule, initial_state: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """Alignment/uniformity of validation embeddings, trained and at initialisation (the baseline)."""
    loader = dm.val_dataloader()
    split = "validation"
    if not loader:
        loader, split = dm.train_dataloader(), "training (no validation subjects)"
    report: dict[str, Any] = {
        "reference": (
            "Wang & Isola 2020 (alpha=2, t=2): lower alignment = views of a subject agree, lower uniformity = "
            "embeddings spread out; read them together (a collapsed embedding has both near 0)"
        ),
        "split": split,
    }
    trained = {k: v.detach().clone() for k, v in module.method.state_dict().items()}
    for name, state in (("initial", initial_state), ("trained", trained)):
        module.method.load_state_dict(state)
        f_a, f_b, p_a, p_b = module.embed_loader(loader)
        report[name] = {"projection": embedding_quality(p_a, p_b), "encoder": embedding_quality(f_a, f_b)}
    queue = cast(ContrastiveMethod, module.method).queue_by_age(p_a)  # of the trained state, loaded last
    if queue is not None:
        report["queue_age"] = queue
    return report


def _metrics_csv(trainer: Any, out: Path) -> Path | None:
    for logger in trainer.loggers:
        path = getattr(getattr(logger, "experiment", None), "metrics_file_path", None)
        if path and Path(path).is_file():
            return Path(path)
    return out / "metrics.csv" if (out / "metrics.csv").is_file() else None


def write_evidence(cfg: DictConfig, out: Path, module: PretrainModule, dm: BrainDataModule, initial: dict) -> dict:
    """``embedding_quality.json``: probes, MAE reconstruction and (two-view methods) embedding quality."""
    stride = int(getattr(module.encoder, "total_stride", 1))
    settings = evidence_settings(cfg.evidence, dm.patch_size, stride, dm.modalities)
    report = evidence_report(module.method, initial, dm.train_subjects, dm.val_subjects, dm.modalities, settings)
    if isinstance(module.method, ContrastiveMethod):
        report["embeddings"] = embedding_report(module, dm, initial)
    write_json_atomic(out / EVIDENCE_FILE, report)
    for line in summary_lines(report):
        log.info("evidence: %s", line)
    return report


def _write_outputs(
    cfg: DictConfig, out: Path, trainer: Any, module: PretrainModule, dm: BrainDataModule, initial: dict
) -> None:
    save_weights(module.encoder, out / ENCODER_FILE, _encoder_meta(cfg, dm, trainer.global_step))
    log.info("encoder written to %s", out / ENCODER_FILE)
    csv = _metrics_csv(trainer, out)
    if csv is not None:
        plot_loss_curve(csv, out / "loss_curve.png", title=f"{cfg.method.name} pretraining loss")
    if module.method.reconstructor() is not None:
        write_mae_figure(module, dm, out / "mae_reconstruction.png", int(cfg.seed))
        write_cross_modal_figure(module, dm, out / "mae_cross_modal.png", str(cfg.evidence.reconstruction_input))
    report = write_evidence(cfg, out, module, dm, initial)
    if "embeddings" in report:
        t, i = report["embeddings"]["trained"]["projection"], report["embeddings"]["initial"]["projection"]
        log.info(
            "embeddings (%s): alignment %.3f (init %.3f), uniformity %.3f (init %.3f)",
            report["embeddings"]["split"],
            t["alignment"],
            i["alignment"],
            t["uniformity"],
            i["uniformity"],
        )
    queue = report.get("embeddings", {}).get("queue_age")
    if queue is not None:
        log.info(
            "queue: cosine of the validation projections with the queue's entries, oldest to newest quarter %s "
            "(rising to the newest: the embedding drifts with training time, a shortcut of the queued loss)",
            " ".join(f"{c:+.3f}" for c in queue["cosine_oldest_to_newest"]),
        )


def _short_run_logging(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``trainer.log_every_n_steps`` lowered for runs shorter than it (else no loss curve)."""
    steps, every = int(cfg.trainer.max_steps), int(cfg.trainer.log_every_n_steps)
    if steps < 1 or every <= steps:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.log_every_n_steps = max(1, steps // 10)
    log.info(
        "trainer.log_every_n_steps=%d > max_steps=%d: logging every %d", every, steps, cfg.trainer.log_every_n_steps
    )
    return cfg


def run(cfg: DictConfig, extra_callbacks: Iterable[Callback] = ()) -> Path:
    """Pretrain an encoder as configured and write the run directory's artefacts (see the module docstring).

    Args:
        cfg: the composed ``pretrain`` config.
        extra_callbacks: further Lightning callbacks (tests use one to interrupt a run).

    Returns:
        The run directory.

    Raises:
        ConfigError / DataError / CheckpointError: bad settings, bad input data, an unusable ``resume``.
    """
    out = Path(cfg.paths.output_dir)
    method = method_class(cfg.method)  # an unknown method or views fails before the run directory is made
    deterministic = cfg.trainer.get("deterministic") is True
    # DDP processes other than rank 0 train but leave the run directory's records to rank 0
    rank = int(rank_zero_only.rank)  # type: ignore[attr-defined]
    context = run_context(cfg, "pretrain") if rank == 0 else nullcontext(out)
    with context:
        seed_everything(int(cfg.seed), deterministic=deterministic)
        dm = BrainDataModule(
            cfg.data, cfg.paths.cache_dir, views=method.views, seed=int(cfg.seed), clean_target=method.clean_target
        )
        check_method_config(cfg.method, dm.patch_size, dm.batch_size)
        evidence_settings(cfg.evidence, dm.patch_size, 1, dm.modalities)  # bad settings fail before training
        if rank == 0:  # validate and cache now: bad input fails before Lightning sets up (fit finds the cache)
            dm.prepare_data()
        module = PretrainModule(cfg.method, cfg.model, cfg.optim, dm.in_channels, seed=int(cfg.seed))
        initial = copy.deepcopy(module.method.state_dict())
        trainer = build_trainer(_short_run_logging(cfg), out, monitor=None, extra_callbacks=extra_callbacks)
        ckpt = resolve_resume(cfg.get("resume"), out, cfg)
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
        if trainer.is_global_zero:
            _write_outputs(cfg, out, trainer, module, dm, initial)
    return out
