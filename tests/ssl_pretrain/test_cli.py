"""The ``bssl`` dispatcher: usage, unknown commands, and one-line errors for user mistakes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ssl_pretrain.cli import COMMANDS, main


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
