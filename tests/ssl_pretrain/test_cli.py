"""The ``bssl`` dispatcher: usage, unknown commands, and one-line errors for user mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssl_pretrain.cli import main
from ssl_pretrain.commands import COMMANDS


def test_usage_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrian"])
    assert exc.value.code == 2
    assert "unknown command 'pretrian'" in capsys.readouterr().err


def test_every_command_has_an_entry_config():
    from ssl_pretrain.config import CONFIG_DIR

    for name in COMMANDS:
        assert (CONFIG_DIR / f"{name}.yaml").is_file(), name


def test_unknown_config_key_is_one_clear_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ssl_pretrain", "demo-data", "data.rooot=x", f"paths.runs_dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "data.rooot" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict_model_alias():
    from ssl_pretrain.cli import _apply_aliases

    assert _apply_aliases("predict", ["model=/runs/x", "data.root=d"]) == ["predict.model=/runs/x", "data.root=d"]
    assert _apply_aliases("pretrain", ["model=gpu"]) == ["model=gpu"]


def test_study_preset_alias():
    """`bssl study preset=full` picks the study preset; other commands' preset=cpu|gpu stays the command preset."""
    from ssl_pretrain.cli import _apply_aliases

    assert _apply_aliases("study", ["preset=full", "data.root=d"]) == ["study_preset=full", "data.root=d"]
    assert _apply_aliases("pretrain", ["preset=cpu"]) == ["preset=cpu"]


def test_study_help_with_the_preset_short_name_marks_the_study_preset(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["study", "preset=full", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "study_preset full*, quick" in out and "preset       cpu, gpu" in out
    assert "preset=VALUE is short for study_preset=VALUE" in out
    assert "configs/study_preset/full.yaml" in out


def test_command_help_is_titled_and_shows_groups_and_commented_config(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "method=simclr", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("bssl pretrain: ")
    assert "logger       csv*, mlflow, tensorboard, wandb" in out  # every group, the choice marked
    assert "method       mae, mae_simclr, simclr*, vicreg" in out  # overrides change the choice
    assert "# model initialisation, patch sampling, augmentation and masks" in out  # pretrain.yaml's comments
    assert "configs/method/simclr.yaml" in out and "configs/trainer/default.yaml" in out  # cpu pulls default


def test_command_help_imports_no_heavy_library():
    """--help is fast because torch, Lightning and MONAI are imported only when a command runs."""
    code = (
        "import sys\n"
        "from ssl_pretrain.cli import main\n"
        "try:\n"
        "    main(['predict', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'lightning', 'monai', 'torchio', 'nibabel') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "bssl predict: " in proc.stdout and "HEAVY []" in proc.stdout, proc.stdout[-500:]


def test_command_help_with_a_bad_override_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "method=simclrr", "--help"])
    assert exc.value.code == 2
    assert "no option 'simclrr'" in capsys.readouterr().err


def test_the_old_experiment_key_still_chooses_hypotheses_with_one_warning(caplog):
    from ssl_pretrain.cli import _apply_aliases

    with caplog.at_level("WARNING", logger="bssl"):
        out = _apply_aliases("study", ["experiment=[scratch,ssl_mae]", "data.root=d", "experiment=[scratch]"])
    assert out == ["hypothesis=[scratch,ssl_mae]", "data.root=d", "hypothesis=[scratch]"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["bssl study: experiment= is now hypothesis= (configs/hypothesis/); the old name still works"]
    assert _apply_aliases("pretrain", ["experiment=x"]) == ["experiment=x"]  # only the study had that group
