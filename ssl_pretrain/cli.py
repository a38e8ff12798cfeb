"""``bssl`` — the one console script.

``bssl <command> [hydra overrides…]`` composes ``configs/<command>.yaml`` with Hydra and calls the
command module's ``run(cfg)``. Tests call ``run`` directly on a composed config (see
:func:`ssl_pretrain.config.compose_config`).

A :class:`~ssl_pretrain.errors.BsslError` (bad input, bad config value, incompatible checkpoint) is
printed as one line and exits with status 2; ``--verbose`` shows the traceback as well.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

import hydra
from omegaconf import DictConfig

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.errors import BsslError

log = logging.getLogger("bssl")

# command -> (module with run(cfg), one-line help). Modules are imported on use, so the cli does not
# pull finetune/evaluation into ssl_pretrain's import graph.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("ssl_pretrain.demo_data", "simulate the demo BIDS cohort (a simulation, labelled as one)"),
    "pretrain": ("ssl_pretrain.pretrain", "self-supervised pretraining of a 3D encoder (mae, simclr, ...)"),
    "finetune": ("finetune.train", "supervised GM/WM segmentation: stage=subcortical | brainstem"),
    "predict": ("finetune.predict", "segment subjects; BIDS-derivative dseg in native space + volumes"),
    "evaluate": ("evaluation.evaluate", "probes, CKA, learning curves, baselines, group analysis, report"),
}

# Short command-line names for keys whose natural name is taken by a config group: `bssl predict model=PATH`
# means predict.model=PATH (`model` is also the network-architecture group).
ALIASES: dict[str, dict[str, str]] = {"predict": {"model": "predict.model"}}


def _apply_aliases(command: str, overrides: list[str]) -> list[str]:
    """Rewrite ``key=value`` overrides whose key is a command's alias."""
    aliases = ALIASES.get(command, {})
    out = []
    for arg in overrides:
        key, sep, value = arg.partition("=")
        out.append(f"{aliases[key]}={value}" if sep and key in aliases else arg)
    return out


def _usage() -> str:
    lines = ["usage: bssl <command> [--verbose] [hydra overrides…] (e.g. data.root=/data/bids)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`bssl <command> --help` lists the command's config; `--cfg job` prints it resolved."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``bssl`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if args else 2)
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"bssl: unknown command '{command}'\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    verbose = "--verbose" in rest
    rest = _apply_aliases(command, [a for a in rest if a != "--verbose"])
    run = importlib.import_module(COMMANDS[command][0]).run

    @hydra.main(config_path=str(CONFIG_DIR), config_name=command, version_base="1.3")
    def _app(cfg: DictConfig) -> None:
        # Lightning's DDP launcher re-runs sys.argv in each extra process: give it back a runnable command.
        sys.argv = [argv0, command, *rest]
        try:
            run(cfg)
        except BsslError as err:
            if verbose:
                log.exception("bssl %s failed", command)
            print(f"bssl {command}: error: {err}", file=sys.stderr)
            sys.exit(2)

    argv0 = sys.argv[0]
    sys.argv = [f"bssl {command}", *rest]
    _app()
