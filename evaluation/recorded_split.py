"""The subject split the evaluated runs actually used, read from their sidecars (not re-derived).

Every fine-tuning run records its split in ``model.json``: ``train_subjects`` (the labelled subjects of the
train split), ``val_subjects`` and ``test_subjects``. ``bssl evaluate`` measures probes and baselines on the
same subjects; if two runs disagree (another ``data.split_seed``, another dataset), a measure over "the test
subjects" would be ill-defined, so it stops with one line naming the runs. Without any fine-tuning run (only
pretraining runs) the split is re-derived from ``data.*`` as the commands derive it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from omegaconf import DictConfig

from evaluation.runs import Run
from ssl_pretrain.data.cache import CachedSubject, preprocess
from ssl_pretrain.data.split import split_subjects
from ssl_pretrain.data.validate import load_records
from ssl_pretrain.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = {"train": "train_subjects", "val": "val_subjects", "test": "test_subjects"}


def recorded_split(runs: Sequence[Run]) -> dict[str, list[str]] | None:
    """``{"train", "val", "test": [subject keys]}`` of the fine-tuning runs, or ``None`` without any.

    Raises:
        ConfigError: two runs recorded different test (or validation) subjects; names both runs.
    """
    tuned = [r for r in runs if r.kind == "finetune" and r.sidecar.get("test_subjects") is not None]
    if not tuned:
        return None
    first = tuned[0]
    for run in tuned[1:]:
        for name in ("test", "val"):
            if set(run.sidecar.get(SPLITS[name]) or []) != set(first.sidecar.get(SPLITS[name]) or []):
                raise ConfigError(
                    "runs",
                    f"{first.path} and {run.path} were tested on different {name} subjects (another data.split_seed "
                    "or dataset?); evaluate runs of one split together",
                )
    split = {name: list(first.sidecar.get(key) or []) for name, key in SPLITS.items()}
    train = [key for run in tuned for key in run.sidecar.get("train_subjects") or []]
    split["train"] = list(dict.fromkeys(train or split["train"]))
    return split


def split_of(cfg: DictConfig, runs: Sequence[Run]) -> dict[str, list[CachedSubject]]:
    """The cached subjects of each split: the runs' recorded split, else re-derived from ``cfg.data``."""
    records = load_records(cfg.data)
    cached = preprocess(records, cfg.data, cfg.paths.cache_dir)
    recorded = recorded_split(runs)
    if recorded is None:
        log.info("no fine-tuning run records a split: deriving it from data.split_seed=%s", cfg.data.split_seed)
        data = cfg.data
        return split_subjects(cached, float(data.val_fraction), float(data.test_fraction), int(data.split_seed))
    by_key = {s.key: s for s in cached}
    missing = sorted({k for keys in recorded.values() for k in keys} - set(by_key))
    if missing:
        raise ConfigError("data.root", f"subjects {missing[:5]} of the runs' split are not in {cfg.data.root}")
    return {name: [by_key[k] for k in keys] for name, keys in recorded.items()}
