"""The supervised stages' LightningModule: ROI-masked Dice+CE on patches, whole-volume validation.

Training steps see region-aware patches (:class:`~ssl_pretrain.data.sampler.PatchDataset`) of the k
labelled training subjects; the loss counts only the stage's ROI (:mod:`finetune.roi_loss`). Validation
runs sliding-window inference over each validation subject's whole cached volume and logs the ROI Dice
of GM and WM (``val/dice`` is their mean over subjects, the quantity that selects the best checkpoint
and drives early stopping). The test split is never seen here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from finetune.inference import InferenceSettings, mask_to_brain, predict_cached, predict_labels
from finetune.metrics import dice, roi_metrics
from finetune.policy import apply_policy, encoder_frozen, encoder_of, param_groups
from finetune.region_head import RegionHeadLoss
from finetune.roi import StageROI
from finetune.roi_loss import ROIDiceCELoss
from ssl_pretrain.data import batch as B
from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.data.labels import TISSUE_CLASSES
from ssl_pretrain.training import build_optimizer

VAL_METRIC = "val/dice"
DICE_CLASSES = tuple(c for c, name in TISSUE_CLASSES.items() if name in ("GM", "WM"))  # the mean Dice follows


class WholeVolumes(Dataset):
    """The subjects of whole-volume validation, one per item (use ``batch_size=None``).

    Items are ``{"subject": key}``; the module predicts the cached volume itself
    (:func:`finetune.inference.predict_cached`), so no volume travels through the loader.
    """

    def __init__(self, subjects: Sequence[CachedSubject]) -> None:
        self.keys = [s.key for s in subjects]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {B.SUBJECT: self.keys[i]}


def roi_dice(
    net: nn.Module, subject: CachedSubject, roi: StageROI, inference: InferenceSettings, device: Any
) -> dict[str, float]:
    """Dice of one labelled subject inside the stage's ROI, predicted as a test subject is (whole ROI,
    sliding window, background outside the brain).

    Returns:
        ``{"dice_CSF", "dice_GM", "dice_WM"}`` (NaN where a class is absent from both) and ``"dice"``, the mean
        of the finite GM and WM values (0 when both are NaN): the quantity validation and the convergence
        test follow.
    """
    mask = roi.volume_mask(np.asarray(subject.regions))
    probs = predict_cached(net, subject, inference, device=device, focus=mask)
    probs = mask_to_brain(probs, subject.brain, inference.heads)
    truth = np.asarray(subject.tissue).astype(np.int64)
    m = roi_metrics(predict_labels(probs, inference.heads), truth, mask, roi.spacing, hd95=False)
    values = [v for v in (m["dice_GM"], m["dice_WM"]) if np.isfinite(v)]
    return {
        **{f"dice_{c}": float(m[f"dice_{c}"]) for c in ("CSF", "GM", "WM")},
        "dice": float(np.mean(values)) if values else 0.0,
    }


class SegmentationModule(L.LightningModule):
    """GM/WM/CSF segmentation of one stage.

    Args:
        net: the policy's network (:func:`finetune.policy.build_segmentation_net`), already initialised.
        policy: ``full`` | ``frozen_encoder`` | ``linear``.
        roi: the stage's ROI.
        loss: the ROI-masked loss.
        optim_cfg: the ``optim`` config (for :func:`ssl_pretrain.training.build_optimizer`).
        total_steps: optimiser steps of the run (for the schedule).
        inference: sliding-window settings of the validation pass.
        val_subjects: the cached validation subjects (whole volumes).
        compile_net: the training step's forward pass goes through ``torch.compile(net)`` (``trainer.compile``;
            :mod:`ssl_pretrain.training.compile`); everything else calls ``net`` itself.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        policy: str,
        roi: StageROI,
        loss: ROIDiceCELoss,
        optim_cfg: Any,
        total_steps: int,
        inference: InferenceSettings,
        val_subjects: Sequence[CachedSubject] = (),
        region_loss: RegionHeadLoss | None = None,
        lambda_regions: float = 1.0,
        compile_net: bool = False,
    ) -> None:
        super().__init__()
        if (region_loss is not None) != (len(inference.heads) == 2):
            raise ValueError(f"a region loss needs a second head and vice versa (heads {inference.heads})")
        self.net = net
        self.region_loss = region_loss
        self.lambda_regions = float(lambda_regions)
        self.policy = policy
        self.roi = roi
        self.loss_fn = loss
        self.optim_cfg = optim_cfg
        self.total_steps = int(total_steps)
        self.inference = inference
        self.val_subjects = {s.key: s for s in val_subjects}
        apply_policy(self.net, policy)
        # in a dict, not an attribute: a compiled module there would be a second copy of the weights in checkpoints
        self._compiled: dict[str, nn.Module] = {"net": torch.compile(net)} if compile_net else {}  # type: ignore[dict-item]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, sum(heads), X, Y, Z)`` of ``(B, C, X, Y, Z)``: tissue, then regions (if any)."""
        return self.net(x)

    def losses(self, logits: torch.Tensor, tissue: torch.Tensor, regions: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loss", "tissue", "regions"?}`` of a batch: the ROI-masked tissue loss plus ``lambda_regions`` times
        the region head's loss, which counts every labelled voxel outside the stage's excluded zone."""
        n_tissue = self.inference.heads[0]
        roi = self.roi.patch_mask(regions)
        out = {"tissue": self.loss_fn(logits[:, :n_tissue].float(), tissue, roi)}
        out["loss"] = out["tissue"]
        if self.region_loss is not None:
            counted = (tissue != B.IGNORE_INDEX) & ~self.roi.excluded_patch(regions)
            out["regions"] = self.region_loss(logits[:, n_tissue:].float(), regions, counted)
            out["loss"] = out["loss"] + self.lambda_regions * out["regions"]
        return out

    def train(self, mode: bool = True) -> SegmentationModule:
        """Lightning toggles train/eval each epoch; a frozen encoder stays in eval mode."""
        super().train(mode)
        if encoder_frozen(self.policy):
            encoder_of(self.net).eval()
        return self

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self._compiled.get("net", self.net)(batch[B.IMAGE])
        parts = self.losses(logits, batch[B.TISSUE], batch[B.REGIONS])
        n = logits.shape[0]
        self.log("train/loss", parts["loss"], prog_bar=True, batch_size=n)
        for name in ("tissue", "regions"):
            if name in parts:
                self.log(f"train/loss_{name}", parts[name].detach(), batch_size=n)
        self.log("train/roi_fraction", self.roi.patch_mask(batch[B.REGIONS]).float().mean(), batch_size=n)
        return parts["loss"]

    def validation_step(self, item: dict[str, Any], batch_idx: int) -> None:
        subject = self.val_subjects[item[B.SUBJECT]]
        m = roi_dice(self.net, subject, self.roi, self.inference, self.device)
        self.log(VAL_METRIC, m["dice"], prog_bar=True, batch_size=1, sync_dist=True)
        for cls in ("GM", "WM", "CSF"):
            if np.isfinite(m[f"dice_{cls}"]):
                self.log(f"val/dice_{cls}", m[f"dice_{cls}"], batch_size=1, sync_dist=True)

    @torch.no_grad()
    def fixed_patch_scores(self, items: Sequence[dict[str, Any]], batch_size: int = 4) -> dict[str, float]:
        """The stage's loss and ROI Dice on fixed patches (unaugmented items of a :class:`PatchDataset`), in eval
        mode, from one forward pass per chunk.

        ``loss`` is the mean of the chunks' losses (both heads), ``tissue`` that of the tissue head's term; ``dice``
        the mean of the GM and WM Dice of the tissue head's argmax, counted over every labelled ROI voxel of every
        patch together (NaN classes left out; 0 when both are absent). All are deterministic functions of the
        weights (the convergence test's quantities; :mod:`finetune.convergence`).
        """
        was_training = self.net.training
        self.net.eval()
        losses: dict[str, list[float]] = {"loss": [], "tissue": []}
        predicted, truth, counted = [], [], []  # per chunk: tissue argmax, labels, ROI (b, 1, X, Y, Z)
        try:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                image = torch.stack([it[B.IMAGE] for it in chunk]).to(self.device)
                tissue = torch.stack([it[B.TISSUE] for it in chunk]).to(self.device)
                regions = torch.stack([it[B.REGIONS] for it in chunk]).to(self.device)
                logits = self.net(image)  # (b, sum(heads), X, Y, Z)
                parts = self.losses(logits, tissue, regions)
                for name, values in losses.items():
                    values.append(float(parts[name]))
                predicted.append(logits[:, : self.inference.heads[0]].argmax(1, keepdim=True).cpu())
                truth.append(tissue.cpu())
                counted.append(self.roi.patch_mask(regions).cpu())
        finally:
            self.train(was_training)  # re-applies the policy (a frozen encoder stays in eval mode)
        scores = {name: float(np.mean(values)) if values else float("nan") for name, values in losses.items()}
        if not predicted:
            return {**scores, "dice": 0.0}
        per_class = dice(torch.cat(predicted), torch.cat(truth), DICE_CLASSES, torch.cat(counted))
        finite = [v for v in per_class.values() if np.isfinite(v)]
        return {**scores, "dice": float(np.mean(finite)) if finite else 0.0}

    def configure_optimizers(self) -> Any:
        groups = param_groups(self.net, self.policy, self.optim_cfg)
        return build_optimizer(groups, self.optim_cfg, self.total_steps)
