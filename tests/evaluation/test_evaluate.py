"""Pieces of ``bssl evaluate``: predicted-volume tables and the simulated truth they are set against."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.evaluate import excluded_measures, truth_column, truth_effects, volume_table
from evaluation.runs import Run
from ssl_pretrain.config import compose_config

VOLUMES = (
    "participant_id\tsession\tgroup\tregion\tCSF_mm3\tGM_mm3\tWM_mm3\tregion_mm3\tin_model_roi\n"
    "sub-01\tn/a\tHC\tsubcortical\t5\t300\t100\t405\tFalse\n"
    "sub-01\tn/a\tHC\tbrainstem\t10\t200\t800\t1010\tTrue\n"
    "sub-01\tn/a\tHC\tpons\t1\t20\t80\t101\tTrue\n"
    "sub-02\tn/a\tALS\tsubcortical\t5\t280\t90\t375\tFalse\n"
    "sub-02\tn/a\tALS\tbrainstem\t10\t180\t720\t910\tTrue\n"
    "sub-02\tn/a\tALS\tpons\t1\t18\t72\t91\tTrue\n"
    "sub-03\t01\tALS\tbrainstem\t9\t170\t700\t879\tTrue\n"
)


def test_volume_table_is_one_row_per_subject(tmp_path):
    (tmp_path / "volumes.tsv").write_text(VOLUMES)
    table = volume_table(Run(path=tmp_path, kind="predict")).set_index("subject")
    assert sorted(table.index) == ["sub-01", "sub-02", "sub-03_ses-01"]
    assert table.loc["sub-01", "brainstem_volume"] == 1010
    assert table.loc["sub-02", "brainstem_GM"] == 180
    assert table.loc["sub-02", "pons_WM"] == 72
    assert table.loc["sub-02", "group"] == "ALS"
    assert np.isnan(table.loc["sub-03_ses-01", "pons_volume"])  # no pons row for that session


def test_tissue_outside_the_model_roi_is_not_a_measure(tmp_path):
    (tmp_path / "volumes.tsv").write_text(VOLUMES)
    table = volume_table(Run(path=tmp_path, kind="predict")).set_index("subject")
    assert table.loc["sub-01", "subcortical_volume"] == 405  # region labels: always valid
    assert table["subcortical_GM"].isna().all() and table["subcortical_WM"].isna().all()  # extrapolated tissue
    excluded = excluded_measures(table, ["brainstem_GM", "subcortical_GM", "subcortical_volume", "medulla_volume"])
    assert [e["measure"] for e in excluded] == ["subcortical_GM", "medulla_volume"]
    assert "in_model_roi false" in excluded[0]["reason"] and "medulla" in excluded[1]["reason"]


def test_volume_table_without_in_model_roi_keeps_every_tissue_volume(tmp_path):
    old = "\n".join(line.rsplit("\t", 1)[0] for line in VOLUMES.splitlines()) + "\n"
    (tmp_path / "volumes.tsv").write_text(old)
    table = volume_table(Run(path=tmp_path, kind="predict")).set_index("subject")
    assert table.loc["sub-01", "subcortical_GM"] == 300


def test_truth_effects_are_group_mean_differences(tmp_path):
    sim = tmp_path / "derivatives" / "simulation"
    sim.mkdir(parents=True)
    (sim / "subject_truth.tsv").write_text(
        "participant_id\tgroup\tbrainstem_volume_mm3\tbrainstem_gm_volume_mm3\n"
        "sub-01\tHC\t1000\t100\nsub-02\tHC\t1200\t120\nsub-03\tALS\t990\t99\n"
    )
    effects = truth_effects(tmp_path, ["brainstem_volume", "brainstem_GM", "pons_volume"], "HC")
    assert effects["brainstem_volume"] == pytest.approx(100 * (990 / 1100 - 1))
    assert effects["brainstem_GM"] == pytest.approx(100 * (99 / 110 - 1))
    assert "pons_volume" not in effects
    assert truth_effects(tmp_path / "elsewhere", ["brainstem_volume"], "HC") == {}
    assert np.isfinite(effects["brainstem_volume"])


def test_truth_columns_match_the_demo_truth_table():
    """Every measure of configs/evaluate.yaml that the simulation knows maps onto a subject_truth.tsv column."""
    from ssl_pretrain.data.demo.bids_writer import TRUTH_COLUMNS
    from ssl_pretrain.data.demo.simulate import STEM_PARTS

    known = set(TRUTH_COLUMNS) | {f"{part}_volume_mm3" for part in STEM_PARTS}
    measures = compose_config("evaluate").group.measures
    mapped = {m: truth_column(m) for m in measures}
    assert {m for m, col in mapped.items() if col in known} == {
        "brainstem_volume", "brainstem_GM", "brainstem_WM", "pons_volume", "medulla_volume", "midbrain_volume"
    }  # fmt: skip
    assert truth_column("whole_brain_GM") == "gm_volume_mm3" and "gm_volume_mm3" in known


def test_head_size_is_the_whole_brain_without_the_brainstem(tmp_path):
    whole = (
        "sub-01\tn/a\tHC\twhole_brain\t50\t500\t600\t1500\tFalse\n"
        "sub-02\tn/a\tALS\twhole_brain\t40\t450\t560\t1300\tFalse\n"
    )
    (tmp_path / "volumes.tsv").write_text(VOLUMES + whole)
    table = volume_table(Run(path=tmp_path, kind="predict")).set_index("subject")
    assert table.loc["sub-01", "head_size"] == 1500 - 1010 and table.loc["sub-02", "head_size"] == 1300 - 910
    assert np.isnan(table.loc["sub-03_ses-01", "head_size"])  # no whole-brain row: no covariate, row not adjusted
    (tmp_path / "volumes.tsv").write_text(VOLUMES)
    assert "head_size" not in volume_table(Run(path=tmp_path, kind="predict")).columns


def test_group_covariates_come_from_volumes_or_participants_else_name_the_key(tmp_path):
    from evaluation.evaluate import group_analysis
    from ssl_pretrain.errors import ConfigError

    run_dir = tmp_path / "predict"
    run_dir.mkdir()
    (run_dir / "volumes.tsv").write_text(VOLUMES)
    (tmp_path / "participants.tsv").write_text("participant_id\tgroup\tage\nsub-01\tHC\t60\nsub-02\tALS\t62\n")
    cfg = compose_config("evaluate", [f"data.root={tmp_path}", "bootstrap.n=20", "group.measures=[brainstem_volume]"])
    runs = [Run(path=run_dir, kind="predict")]
    cfg.group.covariates = ["age", "head_size"]  # age from participants.tsv; no whole-brain rows: head_size skipped
    group, _ = group_analysis(runs, cfg)
    assert [r["covariates"] for r in group["rows"]] == [["age"]]
    cfg.group.covariates = ["handedness"]
    with pytest.raises(ConfigError, match=r"group\.covariates.*handedness"):
        group_analysis(runs, cfg)
