"""The simulated demo cohort: BIDS layout, determinism, physics, the configured effects, safe writing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from ssl_pretrain.config import compose_config
from ssl_pretrain.data.bids import discover, read_dseg_tsv
from ssl_pretrain.data.demo import SimulationSettings, simulate_cohort
from ssl_pretrain.data.demo import physics as phys
from ssl_pretrain.data.demo.bids_writer import is_demo_cohort
from ssl_pretrain.data.demo.cohort import expected_effects
from ssl_pretrain.data.demo.simulate import simulate_subject
from ssl_pretrain.data.labels import REGION_INDEX, REGIONS, TISSUE_CLASSES
from ssl_pretrain.errors import ConfigError, DataError

MODALITIES = ["T1w", "T2w", "FA", "MD"]


def _settings(root: Path) -> SimulationSettings:
    return SimulationSettings(**json.loads((root / "derivatives/simulation/effects.json").read_text())["settings"])


def _tsv(path: Path) -> list[dict[str, str]]:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [dict(zip(header, row, strict=True)) for row in rows]


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = cast(nib.Nifti1Image, nib.load(str(path)))
    return np.asarray(img.dataobj), np.asarray(img.affine)


def _labels_on_grid(labels: np.ndarray, labels_affine: np.ndarray, shape, affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour label of each voxel of another grid (via world coordinates)."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = nib.affines.apply_affine(affine, ijk)
    src = np.rint(nib.affines.apply_affine(np.linalg.inv(labels_affine), world)).astype(int)
    ok = np.all((src >= 0) & (src < np.asarray(labels.shape)), axis=1)
    out = np.zeros(len(ijk), labels.dtype)
    out[ok] = labels[tuple(src[ok].T)]
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------------- layout


def test_bids_layout_and_tables(demo_cohort: Path) -> None:
    root = demo_cohort
    settings = _settings(root)
    description = json.loads((root / "dataset_description.json").read_text())
    assert "SIMULATION" in description["Name"] and description["BIDSVersion"]
    assert "SIMULATED" in (root / "README").read_text()
    assert is_demo_cohort(root)
    for derivative in ("dwi", "labels", "simulation"):
        desc = json.loads((root / "derivatives" / derivative / "dataset_description.json").read_text())
        assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"]

    participants = _tsv(root / "participants.tsv")
    assert list(participants[0]) == ["participant_id", "group", "age", "sex"]
    groups = [p["group"] for p in participants]
    assert sorted(groups) == sorted(["HC"] * settings.n_controls + ["ALS"] * settings.n_patients)
    assert all(p["sex"] in ("M", "F") and 30 <= int(p["age"]) <= 85 for p in participants)

    canonical = set(REGIONS.values())
    for p in participants:
        sub = p["participant_id"]
        labels = root / "derivatives/labels" / sub / "anat"
        for desc in ("tissue", "regions"):
            table = read_dseg_tsv(labels / f"{sub}_desc-{desc}_dseg.tsv")
            volume, _ = _load(labels / f"{sub}_desc-{desc}_dseg.nii.gz")
            assert set(np.unique(volume).tolist()) <= set(table), (sub, desc)
            if desc == "tissue":
                assert table == TISSUE_CLASSES
            else:
                assert table[0] == "background" and {n for i, n in table.items() if i} <= canonical
                assert all(REGION_INDEX[n] == i for i, n in table.items() if i)
        _fa, fa_affine = _load(root / f"derivatives/dwi/{sub}/dwi/{sub}_space-T1w_model-tensor_param-fa_dwimap.nii.gz")
        assert np.allclose(np.abs(np.diag(fa_affine)[:3]), settings.dwi_spacing)  # its own diffusion grid

    records = discover(root, MODALITIES, require_group=True)
    assert [r.key for r in records] == sorted(p["participant_id"] for p in participants)
    for record in records:
        assert set(record.images) == set(MODALITIES)
        assert record.tissue is not None and record.regions is not None and record.group in ("HC", "ALS")

    truth = _tsv(root / "derivatives/simulation/subject_truth.tsv")
    assert [t["participant_id"] for t in truth] == [p["participant_id"] for p in participants]
    for column in ("atrophy_factor", "brainstem_volume_mm3", "midbrain_volume_mm3", "pons_volume_mm3",
                   "medulla_volume_mm3", "brainstem_gm_volume_mm3", "brainstem_wm_volume_mm3", "gm_volume_mm3",
                   "wm_volume_mm3", "cst_fa_scale", "gm_t1_ms", "wm_t2_ms", "csf_pd"):  # fmt: skip
        assert column in truth[0], column
    effects = json.loads((root / "derivatives/simulation/effects.json").read_text())
    assert effects["simulation"] is True and effects["seed"] == settings.seed and effects["version"]
    assert effects["expected_brainstem_volume_diff_pct"] < 0


# ----------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_arrays_other_seed_differs(demo_cohort: Path) -> None:
    settings = _settings(demo_cohort)
    participants = _tsv(demo_cohort / "participants.tsv")
    group = participants[0]["group"]
    again = simulate_subject(1, group, settings)
    sub = "sub-01"
    written = {
        "t1w": demo_cohort / sub / "anat" / f"{sub}_T1w.nii.gz",
        "t2w": demo_cohort / sub / "anat" / f"{sub}_T2w.nii.gz",
        "fa": demo_cohort / f"derivatives/dwi/{sub}/dwi/{sub}_space-T1w_model-tensor_param-fa_dwimap.nii.gz",
        "md": demo_cohort / f"derivatives/dwi/{sub}/dwi/{sub}_space-T1w_model-tensor_param-md_dwimap.nii.gz",
        "tissue": demo_cohort / f"derivatives/labels/{sub}/anat/{sub}_desc-tissue_dseg.nii.gz",
        "regions": demo_cohort / f"derivatives/labels/{sub}/anat/{sub}_desc-regions_dseg.nii.gz",
    }
    for name, path in written.items():
        data, _ = _load(path)
        assert data.dtype == getattr(again, name).dtype
        assert np.array_equal(data, getattr(again, name)), name
    other = simulate_subject(1, group, SimulationSettings(**{**settings.__dict__, "seed": settings.seed + 1}))
    assert not np.array_equal(other.t1w, again.t1w)
    assert not np.array_equal(other.regions, again.regions)


# -------------------------------------------------------------------------------------------- physics


def test_tissue_contrast_and_diffusion_are_physical(demo_cohort: Path) -> None:
    for p in _tsv(demo_cohort / "participants.tsv"):
        sub = p["participant_id"]
        tissue, anat_affine = _load(demo_cohort / f"derivatives/labels/{sub}/anat/{sub}_desc-tissue_dseg.nii.gz")
        t1w, _ = _load(demo_cohort / sub / "anat" / f"{sub}_T1w.nii.gz")
        t2w, _ = _load(demo_cohort / sub / "anat" / f"{sub}_T2w.nii.gz")
        mean = {
            name: {c: float(img[tissue == c].mean()) for c in (1, 2, 3)} for name, img in (("T1", t1w), ("T2", t2w))
        }
        assert mean["T1"][3] > mean["T1"][2] > mean["T1"][1], (sub, mean)  # T1w: WM > GM > CSF
        assert mean["T2"][1] > mean["T2"][2] > mean["T2"][3], (sub, mean)  # T2w: CSF > GM > WM
        dwi = demo_cohort / f"derivatives/dwi/{sub}/dwi/{sub}_space-T1w_model-tensor_param-"
        fa, fa_affine = _load(Path(f"{dwi}fa_dwimap.nii.gz"))
        md, _ = _load(Path(f"{dwi}md_dwimap.nii.gz"))
        labels = _labels_on_grid(tissue, anat_affine, fa.shape, fa_affine)
        fa_mean = {c: float(fa[labels == c].mean()) for c in (1, 2, 3)}
        md_mean = {c: float(md[labels == c].mean()) for c in (1, 2, 3)}
        assert fa_mean[3] > fa_mean[2] + 0.1 and fa_mean[3] > fa_mean[1], (sub, fa_mean)
        assert md_mean[1] > 1.5 * max(md_mean[2], md_mean[3]), (sub, md_mean)
        assert fa.min() >= 0.0 and fa.max() <= 1.0


def test_signal_model_is_the_spin_echo_formula_and_keeps_tissue_order() -> None:
    assert phys.spin_echo(0.8, 1000.0, 100.0, 600.0, 12.0) == pytest.approx(
        0.8 * (1 - np.exp(-0.6)) * np.exp(-0.12), rel=1e-12
    )
    rng = np.random.default_rng(0)
    for _ in range(200):  # every per-subject draw keeps the physical ordering
        params = phys.draw_tissue_parameters(rng)
        t1w, t2w = phys.tissue_signals(params, "T1w"), phys.tissue_signals(params, "T2w")
        assert t1w["wm"] > t1w["gm"] > t1w["csf"]
        assert t2w["csf"] > t2w["gm"] > t2w["wm"]
        assert params.wm_t1_ms < params.gm_t1_ms < params.csf_t1_ms


# -------------------------------------------------------------------------------------------- effects


def test_patients_lower_brainstem_shrinks_by_the_configured_factor(demo_cohort: Path) -> None:
    settings = _settings(demo_cohort)
    voxel = settings.spacing**3
    for t in _tsv(demo_cohort / "derivatives/simulation/subject_truth.tsv"):
        atrophy, loss = float(t["atrophy_factor"]), float(t["lower_brainstem_volume_loss"])
        parts = sum(float(t[f"{n}_volume_mm3"]) for n in ("midbrain", "pons", "medulla"))
        assert float(t["brainstem_volume_mm3"]) == pytest.approx(parts, rel=1e-6)
        if t["group"] == "HC":
            assert atrophy == 0.0 and loss == 0.0 and float(t["cst_fa_scale"]) == 1.0
        else:
            assert atrophy > 0.0 and loss == pytest.approx(atrophy, abs=0.012)
            assert float(t["cst_fa_scale"]) < 1.0
        sub = t["participant_id"]
        regions, _ = _load(demo_cohort / f"derivatives/labels/{sub}/anat/{sub}_desc-regions_dseg.nii.gz")
        # label maps agree with the partial-volume truth (thin structures lose a few % to the argmax)
        for names, column, tol in ((("midbrain", "pons", "medulla"), "brainstem", 0.05),
                                   (("pons", "medulla"), "lower_brainstem", 0.08)):  # fmt: skip
            counted = float(np.isin(regions, [REGION_INDEX[n] for n in names]).sum() * voxel)
            assert counted == pytest.approx(float(t[f"{column}_volume_mm3"]), rel=tol), (sub, column)

    # closed form: an in-plane shrink of the pons and medulla by sqrt(1 - a) loses exactly a of their volume
    expected = expected_effects(settings)
    assert expected["lower_brainstem_volume_diff_pct"] == pytest.approx(-100 * settings.brainstem_atrophy, abs=0.01)
    assert expected["pons_volume_diff_pct"] == pytest.approx(-100 * settings.brainstem_atrophy, abs=0.01)
    assert -100 * settings.brainstem_atrophy < expected["brainstem_volume_diff_pct"] < 0


def test_same_subject_as_patient_differs_only_by_the_effects() -> None:
    settings = SimulationSettings(spacing=3.0, seed=3, effect_heterogeneity=0.0, artefacts=False)
    hc, als = simulate_subject(2, "HC", settings), simulate_subject(2, "ALS", settings)
    lower = [REGION_INDEX["pons"], REGION_INDEX["medulla"]]
    ratio = np.isin(als.regions, lower).sum() / np.isin(hc.regions, lower).sum()
    assert ratio == pytest.approx(1 - settings.brainstem_atrophy, abs=0.025)
    # the atrophy is local: labels change only near the brainstem (its warp fades within ~15 mm)
    stem = np.isin(hc.regions, [REGION_INDEX[n] for n in ("midbrain", "pons", "medulla")])
    distance = ndi.distance_transform_edt(~stem) * settings.spacing
    changed = (hc.regions != als.regions) | (hc.tissue != als.tissue)
    assert changed.any() and distance[changed].max() <= 20.0
    assert np.array_equal(hc.t2w[distance > 20.0], als.t2w[distance > 20.0])
    assert float(als.truth["atrophy_factor"]) == pytest.approx(settings.brainstem_atrophy)
    scale = 1 - settings.cst_fa_reduction
    assert float(als.truth["cst_fa_scale"]) == pytest.approx(scale)
    # CST-voxel FA is scaled by 1 - r * cst with cst in [0.5, 1]: the mean ratio lies in [1 - r, 1 - r / 2]
    fa_ratio = float(als.truth["cst_fa_mean"]) / float(hc.truth["cst_fa_mean"])
    assert scale - 0.01 < fa_ratio < 1 - settings.cst_fa_reduction / 2 + 0.01
    for key in ("gm_t1_ms", "head_scale", "age", "sex"):
        assert hc.truth[key] == als.truth[key]


# ------------------------------------------------------------------------------------- safe writing


def test_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="overwrite=true") as err:
        simulate_cohort(root, n_controls=1, n_patients=0, spacing=3.0)
    assert str(root) in str(err.value)
    assert (root / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary directory left behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        simulate_cohort(tmp_path / "file", n_controls=1, n_patients=0, spacing=3.0)


def test_overwrite_replaces_and_a_demo_cohort_is_regenerated(tmp_path: Path) -> None:
    root = tmp_path / "cohort"
    root.mkdir()
    (root / "old.txt").write_text("x")
    simulate_cohort(root, n_controls=1, n_patients=0, spacing=3.0, overwrite=True)
    assert not (root / "old.txt").exists() and is_demo_cohort(root)
    simulate_cohort(root, n_controls=1, n_patients=1, spacing=3.0)  # a demo cohort may be regenerated
    assert len(_tsv(root / "participants.tsv")) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_interrupted_run_leaves_the_previous_cohort_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cohort"
    simulate_cohort(root, n_controls=1, n_patients=0, spacing=3.0)
    before = (root / "participants.tsv").read_text()
    calls = {"n": 0}

    def failing(*args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return simulate_subject(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("ssl_pretrain.data.demo.cohort.simulate_subject", failing)
    with pytest.raises(KeyboardInterrupt):
        simulate_cohort(root, n_controls=2, n_patients=1, spacing=3.0)
    assert (root / "participants.tsv").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


@pytest.mark.parametrize(
    ("key", "value"),
    [("spacing", 0.0), ("brainstem_atrophy", 0.7), ("noise", -0.1), ("n_controls", 1.5), ("brainstem_contrast", 3.0)],
)
def test_bad_settings_name_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"demo\.{key}"):
        SimulationSettings(**{key: value})  # type: ignore[arg-type]


def test_empty_cohort_and_unknown_key_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"demo\.n_controls"):
        simulate_cohort(tmp_path / "a", n_controls=0, n_patients=0)
    with pytest.raises(ConfigError, match=r"demo\.atrophy"):
        simulate_cohort(tmp_path / "a", atrophy=0.1)  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists()


def test_run_reads_the_config(tmp_path: Path) -> None:
    from ssl_pretrain.demo_data import run

    root = tmp_path / "demo"
    overrides = [f"data.root={root}", "demo.n_controls=1", "demo.n_patients=1", "demo.spacing=3.0", "demo.seed=5"]
    cfg = compose_config("demo-data", overrides, output_dir=tmp_path / "run")
    assert run(cfg) == root.resolve()
    assert sorted(p["group"] for p in _tsv(root / "participants.tsv")) == ["ALS", "HC"]
    assert json.loads((root / "derivatives/simulation/effects.json").read_text())["seed"] == 5
    assert (tmp_path / "run" / "config.yaml").is_file()
