"""A new hypothesis with another source region is one stage config and one hypothesis config.

Both live in a temporary config folder that Hydra searches (``bssl study hydra.searchpath=[file://DIR]``); no
file of the package or of configs/ is touched. The new source stage (the cerebellum, trained before the
subcortical stage) shows up in the study's stages, its chain and its evaluation, and the stages the existing
hypotheses already had keep their directories (finished runs are reused).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from evaluation.compute_cost import compute_per_init
from evaluation.runs import collect_runs
from evaluation.sections.compute import Compute
from evaluation.sections.convergence import Convergence
from evaluation.sections.learning_curves import LearningCurves
from evaluation.sections.transfer_matrix import source_encoders
from evaluation.study.chain import Study
from evaluation.study.stages import Stage
from ssl_pretrain.config import CONFIG_DIR, config_options
from tests.evaluation.study.test_launch import fake_commands, quick_config  # noqa: F401 (a fixture)
from tests.evaluation.test_compute_cost import _from, _run

STAGE = """# A lab's own source stage: GM/WM in the cerebellum, never the brainstem or the band around it.
name: cerebellum
roi: cerebellum
roi_margin_mm: 2.0
roi_exclude: brainstem
roi_exclude_margin_mm: 4.0
roi_fraction: 0.8
"""
HYPOTHESIS = """# @package _global_
# MAE pretraining, then the cerebellum, then the subcortical stage, then the brainstem.
study:
  hypotheses:
    ssl_mae_cerebellum: {pretrain: mae, sources: [cerebellum, subcortical]}
"""
EXISTING = ["scratch", "ssl_mae_subcortical"]
SMALL = ["study.k=[0,1]", "study.seeds=[0]"]


@pytest.fixture
def lab_configs(tmp_path: Path) -> Iterator[Path]:
    """A config folder with ``stage/cerebellum.yaml`` and ``hypothesis/ssl_mae_cerebellum.yaml`` only, searched as
    inside ``bssl study hydra.searchpath=[file://DIR]`` (Hydra initialised on configs/, its HydraConfig set)."""
    configs = tmp_path / "lab_configs"
    (configs / "stage").mkdir(parents=True)
    (configs / "hypothesis").mkdir()
    (configs / "stage" / "cerebellum.yaml").write_text(STAGE)
    (configs / "hypothesis" / "ssl_mae_cerebellum.yaml").write_text(HYPOTHESIS)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        searchpath = f"hydra.searchpath=[file://{configs}]"
        HydraConfig.instance().set_config(compose("study", overrides=[searchpath], return_hydra_config=True))
        try:
            yield configs
        finally:
            HydraConfig.instance().cfg = None  # type: ignore[assignment]


def _study(tmp_path: Path, experiments: list[str]) -> Study:
    cfg = quick_config(tmp_path, tmp_path / "bids", [f"hypothesis=[{','.join(experiments)}]", *SMALL])
    records = [SimpleNamespace(key=f"sub-{i:02d}", group="ALS" if i % 2 else "HC") for i in range(6)]
    study = Study(cfg, "fp")
    study.all_stages(records)
    return study


def test_a_new_source_stage_joins_the_study_from_its_own_two_files(tmp_path, lab_configs, fake_commands):  # noqa: F811
    assert "cerebellum" in config_options("stage") and not (CONFIG_DIR / "stage" / "cerebellum.yaml").exists()
    study = _study(tmp_path, [*EXISTING, "ssl_mae_cerebellum"])
    assert study.stage_names == ["subcortical", "cerebellum", "brainstem"]
    by_name: dict[str, Stage] = {s.name: s for s in study.done}
    cerebellum, chained = by_name["ssl_mae-cerebellum"], by_name["ssl_mae-cerebellum-subcortical"]
    assert cerebellum.info["kind"] == "source" and cerebellum.cfg.stage.roi == "cerebellum"
    assert cerebellum.cfg.init == str(by_name["pretrain-mae"].path)
    assert chained.cfg.stage.name == "subcortical" and chained.cfg.init == str(cerebellum.path)
    assert chained.cfg.init_label == "ssl_mae+cerebellum+subcortical"
    for k in ("0", "1"):  # the arm has a head before the target: a zero-shot point, then the sweep
        target = by_name[f"brainstem-ssl_mae_cerebellum-k{k}-s0"]
        assert target.cfg.stage.name == "brainstem" and target.cfg.init == str(chained.path)
    evaluation = by_name["evaluate"].cfg
    assert evaluation.curves.target == "brainstem"
    assert list(evaluation.baselines.stages) == ["subcortical", "brainstem", "cerebellum"]
    assert "cerebellum" in evaluation.probe.regions
    assert study.design()["ssl_mae_cerebellum"]["sources"] == ["cerebellum", "subcortical"]


def test_the_existing_hypotheses_keep_their_stage_directories(tmp_path, lab_configs, fake_commands):  # noqa: F811
    before = {s.name: s.path for s in _study(tmp_path, EXISTING).done}
    after = {s.name: s.path for s in _study(tmp_path, [*EXISTING, "ssl_mae_cerebellum"]).done}
    assert before.pop("evaluate") != after["evaluate"]  # it reads the new arm's runs too
    assert {name: after[name] for name in before} == before


def test_the_evaluation_groups_a_new_source_stage_by_its_runs(tmp_path):
    pre = _run(tmp_path / "pre", "encoder.json", {"method": {"name": "mae"}}, 100.0)
    cer = _run(
        tmp_path / "cer", "model.json", {"stage": "cerebellum", **_from(pre, "encoder.pt", source_method="mae")}, 30.0
    )
    sub = _run(
        tmp_path / "sub",
        "model.json",
        {"stage": "subcortical", **_from(cer, "model.pt", source_stage="cerebellum")},
        40.0,
    )
    for k in (1, 2):
        sidecar = {"stage": "brainstem", "labels": {"k": k}, **_from(sub, "model.pt", source_stage="subcortical")}
        _run(tmp_path / f"b{k}", "model.json", sidecar, 5.0)
    runs = collect_runs([tmp_path])
    probed = {r.path.name: r.stage for r in source_encoders(runs, "brainstem")}
    assert probed == {"pre": None, "cer": "cerebellum", "sub": "subcortical"}  # every source stage, not the target
    costs = compute_per_init(runs, "brainstem")
    assert list(costs) == ["ssl_mae+cerebellum+subcortical"]
    by_stage = costs["ssl_mae+cerebellum+subcortical"]["by_stage"]
    assert by_stage == {"brainstem": 10.0, "subcortical": 40.0, "cerebellum": 30.0, "pretrain": 100.0}
    html = Compute().render({"compute_per_init": costs}, "")
    columns = [html.index(f"{s} stage") for s in ("pretrain", "cerebellum", "subcortical", "brainstem")]
    assert columns == sorted(columns)  # the chain in order, the new stage in its place


def test_the_report_names_the_target_stage_of_its_config():
    results = {"evaluate_config": {"curves": {"target": "cerebellum"}}}
    caption = LearningCurves().caption("learning_curves", results)
    assert caption.startswith("Cerebellum fine-tuning") and "no cerebellum label" in caption
    assert "brainstem" not in caption and "study.overrides.cerebellum=" in Convergence().render(
        {**results, "convergence": [{"role": "target", "k": "1", "init": "scratch", "converged": False}]}, ""
    )
