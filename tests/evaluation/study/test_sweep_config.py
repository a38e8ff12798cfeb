"""configs/sweep/label_efficiency.yaml: the label-efficiency benchmark's Hydra multirun composes as documented."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR, compose_config

COMMAND = ["+sweep=label_efficiency", "stage=brainstem", "init=scratch,/runs/pre"]


def _jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of ``bssl finetune -m <overrides>``, expanded as Hydra's basic sweeper expands them."""
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("finetune", overrides=fixed, return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    return BasicSweeper.split_arguments(parser.parse_overrides(params + overrides), None)[0]


def _value(job: list[str], key: str) -> str:
    return next(o.split("=", 1)[1] for o in job if o.startswith(f"{key}="))


def test_sweep_is_init_by_k_by_seed():
    jobs = _jobs(COMMAND)
    assert len(jobs) == 2 * 5 * 3
    combos = {(_value(j, "init"), _value(j, "labels.k"), _value(j, "seed")) for j in jobs}
    ks = ["1", "2", "4", "8", "all"]
    assert combos == {(i, k, str(s)) for i in ("scratch", "/runs/pre") for k in ks for s in range(3)}


def test_each_job_seeds_the_model_and_the_labelled_subjects(tmp_path):
    for job in _jobs(COMMAND)[::7]:
        cfg = OmegaConf.to_container(compose_config("finetune", job, output_dir=tmp_path), resolve=True)
        assert cfg["labels"] == {"k": _value(job, "labels.k") if _value(job, "labels.k") == "all" else
                                 int(_value(job, "labels.k")), "seed": int(_value(job, "seed"))}  # fmt: skip
        assert cfg["seed"] == int(_value(job, "seed")) and cfg["init"] == _value(job, "init")
        assert cfg["stage"]["roi"] == "brainstem"
    plain = compose_config("finetune", ["stage=brainstem", "seed=2"])
    assert plain.labels.seed == 0  # without the sweep file the two seeds stay independent


def test_command_line_lists_replace_the_defaults():
    jobs = _jobs([*COMMAND[:2], "init=scratch", "labels.k=1,all", "seed=0,1,2,3"])
    assert len(jobs) == 2 * 4
    assert {_value(j, "labels.k") for j in jobs} == {"1", "all"}
