"""Baselines as the study runs them: N4 first, HMRF β chosen on validation subjects, the all-WM floor."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from evaluation.baseline_scores import BaselineSettings, baseline_rows, stage_rois, tune_hmrf_beta
from evaluation.bias_correction import n4_correct, raw_channel
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.errors import ConfigError
from tests.synthetic import MEANS, synthetic_labels

SHAPE = (28, 32, 28)


def _field(shape, strength=0.35):
    """A smooth multiplicative receive field, exp(strength · x · y) over [-1, 1]² (as large as GM/WM contrast)."""
    x, y, _ = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    return np.exp(strength * (x + 0.5 * y)).astype(np.float32)


def _separation(image, tissue):
    g, w = image[tissue == 2], image[tissue == 3]
    return (w.mean() - g.mean()) / np.sqrt(0.5 * (g.var() + w.var()))


def test_n4_removes_a_smooth_field_and_restores_the_tissue_contrast():
    tissue, _ = synthetic_labels(SHAPE)
    rng = np.random.default_rng(0)
    clean = np.asarray([0, 300, 600, 900], np.float32)[tissue] + rng.normal(0, 40, SHAPE) * (tissue > 0)
    biased = clean * _field(SHAPE)
    brain = tissue > 0
    corrected = n4_correct(biased, brain, shrink=1, iterations=(50, 50, 30))
    assert _separation(corrected, tissue) > _separation(biased, tissue) + 0.5
    ratio = corrected[brain] / clean[brain].clip(1)
    assert np.std(np.log(ratio)) < 0.5 * np.std(np.log(_field(SHAPE)[brain]))  # most of the field is gone


def test_raw_channel_undoes_the_cache_normalisation():
    image = np.random.default_rng(1).normal(size=(2, 4, 4, 4)).astype(np.float32)
    subject = SimpleNamespace(
        modalities=["T1w", "T2w"], presence=np.array([True, False]), image=image, entry="sub-x",
        meta={"normalisation": {"T1w": {"centre": 500.0, "scale": 200.0}}},
    )  # fmt: skip
    assert np.allclose(raw_channel(subject, "T1w"), image[0] * 200.0 + 500.0)
    with pytest.raises(Exception, match="T2w"):
        raw_channel(subject, "T2w")


def _subject(key, rng):
    tissue, regions = synthetic_labels(SHAPE)
    image = np.stack([np.asarray(m, np.float32)[tissue] + rng.normal(0, 0.1 * max(m), SHAPE) * (tissue > 0)
                      for m in MEANS.values()])  # fmt: skip
    centre = image.reshape(len(image), -1).mean(1)
    return SimpleNamespace(
        key=key, entry=key, modalities=list(MEANS), presence=np.ones(len(MEANS), bool),
        image=image - centre[:, None, None, None],
        meta={"normalisation": {m: {"centre": float(c), "scale": 1.0} for m, c in zip(MEANS, centre, strict=True)}},
        brain=(tissue > 0).astype(np.uint8), tissue=tissue, regions=regions, affine=np.diag([2.0, 2.0, 2.0, 1.0]),
    )  # fmt: skip


def test_the_all_wm_floor_and_the_beta_chosen_on_validation_subjects():
    rng = np.random.default_rng(2)
    test, val = [_subject(f"t{i}", rng) for i in range(2)], [_subject(f"v{i}", rng) for i in range(2)]
    settings = BaselineSettings(methods=("all_wm", "hmrf"), stages=("brainstem",), bias_correction=None,
                                beta_grid=(0.0, 0.3), tune_subjects=1)  # fmt: skip
    rois = stage_rois({}, settings.stages)
    rows, setup = baseline_rows(test, val, rois, ("GM", "WM"), settings)
    floor = {(r["subject"], r["class"]): r["dice"] for r in rows["all_wm"]}
    stem = np.isin(test[0].regions, [REGION_INDEX[n] for n in ("brainstem", "midbrain", "pons", "medulla")])
    wm, brain = (test[0].tissue == 3) & stem, (test[0].tissue > 0) & stem
    assert floor[("t0", "GM")] == 0.0 and floor[("t0", "WM")] == pytest.approx(2 * wm.sum() / (wm.sum() + brain.sum()))
    assert setup["hmrf_beta"] in (0.0, 0.3) and set(setup["hmrf_beta_scores"]) == {"0", "0.3"}
    assert setup["tuned_on"] == "validation subjects" and {r["subject"] for r in rows["hmrf"]} == {"t0", "t1"}
    beta, scores = tune_hmrf_beta([], rois, settings)  # no validation subject: the grid's middle, said so
    assert beta == 0.3 and scores == {}


def test_subjects_scored_in_worker_processes_give_the_same_rows():
    rng = np.random.default_rng(3)
    test, val = [_subject(f"t{i}", rng) for i in range(3)], [_subject(f"v{i}", rng) for i in range(2)]
    common = {"methods": ("all_wm", "gmm", "hmrf"), "stages": ("brainstem",), "beta_grid": (0.0, 0.3),
              "tune_subjects": 2}  # fmt: skip
    rois = stage_rois({}, ("brainstem",))
    alone = baseline_rows(test, val, rois, ("GM", "WM"), BaselineSettings(**common, n_jobs=1))
    pooled = baseline_rows(test, val, rois, ("GM", "WM"), BaselineSettings(**common, n_jobs=2))
    assert pooled == alone and [r["subject"] for r in pooled[0]["gmm"]] == ["t0", "t0", "t1", "t1", "t2", "t2"]
    assert BaselineSettings(n_jobs=4).parallel(2).n_jobs == 2 and BaselineSettings(n_jobs=1).parallel(9).n_jobs == 1


@pytest.mark.parametrize(
    ("cfg", "key"),
    [({"methods": ["fast"]}, "baselines.methods"),
     ({"methods": ["gmm"], "bias_correction": "n3"}, "baselines.bias_correction"),
     ({"methods": ["hmrf"], "hmrf": {"beta_grid": []}}, "baselines.hmrf.beta_grid"),
     ({"methods": ["gmm"], "n_jobs": 0}, "baselines.n_jobs"),
     ({"methods": ["gmm"], "n_jobs": "2"}, "baselines.n_jobs")],
)  # fmt: skip
def test_bad_settings_name_their_key(cfg, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        BaselineSettings.from_config(cfg)
