"""The ``bssl`` commands: for each, the module whose ``run(cfg)`` runs it and a one-line help.

A table of module *names*, not imports: :mod:`ssl_pretrain.cli` imports a command's module only when the
command runs, and :mod:`evaluation.study.stages` runs the study's stages through the same table. Both import this
module, which imports nothing, so neither imports the other: the import graph has no cycle between the
command line and the packages downstream of ``ssl_pretrain`` (``tests/ssl_pretrain/test_commands.py`` checks it).
"""

from __future__ import annotations

# command -> (module with run(cfg), one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("ssl_pretrain.demo_data", "simulate the demo BIDS cohort (a simulation, labelled as one)"),
    "pretrain": ("ssl_pretrain.pretrain", "self-supervised pretraining of a 3D encoder (mae, simclr, ...)"),
    "finetune": ("finetune.train", "supervised GM/WM segmentation: stage=subcortical | brainstem"),
    "predict": ("finetune.predict", "segment subjects; BIDS-derivative dseg in native space + volumes"),
    "evaluate": ("evaluation.evaluate", "probes, CKA, learning curves, baselines, group analysis, report"),
    "study": (
        "evaluation.study.command",
        "the whole transfer study: pretrain -> subcortical -> brainstem sweep -> report",
    ),
}
