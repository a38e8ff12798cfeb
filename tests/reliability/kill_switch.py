"""Run a ``bssl`` command and SIGKILL it at a chosen, deterministic point (the interruption tests' driver).

``python -m tests.reliability.kill_switch WHERE COMMAND [OVERRIDES…]`` installs one hook, then runs
``bssl COMMAND OVERRIDES…`` exactly as the console script does (:func:`ssl_pretrain.cli.main`). ``WHERE``:

- ``none``: no hook;
- ``step:N``: at the start of the first training batch after ``N`` optimiser steps (the checkpoint of step
  ``N`` is on disk when ``N`` is a multiple of ``trainer.checkpoint_every_n_steps``);
- ``checkpoint-write:N``: half-way through writing the training checkpoint of step ``N`` (``torch.save``
  has written half of its bytes into the temporary file);
- ``cache-write:N``: while the ``N``-th new preprocessing-cache entry of this process is being written
  (its ``image.npy`` is in the entry's temporary directory, ``brain.npy`` not yet);
- ``dseg-write:N``: half-way through writing the ``N``-th predicted ``dseg`` NIfTI.

The process kills itself with ``SIGKILL``: nothing is flushed, no ``finally`` block or exit handler runs,
as when a job is killed by the scheduler or the OOM killer. The hooks count events, never time, so the
kill lands at the same point on any machine.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

MODES = ("none", "step", "checkpoint-write", "cache-write", "dseg-write")


def die() -> None:
    """Kill this process the hard way."""
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_at_step(n: int) -> None:
    from lightning.pytorch.callbacks import Callback

    import ssl_pretrain.training as training

    class KillAtStep(Callback):
        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            if trainer.global_step >= n:
                die()

    build = training.build_trainer

    def build_trainer(*args: Any, extra_callbacks: Any = (), **kwargs: Any) -> Any:
        return build(*args, extra_callbacks=[*extra_callbacks, KillAtStep()], **kwargs)

    training.build_trainer = build_trainer  # before the command module binds it by name


def _kill_in_checkpoint_write(n: int) -> None:
    import torch

    save = torch.save

    def partial_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and "loops" in obj and obj.get("global_step") == n and hasattr(f, "write"):
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            f.flush()
            die()
        save(obj, f, *args, **kwargs)

    torch.save = partial_save


def _kill_in_cache_write(n: int) -> None:
    import numpy as np

    save = np.save
    seen = [0]

    def save_or_die(file: Any, arr: Any, *args: Any, **kwargs: Any) -> None:
        path = Path(str(file))
        if path.name == "brain.npy" and path.parent.name.startswith(".tmp-"):
            seen[0] += 1
            if seen[0] == n:
                die()
        save(file, arr, *args, **kwargs)

    np.save = save_or_die


def _kill_in_dseg_write(n: int) -> None:
    import nibabel as nib

    save = nib.save
    seen = [0]

    def save_or_die(img: Any, filename: Any, *args: Any, **kwargs: Any) -> None:
        save(img, filename, *args, **kwargs)
        if "_dseg" in Path(str(filename)).name:
            seen[0] += 1
            if seen[0] == n:
                data = Path(str(filename)).read_bytes()
                Path(str(filename)).write_bytes(data[: len(data) // 2])
                die()

    nib.save = save_or_die


def install(where: str) -> None:
    """Install the hook named by ``where`` (see the module docstring)."""
    mode, _, count = where.partition(":")
    if mode not in MODES or (mode != "none" and not count.isdigit()):
        raise SystemExit(f"kill_switch: WHERE must be one of {MODES} with ':N', got {where!r}")
    hooks = {
        "step": _kill_at_step,
        "checkpoint-write": _kill_in_checkpoint_write,
        "cache-write": _kill_in_cache_write,
        "dseg-write": _kill_in_dseg_write,
    }
    if mode in hooks:
        hooks[mode](int(count))


def main(argv: list[str]) -> None:
    """``WHERE COMMAND [OVERRIDES…]``: install the hook, then run the command as ``bssl`` would."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m tests.reliability.kill_switch WHERE COMMAND [OVERRIDES…]")
    install(argv[0])
    from ssl_pretrain.cli import main as bssl

    sys.argv = ["bssl", *argv[1:]]
    bssl(argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
