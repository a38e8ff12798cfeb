"""Pieces of ``bssl evaluate``: predicted-volume tables and the simulated truth they are set against."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.evaluate import truth_effects, volume_table
from evaluation.runs import Run

VOLUMES = (
    "participant_id\tsession\tgroup\tregion\tCSF_mm3\tGM_mm3\tWM_mm3\tregion_mm3\n"
    "sub-01\tn/a\tHC\tbrainstem\t10\t200\t800\t1010\n"
    "sub-01\tn/a\tHC\tpons\t1\t20\t80\t101\n"
    "sub-02\tn/a\tALS\tbrainstem\t10\t180\t720\t910\n"
    "sub-02\tn/a\tALS\tpons\t1\t18\t72\t91\n"
)


def test_volume_table_is_one_row_per_subject(tmp_path):
    (tmp_path / "volumes.tsv").write_text(VOLUMES)
    table = volume_table(Run(path=tmp_path, kind="predict")).set_index("subject")
    assert table.loc["sub-01", "brainstem_volume"] == 1010
    assert table.loc["sub-02", "brainstem_GM"] == 180
    assert table.loc["sub-02", "pons_WM"] == 72
    assert table.loc["sub-02", "group"] == "ALS"


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
