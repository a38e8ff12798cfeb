"""The quick preset's brainstem stage: seconds per training step, where the stage's time goes, FLOP/s, and the
speed-up over revision ``3590575`` (before issue 15), measured in one run on one machine.

Each run is ``bssl finetune stage=brainstem …`` of a revision (``python -m ssl_pretrain`` with that revision's tree
on ``PYTHONPATH``) in a subprocess, with the study's quick-preset brainstem settings *of that revision*
(``configs/study_preset/quick.yaml``, ``configs/preset/quick.yaml`` in older revisions: its ``data`` block,
``study.overrides.common`` and ``study.overrides.brainstem``), ``init=scratch`` and ``labels.k=all`` on the same
cohort. ``benchmarks/stage_probe/sitecustomize.py`` times the child from the inside (fit start/end, every training
batch, every validation loop, the stage's ``run``) without changing it; the old revision is checked out in a
temporary ``git worktree`` (removed at the end). Each revision's preprocessing cache is filled by an untimed 2-step
run first: in a study the cache is warm for every brainstem stage.

Figures (ratios within this run; absolute seconds depend on the machine and its load):

* ``step_s_median``: median seconds of one training step of today's code at the quick preset (fetching the batch
  in the loader + forward + backward + optimiser step);
* ``outside_training_fraction``: share of the stage's wall time (process start to exit) outside training steps:
  set-up (imports, data, model), in-fit work between steps (convergence checkpoints, validation, checkpoints)
  and scoring the test subjects with writing the outputs. Each part is reported too;
* ``flops_fraction_of_matmul_peak``: FLOPs of one training step of the quick network on a batch of the quick
  preset's patches (``torch.utils.flop_counter``, benchmarks/flops.py) over the median step's compute time, as a
  fraction of the best fp32 ``torch.mm`` throughput measured in this process at the same thread count;
* ``brainstem_step_speedup``: old / new median training step at identical network and patch settings (today's
  quick preset's, on the old code too): the code's speed per step;
* ``memory_format_step_speedup``: median training step of today's code with ``trainer.memory_format=contiguous``
  over the same with the default (``auto``: ``channels_last_3d`` on CPU, whose instance norms run on the group-norm
  kernel), same settings: what the layout choice of ``ssl_pretrain/training/memory_format.py`` buys on this device;
* ``brainstem_stage_speedup``: old / new wall seconds of one whole stage at each revision's own quick preset
  (old: its steps, patch and validation; new: its steps, which the quick preset chose to be longer than the old
  preset's 64). Below 1 means today's stage takes longer, because it trains longer;
* ``brainstem_converged_stage_speedup``: the same with the old revision trained for today's steps (its own
  preset otherwise: patches, network, validation, scoring): seconds per run of equal length, meant as the
  issue's "per converged run". The name overstates it: today's quick preset's 600 steps do not reach the
  plateau either (a scratch run at k = all passes the convergence test at 2,400 steps; README), so this is a
  speed-up per run of today's length, and ``--new-steps 2400`` measures it at that length (both revisions).
* ``brainstem_study_stage_speedup``: the same runs' ``finetune.train.run(cfg)`` seconds, old / new: a stage as
  ``bssl study`` runs it, in one process with every other stage, so without the interpreter start, imports and
  config composing (``before_run_s``, about 8 s a process here) that a study pays once and a lone
  ``bssl finetune`` pays each time. Old code read and checked the dataset inside each stage's ``run``, so that
  cost stays in; today's code checks a dataset once per process (``tests/ssl_pretrain/data/test_validate.py``:
  two stages in one process validate once), which a lone run does inside its ``run``, so today's figure here is
  if anything longer than in a study.
* ``brainstem_study_next_stage_speedup``: the same, for the second stage of each of these processes (with
  ``--stages-per-process 2``, the default, the probe calls ``run(cfg)`` again in the same process, output in a
  folder of its own): a study's stage after its first, which is what 59 of the quick study's 60 brainstem stages
  are. Whatever either revision does once per process (checking the dataset, compiling, first-call kernel set-up)
  is out of it for both; ``next_stage_step_s_median`` is today's median step there.

Usage::

    .venv/bin/python benchmarks/finetune_stage.py [--data-root data/demo] [--threads 2] [--rounds 3]
        [--old-revision REV] [--stages-per-process 2] [--quick]

``--data-root`` defaults to a 4+4-subject demo cohort simulated into a temporary directory. ``--quick`` (the smoke
test of ``run_all.py --quick``): a 4-subject synthetic cohort, 16³ patches, 4 steps per run, no warm-up runs and two
runs at a time (``parallel_runs``), and today's code eager (``trainer.compile=false``); its figures are not the ones
to report. ``--no-warmup`` skips the cache-filling runs (set-up then includes preprocessing, for both revisions).
``--new-steps``/``--old-steps`` shorten the whole-stage runs (then the stage speed-up is not per converged run:
``stage_steps`` and ``converged_presets`` say so). ``--old-revision REV`` compares with another revision (e.g. the
previous commit) instead of ``3590575``. ``--rounds N`` runs the equal-length pair N times, alternating which goes
first; both equal-length speed-ups are then medians over the rounds, and ``equal_length_rounds`` lists each round's
seconds (on a shared 2-core machine one run's timings drift by up to 1.5x). ``new_stage``/``old_stage_at_new_steps``
give the first round's split. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]
from flops import count_flops, matmul_peak  # noqa: E402

OLD_REVISION = "3590575"  # the revision before issue 15's work
PROBE = HERE / "stage_probe"


def quick_preset_file(root: Path) -> Path:
    """A revision's quick study preset: ``configs/study_preset/quick.yaml``, or ``configs/preset/quick.yaml`` in
    revisions from before the study presets had a group of their own."""
    path = root / "configs" / "study_preset" / "quick.yaml"
    return path if path.is_file() else root / "configs" / "preset" / "quick.yaml"


def preset_overrides(root: Path) -> tuple[list[str], int]:
    """The brainstem stage's overrides of a revision's quick preset (data block, common, brainstem) and its steps."""
    preset = OmegaConf.load(quick_preset_file(root))
    data = [f"data.{key}={value}" for key, value in preset.data.items()]
    study = preset.study.overrides
    overrides = [*data, *[str(o) for o in study.common], *[str(o) for o in study.brainstem]]
    steps = [int(o.split("=", 1)[1]) for o in overrides if o.startswith("trainer.max_steps=")]
    return overrides, steps[-1]


@contextmanager
def old_worktree(revision: str, where: Path) -> Iterator[Path]:
    """``revision`` checked out (detached) in a temporary git worktree, removed afterwards."""
    path = where / f"rev-{revision}"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), revision], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)


def run_stage(
    tree: Path, overrides: Sequence[str], work: Path, name: str, threads: int, stages: int = 1
) -> dict[str, Any]:
    """One ``bssl finetune stage=brainstem`` of the revision in ``tree``: its wall seconds and the probe's marks
    (``stages``: the stage runs that many times in turn in the one process, as a study's stages do)."""
    probe = work / f"{name}.probe.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROBE), str(tree)]),
        "BSSL_STAGE_PROBE": str(probe),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "BSSL_STAGE_PROBE_STAGES": str(stages),
    }
    command = [sys.executable, "-m", "ssl_pretrain", "finetune", "stage=brainstem", "init=scratch", "labels.k=all",
               *overrides, f"paths.runs_dir={work / 'runs' / name}", "trainer.enable_progress_bar=false"]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{name}: bssl finetune failed ({done.returncode}):\n{done.stderr[-3000:]}")
    marks = json.loads(probe.read_text())
    print(f"{name}: {wall:.1f} s, {len(marks['steps'])} steps", file=sys.stderr, flush=True)
    return {"wall": wall, **marks}


def step_seconds(steps: Sequence[Sequence[float]], fit_start: float) -> tuple[list[float], list[float]]:
    """``(compute, fetch)`` seconds of each probed training step of one fit: compute from the step's start to its
    end, fetch the gap since the previous step's callbacks ended (the fit's start for the first step)."""
    compute = [s[1] - s[0] for s in steps]
    fetch = [b[0] - a[2] for a, b in zip([[0, 0, fit_start], *steps[:-1]], steps, strict=True)]
    return compute, fetch


def split_stage(run: dict[str, Any]) -> dict[str, float]:
    """Seconds of a probed stage by part: set-up, training steps (fetch + compute), between steps, scoring; and
    its ``run(cfg)`` apart from what lies before it (interpreter, imports, config). A process that ran more than
    one stage (``BSSL_STAGE_PROBE_STAGES``) is split by its first; ``next_stage_run_s`` is the last one's ``run``
    and ``next_stage_step_s_median`` its median step: a stage of a study after the first."""
    first_end = run["run"][1]
    steps = [s for s in run["steps"] if s[0] < first_end]
    fit_start, fit_end = run["fit"][:2]
    compute, fetch = step_seconds(steps, fit_start)
    callbacks = [s[2] - s[1] for s in steps]
    training = sum(compute) + sum(fetch)
    validation = sum(v[1] - v[0] for v in run["validation"] if len(v) == 2 and v[0] < first_end)
    startup = run["wall"] - run["exit"]  # before this interpreter's first line (process launch)
    alone = len(run["run"]) == 2
    wall = run["wall"] if alone else startup + first_end  # a lone ``bssl finetune``: launch to the stage's end
    split = {
        "wall_s": wall,
        "steps": len(steps),
        "step_s_median": statistics.median(c + f for c, f in zip(compute, fetch, strict=True)),
        "compute_s_median": statistics.median(compute),
        "fetch_s_median": statistics.median(fetch),
        "training_steps_s": training,
        "setup_s": fit_start + startup,
        "between_steps_s": (fit_end - fit_start) - training,  # convergence checkpoints, validation, checkpoints
        "validation_s": validation,
        "callbacks_s": sum(callbacks),
        "after_fit_s": (run["exit"] if alone else first_end) - fit_end,  # scoring the test subjects, writing outputs
        "outside_training_fraction": 1.0 - training / wall,
        "before_run_s": run["run"][0] + startup,  # interpreter, imports, Hydra: once per bssl process
        "stage_run_s": first_end - run["run"][0],  # the stage as a study (one process) runs it
    }
    if not alone:  # the process's last stage: one after the first, as most of a study's stages are
        start, end = run["run"][-2:]
        compute, fetch = step_seconds([s for s in run["steps"] if s[0] > start], run["fit"][-2])
        split["next_stage_run_s"] = end - start
        split["next_stage_step_s_median"] = statistics.median(c + f for c, f in zip(compute, fetch, strict=True))
    return split


def round_seconds(old: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    """One round of the equal-length pair: each stage's wall seconds and its ``run(cfg)`` seconds."""
    return {
        "old_wall_s": round(old["wall_s"], 1),
        "new_wall_s": round(new["wall_s"], 1),
        "old_run_s": round(old["stage_run_s"], 1),
        "new_run_s": round(new["stage_run_s"], 1),
        **{f"{who}_next_stage_run_s": round(run["next_stage_run_s"], 1) for who, run in (("old", old), ("new", new))
           if "next_stage_run_s" in run},
    }  # fmt: skip


def step_flops(patch: int, batch: int, overrides: Sequence[str]) -> int:
    """FLOPs of one training step (forward + backward) of today's quick network on a batch of quick patches."""
    from finetune.policy import build_segmentation_net
    from finetune.train import output_heads
    from ssl_pretrain.config import compose_config

    cfg = compose_config("finetune", ["stage=brainstem", *overrides], output_dir=Path(tempfile.gettempdir()))
    net = build_segmentation_net(cfg.model, len(cfg.data.modalities), sum(output_heads(cfg)), "full")
    x = torch.randn(batch, len(cfg.data.modalities), patch, patch, patch)

    def step() -> None:
        out = net(x)
        (out if torch.is_tensor(out) else torch.cat([o.flatten() for o in out])).float().mean().backward()

    return count_flops(step)[0]


def _value(overrides: Sequence[str], key: str) -> str:
    return [o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}=")][-1]


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; figures with ``ratios`` (both speed-ups, outside-training share, FLOP fraction)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=None, help="BIDS dataset (default: simulate 4+4 demo)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads of each run")
    parser.add_argument("--new-steps", type=int, default=None, help="today's whole-stage steps (default: preset)")
    parser.add_argument("--old-steps", type=int, default=None, help="old whole-stage steps (default: its preset)")
    parser.add_argument("--step-runs", type=int, default=40, help="steps of the old code at today's settings")
    parser.add_argument("--peak-n", type=int, default=2048, help="matrix size of the matmul peak")
    warmup = "fill each revision's cache with an untimed 2-step run first (default: on; off with --quick)"
    parser.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None, help=warmup)
    parser.add_argument("--quick", action="store_true", help="tiny: a smoke test, not figures to report")
    rounds = "times the equal-length pair (today's stage, the old one at today's steps) runs, alternating (median)"
    parser.add_argument("--rounds", type=int, default=1, help=rounds)
    per_process = "stages each equal-length run trains in turn in one process, as a study does (next-stage figure: >1)"
    parser.add_argument("--stages-per-process", type=int, default=2, help=per_process)
    parser.add_argument(
        "--old-revision", default=OLD_REVISION, help="the revision to compare with (default: before issue 15)"
    )
    args = parser.parse_args(argv)
    if args.stages_per_process < 1 or args.rounds < 1:
        parser.error("--stages-per-process and --rounds must be at least 1")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bssl-bench-stage-") as tmp:
        work = Path(tmp)
        root = args.data_root.resolve() if args.data_root else None  # each revision runs in its own tree
        if root is None and args.quick:
            from tests.synthetic import write_synthetic_bids

            root = write_synthetic_bids(work / "bids", n_subjects=4, shape=(32, 36, 32))
        elif root is None:
            from ssl_pretrain.data.demo import simulate_cohort

            root = simulate_cohort(work / "demo", n_controls=4, n_patients=4)
        new_preset, new_default = preset_overrides(REPO)
        tiny = ["data.patch_size=16", "eval.n_overlays=1", "trainer.log_every_n_steps=1"] if args.quick else []
        new_steps = args.new_steps or (4 if args.quick else new_default)
        step_runs = 4 if args.quick else args.step_runs
        parallel = 2 if args.quick else 1  # --quick checks the plumbing: two runs at a time, figures not to report
        with old_worktree(args.old_revision, work) as old_tree:
            old_preset, old_default = preset_overrides(old_tree)
            old_steps = args.old_steps or (4 if args.quick else old_default)
            same = [o for o in new_preset if o.startswith(("data.patch_size=", "data.batch_size=", "model."))]

            def stage(
                tree: Path, preset: list[str], name: str, steps: int, extra: Sequence[str] = (), stages: int = 1
            ) -> dict:
                cache = f"paths.cache_dir={work / 'cache' / tree.name}"
                overrides = [*preset, *extra, *tiny, f"data.root={root}", cache, f"trainer.max_steps={steps}"]
                if args.quick and tree == REPO:  # the plumbing only: a compilation would be most of a 4-step run
                    overrides.append("trainer.compile=false")
                return run_stage(tree, overrides, work, name, args.threads, stages)

            if args.warmup if args.warmup is not None else not args.quick:  # fills each revision's cache (untimed)
                stage(old_tree, old_preset, "old-warmup", 2)
                stage(REPO, new_preset, "new-warmup", 2)
            contiguous = ["trainer.memory_format=contiguous"]  # today's default on CPU is channels_last_3d (auto)
            runs = {  # name: (tree, preset, steps, extra overrides)
                "old-stage": (old_tree, old_preset, old_steps, ()),
                "new-stage": (REPO, new_preset, new_steps, ()),
                "old-at-new-steps": (old_tree, old_preset, new_steps, ()),
                "old-same-settings": (old_tree, old_preset, step_runs, same),
                "new-contiguous": (REPO, new_preset, step_runs, contiguous),
            }
            if new_steps == old_steps:  # e.g. --quick: that run would repeat the old stage
                del runs["old-at-new-steps"]

            long_name = "old-at-new-steps" if "old-at-new-steps" in runs else "old-stage"
            paired = {long_name, "new-stage"}  # the equal-length pair: args.stages_per_process stages a process

            def timed_run(name: str, label: str = "") -> dict[str, float]:  # label: its own runs_dir, no resume
                tree, preset, steps, extra = runs[name]
                stages = args.stages_per_process if name in paired else 1
                return split_stage(stage(tree, preset, name + label, steps, extra, stages))

            with ThreadPoolExecutor(parallel) as pool:
                timed = dict(zip(runs, pool.map(timed_run, runs), strict=True))
            old, new, old_same, layout = (
                timed[k] for k in ("old-stage", "new-stage", "old-same-settings", "new-contiguous")
            )
            pairs = [(timed[long_name], new)]
            for r in range(1, args.rounds):  # alternate which goes first, so a drift in load hits both alike
                order = ("new-stage", long_name) if r % 2 else (long_name, "new-stage")
                again = {name: timed_run(name, f"-round{r + 1}") for name in order}
                pairs.append((again[long_name], again["new-stage"]))
            old_long = timed[long_name]
        patch, batch = int(_value([*new_preset, *tiny], "data.patch_size")), int(_value(new_preset, "data.batch_size"))
        flops = step_flops(patch, batch, [o for o in new_preset if o.startswith("model.") or o == "preset=cpu"])
    peak = matmul_peak(n=args.peak_n, repeats=10)
    achieved = flops / new["compute_s_median"]
    result = {
        "brainstem_stage_speedup": round(old["wall_s"] / new["wall_s"], 3),
        "brainstem_converged_stage_speedup": round(statistics.median(o["wall_s"] / n["wall_s"] for o, n in pairs), 3),
        "brainstem_study_stage_speedup": round(
            statistics.median(o["stage_run_s"] / n["stage_run_s"] for o, n in pairs), 3
        ),
        "equal_length_rounds": [round_seconds(o, n) for o, n in pairs],
        "stages_per_process": args.stages_per_process,
        "brainstem_step_speedup": round(old_same["step_s_median"] / new["step_s_median"], 3),
        "memory_format_step_speedup": round(layout["step_s_median"] / new["step_s_median"], 3),
        "memory_format": {"default": "auto", "against": "contiguous"},
        "outside_training_fraction": round(new["outside_training_fraction"], 3),
        "flops_fraction_of_matmul_peak": round(achieved / peak["flops_per_s"], 4),
        "step_s_median": round(new["step_s_median"], 4),
        "achieved_gflops": round(achieved / 1e9, 2),
        "matmul_peak_gflops": round(peak["flops_per_s"] / 1e9, 2),
        "step_gflop": round(flops / 1e9, 3),
        "stage_steps": {"old": old_steps, "new": new_steps, "old_preset": old_default, "new_preset": new_default},
        "converged_presets": not args.quick and old_steps == old_default and new_steps == new_default,
        "new_stage": {k: round(v, 3) for k, v in new.items()},
        "old_stage": {k: round(v, 3) for k, v in old.items()},
        "old_stage_at_new_steps": {k: round(v, 3) for k, v in old_long.items()},
        "old_at_new_settings": {k: round(v, 3) for k, v in old_same.items()},
        "same_settings": same,
        "patch_size": patch,
        "batch_size": batch,
        "threads": args.threads,
        "parallel_runs": parallel,
        "warm_cache": bool(args.warmup if args.warmup is not None else not args.quick),
        "old_revision": args.old_revision,
        "data_root": str(args.data_root or "simulated"),
    }
    if args.stages_per_process > 1:
        result["brainstem_study_next_stage_speedup"] = round(
            statistics.median(o["next_stage_run_s"] / n["next_stage_run_s"] for o, n in pairs), 3
        )
        result["next_stage_step_s_median"] = round(new["next_stage_step_s_median"], 4)
    result["ratios"] = {
        key: result[key]
        for key in (
            "brainstem_stage_speedup",
            "brainstem_converged_stage_speedup",
            "brainstem_study_stage_speedup",
            "brainstem_study_next_stage_speedup",
            "brainstem_step_speedup",
            "memory_format_step_speedup",
            "outside_training_fraction",
            "flops_fraction_of_matmul_peak",
        )
        if key in result
    }
    return result


def main() -> None:
    """Print the figures as one JSON line (a SIGTERM, e.g. from ``timeout``, still removes the old worktree)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    print(json.dumps(run()))


if __name__ == "__main__":
    main()
