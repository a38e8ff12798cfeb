"""``trainer.compile``: ``torch.compile`` the fine-tuning network's training forward pass (measured, not assumed).

Only the training step's forward pass goes through the compiled network (inductor, default mode); the convergence
monitor's fixed-patch scores, validation and test scoring run the same module eagerly, so they compile nothing of
their own. The compiled wrapper is kept outside the LightningModule's submodules, so checkpoints and ``model.pt``
hold the plain network's state dict.

Measured on the quick brainstem network (2 cores; ``benchmarks/step_options.py --variants compile``): a training
step 1.10-1.21x faster; the first call compiles, about 30 s on a cold inductor cache and 3 s on a warm one; a
second instance of the same network compiled later in the same process (a study's next stage) starts in 0.03 s,
because Dynamo reuses the graph. Inductor on CPU builds C++ kernels, so it needs a C++ compiler; on CUDA it
needs Triton, which PyTorch's CUDA wheels ship. No GPU measurement exists yet, so ``auto`` compiles on CPU only.
"""

from __future__ import annotations

import logging
import os
import shutil

from ssl_pretrain.errors import ConfigError

log = logging.getLogger(__name__)

CXX_NAMES = ("g++", "c++", "clang++")


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU: ``$CXX`` if set, else the first of :data:`CXX_NAMES` found."""
    named = os.environ.get("CXX")
    if named:
        return shutil.which(named)
    return next((path for name in CXX_NAMES if (path := shutil.which(name))), None)


def resolve_compile(setting: object, accelerator: str) -> bool:
    """``trainer.compile`` (``true`` | ``false`` | ``auto``) on a resolved accelerator (``cpu`` | ``gpu``).

    ``auto`` compiles where it was measured to pay: on CPU when a C++ compiler is found (it logs which way it went);
    on CUDA it stays eager until a GPU measurement says otherwise (``true`` compiles there too).

    Raises:
        ConfigError: not one of the three, or ``true`` on CPU without a C++ compiler (named, so the user can set
            ``CXX``, install one, or set ``trainer.compile=false``).
    """
    if setting == "auto":
        compiler = cxx_compiler()
        found = accelerator == "cpu" and compiler is not None
        why = "not measured on GPU" if accelerator != "cpu" else "no C++ compiler found"
        log.info("trainer.compile=auto: %s", "compiling the training forward pass" if found else f"eager ({why})")
        return found
    if not isinstance(setting, bool):
        raise ConfigError("trainer.compile", f"expected true, false or auto, got {setting!r}")
    if setting and accelerator == "cpu" and cxx_compiler() is None:
        raise ConfigError(
            "trainer.compile",
            f"torch.compile on CPU builds C++ kernels, but no C++ compiler was found ($CXX, {', '.join(CXX_NAMES)}); "
            "install one or set trainer.compile=false",
        )
    return setting
