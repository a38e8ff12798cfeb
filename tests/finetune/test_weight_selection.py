"""finetune.weight_selection: a k-label run reads no validation label unless asked, and then counts them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from omegaconf import OmegaConf

from finetune.weight_selection import plan_selection
from ssl_pretrain.errors import ConfigError


@dataclass(frozen=True)
class _Subject:
    key: str
    group: str


VAL = [_Subject(f"sub-{i:02d}", "HC" if i % 2 else "ALS") for i in range(6)]


def _cfg(**values):
    return OmegaConf.create({"selection": "last", "val_subjects": "k", "early_stopping_patience": None, **values})


def test_last_reads_no_validation_subject():
    plan = plan_selection(_cfg(), VAL, k=1, seed=0)
    assert plan.rule == "last" and plan.val_subjects == () and not plan.uses_validation and plan.callbacks() == []


@pytest.mark.parametrize(("wanted", "k", "n"), [("k", 1, 1), ("k", 2, 2), ("k", 32, 6), ("all", 1, 6), (3, 1, 3)])
def test_val_uses_at_most_the_asked_number(wanted, k, n):
    plan = plan_selection(_cfg(selection="val", val_subjects=wanted), VAL, k=k, seed=0)
    assert plan.rule == "val" and len(plan.val_subjects) == n
    assert plan.record()["val_subjects"] == [s.key for s in plan.val_subjects]


def test_fewer_validation_subjects_are_balanced_nested_and_seeded():
    two = plan_selection(_cfg(selection="val", val_subjects=2), VAL, k=1, seed=4).val_subjects
    four = plan_selection(_cfg(selection="val", val_subjects=4), VAL, k=1, seed=4).val_subjects
    assert {s.group for s in two} == {"HC", "ALS"} and four[:2] == two
    assert plan_selection(_cfg(selection="val", val_subjects=2), VAL, k=1, seed=4).val_subjects == two


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"selection": "best"}, "finetune.selection"),
        ({"selection": "val", "val_subjects": 0}, "finetune.val_subjects"),
        ({"selection": "val", "val_subjects": 7}, "finetune.val_subjects"),
        ({"selection": "val", "val_subjects": "some"}, "finetune.val_subjects"),
        ({"early_stopping_patience": 5}, "finetune.early_stopping_patience"),
        ({"selection": "val", "early_stopping_patience": 0}, "finetune.early_stopping_patience"),
    ],
)
def test_bad_settings_name_their_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan_selection(_cfg(**values), VAL, k=1, seed=0)


def test_val_without_labelled_validation_subjects_is_refused():
    with pytest.raises(ConfigError, match="no labelled subject"):
        plan_selection(_cfg(selection="val"), [], k=1, seed=0)


def test_patience_gives_early_stopping_under_val():
    plan = plan_selection(_cfg(selection="val", early_stopping_patience=3), VAL, k=1, seed=0)
    assert len(plan.callbacks()) == 1 and plan.record()["early_stopping_patience"] == 3
