"""The SLURM launcher config (configs/hydra/launcher/slurm.yaml) for ``bssl <command> -m hydra/launcher=slurm``."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import yaml

from ssl_pretrain.config import CONFIG_DIR
from tests.reliability.harness import REPO

SLURM = CONFIG_DIR / "hydra" / "launcher" / "slurm.yaml"
# hydra-submitit-launcher 1.2's SlurmQueueConf (hydra_plugins/hydra_submitit_launcher/config.py)
PLUGIN_KEYS = {
    "_target_", "submitit_folder", "timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb",
    "nodes", "name", "stderr_to_stdout", "partition", "qos", "comment", "constraint", "exclude", "gres",
    "cpus_per_gpu", "gpus_per_task", "mem_per_gpu", "mem_per_cpu", "account", "signal_delay_s", "max_num_timeout",
    "additional_parameters", "array_parallelism", "setup",
}  # fmt: skip


def test_slurm_config_sets_only_keys_of_the_submitit_plugin() -> None:
    config = yaml.safe_load(SLURM.read_text())
    assert config.pop("defaults") == ["submitit_slurm"]  # the plugin's registered node, then these values
    assert set(config) <= PLUGIN_KEYS, set(config) - PLUGIN_KEYS
    assert config["max_num_timeout"] > 0 and config["signal_delay_s"] > 0  # requeued jobs resume (resume=auto)


def _plugin_installed() -> bool:
    try:
        return importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
    except ModuleNotFoundError:  # no hydra_plugins namespace at all
        return False


@pytest.mark.skipif(
    not _plugin_installed(),
    reason="hydra-submitit-launcher is not installed (pip install -e '.[slurm]')",
)
def test_finetune_multirun_composes_with_the_slurm_launcher() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["finetune", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "seed=0,1", "--cfg", "hydra"]
    done = subprocess.run(
        [sys.executable, "-m", "ssl_pretrain", *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    launcher = yaml.safe_load(done.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["max_num_timeout"] == 3
    assert launcher["name"] == "bssl-${hydra.job.name}"
