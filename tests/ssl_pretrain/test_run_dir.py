"""The run directory's status record marks complete runs only."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ssl_pretrain.run_dir import is_complete, read_run_record, run_context, write_json_atomic


def _cfg(tmp_path):
    return OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}, "seed": 3})


def test_complete_run_is_recorded(tmp_path):
    with run_context(_cfg(tmp_path), "pretrain") as out:
        assert read_run_record(out)["status"] == "running"
        assert not is_complete(out)
    record = read_run_record(out)
    assert record["status"] == "complete" and record["command"] == "pretrain"
    assert record["seconds"] >= 0
    assert "seed: 3" in (out / "config.yaml").read_text()
    assert is_complete(out)


def test_failed_run_is_not_complete(tmp_path):
    with pytest.raises(RuntimeError), run_context(_cfg(tmp_path), "finetune") as out:
        raise RuntimeError("boom")
    assert read_run_record(out)["status"] == "failed"
    assert not is_complete(out)


def test_unreadable_record_is_not_complete(tmp_path):
    (tmp_path / "run.json").write_text("{truncated")
    assert read_run_record(tmp_path) is None
    assert not is_complete(tmp_path)


def test_write_json_atomic_leaves_no_temp_files(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    write_json_atomic(tmp_path / "a.json", {"x": 2})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
