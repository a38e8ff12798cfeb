"""FLOP counting and this machine's measured matmul peak, for achieved-FLOP/s figures in benchmarks.

``count_flops(fn)`` counts the floating-point operations of whatever ``fn`` runs (forward and, if ``fn``
calls ``backward``, backward too) with :class:`torch.utils.flop_counter.FlopCounterMode`: matmuls and
convolutions (2 FLOPs per multiply-add), not elementwise ops or normalisation. ``matmul_peak`` times a
large ``torch.mm`` in the same process, so ``achieved / peak`` compares a workload with the best this
machine reaches on dense fp32 matmul with the same thread count.

Usage from another benchmark: ``from flops import count_flops, matmul_peak`` (benchmarks/ on sys.path),
or run this file (``[--n 2048] [--repeats 10]``) to print the peak as JSON; its ratio,
``matmul_median_vs_peak``, says how steady the machine is (1 = every repeat as fast as the best).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def count_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """FLOPs of one call of ``fn``: ``(total, per operator)``."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: torch.device | str = "cpu") -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def matmul_peak(
    n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Measured dense matmul throughput: ``{"flops_per_s": best, "median_flops_per_s", "n", "seconds"}``.

    The best of ``repeats`` ``(n, n) @ (n, n)`` products (2n³ FLOPs each) is the peak: it is what the
    machine reached when nothing else ran.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=dtype).to(device)
    b = torch.randn(n, n, generator=g, dtype=dtype).to(device)
    times = time_call(lambda: torch.mm(a, b), repeats, warmup=2, device=device)
    flops = 2.0 * n**3
    return {
        "flops_per_s": flops / min(times),
        "median_flops_per_s": flops / statistics.median(times),
        "n": n,
        "seconds": min(times),
    }


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The measured matmul peak as a dict, with its ``ratios`` (``matmul_median_vs_peak``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="matrix size")
    parser.add_argument("--repeats", type=int, default=10, help="timed products")
    args = parser.parse_args(argv)
    peak = matmul_peak(n=args.n, repeats=args.repeats)
    ratios = {"matmul_median_vs_peak": round(peak["median_flops_per_s"] / peak["flops_per_s"], 3)}
    return {"threads": torch.get_num_threads(), **peak, "ratios": ratios}


if __name__ == "__main__":
    print(json.dumps(run()))
