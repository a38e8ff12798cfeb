"""``compose_config``: a composition is reused only while configs/ is unchanged, and every caller gets its own copy."""

from __future__ import annotations

import os
import shutil

from omegaconf import open_dict

from ssl_pretrain import config
from ssl_pretrain.config import compose_config


def test_a_composed_config_is_a_fresh_copy_for_every_caller():
    first = compose_config("finetune", ["stage=brainstem", "seed=3"])
    with open_dict(first):
        first.optim.lr = 123.0
        first.extra = "mine"
    second = compose_config("finetune", ["stage=brainstem", "seed=3"])
    assert second.optim.lr != 123.0 and "extra" not in second and second.seed == 3
    assert compose_config("finetune", ["stage=brainstem", "seed=4"]).seed == 4  # other overrides: composed anew


def test_an_edited_config_file_is_composed_again(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    shutil.copytree(config.CONFIG_DIR, configs)
    monkeypatch.setattr(config, "CONFIG_DIR", configs)
    assert compose_config("finetune").optim.lr == 1.0e-3
    file = configs / "finetune.yaml"
    file.write_text(file.read_text().replace("lr: 1.0e-3", "lr: 2.0e-3"))
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a new mtime even on a coarse clock
    assert compose_config("finetune").optim.lr == 2.0e-3
