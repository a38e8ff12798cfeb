"""Patients vs controls on simulated tables with a known effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.group_analysis import compare_groups, ols_effect
from ssl_pretrain.errors import DataError


def _cohort(seed=0, n_hc=27, n_als=26, effect_pct=-8.0, age_slope=0.0):
    """Brainstem volume ~ N(20000, 800) mm³ in controls, scaled by (1 + effect) in patients; a null measure."""
    rng = np.random.default_rng(seed)
    group = np.array(["HC"] * n_hc + ["ALS"] * n_als)
    age = np.r_[rng.normal(55, 6, n_hc), rng.normal(65, 6, n_als)]  # patients older on average
    base = rng.normal(20000, 800, n_hc + n_als) + age_slope * (age - 55)
    volume = base * np.where(group == "ALS", 1 + effect_pct / 100, 1.0)
    return pd.DataFrame(
        {
            "subject": [f"sub-{i:02d}" for i in range(len(group))],
            "group": group,
            "age": age,
            "sex": rng.choice(["F", "M"], len(group)),
            "brainstem_volume": volume,
            "null_measure": rng.normal(5.0, 1.0, len(group)),
        }
    )


def test_recovers_known_difference():
    table = _cohort()
    rows = {r["measure"]: r for r in compare_groups(table)}
    stem = rows["brainstem_volume"]
    lo, hi = stem["ci95"]
    assert lo < -8.0 < hi and hi - lo < 6.0
    hc = table.loc[table.group == "HC", "brainstem_volume"]
    als = table.loc[table.group == "ALS", "brainstem_volume"]
    assert stem["diff_pct"] == pytest.approx(100 * (als.mean() / hc.mean() - 1))
    assert stem["p"] == pytest.approx(stats.ttest_ind(als, hc, equal_var=False).pvalue)
    assert stem["p"] < 1e-6 and stem["p_mannwhitney"] < 1e-4 and stem["p_holm"] < 1e-5
    true_d = -0.08 * 20000 / 800  # -2.0 (patients' SD is 8% smaller, close enough for the CI check)
    assert stem["cohens_d_ci95"][0] < true_d < stem["cohens_d_ci95"][1] and stem["cohens_d"] < -1.2
    assert stem["n_control"] == 27 and stem["n_patient"] == 26 and stem["patient"] == "ALS"
    null = rows["null_measure"]
    assert null["p"] > 0.05 and null["ci95"][0] < 0 < null["ci95"][1]
    assert stem["primary"] == "raw" and stem["p_primary"] == stem["p"]  # no covariates: raw is the only analysis
    assert set(rows) == {"brainstem_volume", "null_measure"}  # age and sex are metadata, not measures


def test_adjusting_for_a_confounder():
    """Volume falls with age and patients are older: the raw difference overstates the effect, OLS recovers it."""
    table = _cohort(seed=1, age_slope=-60.0)
    (row,) = compare_groups(table, measures=["brainstem_volume"], covariates=["age", "sex"])
    assert row["ci95"][1] < -8.0  # raw: biased beyond the truth
    lo, hi = row["ci95_adjusted"]
    assert lo < -8.0 < hi and row["p_adjusted"] < 1e-3
    assert row["n_adjusted"] == 53 and row["covariates"] == ["age", "sex"]
    assert row["primary"] == "adjusted" and row["p_holm"] == row["p_adjusted"] and row["p_holm_secondary"] == row["p"]
    (raw,) = compare_groups(table, measures=["brainstem_volume"], covariates=["age", "sex"], primary="raw")
    assert raw["p_holm"] == raw["p"] and raw["p_holm_secondary"] == raw["p_adjusted"]
    assert "truth_in_ci" not in row  # agreement with the truth is evaluation.agreement's, per subject


def test_ols_without_covariates_is_the_pooled_t_test():
    table = _cohort(seed=2)
    y = table["brainstem_volume"].to_numpy()
    patient = (table["group"] == "ALS").to_numpy(float)
    b, lo, hi, p = ols_effect(y, np.column_stack([np.ones_like(y), patient]))
    ref = stats.ttest_ind(y[patient == 1], y[patient == 0], equal_var=True)
    assert b == pytest.approx(y[patient == 1].mean() - y[patient == 0].mean())
    assert p == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval()
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    assert np.isnan(ols_effect(y, np.column_stack([np.ones_like(y), np.ones_like(y)]))[0])  # rank-deficient


def test_bad_tables():
    table = _cohort()
    with pytest.raises(DataError, match=r"volumes\.tsv.*missing column"):
        compare_groups(table.drop(columns="group"), source="volumes.tsv")
    with pytest.raises(DataError, match="control group 'CTRL'"):
        compare_groups(table, control="CTRL")
    three = table.assign(group=np.resize(["HC", "ALS", "PLS"], len(table)))
    with pytest.raises(DataError, match="cannot tell the patient group"):
        compare_groups(three)
    assert compare_groups(three, patient="PLS", measures=["null_measure"])[0]["patient"] == "PLS"
    with pytest.raises(DataError, match="not numeric"):
        compare_groups(table, measures=["sex"])
    with pytest.raises(DataError, match="missing column"):
        compare_groups(table, covariates=["bmi"])
