"""Processes sharing a preprocessing cache or a runs directory do not corrupt each other.

The cache computes each entry under a per-entry file lock and renames it into place; a run holds a lock on
its run directory while it lives, so a second run cannot write into it and ``resume=auto`` does not
continue a run that is still going.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from ssl_pretrain import pretrain
from ssl_pretrain.config import compose_config
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.run_dir import is_complete, is_live, lock_run_dir, run_context
from ssl_pretrain.training import resolve_resume
from tests.reliability.harness import PRETRAIN, PRETRAIN_STEPS, REPO, data_overrides, start_bssl
from tests.reliability.test_kill_resume import assert_same_weights, temporaries

PREPROCESS = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import ssl_pretrain.data.cache as cache
    from ssl_pretrain.config import compose_config
    from ssl_pretrain.data.validate import load_records

    root, cache_dir, barrier, order = sys.argv[1:5]
    computed = []
    compute = cache.compute_entry
    def counted(record, *args, **kwargs):
        computed.append(record.key)
        return compute(record, *args, **kwargs)
    cache.compute_entry = counted
    data = compose_config("pretrain", [f"data.root={root}", "data.patch_size=16"]).data
    records = load_records(data)
    Path(barrier, f"ready-{order}").touch()
    while not Path(barrier, "go").exists():  # start both processes at the same moment
        time.sleep(0.005)
    subjects = cache.preprocess(records[::-1] if order == "reversed" else records, data, cache_dir, progress=False)
    print(json.dumps({"computed": computed, "entries": sorted(s.entry.name for s in subjects)}))
    """
)


def wait_for(paths: list[Path], procs: list[subprocess.Popen], limit: float = 120) -> None:
    """Wait until every path exists (a barrier, not a timing assertion); fail early if a process died."""
    deadline = time.monotonic() + limit
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read() if proc.stderr else "a process ended early")
        if time.monotonic() > deadline:
            raise AssertionError(f"{paths} did not appear within {limit} s")
        time.sleep(0.01)


def entry_arrays(cache: Path) -> dict[str, dict[str, np.ndarray]]:
    return {
        entry.name: {a.name: np.load(a) for a in sorted(entry.glob("*.npy"))}
        for entry in sorted(cache.iterdir())
        if entry.is_dir() and not entry.name.startswith(".")
    }


@pytest.mark.slow
def test_two_processes_preprocessing_into_one_cache_compute_each_entry_once(
    cohort: Path, tmp_path: Path, pretrain_reference: Path
) -> None:
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPROCESS, str(cohort), str(cache), str(barrier), order],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in ("forward", "reversed")
    ]
    wait_for([barrier / "ready-forward", barrier / "ready-reversed"], procs)
    (barrier / "go").touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    computed = results[0]["computed"] + results[1]["computed"]
    assert sorted(computed) == sorted(set(computed)) and len(computed) == 6  # each entry made by one process
    assert results[0]["entries"] == results[1]["entries"]  # both got every entry
    assert not list(cache.glob(".tmp-*"))  # no partial entry left
    reference = entry_arrays(pretrain_reference.parents[2] / "cache")  # one process, same settings
    shared = entry_arrays(cache)
    assert shared.keys() == reference.keys() and len(shared) == 6
    for name, arrays in reference.items():
        assert shared[name].keys() == arrays.keys()
        for array, value in arrays.items():
            np.testing.assert_array_equal(shared[name][array], value, err_msg=f"{name}/{array}")


@pytest.mark.slow
def test_two_runs_started_together_in_one_runs_dir_equal_a_single_run(
    cohort: Path, tmp_path: Path, pretrain_reference: Path
) -> None:
    runs = tmp_path / "runs"
    args = [*data_overrides(cohort, tmp_path / "cache", runs), *PRETRAIN, *PRETRAIN_STEPS, "resume=auto"]
    procs = [start_bssl("pretrain", args, tmp_path) for _ in range(2)]  # one cache, one runs dir, one config
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    run_dirs = sorted(p for p in (runs / "pretrain").iterdir() if p.is_dir())
    assert len(run_dirs) == 2  # a run directory each
    for run in run_dirs:
        assert is_complete(run) and not is_live(run)
        assert_same_weights(run / "encoder.pt", pretrain_reference / "encoder.pt")
    assert not temporaries(runs) and not list((tmp_path / "cache").glob(".tmp-*"))


def test_a_run_into_the_directory_of_a_live_run_is_refused_before_writing(
    cohort: Path, tmp_path: Path, pretrain_reference: Path
) -> None:
    out = tmp_path / "runs" / "pretrain" / "live"
    overrides = [*data_overrides(cohort, pretrain_reference.parents[2] / "cache", tmp_path / "runs"), *PRETRAIN]
    cfg = compose_config("pretrain", [*overrides, *PRETRAIN_STEPS], output_dir=out)
    with run_context(cfg, "pretrain"):  # the live run (flock conflicts between open files, also in one process)
        assert is_live(out)
        before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
        other = compose_config("pretrain", [*overrides, "trainer.max_steps=1"], output_dir=out)
        with pytest.raises(ConfigError, match=r"paths\.output_dir.*being written by another bssl run \(pid"):
            pretrain.run(other)
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not is_live(out)


def test_resume_auto_does_not_continue_a_run_in_progress(tmp_path: Path, pretrain_reference: Path) -> None:
    runs = tmp_path / "runs"
    other = runs / "pretrain" / "other"  # a run of the same config, with a valid checkpoint
    (other / "checkpoints").mkdir(parents=True)
    shutil.copy(pretrain_reference / "config.yaml", other / "config.yaml")
    last = shutil.copy(pretrain_reference / "checkpoints" / "last.ckpt", other / "checkpoints" / "last.ckpt")
    new = runs / "pretrain" / "new"
    cfg = OmegaConf.load(other / "config.yaml")
    cfg.paths.runs_dir, cfg.paths.output_dir = str(runs), str(new)
    fd = lock_run_dir(other)  # the other run is still going
    try:
        assert resolve_resume("auto", new, cfg) is None
    finally:
        os.close(fd)
    assert resolve_resume("auto", new, cfg) == str(last)  # once it stopped (or was killed), it is continued
