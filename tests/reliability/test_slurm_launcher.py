"""The SLURM launcher config (configs/hydra/launcher/slurm.yaml) for ``bssl <command> -m hydra/launcher=slurm``."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from ssl_pretrain.config import CONFIG_DIR

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
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class

    from ssl_pretrain.config import CONFIG_DIR

    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "stage=brainstem"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("finetune", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and get_class(launcher._target_)  # the plugin's class
    assert launcher.partition == "gpu" and launcher.max_num_timeout == 3
    assert launcher.tasks_per_node == 1 and launcher.gpus_per_node == 1
