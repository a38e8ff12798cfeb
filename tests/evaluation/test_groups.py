"""evaluation.groups: model-measure tables from cross-fitted predictions, the truth they are set against,
head size that no brainstem model produces, and checks that can fail."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.groups import analyse_groups, excluded_measures, region_dice_summary, truth_column, volume_table
from evaluation.runs import Run
from ssl_pretrain.config import compose_config
from ssl_pretrain.errors import ConfigError

HEADER = "participant_id\tsession\tgroup\tregion\tCSF_mm3\tGM_mm3\tWM_mm3\tregion_mm3\tin_model_roi"
EXTRA = "\tbrain_mask_mm3\tcrossfit_fold\tmodel_saw_subject"
FOLD0 = (
    "sub-01\tn/a\tHC\tsubcortical\t5\t300\t100\t405\tFalse\t1500\t0\tFalse\n"
    "sub-01\tn/a\tHC\tbrainstem\t10\t200\t800\t1010\tTrue\t1500\t0\tFalse\n"
    "sub-01\tn/a\tHC\tpons\t1\t20\t80\t101\tTrue\t1500\t0\tFalse\n"
    "sub-03\t01\tALS\tbrainstem\t9\t170\t700\t879\tTrue\t1250\t0\tFalse\n"
)
FOLD1 = (
    "sub-02\tn/a\tALS\tsubcortical\t5\t280\t90\t375\tFalse\t1300\t1\tFalse\n"
    "sub-02\tn/a\tALS\tbrainstem\t10\t180\t720\t910\tTrue\t1300\t1\tFalse\n"
    "sub-02\tn/a\tALS\tpons\t1\t18\t72\t91\tTrue\t1300\t1\tFalse\n"
    "sub-01\tn/a\tHC\tbrainstem\t10\t999\t999\t9999\tTrue\t1500\t1\tTrue\n"  # fold 1's model trained on sub-01
)


def _runs(tmp_path, *tables):
    paths = []
    for i, rows in enumerate(tables):
        d = tmp_path / f"predict{i}"
        d.mkdir(parents=True)
        (d / "volumes.tsv").write_text(HEADER + EXTRA + "\n" + rows)
        paths.append(d / "volumes.tsv")
    return paths


def test_folds_merge_into_one_row_per_subject_and_seen_rows_never_count(tmp_path):
    table, left_out = volume_table(_runs(tmp_path, FOLD0, FOLD1))
    table = table.set_index("subject")
    assert sorted(table.index) == ["sub-01", "sub-02", "sub-03_ses-01"] and left_out == []
    assert table.loc["sub-01", "brainstem_volume"] == 1010  # not fold 1's 9999: that model had seen sub-01
    assert table.loc["sub-02", "brainstem_GM"] == 180 and table.loc["sub-02", "crossfit_fold"] == 1
    assert table.loc["sub-01", "head_size"] == 1500  # the brain mask, not a model output
    assert table["subcortical_GM"].isna().all()  # tissue outside the model's ROI is no measure
    assert np.isnan(table.loc["sub-03_ses-01", "pons_volume"])
    only_seen, left = volume_table(_runs(tmp_path / "b", FOLD1.splitlines(keepends=True)[-1]))
    assert only_seen.empty and left == ["sub-01"]


def test_excluded_measures_say_why(tmp_path):
    table, _ = volume_table(_runs(tmp_path, FOLD0, FOLD1))
    excluded = excluded_measures(table, ["brainstem_GM", "subcortical_GM", "subcortical_volume", "medulla_volume"])
    assert [e["measure"] for e in excluded] == ["subcortical_GM", "medulla_volume"]
    assert "in_model_roi false" in excluded[0]["reason"] and "medulla" in excluded[1]["reason"]


def test_truth_columns_match_the_demo_truth_table():
    """Every measure of configs/evaluate.yaml maps onto a column the simulation writes."""
    from ssl_pretrain.data.demo.bids_writer import TRUTH_COLUMNS

    measures = compose_config("evaluate").group.measures
    assert {m for m in measures if truth_column(m) in TRUTH_COLUMNS} == set(measures)
    assert truth_column("whole_brain_GM") == "gm_volume_mm3" and truth_column("pons_volume") == "pons_volume_mm3"


def _cohort_tables(tmp_path, constant_fraction: bool, n=20, seed=0):
    """A cohort whose patients lose brainstem GM (−20 %) but no WM; predicted outline and tissue with 2 % noise,
    or, with ``constant_fraction``, GM = a fixed share of the predicted outline (a segmenter that cannot tell)."""
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    for i in range(n):
        group = "ALS" if i % 2 else "HC"
        gm, wm = 2000.0 * (0.8 if group == "ALS" else 1.0) * rng.normal(1, 0.05), 8000.0 * rng.normal(1, 0.05)
        outline = (gm + wm) * rng.normal(1, 0.02)
        pgm = 0.18 * outline if constant_fraction else gm * rng.normal(1, 0.02)
        key = f"sub-{i:02d}"
        values = [key, "n/a", group, "brainstem", 0, pgm, outline - pgm, outline, True, rng.normal(1.4e6, 5e4), i % 2]
        rows.append("\t".join(str(v) for v in values) + "\tFalse\n")
        truth.append({"participant_id": key, "group": group, "brainstem_gm_volume_mm3": gm,
                      "brainstem_wm_volume_mm3": wm, "brainstem_volume_mm3": gm + wm})  # fmt: skip
    sim = tmp_path / "derivatives" / "simulation"
    sim.mkdir(parents=True)
    pd.DataFrame(truth).to_csv(sim / "subject_truth.tsv", sep="\t", index=False)
    (tmp_path / "predict").mkdir()
    (tmp_path / "predict" / "volumes.tsv").write_text(HEADER + EXTRA + "\n" + "".join(rows))
    cfg = compose_config("evaluate", [f"data.root={tmp_path}", "bootstrap.n=300", "group.measures=[brainstem_GM]"])
    return [Run(path=tmp_path / "predict", kind="predict")], cfg


@pytest.mark.parametrize("constant", [False, True])
def test_a_constant_gm_fraction_reproduces_the_trivial_floor_not_the_tissue_effect(tmp_path, constant):
    runs, cfg = _cohort_tables(tmp_path, constant_fraction=constant)
    (row,) = analyse_groups(runs, cfg)[0]["rows"]
    rec, floor = row["recovery"], row["trivial_predictor"]
    assert rec["true_diff_pct"] == pytest.approx(row["true_diff_pct"]) and rec["true_diff_pct"] < -15
    if constant:  # it measures the outline's change (~ −4 %), which is the floor's, and misses the GM loss
        assert rec["measured_diff_pct"] == pytest.approx(floor["measured_diff_pct"], abs=1e-6)
        assert rec["ci95"][0] > 0 and rec["error_pct"] > 10  # the error CI excludes 0: the check fails it
    else:  # a segmenter that separates the tissues recovers it, within its CI, and beats the floor
        assert rec["ci95"][0] <= 0 <= rec["ci95"][1]
        assert abs(rec["error_pct"]) < abs(floor["error_pct"]) - 5
    assert row["primary"] == "adjusted" and row["p_holm"] == pytest.approx(row["p_adjusted"])
    assert set(row["agreement"]) == {"HC", "ALS"} and row["source"] == "model" and row["crossfit_folds"] == 2


def test_head_size_does_not_depend_on_the_model(tmp_path):
    a, _ = volume_table(_runs(tmp_path / "a", FOLD0))
    other = FOLD0.replace("\t200\t800\t1010", "\t100\t900\t1100")  # another brainstem model: other volumes
    b, _ = volume_table(_runs(tmp_path / "b", other))
    assert a["head_size"].tolist() == b["head_size"].tolist()
    assert a["brainstem_volume"].tolist() != b["brainstem_volume"].tolist()


def test_group_covariates_come_from_volumes_or_participants_else_name_the_key(tmp_path):
    paths = _runs(tmp_path, FOLD0, FOLD1)
    (tmp_path / "participants.tsv").write_text("participant_id\tgroup\tage\nsub-01\tHC\t60\nsub-02\tALS\t62\n")
    cfg = compose_config("evaluate", [f"data.root={tmp_path}", "bootstrap.n=20", "group.measures=[brainstem_volume]"])
    runs = [Run(path=p.parent, kind="predict") for p in paths]
    cfg.group.covariates = ["age", "head_size"]
    group, _ = analyse_groups(runs, cfg)
    assert [r["covariates"] for r in group["rows"]] == [["age", "head_size"]]
    cfg.group.covariates = ["handedness"]
    with pytest.raises(ConfigError, match=r"group\.covariates.*handedness"):
        analyse_groups(runs, cfg)


DICE_HEADER = "participant_id\tsession\tgroup\tregion\tdice\tpredicted_mm3\treference_mm3\tmodel_saw_subject"
DICE_HEADER += "\tlargest_component\n"


def test_region_dice_of_the_written_maps_counts_only_subjects_the_model_never_saw(tmp_path):
    folds = [
        "sub-01\tn/a\tHC\tbrainstem\t0.9\t110\t100\tFalse\tbrainstem\n"
        "sub-03\tn/a\tALS\tbrainstem\t0.7\t150\t100\tFalse\tbrainstem\n"
        "sub-03\tn/a\tALS\tpons\t0.6\t50\t40\tFalse\tbrainstem\n",
        "sub-02\tn/a\tALS\tbrainstem\t0.8\t100\t100\tFalse\tbrainstem\n"
        "sub-01\tn/a\tHC\tbrainstem\t0.99\t100\t100\tTrue\tbrainstem\n",  # its model trained on sub-01
    ]
    paths = []
    for i, rows in enumerate(folds):
        (tmp_path / f"p{i}").mkdir()
        paths.append(tmp_path / f"p{i}" / "region_dice.tsv")
        paths[-1].write_text(DICE_HEADER + rows)
    summary = {r["region"]: r for r in region_dice_summary([*paths, tmp_path / "absent.tsv"], n_boot=200, seed=0)}
    stem = summary["brainstem"]
    assert stem["n_subjects"] == 3 and stem["dice"] == pytest.approx(0.8)  # (0.9 + 0.7 + 0.8) / 3, not the 0.99
    assert stem["ci95"][0] <= 0.8 <= stem["ci95"][1]
    assert stem["predicted_mm3"] == pytest.approx(120.0) and stem["largest_component"] == "brainstem"
    assert summary["pons"]["n_subjects"] == 1 and np.isnan(summary["pons"]["ci95"][0])
    assert stem["in_model_roi"] is None  # files written before predict recorded it
    assert region_dice_summary([tmp_path / "absent.tsv"], n_boot=200, seed=0) == []


def test_a_region_is_inside_the_models_roi_only_when_every_fold_says_so(tmp_path):
    header = DICE_HEADER.rstrip("\n") + "\tin_model_roi\n"
    paths = []
    for i, (stem, caudate) in enumerate([("True", "False"), ("True", "True")]):
        paths.append(tmp_path / f"p{i}.tsv")
        paths[-1].write_text(header + f"sub-0{i}\tn/a\tHC\tbrainstem\t0.9\t1\t1\tFalse\tbrainstem\t{stem}\n"
                             f"sub-0{i}\tn/a\tHC\tcaudate\t0.1\t1\t1\tFalse\tbrainstem\t{caudate}\n")  # fmt: skip
    summary = {r["region"]: r["in_model_roi"] for r in region_dice_summary(paths, n_boot=50, seed=0)}
    assert summary == {"brainstem": True, "caudate": False}
