"""Loader benchmark: patches/second from the cached, region-aware sampler vs a plain TorchIO pipeline.

Both pipelines deliver the same thing, measured in one run on the same data and CPU: batches of
``patch`` ^ 3 four-modality patches (T1w, T2w, FA, MD on the T1w grid at ``spacing`` mm, robustly
normalised), with tissue and region label patches, half of them centred in the brainstem, augmented
by the *same* TorchIO transforms (``data.augmentation`` of ``configs/data/default.yaml``).

- **ours**: :func:`ssl_pretrain.data.cache.preprocess` once (timed separately), then
  :class:`~ssl_pretrain.data.sampler.PatchDataset` + ``DataLoader``: memory-mapped patch reads, the
  augmentation on the patch (plus its context margin), modality dropout.
- **TorchIO**: ``tio.SubjectsDataset`` over the ``.nii.gz`` files with the preprocessing it needs
  (``ToCanonical``, ``Resample`` to the spacing, ``Resample`` onto the T1w grid, ``ZNormalization`` in
  the head) and the same augmentations on each loaded volume, then ``tio.Queue`` with a
  ``LabelSampler`` (half the patches in the brainstem). ``samples_per_volume`` (spv) patches are cut
  from each augmented volume: spv = 1 gives every patch its own augmentation, as ours does; larger spv
  amortises loading over patches that share one augmentation draw. Both are reported; the headline
  ratio uses ``--spv`` (default 1).

Both run single-threaded in the main process by default (``--workers 0``) and are timed in interleaved
rounds; rates are patches per CPU-second of that process, which a busy shared machine does not distort
(wall-clock rates are printed beside them; with ``--workers N`` the wall-clock rate is the figure).
Rare, expensive transforms (motion artefacts) make per-patch cost heavy-tailed, so totals are pooled
over all rounds.

Run: ``python benchmarks/loader.py`` (synthetic demo-like data: 8 subjects of 90x108x90 at 2 mm) or
``python benchmarks/loader.py --root /data/bids``. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data.augment import RandomAffineCrop, augment_margin, build_augment
from ssl_pretrain.data.bids import read_dseg_tsv
from ssl_pretrain.data.cache import preprocess
from ssl_pretrain.data.labels import REGION_INDEX, canonical_region
from ssl_pretrain.data.sampler import EpochSampler, PatchDataset
from ssl_pretrain.data.validate import load_records
from tests.synthetic import write_synthetic_bids


def ours(subjects, cfg, n_patches: int, workers: int, augment: bool = True, seed: int = 0) -> tuple[int, float, float]:
    """``(patches, wall seconds, CPU seconds of this process)`` from the cached sampler through a DataLoader."""
    patch = (int(cfg.patch_size),) * 3
    dataset = PatchDataset(
        subjects,
        patch,
        roi="brainstem",
        roi_fraction=float(cfg.roi_fraction),
        length=n_patches,
        seed=seed,
        augment=build_augment(cfg.augmentation, patch) if augment else None,
        augment_margin=augment_margin(cfg.augmentation, patch, float(cfg.spacing)) if augment else 0,
        modality_dropout=float(cfg.modality_dropout),
        min_modalities=int(cfg.min_modalities),
        shard=False,
    )
    loader = DataLoader(dataset, batch_size=int(cfg.batch_size), sampler=EpochSampler(dataset), num_workers=workers)
    start, cpu = time.perf_counter(), time.process_time()
    count = sum(len(batch["subject"]) for batch in loader)
    return count, time.perf_counter() - start, time.process_time() - cpu


def torchio_pipeline(
    records, cfg, n_patches: int, workers: int, spv: int, augment: bool = True, seed: int = 0
) -> tuple[int, float, float]:
    """``(patches, wall s, CPU s)`` from SubjectsDataset + Queue over the NIfTI files, same patch and augmentations."""
    modalities = list(cfg.modalities)
    patch = (int(cfg.patch_size),) * 3
    subjects = []
    for record in records:
        if not all(m in record.images for m in modalities) or record.regions is None or record.tissue is None:
            continue
        table = read_dseg_tsv(record.regions_tsv)
        brainstem = [i for i, name in table.items() if canonical_region(name) == "brainstem"]
        others = [i for i, name in table.items() if i > 0 and i not in brainstem]
        probabilities = {i: 0.5 / len(brainstem) for i in brainstem} | {i: 0.5 / len(others) for i in others}
        images = {m: tio.ScalarImage(record.images[m]) for m in modalities}
        labels = {"tissue": tio.LabelMap(record.tissue), "regions": tio.LabelMap(record.regions)}
        subjects.append(tio.Subject(**images, **labels))
    if not subjects:
        raise SystemExit("no subject has every modality and both label maps; TorchIO needs complete subjects")
    # The same transforms on the whole volume; the affine is TorchIO's own RandomAffine with our parameters.
    augmentation = []
    for t in build_augment(cfg.augmentation, patch).transforms if augment else []:
        if isinstance(t, RandomAffineCrop):
            if t.affine_probability > 0:
                augmentation.append(tio.RandomAffine(scales=t.scales, degrees=t.degrees, p=t.affine_probability))
        else:
            augmentation.append(t)
    transform = tio.Compose(
        [
            tio.ToCanonical(),
            tio.Resample(float(cfg.spacing)),
            tio.Resample(modalities[0]),
            tio.ZNormalization(masking_method=lambda x: x > 0),
            *augmentation,
        ]
    )
    queue = tio.Queue(
        tio.SubjectsDataset(subjects, transform=transform),
        max_length=max(2 * spv, 8),
        samples_per_volume=spv,
        sampler=tio.LabelSampler(patch, label_name="regions", label_probabilities=probabilities),
        num_workers=workers,
        shuffle_subjects=True,
        shuffle_patches=True,
    )
    loader = DataLoader(queue, batch_size=int(cfg.batch_size), num_workers=0)
    torch.manual_seed(seed)
    count = 0
    start, cpu = time.perf_counter(), time.process_time()
    while count < n_patches:
        for batch in loader:
            torch.cat([batch[m][tio.DATA] for m in modalities], dim=1)  # the same (B, C, X, Y, Z) image
            count += batch[modalities[0]][tio.DATA].shape[0]
            if count >= n_patches:
                break
    return count, time.perf_counter() - start, time.process_time() - cpu


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (printing its table) and return its figures, with ``ratios`` (the speed-ups)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="a BIDS dataset (default: write synthetic demo-like data)")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(90, 108, 90))
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--patches", type=int, default=64, help="patches per pipeline per round (spv=1: a quarter)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds, pooled")
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes (both pipelines)")
    parser.add_argument("--spv", type=int, default=1, help="TorchIO samples_per_volume of the headline ratio")
    parser.add_argument("--spv-amortised", type=int, default=8, help="second TorchIO setting reported")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data and cache")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core per loader process, for both pipelines
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    work = Path(tempfile.mkdtemp(prefix="bssl-bench-"))
    root = args.root or write_synthetic_bids(work / "bids", n_subjects=args.subjects, shape=args.shape)
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    cfg.root, cfg.patch_size, cfg.spacing = str(root), args.patch, args.spacing
    records = load_records(cfg)
    if args.root is None:
        assert REGION_INDEX["brainstem"] == 5  # tests/synthetic.py labels the brainstem 5

    start = time.perf_counter()
    subjects = preprocess(records, cfg, work / "cache", progress=False)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    preprocess(records, cfg, work / "cache", progress=False)
    warm = time.perf_counter() - start
    cfg16 = cfg.copy()
    cfg16.cache_dtype = "float16"
    subjects16 = preprocess(records, cfg16, work / "cache16", progress=False)

    n, k, w = args.patches, args.spv_amortised, args.workers
    headline, amortised = f"TorchIO Queue, spv={args.spv}", f"TorchIO Queue, spv={k}"
    plain_ours, plain_tio = "ours, no augmentation, float32 cache", f"TorchIO Queue, spv={k}, no augmentation"
    pipelines = {
        "ours (augmented)": lambda r: ours(subjects, cfg, n, w, seed=r),
        headline: lambda r: torchio_pipeline(records, cfg, n // 4 if args.spv == 1 else n, w, args.spv, seed=r),
        amortised: lambda r: torchio_pipeline(records, cfg, n, w, k, seed=r),
        plain_ours: lambda r: ours(subjects, cfg, 4 * n, w, augment=False, seed=r),
        "ours, no augmentation, float16 cache": lambda r: ours(subjects16, cfg, 4 * n, w, augment=False, seed=r),
        plain_tio: lambda r: torchio_pipeline(records, cfg, n, w, k, augment=False, seed=r),
    }
    totals = {name: np.zeros(3) for name in pipelines}  # patches, wall s, CPU s
    for r in range(args.rounds):  # interleaved, so a busy moment on a shared machine hits every pipeline
        for name, run in pipelines.items():
            totals[name] += run(r)
    # With workers=0 everything runs in this process on one thread: CPU seconds measure the work itself,
    # unaffected by other jobs on a shared machine. With workers > 0 only wall-clock time is meaningful.
    column = 2 if w == 0 else 1
    rate = {name: t[0] / t[column] for name, t in totals.items()}
    wall = {name: t[0] / t[1] for name, t in totals.items()}

    print(
        f"data: {root} ({len(records)} subjects), patch {args.patch}^3, spacing {args.spacing} mm, {w} workers, "
        f"1 torch/SimpleITK thread, {args.rounds} interleaved rounds pooled"
    )
    print(f"preprocess: {cold:.1f} s once ({cold / len(records):.2f} s/subject); cache hit {warm:.2f} s")
    unit = "patches/CPU-s" if w == 0 else "patches/s"
    print(f"{'pipeline':<44} {unit:>14} {'patches/wall-s':>15} {'patches':>8}")
    for name, t in totals.items():
        print(f"{name:<44} {rate[name]:>14.2f} {wall[name]:>15.2f} {int(t[0]):>8}")
    speedup = rate["ours (augmented)"] / rate[headline]
    speedup_k = rate["ours (augmented)"] / rate[amortised]
    plain = rate[plain_ours] / rate[plain_tio]
    print(
        f"speed-up vs TorchIO: {speedup:.1f}x (spv={args.spv}: every patch its own augmentation, as ours), "
        f"{speedup_k:.1f}x (spv={k}), {plain:.1f}x without augmentation (spv={k})"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {
        "loader_speedup_vs_torchio": round(speedup, 2),
        f"loader_speedup_vs_torchio_spv{k}": round(speedup_k, 2),
        f"loader_speedup_vs_torchio_spv{k}_no_augment": round(plain, 2),
    }
    return {
        "loader_speedup_vs_torchio": round(speedup, 2),
        "patches_per_s": round(rate["ours (augmented)"], 2),
        "torchio_patches_per_s": round(rate[headline], 2),
        "rate_unit": "per CPU-second, single thread" if w == 0 else "per wall-second",
        "torchio_spv": args.spv,
        f"loader_speedup_vs_torchio_spv{k}": round(speedup_k, 2),
        f"torchio_spv{k}_patches_per_s": round(rate[amortised], 2),
        f"loader_speedup_vs_torchio_spv{k}_no_augment": round(plain, 2),
        "patches_per_s_no_augment_float32": round(rate[plain_ours], 1),
        "patches_per_s_no_augment_float16": round(rate["ours, no augmentation, float16 cache"], 1),
        "preprocess_s_per_subject": round(cold / len(records), 3),
        "ratios": ratios,
    }


def main() -> None:
    """Print the table, then the figures as one JSON line."""
    print(json.dumps(run()))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
