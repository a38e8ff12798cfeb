"""The run directory every command writes: resolved config, log, and a ``run.json`` status record.

``run.json`` is written ``"running"`` at the start and ``"complete"`` (with wall time and device) only
after the command's artefacts are in place, so a run killed half-way is never mistaken for a finished one
by ``bssl evaluate`` or by ``bssl study`` when it decides what to reuse.
"""

from __future__ import annotations

import json
import logging
import platform
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import ssl_pretrain
from ssl_pretrain.atomic import write_text_atomic

log = logging.getLogger(__name__)
RUN_RECORD = "run.json"


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


@contextmanager
def run_context(cfg: DictConfig, command: str) -> Iterator[Path]:
    """Create ``cfg.paths.output_dir``, record the resolved config and the run's status around a command.

    Yields:
        The run directory.
    """
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    record = {
        "command": command,
        "status": "running",
        "started": started,
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "version": ssl_pretrain.__version__,
        "device": device_name(),
    }
    write_json_atomic(out / RUN_RECORD, record)
    handler = logging.FileHandler(out / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    t0 = time.perf_counter()
    try:
        yield out
    except BaseException:
        write_json_atomic(out / RUN_RECORD, {**record, "status": "failed", "seconds": time.perf_counter() - t0})
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    write_json_atomic(out / RUN_RECORD, {**record, "status": "complete", "seconds": round(time.perf_counter() - t0, 2)})
    log.info("%s finished in %s", command, out)
