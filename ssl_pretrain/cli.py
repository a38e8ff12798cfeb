"""``bssl`` — the one console script.

``bssl <command> [hydra overrides…]`` composes ``configs/<command>.yaml`` with Hydra and calls the
command module's ``run(cfg)`` (:data:`ssl_pretrain.commands.COMMANDS` names it; it is imported on use, so
the cli does not pull finetune/evaluation into ssl_pretrain's import graph). Tests call ``run`` directly on
a composed config (see :func:`ssl_pretrain.config.compose_config`).

``bssl <command> --help`` (:mod:`ssl_pretrain.command_help`) is answered before the command's module is
imported: torch, Lightning and MONAI load only once a command runs, so help takes about a second.

A :class:`~ssl_pretrain.errors.BsslError` (bad input, bad config value, incompatible checkpoint) is
printed as one line and exits with status 2; so are overrides Hydra refuses (an unknown key, an unknown
group option, a syntax error) and a file system that refuses a write (disk full, read-only, no permission:
:func:`~ssl_pretrain.errors.resource_error`). ``--verbose`` (or ``hydra.verbose=true``) shows the
traceback as well.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, OmegaConfBaseException

from ssl_pretrain.command_help import command_help
from ssl_pretrain.commands import COMMANDS
from ssl_pretrain.config import CONFIG_DIR, compose_config
from ssl_pretrain.errors import BsslError, ConfigError, resource_error

log = logging.getLogger("bssl")

# Short command-line names for keys whose natural name is taken by a config group: `bssl predict model=PATH`
# means predict.model=PATH (`model` is also the network-architecture group); `bssl study preset=full` means
# study_preset=full (`preset` is the group of the single-command presets cpu/gpu, which the study's stages take).
ALIASES: dict[str, dict[str, str]] = {"predict": {"model": "predict.model"}, "study": {"preset": "study_preset"}}


# Old names still accepted, with one warning per run: `experiment=[…]` chose hypotheses before their group was
# named for what it holds (configs/hypothesis/).
RENAMED: dict[str, dict[str, str]] = {"study": {"experiment": "hypothesis"}}


def _apply_aliases(command: str, overrides: list[str]) -> list[str]:
    """Rewrite ``key=value`` overrides whose key is a command's alias or an old name (warned about once)."""
    aliases, renamed = ALIASES.get(command, {}), RENAMED.get(command, {})
    out, warned = [], set()
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if sep and key in renamed:
            if key not in warned:
                log.warning("bssl %s: %s= is now %s= (configs/%s/); the old name still works", command, key,
                            renamed[key], renamed[key])  # fmt: skip
                warned.add(key)
            key = renamed[key]
        out.append(f"{aliases.get(key, key)}={value}" if sep else arg)
    return out


def _usage() -> str:
    lines = ["usage: bssl <command> [--verbose] [hydra overrides…] (e.g. data.root=/data/bids)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`bssl <command> --help` lists the command's config groups and config files (with their comments);"]
    lines += ["`--cfg job` prints the composed config."]
    return "\n".join(lines)


def _first_line(text: object) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def hydra_config_error(err: HydraException | OmegaConfBaseException, command: str) -> ConfigError:
    """One line for an override Hydra refuses: an unknown key, an unknown group option, bad syntax."""
    if isinstance(err, MissingConfigException) and err.missing_cfg_file:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        options = f" (options: {', '.join(err.options)})" if err.options else ""
        return ConfigError(group or option, f"no option '{option}'{options}")
    if isinstance(err, OverrideParseException):
        return ConfigError(err.override.partition("=")[0], f"cannot parse '{err.override}': {_first_line(err)}")
    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None) or ""
    match = re.search(r"'([\w.\[\]/-]+)'", str(err))  # "Could not override 'data.rooot'", "'x.y' does not exist"
    key = match.group(1) if match else key
    if "not in struct" in str(cause):
        return ConfigError(
            key,
            f"not in the config (a typo? `bssl {command} --cfg job` lists every key; +{key}=VALUE adds a new one)",
        )
    detail = "; ".join(filter(None, (_first_line(err), _first_line(cause) if cause is not err else "")))
    return ConfigError(key or "overrides", detail)


def _places(cfg: DictConfig) -> dict[str, str]:
    """The directories a run writes under, by the config key that moves them."""
    places = {}
    for key, select in (("paths.runs_dir", "paths.output_dir"), ("paths.cache_dir", "paths.cache_dir")):
        try:
            value = OmegaConf.select(cfg, select, default=None)
        except OmegaConfBaseException:
            value = None
        if value:
            places[key] = str(value)
    return places


def _places_of(command: str, overrides: Sequence[str]) -> dict[str, str]:
    """``paths.runs_dir`` and ``paths.cache_dir`` as the overrides set them (empty if they do not compose)."""
    try:
        cfg = compose_config(command, [o for o in overrides if not o.startswith("-")])
        return {key: str(OmegaConf.select(cfg, key)) for key in ("paths.runs_dir", "paths.cache_dir")}
    except Exception:  # only a better hint is lost
        return {}


def _fail(command: str, err: BaseException, verbose: bool, shown: BsslError | None = None) -> NoReturn:
    """Print ``shown`` (or ``err``) as one line (with ``err``'s traceback if ``verbose``) and exit 2."""
    if verbose:
        log.error("bssl %s failed", command, exc_info=(type(err), err, err.__traceback__))
    print(f"bssl {command}: error: {shown if shown is not None else err}", file=sys.stderr)
    sys.exit(2)


@contextmanager
def _hydra_raises() -> Iterator[None]:
    """Let Hydra raise its errors (instead of printing them with a trace) so :func:`main` can word them."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def _print_help(command: str, rest: Sequence[str], verbose: bool) -> NoReturn:
    """Print ``bssl <command> --help`` (overrides in ``rest`` change the groups shown) and exit 0."""
    overrides = [a for a in rest if not a.startswith("-")]
    try:
        text = command_help(command, COMMANDS[command][1], overrides, ALIASES.get(command))
    except (HydraException, OmegaConfBaseException) as err:
        _fail(command, err, verbose, hydra_config_error(err, command))
    print(text, end="")
    sys.exit(0)


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
    if "--help" in rest or "-h" in rest:
        _print_help(command, rest, verbose)
    started: list[bool] = []  # set once the command's run(cfg) starts: OmegaConf errors before it are the overrides'

    @hydra.main(config_path=str(CONFIG_DIR), config_name=command, version_base="1.3")
    def _app(cfg: DictConfig) -> None:
        # Lightning's DDP launcher re-runs sys.argv in each extra process: give it back a runnable command.
        sys.argv = [argv0, command, *rest]
        loud = verbose or bool(HydraConfig.get().verbose)
        started.append(True)
        run = importlib.import_module(COMMANDS[command][0]).run  # torch & co. load here, after Hydra parsed
        try:
            run(cfg)
        except BsslError as err:
            _fail(command, err, loud)
        except (MissingMandatoryValue, InterpolationResolutionError) as err:
            _fail(command, err, loud, ConfigError(str(err.full_key or "?"), _first_line(err)))
        except OSError as err:  # a full, read-only or forbidden file system
            resource = resource_error(err, _places(cfg))
            if resource is None:
                raise
            _fail(command, err, loud, resource)

    argv0 = sys.argv[0]
    sys.argv = [f"bssl {command}", *rest]
    try:
        with _hydra_raises():
            _app()
    except HydraException as err:  # before OSError: MissingConfigException is an IOError
        _fail(command, err, verbose, hydra_config_error(err, command))
    except OmegaConfBaseException as err:
        if started:
            raise
        _fail(command, err, verbose, hydra_config_error(err, command))
    except OSError as err:  # Hydra could not create the run directory
        resource = resource_error(err, _places_of(command, rest))
        if resource is None:
            raise
        _fail(command, err, verbose, resource)
