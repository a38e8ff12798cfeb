"""The run directory every command writes: resolved config, log, and a ``run.json`` status record.

``run.json`` (command, host, device, toolkit version and git revision, the versions of torch, MONAI,
TorchIO, Lightning, lightly and nibabel: :mod:`ssl_pretrain.provenance`) is written ``"running"`` at the
start and ``"complete"`` (with wall time) only after the command's artefacts are in place, so a run
killed half-way is never mistaken for a finished one by ``bssl evaluate`` or by ``bssl study`` when it
decides what to reuse.

While a run is in progress its process holds an exclusive ``flock`` on ``<run dir>/.run.lock`` (the file
says which pid and host). A second run pointed at the same directory stops with a :class:`ConfigError`
before writing anything, instead of interleaving its files with the first one's; ``resume=auto`` skips
the checkpoints of runs that are still live (:func:`is_live`). The kernel drops the lock when the process
ends, however it ends (also ``kill -9``), so a crashed run is never mistaken for a live one. Under DDP only
rank 0 locks and writes the records; the other ranks just use the directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

import ssl_pretrain
from ssl_pretrain.atomic import write_text_atomic
from ssl_pretrain.errors import ConfigError
from ssl_pretrain.provenance import git_revision, library_versions

log = logging.getLogger(__name__)
RUN_RECORD = "run.json"
LOCK_FILE = ".run.lock"


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` through a temporary file and an atomic rename."""
    write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


def device_name() -> str:
    """What the run computes on, in words (``cpu`` or the CUDA device name)."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def read_run_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` of a run directory, or ``None`` when there is none or it is unreadable."""
    try:
        return json.loads((Path(run_dir) / RUN_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_complete(run_dir: str | Path) -> bool:
    """Whether a run finished and wrote all its artefacts."""
    record = read_run_record(run_dir)
    return record is not None and record.get("status") == "complete"


def is_live(run_dir: str | Path) -> bool:
    """Whether a process is writing ``run_dir`` right now (holds its ``.run.lock``)."""
    try:
        fd = os.open(Path(run_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # a file system without locks: nothing to go by
        return False
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return False


def lock_run_dir(out: Path) -> int:
    """Take ``out``'s run lock for this process; return the descriptor that holds it (close it to release).

    Raises:
        ConfigError: (``paths.output_dir``) another live process holds it.
    """
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = (out / LOCK_FILE).read_text().strip() or "unknown pid"
        os.close(fd)
        raise ConfigError(
            "paths.output_dir",
            f"{out} is being written by another bssl run ({holder}); give this run its own directory "
            "(the default runs/<command>/<timestamp>/ does) or wait until that one stops",
        ) from None
    except OSError:
        log.warning("%s: the file system does not support locks; concurrent runs here are not detected", out)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
    return fd


@contextmanager
def run_context(cfg: DictConfig, command: str) -> Iterator[Path]:
    """Create ``cfg.paths.output_dir``, lock it, record the resolved config and the run's status around a command.

    On DDP ranks other than 0 it only creates the directory (rank 0 keeps the records).

    Yields:
        The run directory.

    Raises:
        ConfigError: another live run holds the directory.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int(getattr(rank_zero_only, "rank", 0)) != 0:
        yield out
        return
    fd = lock_run_dir(out)
    try:
        with _recorded(cfg, command, out):
            yield out
    finally:
        os.close(fd)


@contextmanager
def _recorded(cfg: DictConfig, command: str, out: Path) -> Iterator[None]:
    write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = {
        "command": command,
        "status": "running",
        "started": started,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "version": ssl_pretrain.__version__,
        "git": git_revision(),  # {"commit", "dirty"} when run from a git checkout, else null
        "libraries": library_versions(),  # torch, MONAI, TorchIO, Lightning, lightly, nibabel
        "device": device_name(),
    }
    write_json_atomic(out / RUN_RECORD, record)
    handler = logging.FileHandler(out / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        write_json_atomic(out / RUN_RECORD, {**record, "status": "failed", "seconds": time.perf_counter() - t0})
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    write_json_atomic(out / RUN_RECORD, {**record, "status": "complete", "seconds": round(time.perf_counter() - t0, 2)})
    log.info("%s finished in %s", command, out)
