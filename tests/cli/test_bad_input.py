"""Bad input through ``bssl``: each case exits non-zero with one line naming the file (or key) and the problem.

Every case runs the command as a user would. Most run in-process through :func:`ssl_pretrain.cli.main`
(Hydra and all, without paying the torch import again); a representative set runs as real subprocesses so
that "no traceback" is what a terminal shows. Data cases use ``bssl finetune``, which validates and
preprocesses the dataset before building anything; one case goes through every command that reads data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from finetune.policy import build_segmentation_net
from ssl_pretrain.data.cache import preprocessing_settings
from ssl_pretrain.models.checkpoint import save_weights
from ssl_pretrain.models.unet import build_encoder
from tests.cli.bssl_runner import (
    Result,
    assert_one_clear_error,
    permissions_enforced,
    run_dirs,
    run_in_process,
    run_subprocess,
)
from tests.finetune.tiny_model import TINY
from tests.ssl_pretrain.data.bad_files import (
    save_nifti,
    save_with_sform,
    save_without_orientation,
    truncate,
    write_garbage,
)
from tests.synthetic import write_synthetic_bids

MODALITIES = ["T1w", "T2w", "FA", "MD"]
SHAPE = (16, 20, 16)
SPACING = 2.0
PATCH = 16
DWI = "derivatives/dwi/sub-01/dwi/sub-01_space-T1w_model-tensor_param-{}_dwimap.nii.gz"
LABELS = "derivatives/labels/sub-01/anat/sub-01_desc-{}_dseg"


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small valid BIDS cohort (4 subjects, 2 mm); copied by :func:`cohort`, never modified."""
    return write_synthetic_bids(tmp_path_factory.mktemp("pristine") / "bids", n_subjects=4, shape=SHAPE)


@pytest.fixture
def cohort(pristine: Path, tmp_path: Path) -> Path:
    """This test's own copy of the cohort, to damage."""
    return Path(shutil.copytree(pristine, tmp_path / "bids"))


@pytest.fixture(scope="module")
def model_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``bssl finetune``-like run directory holding a tiny segmentation ``model.pt`` (untrained)."""
    run_dir = tmp_path_factory.mktemp("finetune-run")
    torch.manual_seed(0)
    net = build_segmentation_net(TINY, len(MODALITIES), 4, "full")
    data = OmegaConf.create({"modalities": MODALITIES, "spacing": SPACING, "patch_size": PATCH})
    meta = {
        "modalities": MODALITIES,
        "task": "segmentation",
        "policy": "full",
        "stage": "subcortical",
        "spacing": SPACING,
        "patch_size": [PATCH] * 3,
        "preprocessing": preprocessing_settings(data),
    }
    save_weights(net, run_dir / "model.pt", meta)
    return run_dir


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``bssl pretrain``-like run directory holding a tiny encoder (another architecture than model=cpu)."""
    run_dir = tmp_path_factory.mktemp("pretrain-run")
    torch.manual_seed(1)
    encoder = build_encoder(OmegaConf.create(TINY), len(MODALITIES))
    save_weights(encoder, run_dir / "encoder.pt", {"modalities": MODALITIES, "method": "mae", "spacing": SPACING})
    (run_dir / "run.json").write_text('{"command": "pretrain", "status": "complete"}\n')  # for bssl evaluate
    return run_dir


def _paths(tmp_path: Path) -> list[str]:
    return [f"paths.runs_dir={tmp_path / 'runs'}", f"paths.cache_dir={tmp_path / 'cache'}"]


def finetune_args(tmp_path: Path, root: Path, *extra: str) -> list[str]:
    """``bssl finetune`` on ``root`` with small patches, one step, tiny everything (it should fail before training)."""
    return [
        "finetune",
        f"data.root={root}",
        f"data.patch_size={PATCH}",
        "trainer.max_steps=1",
        *_paths(tmp_path),
        *extra,
    ]


def predict_args(tmp_path: Path, model: Path, root: Path, *extra: str) -> list[str]:
    """``bssl predict model=… data.root=…``."""
    return ["predict", f"model={model}", f"data.root={root}", "predict.device=cpu", *_paths(tmp_path), *extra]


def _t1(root: Path, subject: str = "01") -> Path:
    return root / f"sub-{subject}/anat/sub-{subject}_T1w.nii.gz"


def _t2(root: Path) -> Path:
    return root / "sub-01/anat/sub-01_T2w.nii.gz"


def _fa(root: Path) -> Path:
    return root / DWI.format("fa")


def _label_map(root: Path, desc: str) -> Path:
    return root / (LABELS.format(desc) + ".nii.gz")


def _affine(spacing: tuple[float, float, float] = (SPACING,) * 3, shift: float = 0.0) -> np.ndarray:
    """The cohort's field of view with other voxel sizes, shifted along x by ``shift`` mm."""
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -np.asarray(SHAPE) * SPACING / 2
    affine[0, 3] += shift
    return affine


def _bssl(args: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    return run_in_process(args, capsys)


# --- missing or unreadable files -----------------------------------------------------------------------


def test_missing_dataset_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-dataset"
    result = _bssl(finetune_args(tmp_path, missing), capsys)
    assert_one_clear_error(result, missing, problem="dataset directory not found")


def test_broken_symlink_of_an_unfetched_annex_file(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t2 = _t2(cohort)
    t2.unlink()
    t2.symlink_to(tmp_path / ".git/annex/objects/xx/SHA256E-s1--0.nii.gz")
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    assert_one_clear_error(result, t2, problem="broken symbolic link")


def test_predict_input_file_is_missing(tmp_path: Path, model_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "sub-09_T1w.nii.gz"
    args = ["predict", f"model={model_run}", f"predict.inputs=[{missing}]", *_paths(tmp_path)]
    result = _bssl(args, capsys)
    assert_one_clear_error(result, missing, problem="file not found")


def test_file_listed_in_the_manifest_is_missing(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(f"participant_id\tT1w\nsub-01\t{_t1(cohort)}\nsub-02\tsub-02_T1w.nii.gz\n")
    result = _bssl(finetune_args(tmp_path, cohort, f"data.manifest={manifest}"), capsys)
    line = assert_one_clear_error(result, manifest, tmp_path / "sub-02_T1w.nii.gz", problem="does not exist")
    assert "line 3" in line


@pytest.mark.skipif(not permissions_enforced(), reason="this user (root) reads a chmod 000 file anyway")
def test_unreadable_file(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t1 = _t1(cohort)
    t1.chmod(0)
    try:
        result = _bssl(finetune_args(tmp_path, cohort), capsys)
    finally:
        t1.chmod(0o644)
    assert_one_clear_error(result, t1, problem="permission denied")


def test_garbage_bytes_instead_of_nifti(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_garbage(_t2(cohort))
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    assert_one_clear_error(result, _t2(cohort), problem="cannot be read as NIfTI")


# --- damaged images ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["pretrain", "finetune", "predict", "evaluate"])
def test_truncated_nii_gz_through_every_command_that_reads_data(
    cohort: Path,
    tmp_path: Path,
    model_run: Path,
    encoder_run: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    truncate(_fa(cohort))
    args = {
        "pretrain": ["pretrain", f"data.root={cohort}", f"data.patch_size={PATCH}", *_paths(tmp_path)],
        "finetune": finetune_args(tmp_path, cohort),
        "predict": predict_args(tmp_path, model_run, cohort),
        "evaluate": ["evaluate", f"data.root={cohort}", f"runs=[{encoder_run}]", *_paths(tmp_path)],
    }[command]
    result = _bssl(args, capsys)
    assert_one_clear_error(result, _fa(cohort), problem="truncated")
    (run,) = run_dirs(tmp_path / "runs", command)
    assert '"status": "failed"' in (run / "run.json").read_text()


def test_nan_and_inf_voxels(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t1 = _t1(cohort, "02")
    data = np.asarray(nib.load(t1).dataobj, dtype=np.float32)
    data[3, 4, 5], data[6, 7, 8] = np.nan, np.inf
    save_nifti(t1, data, _affine())
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    assert_one_clear_error(result, t1, problem="2 voxels are NaN or Inf")


def test_4d_image_where_3d_is_due(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_nifti(_t2(cohort), np.ones((*SHAPE, 3), np.float32), _affine())
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    line = assert_one_clear_error(result, _t2(cohort), problem="expected a 3D volume")
    assert f"{(*SHAPE, 3)}" in line


@pytest.mark.parametrize(
    "sform",
    [np.zeros((4, 4)), np.array([[2.0, 2, 0, 0], [2, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])],
    ids=["zero-sized-voxels", "collinear-axes"],
)
def test_degenerate_affine(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sform: np.ndarray) -> None:
    save_with_sform(_t2(cohort), np.ones(SHAPE, np.float32), sform)
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    assert_one_clear_error(result, _t2(cohort), problem="degenerate affine")


@pytest.mark.parametrize(
    ("sizes", "problem"),
    [((0.0, 0.0, 0.0), "voxel sizes (pixdim) [0.0, 0.0, 0.0]"), ((2.0, float("nan"), 2.0), "voxel sizes (pixdim)")],
    ids=["zero-voxel-sizes", "nan-voxel-size"],
)
def test_guessed_voxel_sizes(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sizes: tuple[float, float, float], problem: str
) -> None:
    save_without_orientation(_t2(cohort), np.ones(SHAPE, np.float32), sizes)
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    line = assert_one_clear_error(result, _t2(cohort), problem=problem)
    assert "guessed" in line


def test_no_qform_or_sform_while_the_subjects_other_images_have_one(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_without_orientation(_t2(cohort), np.ones(SHAPE, np.float32), (SPACING,) * 3)
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    line = assert_one_clear_error(result, _t2(cohort), problem="neither qform nor sform")
    assert "data.allow_guessed_geometry=true" in line


def test_guessed_geometry_is_accepted_when_the_user_opts_in(
    cohort: Path, tmp_path: Path, model_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_without_orientation(_t2(cohort), np.ones(SHAPE, np.float32), (0.0, 0.0, 0.0))
    args = predict_args(tmp_path, model_run, cohort, "predict.subjects=[sub-01]", "data.allow_guessed_geometry=true")
    result = _bssl(args, capsys)
    assert result.code == 0, result.output
    assert "accepted (data.allow_guessed_geometry=true)" in result.output


def test_zero_sized_image(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_nifti(_t2(cohort), np.zeros((0, *SHAPE[1:]), np.float32), _affine())
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    assert_one_clear_error(result, _t2(cohort), problem=f"empty volume of shape {(0, *SHAPE[1:])}")


def test_grids_of_one_subject_do_not_overlap(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fa = _fa(cohort)
    save_nifti(fa, np.asarray(nib.load(fa).dataobj), _affine(shift=500.0))
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    assert_one_clear_error(result, fa, _t1(cohort), problem="does not overlap")


def test_anisotropic_voxels_run_with_a_warning(
    cohort: Path, tmp_path: Path, model_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t2 = _t2(cohort)
    shape = (SHAPE[0] * 2, SHAPE[1] * 2, SHAPE[2] // 2)  # 1 x 1 x 4 mm over the same field of view
    save_nifti(t2, np.random.default_rng(0).uniform(100, 200, shape).astype(np.float32), _affine((1.0, 1.0, 4.0)))
    result = _bssl(predict_args(tmp_path, model_run, cohort, "predict.subjects=[sub-01]"), capsys)
    assert result.code == 0, result.output
    assert "Traceback" not in result.output
    (warning,) = [line for line in result.output.splitlines() if "anisotropic voxels" in line]
    assert str(t2) in warning and "[1.0, 1.0, 4.0]" in warning
    (run,) = run_dirs(tmp_path / "runs", "predict")
    dseg = nib.load(run / "bssl/sub-01/anat/sub-01_desc-bsslTissue_dseg.nii.gz")
    assert dseg.shape == SHAPE  # the reference (T1w) grid, the anisotropic T2w resampled onto it
    assert str(t2) in (run / "run.log").read_text()


# --- labels and regions --------------------------------------------------------------------------------


def test_label_values_absent_from_dseg_tsv(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tissue = _label_map(cohort, "tissue")
    data = np.asarray(nib.load(tissue).dataobj).astype(np.int16)
    data[data == 3] = 7
    save_nifti(tissue, data, _affine())
    result = _bssl(finetune_args(tmp_path, cohort), capsys)
    assert_one_clear_error(result, tissue, problem="label values 7 are not listed in its dseg.tsv")


def test_empty_region_of_interest(cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    regions = _label_map(cohort, "regions")
    data = np.asarray(nib.load(regions).dataobj).astype(np.int16)
    data[data == 5] = 10  # no brainstem left in sub-01
    save_nifti(regions, data, _affine())
    result = _bssl(finetune_args(tmp_path, cohort, "stage=brainstem"), capsys)
    assert_one_clear_error(result, regions, problem="the region 'brainstem'")


# --- tables --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("participant_id,T1w\nsub-01,a.nii.gz\n", "not tab-separated"),
        ("participant_id\tT1w\nsub-01\n", "line 2 has 1 tab-separated fields"),
        ("subject\tT1w\n01\ta.nii.gz\n", "no 'participant_id' column"),
        ("participant_id\tT1w\nsub-01\t{t1}\nsub-01\t{t1}\n", "line 3 repeats sub-01"),
    ],
    ids=["csv", "ragged-row", "no-participant-id", "repeated-subject"],
)
def test_malformed_manifest(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, problem: str
) -> None:
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(content.format(t1=_t1(cohort)))
    result = _bssl(finetune_args(tmp_path, cohort, f"data.manifest={manifest}"), capsys)
    assert_one_clear_error(result, manifest, problem=problem)


def test_participants_tsv_without_group(
    cohort: Path, tmp_path: Path, model_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    participants = cohort / "participants.tsv"
    participants.write_text("participant_id\tage\n" + "".join(f"sub-0{i}\t{50 + i}\n" for i in range(1, 5)))
    predicted = _bssl(predict_args(tmp_path, model_run, cohort), capsys)
    assert predicted.code == 0, predicted.output
    (run,) = run_dirs(tmp_path / "runs", "predict")
    args = ["evaluate", f"data.root={cohort}", f"runs=[{run}]", "probe.enabled=false", "baselines.methods=[]"]
    result = _bssl([*args, *_paths(tmp_path)], capsys)
    assert_one_clear_error(result, participants, problem="group")


# --- checkpoints ---------------------------------------------------------------------------------------


def test_finetune_init_of_another_architecture(
    cohort: Path, tmp_path: Path, encoder_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _bssl(finetune_args(tmp_path, cohort, f"init={encoder_run}"), capsys)
    assert_one_clear_error(result, encoder_run / "encoder.pt", problem="architecture mismatch")


def test_predict_with_a_pretraining_encoder(
    cohort: Path, tmp_path: Path, encoder_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _bssl(predict_args(tmp_path, encoder_run / "encoder.pt", cohort), capsys)
    assert_one_clear_error(result, encoder_run / "encoder.pt", problem="is not a fine-tuned segmentation model")


def test_predict_with_weights_of_another_architecture_than_their_sidecar(
    cohort: Path, tmp_path: Path, model_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = Path(shutil.copytree(model_run, tmp_path / "model-run")) / "model.pt"
    sidecar = json.loads(model.with_suffix(".json").read_text())
    sidecar["architecture"]["config"]["channels"] = [8, 16]  # the weights are of a [4, 8] network
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    result = _bssl(predict_args(tmp_path, model, cohort), capsys)
    assert_one_clear_error(result, model, problem="architecture mismatch")


def test_finetune_init_from_a_non_checkpoint_file(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.pt"
    notes.write_text("not weights\n")
    result = _bssl(finetune_args(tmp_path, cohort, f"init={notes}"), capsys)
    assert_one_clear_error(result, notes, problem="not a PyTorch weights file")


# --- configuration ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key", "problem"),
    [
        ("data.rooot=/data/bids", "config key 'data.rooot'", "not in the config"),
        ("trainer.max_stepz=10", "config key 'trainer.max_stepz'", "+trainer.max_stepz=VALUE adds"),
        ("stage=brainsteam", "config key 'stage'", "no option 'brainsteam' (options: brainstem, subcortical)"),
        ("data.root=[", "config key 'data.root'", "cannot parse 'data.root=['"),
        ("paths.cache_dir=${oc.env:BSSL_TEST_UNSET_VARIABLE}", "paths.cache_dir", "BSSL_TEST_UNSET_VARIABLE"),
    ],
    ids=["unknown-key", "unknown-nested-key", "unknown-group-option", "syntax", "unresolvable-interpolation"],
)
def test_bad_override(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, key: str, problem: str
) -> None:
    result = _bssl([*finetune_args(tmp_path, pristine), override], capsys)
    assert_one_clear_error(result, key, problem=problem)
    assert "HYDRA_FULL_ERROR" not in result.output


@pytest.mark.parametrize("flag", ["--verbose", "hydra.verbose=true"])
def test_verbose_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str) -> None:
    missing = tmp_path / "no-such-dataset"
    result = _bssl([*finetune_args(tmp_path, missing), flag], capsys)
    assert result.code == 2
    assert "Traceback" in result.output and "DataError" in result.output
    assert result.error_lines()[-1].startswith(f"bssl finetune: error: {missing}: dataset directory not found")


# --- representative cases as real processes ------------------------------------------------------------


def test_subprocess_predict_with_a_non_checkpoint_file(tmp_path: Path, cohort: Path) -> None:
    garbage = write_garbage(tmp_path / "model.pt")
    result = run_subprocess(predict_args(tmp_path, garbage, cohort))
    assert_one_clear_error(result, garbage, problem="not a PyTorch weights file")


def test_subprocess_pretrain_truncated_image(tmp_path: Path, cohort: Path) -> None:
    truncate(_t1(cohort, "03"))
    result = run_subprocess(["pretrain", f"data.root={cohort}", f"data.patch_size={PATCH}", *_paths(tmp_path)])
    assert_one_clear_error(result, _t1(cohort, "03"), problem="truncated")


def test_subprocess_unknown_config_key(tmp_path: Path) -> None:
    result = run_subprocess(["finetune", "data.rooot=/data/bids", *_paths(tmp_path)])
    assert_one_clear_error(result, "config key 'data.rooot'", problem="not in the config")
    assert "HYDRA_FULL_ERROR" not in result.output
