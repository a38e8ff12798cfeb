"""Transfer between regions: GM/WM probes on frozen-encoder features, trained in one region and tested in another
(DESIGN §9 ``transfer_matrix``), for every pretraining run, source-stage model and a random encoder.

The probes, the between-region shift and cross-encoder CKA come from the same sampled voxels and features, so
they are measured once (:func:`probe_measures`) and shared with :mod:`evaluation.sections.similarity`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch

from evaluation.captions import join, setting
from evaluation.figures import transfer_matrix_png
from evaluation.report_html import details, matrix_tables, missing, num
from evaluation.runs import Run
from evaluation.sections.base import Context, Section
from evaluation.transfer import measure_transfer
from ssl_pretrain.models.checkpoint import load_weights
from ssl_pretrain.models.unet import ResEncoder

log = logging.getLogger(__name__)

UNET_ONLY_KEYS = ("out_channels", "decoder_res_units", "upsample")
SHARED_KEYS = ("chance", "regions_used", "n_subjects")  # the probe setting, beside both sections' results


def encoder_from_sidecar(sidecar: dict[str, Any]) -> ResEncoder:
    """A :class:`ResEncoder` of the architecture a sidecar describes (an encoder's, or a UNet's encoder)."""
    config = {k: v for k, v in sidecar["architecture"]["config"].items() if k not in UNET_ONLY_KEYS}
    return ResEncoder(**config)


def _encoder_label(run: Run) -> str:
    """A source-stage model is named for its chain (``subcortical``, ``ssl_mae+subcortical``): its recorded
    ``init_label``, else its initialisation followed by its stage."""
    if run.kind == "pretrain" or run.sidecar.get("init_label"):
        return run.label
    return str(run.stage) if run.label == "scratch" else f"{run.label}+{run.stage}"


def source_encoders(runs: Sequence[Run], target: str) -> list[Run]:
    """The runs whose encoders the probes compare: every pretraining run and every model of a source stage (a
    fine-tuning run of any stage but the ``target``), in the order given."""
    return [r for r in runs if r.kind == "pretrain" or (r.kind == "finetune" and r.stage not in (None, target))]


def frozen_encoders(
    runs: Sequence[Run], modalities: Sequence[str], seed: int, random_encoder: bool, target: str
) -> dict[str, tuple[ResEncoder, int]]:
    """label -> (frozen encoder, total stride) for every pretrain run and source-stage model (+ a random one)."""
    sources = source_encoders(runs, target)
    encoders: dict[str, tuple[ResEncoder, int]] = {}
    if random_encoder and sources:
        torch.manual_seed(seed)
        enc = encoder_from_sidecar(sources[0].sidecar)
        encoders["random_init"] = (enc.eval(), enc.total_stride)
    for run in sources:
        label = _encoder_label(run)
        if label in encoders:
            label = f"{label}#{run.seed}"
        enc = encoder_from_sidecar(run.sidecar)
        load_weights(enc, run.path, modalities=list(modalities), strict_arch=False)
        encoders[label] = (enc.eval(), enc.total_stride)
    return encoders


def _measure(ctx: Context) -> dict[str, Any]:
    probe = ctx.cfg.probe
    if not probe.enabled:
        return {}
    modalities, random_encoder = list(ctx.cfg.data.modalities), bool(probe.random_encoder)
    encoders = frozen_encoders(ctx.runs, modalities, ctx.seed, random_encoder, ctx.target)
    if not encoders:
        return {}
    n, splits = int(probe.max_subjects), ctx.splits
    return measure_transfer(
        encoders, splits["train"][:n], splits["test"][:n], list(probe.regions), int(probe.voxels_per_subject),
        seed=ctx.seed, probe=str(probe.probe), n_boot=ctx.n_boot, n_null=int(probe.get("n_null", 100)),
    )  # fmt: skip


def probe_measures(ctx: Context, keys: Sequence[str]) -> dict[str, Any]:
    """``keys`` (and the probe setting) of :func:`evaluation.transfer.measure_transfer`, measured once per
    evaluation; empty when ``probe.enabled`` is false or no run has an encoder to probe."""
    measured = ctx.once("probe_measures", lambda: _measure(ctx))
    return {k: measured[k] for k in (*keys, *SHARED_KEYS)} if measured else {}


def probe_source(results: Mapping[str, Any], key: str) -> str:
    """What a probe figure (``transfer_matrix``, ``shift`` or ``cka``) was made from, in words."""
    panels = list(results.get(key) or {})
    text = f"encoders: {join(panels)}" if key != "cka" else f"regions: {join(panels)}"
    regions = results.get("regions_used")
    if regions and key != "cka":
        text += f"; regions: {join(regions)}"
    n = results.get("n_subjects")
    if isinstance(n, Mapping):
        text += "; subjects: " + ", ".join(f"{k} {v}" for k, v in n.items())
    probe, voxels = setting(results, "probe.probe"), setting(results, "probe.voxels_per_subject")
    if probe:
        text += f"; {probe} probe"
    if voxels:
        text += f"; {voxels} voxels per region and subject (half GM, half WM)"
    return text


class TransferMatrix(Section):
    """Region-to-region probe transfer: the heatmaps, with their numbers and CIs behind a click."""

    id = "transfer_matrix"
    anchor = "transfer"
    title = "Transfer between regions"
    captions: ClassVar[Mapping[str, str]] = {
        "transfer_matrix": "Linear probes (GM vs WM) trained on frozen-encoder features of voxels in the row region "
        "and tested in the column region on a disjoint set of subjects; cells give balanced accuracy (0.5 = chance).",
    }

    def compute(self, ctx: Context) -> dict[str, Any]:
        return probe_measures(ctx, ("transfer_matrix", "transfer_ci"))

    def draw(self, results: Mapping[str, Any]) -> dict[str, bytes]:
        tm = results.get("transfer_matrix")
        return {"transfer_matrix": transfer_matrix_png(tm)} if tm else {}

    def provenance(self, family: str, results: Mapping[str, Any]) -> str:
        return probe_source(results, family)

    def render(self, results: Mapping[str, Any], figures: str) -> str:
        tm = results.get("transfer_matrix") or {}
        if not tm:
            return missing("region-transfer probes") + figures
        body = "<p>Does what a frozen encoder learned separate GM from WM in a region it was not probed in? A high "
        body += "off-diagonal cell means a probe trained in one region (row) still works in another (column). Chance "
        body += f"is {num(results.get('chance', 0.5), 2)}; the randomly initialised encoder (<code>random_init</code>) "
        body += "is the floor an encoder has to beat. Intervals resample the testing subjects.</p>"
        numbers = matrix_tables(tm, "trained in ↓ / tested in →", results.get("transfer_ci"))
        return body + figures + details("Numbers [95% CI]", numbers)
