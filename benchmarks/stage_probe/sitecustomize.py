"""Timing probe of one ``bssl finetune`` process, for ``benchmarks/finetune_stage.py`` (any revision of the toolkit).

Python imports ``sitecustomize`` at start-up from the first ``sys.path`` entry that has one, so the benchmark puts
this directory first on the child's ``PYTHONPATH``. When ``BSSL_STAGE_PROBE`` names a file, every Lightning
``Trainer`` gets two callbacks, one first and one last in its list, and at exit the file receives one JSON object
of ``time.perf_counter`` marks (seconds since this module ran, i.e. since interpreter start-up):

* ``fit``: ``[start, end]`` of ``Trainer.fit`` (``on_fit_start`` / ``on_fit_end``);
* ``steps``: per training batch ``[start, compute_end, callbacks_end]``: ``on_train_batch_start`` of the first
  callback, its ``on_train_batch_end`` (forward, backward, optimiser step done) and the last callback's
  ``on_train_batch_end`` (what the other callbacks did: convergence checkpoints, checkpoint saving, logging);
* ``validation``: ``[start, end]`` of every validation loop;
* ``run``: ``[start, end]`` of the stage's ``finetune.train.run(cfg)``, which ``bssl finetune`` calls once Hydra has
  composed the config (every revision since the first has it). The probe imports ``finetune.train`` at start-up
  to wrap it, so what lies before ``run`` — interpreter start, imports, composing the config — is what every
  ``bssl`` process pays once; inside a study, which runs its stages in one process, a stage costs its ``run``.
  With ``BSSL_STAGE_PROBE_STAGES=N`` (default 1) the probe calls ``run`` N times in turn on the same config, each
  time with an output folder of its own (``<output_dir>-stage<i>``), as ``bssl study`` runs one stage after another
  in one process; ``run`` then holds ``[start, end]`` of each call, one after the other, and ``fit``, ``steps`` and
  ``validation`` hold every call's marks in order.

The gap from one batch's ``callbacks_end`` to the next batch's ``start`` is fetching the batch (``num_workers=0``:
patch sampling and augmentation in the main process) and Lightning's bookkeeping. Nothing else is changed.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import time

T0 = time.perf_counter()
PATH = os.environ.get("BSSL_STAGE_PROBE")


def _install(path: str) -> None:
    import lightning.pytorch as pl

    import finetune.train as stage  # the revision under test: first on PYTHONPATH after this directory

    marks: dict[str, list] = {"fit": [], "steps": [], "validation": [], "run": []}

    def now() -> float:
        return time.perf_counter() - T0

    class Head(pl.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:
            marks["fit"].append(now())

        def on_fit_end(self, trainer, pl_module) -> None:
            marks["fit"].append(now())

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            marks["steps"].append([now()])

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            marks["steps"][-1].append(now())

        def on_validation_start(self, trainer, pl_module) -> None:
            marks["validation"].append([now()])

        def on_validation_end(self, trainer, pl_module) -> None:
            marks["validation"][-1].append(now())

    class Tail(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            marks["steps"][-1].append(now())

    init = pl.Trainer.__init__

    def patched(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.callbacks.insert(0, Head())
        self.callbacks.append(Tail())

    pl.Trainer.__init__ = patched  # type: ignore[method-assign]
    run = stage.run
    stages = int(os.environ.get("BSSL_STAGE_PROBE_STAGES", "1"))

    def timed_run(cfg):  # type: ignore[no-untyped-def]
        from omegaconf import open_dict

        first = str(cfg.paths.output_dir)
        for i in range(stages):
            if i:  # the next stage of a study: same process, same config, a folder of its own
                cfg = copy.deepcopy(cfg)
                with open_dict(cfg):
                    cfg.paths.output_dir = f"{first}-stage{i + 1}"
            marks["run"].append(now())
            try:
                out = run(cfg)
            finally:
                marks["run"].append(now())
        return out

    stage.run = timed_run

    def write() -> None:
        with open(path, "w") as f:
            json.dump({**marks, "exit": now()}, f)

    atexit.register(write)


if PATH:
    _install(PATH)
