"""Whole-volume prediction speed: seconds per subject of ``bssl predict`` at 2 mm and at 1 mm on the CPU.

Each measurement runs :func:`finetune.predict.run` — the code path of ``bssl predict`` — over a small
cohort: validated NIfTI inputs → the preprocessing cache → MONAI sliding-window inference with the
``preset=cpu`` network (48³ windows, overlap 0.25, Gaussian blending) → probabilities resampled to the
native grid → BIDS-derivative dseg NIfTIs and ``volumes.tsv``. The model is the cpu-preset U-Net with
random weights saved as a fine-tuned model (speed does not depend on the weight values) whose
training spacing is the benchmark's spacing (the model's spacing defines the grid it predicts on).

The cohort is ``tests/synthetic.py``'s (four modalities; a field of view of 148×180×136 mm whose
ellipsoidal brain, 95% of it, is about an adult brain's size: 74×90×68 voxels at 2 mm, 148×180×136 at
1 mm), or the first ``--subjects`` of ``--data-root`` (a BIDS dataset, e.g. the demo cohort, at 2 mm; the
1 mm figure then uses the synthetic cohort). Each spacing is run twice: the first run fills the cache
(``cold``: includes preprocessing), the second reads it (``seconds_per_subject_*``: what a user sees
on a re-run, and the figure the ≤ 5 s/subject target is about).

Ratios: ``fraction_of_target_2mm`` (warm seconds per subject at 2 mm / the 5 s target), ``warm_vs_cold_*``
(what the cache saves) and ``seconds_1mm_vs_2mm``.

Usage: ``python benchmarks/inference.py [--subjects 3] [--threads N] [--data-root DIR] [--spacings 2 1]``.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from finetune import predict  # noqa: E402
from finetune.policy import build_segmentation_net  # noqa: E402
from ssl_pretrain.config import compose_config  # noqa: E402
from ssl_pretrain.data.cache import preprocessing_settings  # noqa: E402
from ssl_pretrain.models.checkpoint import save_weights  # noqa: E402
from tests.synthetic import write_synthetic_bids  # noqa: E402

FOV_MM = (148, 180, 136)
TARGET_2MM = 5.0  # seconds per subject at 2 mm with a warm cache
MODALITIES = ["T1w", "T2w", "FA", "MD"]


def make_model(run_dir: Path, spacing: float) -> Path:
    """A cpu-preset U-Net saved as a fine-tuned model trained at ``spacing`` mm."""
    cfg = compose_config("finetune", ["preset=cpu", f"data.spacing={spacing}"])
    torch.manual_seed(0)
    net = build_segmentation_net(cfg.model, len(MODALITIES), 4, "full")
    meta = {
        "modalities": MODALITIES,
        "task": "segmentation",
        "policy": "full",
        "stage": "benchmark",
        "spacing": spacing,
        "patch_size": [int(cfg.data.patch_size)] * 3,
        "preprocessing": preprocessing_settings(cfg.data),
    }
    save_weights(net, run_dir / "model.pt", meta)
    return run_dir


def time_predict(
    model: Path, data_root: Path, work: Path, name: str, subjects: list[str] | None = None
) -> tuple[float, int]:
    """Wall seconds of one ``bssl predict`` run (of ``subjects``, default all) and the subjects it wrote."""
    overrides = [f"predict.model={model}", f"data.root={data_root}", f"paths.cache_dir={work / 'cache'}"]
    overrides += ["predict.device=cpu"] + ([f"predict.subjects=[{','.join(subjects)}]"] if subjects else [])
    cfg = compose_config("predict", overrides, output_dir=work / name)
    t0 = time.perf_counter()
    out = predict.run(cfg)
    seconds = time.perf_counter() - t0
    n = len(list((out / "bssl").glob("sub-*/**/*_desc-bsslTissue_dseg.nii.gz")))
    return seconds, n


def measure(spacing: float, n_subjects: int, work: Path, data_root: Path | None) -> dict[str, float]:
    """Cold (cache filled) and warm seconds per subject at ``spacing`` mm."""
    work.mkdir(parents=True, exist_ok=True)
    subjects = None
    if data_root is None:
        shape = tuple(round(f / spacing) for f in FOV_MM)
        data_root = write_synthetic_bids(work / "bids", n_subjects=n_subjects, shape=shape, spacing=spacing)
    else:
        subjects = sorted(p.name for p in data_root.glob("sub-*") if p.is_dir())[:n_subjects]
    model = make_model(work / "model", spacing)
    cold, n = time_predict(model, data_root, work, "cold", subjects)
    warm, n_warm = time_predict(model, data_root, work, "warm", subjects)
    assert n == n_warm and n > 0
    cache = next((work / "cache").glob("sub-*"))
    grid = json.loads((cache / "meta.json").read_text())["shape"]
    return {"cold": cold / n, "warm": warm / n, "n": n, "grid": grid}


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (printing a line per spacing) and return its figures, with ``ratios``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=3, help="subjects per spacing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data-root", type=Path, default=None, help="a BIDS dataset at 2 mm instead of synthetic")
    parser.add_argument("--spacings", type=float, nargs="+", default=[2.0, 1.0], help="model/grid spacings in mm")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {"threads": torch.get_num_threads(), "device": "cpu", "model": "preset=cpu"}
    results["data_2mm"] = str(args.data_root) if args.data_root else "synthetic"
    results["inference"] = "roi_size=whole (configs/predict.yaml)"
    with tempfile.TemporaryDirectory(prefix="bssl-bench-inference-") as tmp:
        for spacing in args.spacings:
            tag = f"{spacing:g}mm"
            root = args.data_root if (args.data_root is not None and spacing == 2.0) else None
            r = measure(spacing, args.subjects, Path(tmp) / tag, root)
            print(
                f"{tag}: {r['warm']:.2f} s/subject with a warm cache, {r['cold']:.2f} s/subject cold "
                f"({r['n']} subjects, cache grid {r['grid']})",
                flush=True,
            )
            results[f"seconds_per_subject_{tag}"] = round(float(r["warm"]), 3)
            results[f"seconds_per_subject_{tag}_cold"] = round(float(r["cold"]), 3)
            results[f"cache_grid_{tag}"] = r["grid"]
            results[f"subjects_{tag}"] = r["n"]
    ratios = {
        f"warm_vs_cold_{tag}": round(results[f"seconds_per_subject_{tag}"] / cold, 3)
        for tag, cold in (
            (k.removeprefix("seconds_per_subject_").removesuffix("_cold"), v)
            for k, v in results.items()
            if k.startswith("seconds_per_subject_") and k.endswith("_cold") and v > 0
        )
    }
    if "seconds_per_subject_2mm" in results:
        results["target_seconds_per_subject_2mm"] = TARGET_2MM
        results["meets_target_2mm"] = bool(results["seconds_per_subject_2mm"] <= TARGET_2MM)
        ratios["fraction_of_target_2mm"] = round(results["seconds_per_subject_2mm"] / TARGET_2MM, 3)
    if "seconds_per_subject_2mm" in results and "seconds_per_subject_1mm" in results:
        ratios["seconds_1mm_vs_2mm"] = round(results["seconds_per_subject_1mm"] / results["seconds_per_subject_2mm"], 2)
    results["ratios"] = ratios
    return results


def main() -> None:
    """Print a line per spacing, then the figures as one JSON line."""
    print(json.dumps(run()))


if __name__ == "__main__":
    main()
