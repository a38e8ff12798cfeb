"""The demo cohort's tissue model: structure-specific relaxation, nucleus variability, the tissue ALS effect, truth."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from ssl_pretrain.data.demo import brainstem as bs
from ssl_pretrain.data.demo import nucleus_maps as nm
from ssl_pretrain.data.demo import physics as phys
from ssl_pretrain.data.demo import relaxometry as rx
from ssl_pretrain.data.demo.anatomy import template_grid
from ssl_pretrain.data.demo.cohort import expected_effects
from ssl_pretrain.data.demo.simulate import SimulationSettings, simulate_subject
from ssl_pretrain.data.demo.truth import truth_volumes
from ssl_pretrain.data.labels import REGION_INDEX
from ssl_pretrain.errors import ConfigError

DOCS = Path(__file__).resolve().parents[3] / "docs" / "demo_cohort.md"
STEM = [REGION_INDEX[n] for n in ("midbrain", "pons", "medulla")]
# noise-free and artefact-free: two runs of one subject differ only by what the changed knob does
QUIET = SimulationSettings(spacing=3.0, seed=4, noise=0.0, artefacts=False, effect_heterogeneity=0.0)


def _distance_to(regions: np.ndarray, ids: list[int], spacing: float) -> np.ndarray:
    return ndi.distance_transform_edt(~np.isin(regions, ids)) * spacing


# ------------------------------------------------------------------------------------ relaxation model


def test_structure_parameters_interpolate_between_wm_and_cortex() -> None:
    params = {"gm_t1_ms": 1400.0, "wm_t1_ms": 900.0, "gm_t2_ms": 100.0, "wm_t2_ms": 70.0, "gm_pd": 0.8, "wm_pd": 0.7}
    cortex = rx.structure_parameters(params, rx.Contrast(1.0, 1.0, 1.0))
    wm = rx.structure_parameters(params, rx.Contrast(0.0, 0.0, 0.0))
    mixed = rx.structure_parameters(params, rx.Contrast(0.5, -1.0, 0.25))
    assert cortex == pytest.approx({"t1_ms": 1400.0, "t2_ms": 100.0, "pd": 0.8})
    assert wm == pytest.approx({"t1_ms": 900.0, "t2_ms": 70.0, "pd": 0.7})
    assert mixed == pytest.approx({"t1_ms": 1150.0, "t2_ms": 40.0, "pd": 0.725})
    floor = rx.structure_parameters(params, rx.Contrast(-2.0, -2.0, -2.0))
    assert floor["t1_ms"] == pytest.approx(rx.MIN_FRACTION_OF_WM * 900.0)  # never non-physical


def test_anatomical_image_gives_each_gm_part_its_own_signal() -> None:
    frac = {t: np.zeros((3, 1, 1), np.float32) for t in ("csf", "gm", "wm")}
    frac["gm"][:] = 1.0
    parts = {"putamen": np.array([0.0, 1.0, 0.5], np.float32).reshape(3, 1, 1)}
    image = phys.anatomical_image(frac, parts, {"csf": 1.0, "gm": 0.3, "wm": 0.6, "putamen": 0.5}).ravel()
    assert image.tolist() == pytest.approx([0.3, 0.5, 0.4])


def _documented_defaults() -> dict[str, dict[str, float]]:
    """The 'Default relative contrasts' table of docs/demo_cohort.md: structure -> {t1, t2, pd}."""
    text = DOCS.read_text().split("### Default relative contrasts", 1)[1]
    rows = {}
    for line in text.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        match = re.match(r"\|\s*`(\w+)`[^|]*\|\s*([-\d.]+)\s*\|\s*([-\d.]+)\s*\|\s*([-\d.]+)\s*\|", line)
        if match:
            rows[match.group(1)] = dict(zip(("t1", "t2", "pd"), map(float, match.groups()[1:]), strict=True))
    return rows


def test_defaults_are_the_documented_table_and_the_sourced_derivations() -> None:
    documented = _documented_defaults()
    code = {name: c.as_dict() for name, c in SimulationSettings().structure_contrasts().items()}
    assert documented == code
    derived = {(s.structure, s.parameter): s.contrast for s in rx.LITERATURE if s.contrast is not None}
    assert code["putamen"]["t1"] == derived[("putamen", "t1")]
    assert code["caudate"]["t1"] == derived[("caudate", "t1")]
    assert code["pallidum"]["t2"] == derived[("pallidum", "t2")]
    # Gelman 1999: R2 cortex 14.4, WM 18.0, pallidum 25.8 s^-1 -> c = (1/25.8 - 1/18) / (1/14.4 - 1/18)
    assert derived[("pallidum", "t2")] == pytest.approx((1 / 25.8 - 1 / 18.0) / (1 / 14.4 - 1 / 18.0), abs=0.005)


def test_default_brainstem_contrast_is_below_subcortical_iff_the_table_says_so() -> None:
    documented = _documented_defaults()
    table_says = documented["brainstem_nuclei"]["t1"] < min(documented[n]["t1"] for n in rx.SUBCORTICAL)
    code = SimulationSettings().structure_contrasts()
    code_is = code["brainstem_nuclei"].t1 < min(code[n].t1 for n in rx.SUBCORTICAL)
    assert code_is == table_says


def test_brainstem_contrast_changes_only_brainstem_nuclei_signal() -> None:
    weak = simulate_subject(1, "HC", replace(QUIET, brainstem_contrast=0.1))
    full = simulate_subject(1, "HC", replace(QUIET, brainstem_contrast=1.0))
    assert np.array_equal(weak.tissue, full.tissue) and np.array_equal(weak.regions, full.regions)
    changed = weak.t1w != full.t1w
    near_stem = _distance_to(full.regions, STEM, 3.0) <= 9.0  # nuclei reach partial voxels beside the labels
    assert changed.any() and not changed[~near_stem].any()  # subcortical and cortical signal untouched
    stem = np.isin(full.regions, STEM)
    for image in (weak, full):
        assert float(image.t1w[stem & (image.tissue == 3)].mean()) > 0
    contrast = {
        name: float(s.t1w[stem & (s.tissue == 3)].mean() - s.t1w[stem & (s.tissue == 2)].mean())
        for name, s in (("weak", weak), ("full", full))
    }
    assert contrast["full"] > contrast["weak"]  # T1w: WM brighter than nuclei, more so at cortical contrast


def test_subcortical_contrast_changes_only_that_nucleus() -> None:
    base = simulate_subject(1, "HC", QUIET)
    other = simulate_subject(1, "HC", replace(QUIET, subcortical_contrast={"thalamus": 1.0}))
    changed = base.t1w != other.t1w
    near = _distance_to(base.regions, [REGION_INDEX["thalamus"]], 3.0) <= 6.0  # partial voxels beside the label
    assert changed.any() and not changed[~near].any()
    assert base.truth["thalamus_t1_ms"] < other.truth["thalamus_t1_ms"] == other.truth["gm_t1_ms"]
    assert base.truth["putamen_t1_ms"] == other.truth["putamen_t1_ms"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("brainstem_contrast", "strong"),
        ("subcortical_contrast", {"thalamus": 5.0}),
        ("subcortical_contrast", {"hippocampus": 0.5}),
        ("subcortical_contrast", {"pallidum": {"t1": 0.5}}),
        ("subcortical_contrast", [0.5]),
        ("iron_nuclei_contrast", {"t1": 0.5, "t2": -1.0, "pd": 0.5, "t3": 1}),
        ("nucleus_position_sd_mm", -1.0),
        ("nucleus_size_sd", 0.9),
        ("motor_nuclei_loss", 1.5),
        ("motor_nuclei_loss_tissue", "gas"),
        ("cst_atrophy", 0.9),
    ],
)
def test_bad_tissue_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"demo\.{key}"):
        SimulationSettings(**{key: value})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ nucleus variability


def test_nucleus_jitter_has_the_configured_spread_and_independent_sides() -> None:
    template = bs.place_nuclei()
    rng = np.random.default_rng(0)
    shifts = np.stack(
        [
            [p.centre - t.centre for p, t in zip(bs.place_nuclei(rng, 1.5, 0.1), template, strict=True)]
            for _ in range(300)
        ]
    )  # fmt: skip  (draws, nucleus sides, 3)
    assert shifts.std() == pytest.approx(1.5, rel=0.05) and abs(shifts.mean()) < 0.05
    right, left = shifts[:, 0::2].reshape(-1), shifts[:, 1::2].reshape(-1)
    assert abs(np.corrcoef(right, left)[0, 1]) < 0.05
    scales = np.log([p.radii / t.radii for p, t in zip(bs.place_nuclei(rng, 0.0, 0.1), template, strict=True)])
    assert scales.std() == pytest.approx(0.1, rel=0.25)
    assert all(np.array_equal(p.centre, t.centre) for p, t in zip(bs.place_nuclei(rng, 0.0, 0.0), template,
                                                                   strict=True))  # fmt: skip


def test_nucleus_jitter_changes_the_brainstem_and_nothing_else() -> None:
    fixed = simulate_subject(2, "HC", replace(QUIET, nucleus_position_sd_mm=0.0, nucleus_size_sd=0.0))
    moved = simulate_subject(2, "HC", replace(QUIET, nucleus_position_sd_mm=2.0, nucleus_size_sd=0.2))
    changed = (fixed.tissue != moved.tissue) | (fixed.t2w != moved.t2w)
    near_stem = _distance_to(fixed.regions, STEM, 3.0) <= 9.0
    assert changed.any() and not changed[~near_stem].any()
    assert fixed.truth["brainstem_gm_volume_mm3"] != moved.truth["brainstem_gm_volume_mm3"]
    for key in ("head_scale", "gm_t1_ms", "brainstem_volume_mm3", "caudate_gm_volume_mm3", "t1w_noise_rel"):
        assert fixed.truth[key] == moved.truth[key], key


# ----------------------------------------------------------------------------------------- ALS effect


def test_als_loses_motor_nuclei_gm_and_spares_oculomotor_and_abducens() -> None:
    s = replace(QUIET, brainstem_atrophy=0.0, cst_atrophy=0.0, cst_fa_reduction=0.0)
    hc, als = simulate_subject(3, "HC", s), simulate_subject(3, "ALS", s)
    assert als.truth["motor_nuclei_loss_factor"] == pytest.approx(s.motor_nuclei_loss)
    ratio = als.truth["motor_nuclei_gm_volume_mm3"] / hc.truth["motor_nuclei_gm_volume_mm3"]
    assert ratio == pytest.approx(1 - s.motor_nuclei_loss, abs=1e-3)
    assert als.truth["spared_nuclei_gm_volume_mm3"] == pytest.approx(hc.truth["spared_nuclei_gm_volume_mm3"], rel=1e-4)
    assert als.truth["brainstem_gm_fraction"] < hc.truth["brainstem_gm_fraction"]  # composition changes
    assert als.truth["brainstem_volume_mm3"] == pytest.approx(hc.truth["brainstem_volume_mm3"], rel=1e-6)
    lost = hc.truth["brainstem_gm_volume_mm3"] - als.truth["brainstem_gm_volume_mm3"]
    gained = als.truth["brainstem_wm_volume_mm3"] - hc.truth["brainstem_wm_volume_mm3"]
    assert lost > 0 and gained == pytest.approx(lost, rel=1e-3)  # gliotic: the lost GM becomes WM-like
    to_csf = simulate_subject(3, "ALS", replace(s, motor_nuclei_loss_tissue="csf"))
    csf_gain = to_csf.truth["brainstem_csf_volume_mm3"] - hc.truth["brainstem_csf_volume_mm3"]
    assert csf_gain == pytest.approx(lost, rel=1e-3)


def test_cst_atrophy_shrinks_the_tract_not_the_tissue() -> None:
    s = replace(QUIET, brainstem_atrophy=0.0, motor_nuclei_loss=0.0, cst_atrophy=0.2)
    hc, als = simulate_subject(3, "HC", s), simulate_subject(3, "ALS", s)
    assert als.truth["cst_volume_mm3"] < 0.9 * hc.truth["cst_volume_mm3"]
    assert 0.1 < als.truth["cst_volume_loss"] <= 0.2 + 1e-6
    assert als.truth["brainstem_gm_volume_mm3"] == pytest.approx(hc.truth["brainstem_gm_volume_mm3"], rel=1e-6)
    assert als.truth["cst_fa_mean"] < hc.truth["cst_fa_mean"]


def test_each_effect_has_its_own_stream() -> None:
    s = SimulationSettings(spacing=3.0, seed=1, artefacts=False)
    base = simulate_subject(2, "ALS", s)
    for change in ({"motor_nuclei_loss": 0.2}, {"motor_nuclei_loss": 0.0}, {"cst_atrophy": 0.1},
                   {"nucleus_position_sd_mm": 2.0}, {"nucleus_position_sd_mm": 0.0, "nucleus_size_sd": 0.0},
                   {"brainstem_contrast": 0.9}, {"brainstem_atrophy": 0.0}):  # fmt: skip
        other = simulate_subject(2, "ALS", replace(s, **change))
        for key in ("head_scale", "gm_t1_ms", "cst_fa_scale", "t2w_noise_rel", "fa_gm", "dwi_rotation_deg", "age",
                    "sex", "t1w_artefact"):  # fmt: skip
            assert other.truth[key] == base.truth[key], (change, key)
        relative = {"motor_nuclei_loss": "motor_nuclei_loss_factor", "cst_atrophy": "cst_atrophy_factor",
                    "brainstem_atrophy": "atrophy_factor"}  # fmt: skip
        for knob, column in relative.items():  # an effect's realised size scales with its own knob only
            expected = base.truth[column] * (change[knob] / getattr(s, knob) if knob in change else 1.0)
            assert other.truth[column] == pytest.approx(expected, abs=2e-6), (change, column)


def test_expected_effects_include_the_tissue_effect() -> None:
    s = SimulationSettings(spacing=3.0)
    expected = expected_effects(s)
    assert expected["brainstem_gm_fraction_diff_pct"] < 0
    assert expected["brainstem_gm_volume_diff_pct"] < expected["brainstem_wm_volume_diff_pct"] < 0
    assert expected["motor_nuclei_gm_volume_diff_pct"] < -100 * s.motor_nuclei_loss
    none = expected_effects(replace(s, brainstem_atrophy=0.0, motor_nuclei_loss=0.0, cst_atrophy=0.0))
    for key in ("brainstem_gm_volume_diff_pct", "brainstem_gm_fraction_diff_pct", "motor_nuclei_gm_volume_diff_pct",
                "spared_nuclei_gm_volume_diff_pct", "cst_volume_diff_pct"):  # fmt: skip
        assert none[key] == pytest.approx(0.0, abs=1e-3), key
    only_nuclei = expected_effects(replace(s, brainstem_atrophy=0.0, cst_atrophy=0.0))
    assert only_nuclei["motor_nuclei_gm_volume_diff_pct"] == pytest.approx(-100 * s.motor_nuclei_loss, abs=0.01)
    assert only_nuclei["spared_nuclei_gm_volume_diff_pct"] == pytest.approx(0.0, abs=1e-3)


# ---------------------------------------------------------------------------------------------- truth


def test_truth_volumes_are_partial_volume_sums() -> None:
    rng = np.random.default_rng(0)
    shape = (4, 5, 6)
    regions = {n: rng.uniform(0, 0.12, shape) for n in ("midbrain", "pons", "medulla", "thalamus", "caudate",
                                                         "putamen", "pallidum")}  # fmt: skip
    frac = {t: rng.uniform(0, 0.33, shape) for t in ("gm", "wm", "csf")}
    parts = {"gm_motor": rng.uniform(0, 0.1, shape), "gm_spared": rng.uniform(0, 0.1, shape)}
    cst = rng.uniform(0, 1, shape)
    out = truth_volumes(regions, frac, parts, cst, 8.0)
    stem = regions["midbrain"] + regions["pons"] + regions["medulla"]
    assert out["brainstem_volume_mm3"] == pytest.approx(8.0 * stem.sum(), abs=0.01)
    assert out["pons_wm_volume_mm3"] == pytest.approx(8.0 * (regions["pons"] * frac["wm"]).sum(), abs=0.01)
    sub = sum(regions[n] for n in ("thalamus", "caudate", "putamen", "pallidum"))
    assert out["subcortical_gm_volume_mm3"] == pytest.approx(8.0 * (sub * frac["gm"]).sum(), abs=0.01)
    assert out["cst_volume_mm3"] == pytest.approx(8.0 * (stem * cst).sum(), abs=0.01)
    assert out["brainstem_gm_fraction"] == pytest.approx(
        (stem * frac["gm"]).sum() / (stem * (frac["gm"] + frac["wm"])).sum(), abs=1e-5
    )


def test_truth_table_matches_the_label_maps(demo_cohort: Path) -> None:
    import nibabel as nib

    lines = (demo_cohort / "derivatives/simulation/subject_truth.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    spacing = 3.0
    for line in lines[1:]:
        t = dict(zip(header, line.split("\t"), strict=True))
        sub = t["participant_id"]
        labels = demo_cohort / f"derivatives/labels/{sub}/anat"
        regions = np.asarray(nib.load(str(labels / f"{sub}_desc-regions_dseg.nii.gz")).dataobj)  # type: ignore[attr-defined]
        tissue = np.asarray(nib.load(str(labels / f"{sub}_desc-tissue_dseg.nii.gz")).dataobj)  # type: ignore[attr-defined]
        for name in ("thalamus", "putamen", "subcortical", "brainstem"):
            ids = [REGION_INDEX[n] for n in (("thalamus", "caudate", "putamen", "pallidum") if name == "subcortical"
                                              else STEM_NAMES if name == "brainstem" else (name,))]  # fmt: skip
            counted = float(np.isin(regions, ids).sum() * spacing**3)
            assert counted == pytest.approx(float(t[f"{name}_volume_mm3"]), rel=0.08), (sub, name)
            parts = [float(t[f"{name}_{k}_volume_mm3"]) for k in ("gm", "wm", "csf")]
            assert sum(parts) <= float(t[f"{name}_volume_mm3"]) + 0.05
        gm_labelled = float((np.isin(regions, STEM) & (tissue == 2)).sum() * spacing**3)
        assert gm_labelled < float(t["brainstem_volume_mm3"])
        assert float(t["subcortical_volume_mm3"]) == pytest.approx(
            sum(float(t[f"{n}_volume_mm3"]) for n in ("thalamus", "caudate", "putamen", "pallidum")), abs=0.05
        )


STEM_NAMES = ("midbrain", "pons", "medulla")


def test_brainstem_box_holds_every_nucleus() -> None:
    grid = template_grid(3.0)
    box = grid.stem
    template = nm.brainstem_maps(box)
    edge = np.ones(template["gm_nuclei"].shape, bool)
    edge[1:-1, 1:-1, 1:-1] = False
    assert float(template["gm_nuclei"][edge].max()) == 0.0 and float(template["gm_iron"][edge].max()) == 0.0
    assert template["gm_motor"].sum() > 0 and template["gm_spared"].sum() > 0
    channel = grid.channel("gm")[box.box]
    assert np.allclose(channel, template["gm"])
