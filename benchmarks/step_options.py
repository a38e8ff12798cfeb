"""Training-step options of the quick brainstem network on this device, measured in one run: which to keep.

One process builds today's quick-preset brainstem network (``configs/study_preset/quick.yaml``: its data block,
``study.overrides.common`` and ``study.overrides.brainstem``; ``finetune.policy.build_segmentation_net``) and times
one training step (forward, a loss over every output, backward, AdamW) on a fixed batch of quick patches, for:

* ``default``: what the finetune stage runs on this device (``trainer.memory_format=auto``: ``channels_last_3d``
  with instance norms on the group-norm kernel on CPU, contiguous on CUDA; eager; ``torch.optim.AdamW`` fused
  where PyTorch has a fused kernel for the device, as ``ssl_pretrain.training.optim.build_optimizer`` builds it);
* ``other_layout``: the other memory layout, prepared as the stage would (``apply_memory_format``);
* ``instance_norm``: the default layout with PyTorch's own instance norm instead of the group-norm kernel;
* ``unfused_adamw``: AdamW's per-parameter loop (``fused=False``) instead of the fused kernel;
* ``compile``: ``torch.compile`` (inductor, default mode) of the network; its first call, the compilation, is
  reported apart (``compile_first_step_s``) and left out of the step times. A second instance of the same network,
  compiled afterwards in the same process as a study's next stage would be, reports its own first call
  (``compile_second_instance_first_step_s``: near 0 when Dynamo reuses the first instance's graph).

Variants run in interleaved rounds (each round times every variant in turn), so load from other processes hits
them alike; each figure is the median over every timed step. ``ratios`` gives ``<variant>_step_speedup`` =
default / variant median step (above 1: the variant is faster; below 1: what the default's choice buys) and
``compile_first_step_s``, ``compile_second_instance_first_step_s``.

Usage::

    .venv/bin/python benchmarks/step_options.py [--variants other_layout instance_norm unfused_adamw compile]
        [--rounds 4] [--steps 20]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]
from finetune_stage import preset_overrides  # noqa: E402

from ssl_pretrain.training.memory_format import FORMATS  # noqa: E402
from ssl_pretrain.training.optim import FUSED_DEVICES  # noqa: E402

VARIANTS = ("other_layout", "instance_norm", "unfused_adamw", "compile")


def quick_network(
    overrides: Sequence[str], layout: str | None = None, group_norm_kernel: bool = True
) -> tuple[torch.nn.Module, torch.Tensor, str]:
    """Today's quick brainstem network prepared as the stage prepares it (``layout``: the stage's on this device by
    default; ``group_norm_kernel=False`` keeps PyTorch's instance norm), a batch of quick patches, the layout."""
    from finetune.policy import build_segmentation_net
    from finetune.train import output_heads
    from ssl_pretrain.config import compose_config
    from ssl_pretrain.training.memory_format import apply_memory_format, resolve_memory_format
    from ssl_pretrain.training.trainer import resolve_accelerator

    cfg = compose_config("finetune", ["stage=brainstem", *overrides], output_dir=Path(tempfile.gettempdir()))
    accelerator = resolve_accelerator(cfg.trainer.accelerator)
    device = "cuda" if accelerator == "gpu" else "cpu"
    layout = layout or resolve_memory_format(cfg.trainer.get("memory_format", "auto"), accelerator)
    torch.manual_seed(0)
    net = build_segmentation_net(cfg.model, len(cfg.data.modalities), sum(output_heads(cfg)), "full").to(device)
    patch = int(cfg.data.patch_size)
    x = torch.randn(int(cfg.data.batch_size), len(cfg.data.modalities), patch, patch, patch, device=device)
    x = x.contiguous(memory_format=FORMATS[layout])
    net = apply_memory_format(net, layout) if group_norm_kernel else net.to(memory_format=FORMATS[layout])
    return net, x, layout


def make_step(net: torch.nn.Module, x: torch.Tensor, fused: bool = True, compiled: bool = False) -> Callable[[], None]:
    """One training step of ``net`` on ``x``: forward, mean square of the outputs, backward, AdamW (``fused``: the
    fused kernel where the device has one, as the stage runs it; ``False``: the per-parameter loop)."""
    forward = torch.compile(net) if compiled else net
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=fused and x.device.type in FUSED_DEVICES)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        forward(x).float().square().mean().backward()
        optimiser.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Time the variants; figures with ``ratios`` (``<variant>_step_speedup``, ``compile_first_step_s``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds over the variants")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant and round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args, overrides = parser.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    preset, _ = preset_overrides(REPO)
    base, x, layout = quick_network([*preset, *overrides])
    other_layout = next(name for name in FORMATS if name != layout)
    steps: dict[str, Callable[[], None]] = {"default": make_step(copy.deepcopy(base), x)}
    first: dict[str, float] = {}
    for name in args.variants:
        if name == "other_layout":
            steps[name] = make_step(*quick_network([*preset, *overrides], layout=other_layout)[:2])
        elif name == "instance_norm":
            steps[name] = make_step(*quick_network([*preset, *overrides], group_norm_kernel=False)[:2])
        else:
            steps[name] = make_step(copy.deepcopy(base), x, fused=name != "unfused_adamw", compiled=name == "compile")
    for name, step in steps.items():  # the first call: compilation for `compile`, one-off allocations for the rest
        start = time.perf_counter()
        step()
        first[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            for _ in range(args.warmup):
                step()
            for _ in range(args.steps):
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    result: dict[str, Any] = {
        "device": str(x.device),
        "layout": layout,
        "other_layout": other_layout,
        "threads": args.threads,
        "batch": list(x.shape),
        "step_s_median": median,
        "first_step_s": first,
        "rounds": args.rounds,
        "steps": args.steps,
    }
    ratios = {f"{name}_step_speedup": median["default"] / median[name] for name in args.variants}
    if "compile" in args.variants:
        ratios["compile_first_step_s"] = first["compile"]
        second = make_step(copy.deepcopy(base), x, compiled=True)
        start = time.perf_counter()
        second()
        ratios["compile_second_instance_first_step_s"] = time.perf_counter() - start
    result["ratios"] = ratios
    for name in steps:
        print(f"{name:<14} median step {median[name] * 1000:7.1f} ms  first call {first[name]:6.2f} s")
    return result


def main() -> None:
    print(json.dumps(run()))


if __name__ == "__main__":
    main()
