"""``benchmarks/run_all.py --quick`` runs every benchmark and prints one table and a last-line JSON of ratios."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

RUN_ALL = Path(__file__).resolve().parents[2] / "benchmarks" / "run_all.py"
EXPECTED = {  # benchmark -> ratios its quick run must report
    "flops": {"matmul_median_vs_peak"},
    "pretrain_step": {"loader_vs_memory_step_ratio", "loader_vs_memory_best_ratio", "flops_fraction_of_matmul_peak"},
    "finetune_stage": {
        "brainstem_stage_speedup",
        "brainstem_converged_stage_speedup",
        "brainstem_study_stage_speedup",
        "brainstem_study_next_stage_speedup",
        "brainstem_step_speedup",
        "memory_format_step_speedup",
        "outside_training_fraction",
        "flops_fraction_of_matmul_peak",
    },
    "step_options": {"other_layout_step_speedup", "instance_norm_step_speedup", "unfused_adamw_step_speedup"},
    "inference": {"warm_vs_cold_4mm"},
    "loader": {
        "loader_speedup_vs_torchio",
        "loader_speedup_vs_torchio_spv2",
        "loader_speedup_vs_torchio_spv2_no_augment",
    },
}


@pytest.fixture
def run_all():
    spec = importlib.util.spec_from_file_location("bssl_run_all", RUN_ALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    path, threads = list(sys.path), torch.get_num_threads()
    spec.loader.exec_module(module)
    yield module
    sys.path[:] = path
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_quick_run_prints_a_table_and_json_of_every_ratio(run_all, capsys: pytest.CaptureFixture[str]) -> None:
    returned = run_all.main(["--quick"])
    lines = capsys.readouterr().out.strip().splitlines()
    printed = json.loads(lines[-1])
    assert printed == returned
    assert {name: set(ratios) for name, ratios in printed.items()} == EXPECTED
    assert all(math.isfinite(v) and v > 0 for ratios in printed.values() for v in ratios.values())
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["benchmark", "ratio", "value"])
    rows = [line.split() for line in lines[header + 2 : -1]]
    assert [(b, r) for b, r, _ in rows] == [(b, r) for b, ratios in printed.items() for r in ratios]
    for (_, _, shown), value in zip(rows, [v for ratios in printed.values() for v in ratios.values()], strict=True):
        assert float(shown) == pytest.approx(value, rel=5e-3)  # printed to 3 significant digits


def test_table_format_and_unknown_benchmark(run_all) -> None:
    table = run_all.format_table({"a": {"x": 1.23456, "long_ratio_name": 20.0}})
    assert table.splitlines()[0].split() == ["benchmark", "ratio", "value"]
    assert table.splitlines()[2].split() == ["a", "x", "1.23"]
    assert table.splitlines()[3].split() == ["a", "long_ratio_name", "20"]
    with pytest.raises(ValueError, match="unknown benchmarks"):
        run_all.run_all(only=["nope"])
