"""Run every benchmark in one process and print one table of all their ratios, then the ratios as JSON.

The benchmarks (each also runs on its own, see its docstring): ``flops`` (this machine's matmul peak and
how steady it is), ``pretrain_step`` (training steps fed by the real loader vs from memory; FLOP/s as a
fraction of the matmul peak), ``finetune_stage`` (the quick preset's brainstem stage: step time, share of the
stage outside training steps, FLOP/s, speed-up over the revision before issue 15), ``step_options`` (the quick
network's training step with another memory layout, fused AdamW, ``torch.compile``), ``inference`` (``bssl
predict`` seconds per subject vs the 5 s target) and ``loader`` (the cached patch sampler vs a TorchIO
pipeline). Each returns its figures with a ``ratios`` dict; this script collects them. Ratios are taken
within one run on one machine, never against a fixed time.

Usage::

    .venv/bin/python benchmarks/run_all.py [--quick] [--only loader inference]

``--quick`` uses tiny sizes (a 4-subject synthetic cohort, 16³ patches, a 2-level network, 4 mm grids,
small matmuls): a smoke test of the whole chain in about a minute on 2 cores, whose ratios are not the
figures to report. The last line printed is one JSON object ``{benchmark: {ratio: value}}``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # the benchmarks import each other and tests.synthetic

# loader last: it pins torch to one thread
ORDER = ("flops", "pretrain_step", "finetune_stage", "step_options", "inference", "loader")
QUICK_MODEL = [
    "data.patch_size=16",
    "data.batch_size=2",
    "model.channels=[8,16]",
    "model.strides=[1,2]",
    "model.num_res_units=[1,1]",
    "method.mask_block=4",
]


def quick_arguments(work: Path) -> dict[str, list[str]]:
    """Small settings of every benchmark, on a 4-subject synthetic cohort written into ``work``."""
    from tests.synthetic import write_synthetic_bids

    root = write_synthetic_bids(work / "bids", n_subjects=4, shape=(32, 36, 32))
    return {
        "flops": ["--n", "256", "--repeats", "3"],
        "pretrain_step": ["--data-root", str(root), "--steps", "2", "--rounds", "1", "--peak-n", "256", *QUICK_MODEL],
        "finetune_stage": ["--quick", "--data-root", str(root), "--peak-n", "256"],
        # torch.compile takes about a minute to compile: left out of the smoke run
        "step_options": [
            "--variants",
            "other_layout",
            "instance_norm",
            "unfused_adamw",
            "--rounds",
            "1",
            "--steps",
            "2",
            "--warmup",
            "1",
        ],
        "inference": ["--subjects", "1", "--spacings", "4"],
        "loader": [
            *("--root", str(root), "--patch", "16", "--patches", "8", "--rounds", "1"),
            *("--spv-amortised", "2", "--spacing", "3"),
        ],
    }


def run_all(quick: bool = False, only: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Run the benchmarks (``only`` these, in :data:`ORDER`) and return ``{benchmark: ratios}``."""
    names = [n for n in ORDER if not only or n in only]
    unknown = sorted(set(only or ()) - set(ORDER))
    if unknown:
        raise ValueError(f"unknown benchmarks {unknown}; choose from {list(ORDER)}")
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bssl-bench-all-") as tmp:
        arguments = quick_arguments(Path(tmp)) if quick else {name: [] for name in names}
        for name in names:
            threads = torch.get_num_threads()
            print(f"== {name} {' '.join(arguments[name])}", flush=True)
            result: dict[str, Any] = importlib.import_module(name).run(arguments[name])
            torch.set_num_threads(threads)
            results[name] = {key: float(value) for key, value in result["ratios"].items()}
    return results


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One row per ratio: benchmark, ratio, value."""
    rows = [(bench, ratio, f"{value:.3g}") for bench, ratios in results.items() for ratio, value in ratios.items()]
    widths = [max(len(r[i]) for r in [("benchmark", "ratio", "value"), *rows]) for i in range(3)]
    lines = [f"{'benchmark':<{widths[0]}}  {'ratio':<{widths[1]}}  {'value':>{widths[2]}}"]
    lines.append("  ".join("-" * w for w in widths))
    lines += [f"{b:<{widths[0]}}  {r:<{widths[1]}}  {v:>{widths[2]}}" for b, r, v in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Run, print the table and the last-line JSON; return the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not figures to report")
    parser.add_argument("--only", nargs="+", choices=ORDER, help="run only these benchmarks")
    args = parser.parse_args(argv)
    results = run_all(quick=args.quick, only=args.only)
    print(format_table(results))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
