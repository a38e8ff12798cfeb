"""The sweep report: one row per setting × initialisation × k, with benefits over both reference arms."""

from __future__ import annotations

import json

import pytest
import yaml
from omegaconf import OmegaConf, open_dict

from evaluation.study.chain import needs_demo
from evaluation.study.sweep import swept_settings, write_sweep
from ssl_pretrain.config import compose_config
from ssl_pretrain.errors import ConfigError


def _results(gain: float) -> dict:
    curves = [{"init": i, "k": k, "dice_mean": 0.7 + (gain if i == "subcortical" else 0.0), "converged": True}
              for i in ("scratch", "scratch_matched", "subcortical") for k in (0, 1, "all")
              if not (k == 0 and i != "subcortical")]  # fmt: skip
    comps = []
    for k in (1, "all"):
        ci = [gain - 0.02, gain + 0.02]
        comps += [{"k": k, "a": "subcortical", "b": "scratch", "delta": gain, "ci95": ci, "p_holm": 0.01},
                  {"k": k, "a": "scratch_matched", "b": "subcortical", "delta": -gain / 2, "ci95": [-0.05, 0.0],
                   "p_holm": 0.2}]  # fmt: skip
    comps.append(
        {"k": "all", "a": "scratch", "b": "scratch_matched", "delta": -0.03, "ci95": [-0.04, -0.02], "p_holm": 0.01}
    )
    comps.append(
        {"k": 0, "a": "subcortical", "b": "scratch", "b_k": 1, "delta": gain - 0.1, "ci95": [-0.2, 0.0], "p_holm": 0.3}
    )
    return {"learning_curves": curves, "comparisons": comps}


def test_the_sweep_collects_every_study(tmp_path):
    for n, contrast in enumerate((0.25, 1.0)):
        job = tmp_path / str(n)
        (job / ".hydra").mkdir(parents=True)
        overrides = [f"demo.brainstem_contrast={contrast}", "data.root=data/demo-c${demo.brainstem_contrast}"]
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (job / "results_job.json").write_text(json.dumps(_results(0.1 * contrast)))
        (job / "study.json").write_text(json.dumps({"results": str(job / "results_job.json"), "report": "r.html"}))
    report = write_sweep(tmp_path, seconds=12.0)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["variables"] == ["demo.brainstem_contrast"] and report.is_file()
    rows = {(r["demo.brainstem_contrast"], r["k"]): r for r in results["sweep"] if r["init"] == "subcortical"}
    assert set(rows) == {(0.25, 0), (0.25, 1), (0.25, "all"), (1.0, 0), (1.0, 1), (1.0, "all")}
    assert {r["init"] for r in results["sweep"]} == {"subcortical", "scratch_matched"}  # scratch: the reference
    budget = {(r["demo.brainstem_contrast"], r["k"]): r for r in results["sweep"] if r["init"] == "scratch_matched"}
    assert budget[(1.0, "all")]["delta_vs_scratch"] == pytest.approx(0.03)  # scratch trained longer: the budget check
    assert budget[(1.0, "all")]["ci95"] == pytest.approx([0.02, 0.04]) and budget[(1.0, 1)]["delta_vs_scratch"] is None
    assert budget[(1.0, "all")]["delta_vs_scratch_matched"] is None
    assert rows[(1.0, 1)]["delta_vs_scratch"] == pytest.approx(0.1) and rows[(1.0, 1)]["ci95"] == pytest.approx(
        [0.08, 0.12]
    )
    assert rows[(1.0, 1)]["delta_vs_scratch_matched"] == pytest.approx(0.05)  # oriented as init − reference
    assert (
        rows[(0.25, 0)]["delta_vs_scratch"] == pytest.approx(-0.075)
        and rows[(0.25, 0)]["delta_vs_scratch_matched"] is None
    )
    assert "<img" in report.read_text()
    with pytest.raises(FileNotFoundError):
        write_sweep(tmp_path / "empty")


def test_swept_settings_are_the_overrides_that_differ():
    jobs = [{"a": "1", "b": "x", "c": "${a}"}, {"a": "2", "b": "x", "c": "${a}"}]
    assert swept_settings(jobs) == ["a"]


def test_a_study_managed_cohort_of_other_settings_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data" / "demo-c0.5"
    (root / "derivatives" / "simulation").mkdir(parents=True)
    cfg = compose_config("study", ["data.root=data/demo-c0.5", "demo.brainstem_contrast=0.5"])
    settings = OmegaConf.to_container(cfg.demo, resolve=True)
    (root / "derivatives" / "simulation" / "effects.json").write_text(
        json.dumps({"settings": {**settings, "brainstem_contrast": 1.0}})
    )
    with pytest.raises(ConfigError, match=r"demo\.brainstem_contrast.*1\.0"):
        needs_demo(cfg)
    (root / "derivatives" / "simulation" / "effects.json").write_text(json.dumps({"settings": settings}))
    assert not needs_demo(cfg)  # the same settings: reused
    other = compose_config("study", ["data.root=data/demo-c0.25"])
    assert needs_demo(other)  # missing, and a study-managed name: simulated
    with open_dict(other):
        other.data.root = str(tmp_path / "mine")
    with pytest.raises(Exception, match="does not exist"):
        needs_demo(other)
