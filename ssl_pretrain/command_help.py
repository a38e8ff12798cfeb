"""``bssl <command> --help``: the command's config groups and its config files, comments included.

Hydra's own ``--help`` prints the composed config without the comments that document every key, and
names the app after the Python file ("cli"). This help is titled ``bssl <command>``, lists every config
group with its options (the chosen one marked), and prints the command's entry config and the file of
each chosen group as written, comments and all. Overrides given with ``--help`` change the choices
(``bssl pretrain method=simclr --help`` shows ``method/simclr.yaml``). Only Hydra composes here: no
torch, Lightning or MONAI import, so it answers in about a second. ``--hydra-help`` is Hydra's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR

HIDDEN_GROUPS = ("hydra",)  # Hydra's own settings (output dirs, launchers): see --hydra-help


def group_options(config_dir: Path = CONFIG_DIR) -> dict[str, list[str]]:
    """Every config group under ``config_dir`` (``hydra`` left out) and its options, sorted."""
    groups: dict[str, list[str]] = {}
    for folder in sorted(p for p in config_dir.rglob("*") if p.is_dir()):
        group = folder.relative_to(config_dir).as_posix()
        if group.split("/")[0] in HIDDEN_GROUPS:
            continue
        options = sorted(f.stem for f in folder.glob("*.yaml"))
        if options:
            groups[group] = options
    return groups


def chosen_options(command: str, overrides: Sequence[str]) -> dict[str, str | None]:
    """The option each group takes for ``bssl <command> <overrides>`` (Hydra's ``runtime.choices``)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name=command, overrides=list(overrides), return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    assert isinstance(choices, dict)
    return {str(k): v for k, v in choices.items() if str(k).split("/")[0] not in HIDDEN_GROUPS}


def _with_parents(group: str, option: str) -> list[Path]:
    """``<group>/<option>.yaml`` after the same-group files its own defaults list pulls in (trainer/cpu <- default)."""
    path = CONFIG_DIR / group / f"{option}.yaml"
    files = []
    loaded = OmegaConf.load(path)
    for entry in loaded.get("defaults", []) if isinstance(loaded, Mapping) else []:
        if isinstance(entry, str) and entry != "_self_" and (CONFIG_DIR / group / f"{entry}.yaml").is_file():
            files += _with_parents(group, entry)
    return [*files, path]


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" if line.strip() else "\n" for line in text.rstrip().splitlines())


def command_help(
    command: str, summary: str, overrides: Sequence[str] = (), aliases: Mapping[str, str] | None = None
) -> str:
    """The help text of ``bssl <command>`` (see the module docstring).

    Args:
        command: the command (its entry config is ``configs/<command>.yaml``).
        summary: its one-line description.
        overrides: the Hydra overrides given with ``--help``.
        aliases: the command line's short names (``{"preset": "study_preset"}``: ``preset=X`` is ``study_preset=X``).
    """
    choices = chosen_options(command, overrides)
    lines = [
        f"bssl {command}: {summary}",
        "",
        f"usage: bssl {command} [--verbose] [GROUP=OPTION ...] [KEY=VALUE ...]",
        f"  bssl {command} --cfg job     print the composed config (add --resolve to resolve ${{...}})",
        f"  bssl {command} --hydra-help  Hydra's own options (multirun -m, launchers, sweeps)",
        *[f"  {short}=VALUE is short for {key}=VALUE" for short, key in (aliases or {}).items()],
        "",
        "== Config groups (GROUP=OPTION; * = this command's choice) ==",
    ]
    for group, options in group_options().items():
        marked = [f"{o}*" if choices.get(group) == o else o for o in options]
        lines.append(f"  {group:<12} {', '.join(marked)}")
    lines += ["", f"== configs/{command}.yaml ==", _indent((CONFIG_DIR / f"{command}.yaml").read_text())]
    for group, option in choices.items():
        if option is None or not (CONFIG_DIR / group / f"{option}.yaml").is_file():
            continue
        for path in _with_parents(group, str(option)):
            text = path.read_text()
            keys = "top-level keys" if "@package _global_" in text else f"keys {group.replace('/', '.')}.*"
            lines += [f"== {group}={option}: {path.relative_to(CONFIG_DIR.parent).as_posix()} ({keys}) ==", ""]
            lines.append(_indent(text))
    return "\n".join(lines).rstrip() + "\n"
