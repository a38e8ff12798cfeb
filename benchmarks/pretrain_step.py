"""Pretraining step: real loader vs memory, and achieved FLOP/s vs this machine's matmul peak.

One process, one model, one method (``preset=cpu``, ``method=mae`` by default), measured in the same run:

1. ``loader_vs_memory_step_ratio``: wall time of training steps fed by the real
   :class:`~ssl_pretrain.data.datamodule.BrainDataModule` loader (cache memory maps, patch sampling,
   TorchIO augmentation, modality dropout, collation; ``data.num_workers`` workers) divided by the wall
   time of the same number of steps fed from pre-collated batches held in a list. Blocks of loader steps
   and memory steps alternate, so load from other processes hits both alike. Target: <= 1.2 on 2 cores.
2. ``flops_fraction_of_matmul_peak``: FLOPs of one step (forward + backward, counted by
   ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls) divided by the median
   memory-fed step time, over the best fp32 ``torch.mm`` throughput measured in this process with the
   same thread count (benchmarks/flops.py).
3. Where the step's time goes (``torch.profiler`` self CPU time by operator family), to explain (2).

On a machine shared with other jobs, step times are bimodal (a contended 2-thread step can take several
times longer): ``*_best`` figures (minimum over steps) estimate the uncontended cost; the headline figures
use sums and medians, as a user would see them.

Data: ``--data-root`` (a BIDS dataset, e.g. the demo cohort), or else a 2+2-subject demo cohort simulated
into a temporary directory. Usage::

    .venv/bin/python benchmarks/pretrain_step.py [--data-root data/demo] [--steps 6] [--rounds 2] [override …]

Trailing arguments are Hydra overrides of configs/pretrain.yaml (e.g. ``data.num_workers=1``). The last
line printed is one JSON object with the figures and the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flops import count_flops, matmul_peak

from ssl_pretrain.config import compose_config
from ssl_pretrain.data.datamodule import BrainDataModule
from ssl_pretrain.methods import method_class
from ssl_pretrain.methods.module import PretrainModule
from ssl_pretrain.training import build_optimizer, param_groups

FAMILIES = {
    "convolution": ("conv", "mkldnn_convolution"),
    "normalisation": ("norm", "instance", "var", "mean"),
    "activation": ("relu", "prelu", "elu", "gelu"),
    "optimiser": ("adam", "_foreach", "lerp", "addcdiv", "sqrt"),
}


def make_step(module: PretrainModule, optim: dict[str, Any], clip: float | None, total_steps: int):
    """One optimiser step on a batch, as the Trainer does it (zero_grad, hook, loss, backward, clip, step)."""
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    counter = iter(range(1 << 62))

    def step(batch: dict[str, Any]) -> float:
        optimizer.zero_grad(set_to_none=True)
        index = next(counter)
        module.method.before_training_step(index, total_steps)  # as PretrainModule.training_step (momentum updates)
        loss = module.method(batch, module.generator(0, index, 0))["loss"]
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    return step


def loader_batches(dm: BrainDataModule, epoch: int) -> Iterator[dict[str, Any]]:
    """Endless batches of the real train loader, epoch after epoch (as Lightning iterates it)."""
    loader = dm.train_dataloader()
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def profile_breakdown(step, batch: dict[str, Any]) -> dict[str, float]:
    """Fraction of the step's self CPU time per operator family."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(batch)
    totals = dict.fromkeys([*FAMILIES, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        family = next((f for f, keys in FAMILIES.items() if any(k in name for k in keys)), "other")
        totals[family] += event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: round(v / whole, 3) for k, v in totals.items()}


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and return its figures, with ``ratios`` (loader/memory, fraction of the peak)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=None, help="BIDS dataset (default: simulate 2+2 demo)")
    parser.add_argument("--steps", type=int, default=4, help="pre-collated batches held in memory")
    parser.add_argument("--rounds", type=int, default=2, help="timed loader/memory step pairs = rounds x steps")
    parser.add_argument("--channels-last", action="store_true", help="channels_last_3d model and inputs")
    parser.add_argument("--peak-n", type=int, default=2048, help="matrix size of the matmul peak")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of configs/pretrain.yaml")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bssl-bench-"))
    root = args.data_root
    if root is None:
        from ssl_pretrain.data.demo import simulate_cohort

        root = simulate_cohort(tmp / "demo", n_controls=2, n_patients=2)
    cfg = compose_config(
        "pretrain",
        [f"data.root={root}", f"paths.cache_dir={tmp / 'cache'}", "preset=cpu", "method=mae", *args.overrides],
        output_dir=tmp / "run",
    )
    torch.manual_seed(0)
    dm = BrainDataModule(cfg.data, cfg.paths.cache_dir, views=method_class(cfg.method).views, seed=0)
    dm.prepare_data()
    dm.setup()
    module = PretrainModule(cfg.method, cfg.model, cfg.optim, dm.in_channels, seed=0)
    memory_format = torch.channels_last_3d if args.channels_last else torch.contiguous_format
    module = module.to(memory_format=memory_format)
    total = 2 + 2 * args.rounds * args.steps + 2
    step = make_step(module, build_optimizer(param_groups(module.method, cfg.optim), cfg.optim, total), 1.0, total)

    def fmt(batch: dict[str, Any]) -> dict[str, Any]:
        if not args.channels_last:
            return batch
        five_d = {k: v for k, v in batch.items() if torch.is_tensor(v) and v.ndim == 5}
        return {**batch, **{k: v.contiguous(memory_format=memory_format) for k, v in five_d.items()}}

    peaks = [matmul_peak(n=args.peak_n, repeats=20)]  # measured again at the end: the best of both is the peak
    memory = [fmt(b) for b, _ in zip(loader_batches(dm, epoch=1000), range(args.steps), strict=False)]
    stream = loader_batches(dm, epoch=0)
    for _ in range(2):  # warm-up: allocator, oneDNN primitives, worker start
        step(fmt(next(stream)))
    loader_times: list[float] = []
    memory_times: list[float] = []
    for i in range(args.rounds * args.steps):  # alternate single steps: outside load hits both alike
        t = time.perf_counter()
        step(fmt(next(stream)))
        loader_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        step(memory[i % len(memory)])
        memory_times.append(time.perf_counter() - t)
        print(f"step {i}: loader {loader_times[-1]:.2f} s, memory {memory_times[-1]:.2f} s", file=sys.stderr)
    fetch = []
    probe = loader_batches(dm, epoch=2000)
    for _ in range(args.steps):  # the loader alone, no compute
        t = time.perf_counter()
        next(probe)
        fetch.append(time.perf_counter() - t)
    flops, per_op = count_flops(lambda: step(memory[0]))
    peaks.append(matmul_peak(n=args.peak_n, repeats=20))
    peak = max(peaks, key=lambda p: p["flops_per_s"])
    step_median = statistics.median(memory_times)
    achieved = flops / step_median
    breakdown = profile_breakdown(step, memory[0])
    result = {
        "loader_vs_memory_step_ratio": round(sum(loader_times) / sum(memory_times), 3),
        "loader_vs_memory_median_ratio": round(statistics.median(loader_times) / step_median, 3),
        "loader_vs_memory_best_ratio": round(min(loader_times) / min(memory_times), 3),
        "flops_fraction_of_matmul_peak": round(achieved / peak["flops_per_s"], 3),
        "flops_fraction_of_matmul_peak_best_step": round(flops / min(memory_times) / peak["flops_per_s"], 3),
        "loader_step_s_median": round(statistics.median(loader_times), 3),
        "memory_step_s_median": round(step_median, 3),
        "memory_step_s_best": round(min(memory_times), 3),
        "loader_step_s": [round(t, 3) for t in loader_times],
        "memory_step_s": [round(t, 3) for t in memory_times],
        "loader_only_batch_s_median": round(statistics.median(fetch), 3),
        "step_gflop": round(flops / 1e9, 2),
        "achieved_gflops": round(achieved / 1e9, 2),
        "matmul_peak_gflops": round(peak["flops_per_s"] / 1e9, 2),
        "matmul_median_gflops": round(peak["median_flops_per_s"] / 1e9, 2),
        "time_fraction_by_op": breakdown,
        "flops_by_op_gflop": {k: round(v / 1e9, 2) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])},
        "threads": torch.get_num_threads(),
        "num_workers": dm.num_workers,
        "batch_size": dm.batch_size,
        "patch_size": list(dm.patch_size),
        "method": str(cfg.method.name),
        "channels_last_3d": bool(args.channels_last),
        "data_root": str(root),
        "device": "cpu",
    }
    result["ratios"] = {
        key: result[key]
        for key in ("loader_vs_memory_step_ratio", "loader_vs_memory_best_ratio", "flops_fraction_of_matmul_peak")
    }
    return result


def main() -> None:
    """Print the figures as one JSON line."""
    print(json.dumps(run()))


if __name__ == "__main__":
    main()
