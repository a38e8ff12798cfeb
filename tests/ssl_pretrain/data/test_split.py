"""Subject split: stratified, disjoint, deterministic, non-empty splits where possible."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ssl_pretrain.data.manifest import SubjectRecord
from ssl_pretrain.data.split import split_subjects


@dataclass(frozen=True)
class Item:
    key: str
    group: str | None


def cohort(n_hc: int, n_als: int) -> list[Item]:
    return [Item(f"sub-{i:02d}", "HC") for i in range(n_hc)] + [Item(f"sub-{100 + i:03d}", "ALS") for i in range(n_als)]


def test_disjoint_complete_and_sized() -> None:
    items = cohort(27, 26)
    split = split_subjects(items, 0.15, 0.25, seed=0)
    keys = {name: {s.key for s in subs} for name, subs in split.items()}
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    assert keys["train"] | keys["val"] | keys["test"] == {s.key for s in items}
    assert len(split["test"]) == round(53 * 0.25) and len(split["val"]) == round(53 * 0.15)


def test_stratified_by_group() -> None:
    split = split_subjects(cohort(40, 20), 0.2, 0.25, seed=1)
    for name, expected in (("test", 15), ("val", 12)):
        groups = [s.group for s in split[name]]
        assert len(groups) == expected
        assert groups.count("HC") == round(expected * 40 / 60) and groups.count("ALS") == round(expected * 20 / 60)


def test_deterministic_and_order_free() -> None:
    items = cohort(10, 9)
    a = split_subjects(items, 0.2, 0.2, seed=3)
    b = split_subjects(list(reversed(items)), 0.2, 0.2, seed=3)
    c = split_subjects(items, 0.2, 0.2, seed=4)
    assert a == b
    assert a != c


def test_at_least_one_per_nonempty_split_and_train_keeps_one() -> None:
    split = split_subjects(cohort(2, 1), 0.05, 0.05, seed=0)
    assert [len(split[n]) for n in ("train", "val", "test")] == [1, 1, 1]
    two = split_subjects(cohort(1, 1), 0.1, 0.1, seed=0)
    assert len(two["train"]) == 1 and len(two["val"]) + len(two["test"]) == 1
    one = split_subjects(cohort(1, 0), 0.2, 0.2, seed=0)
    assert len(one["train"]) == 1 and not one["val"] and not one["test"]
    assert split_subjects(cohort(5, 5), 0.0, 0.3, seed=0)["val"] == []
    assert split_subjects([], 0.2, 0.2, seed=0) == {"train": [], "val": [], "test": []}


def test_records_and_missing_groups() -> None:
    records = [SubjectRecord(subject=f"{i:02d}", group=None if i % 3 == 0 else "HC") for i in range(12)]
    split = split_subjects(records, 0.25, 0.25, seed=0)
    assert sum(len(v) for v in split.values()) == 12
    assert [r.group for r in split["test"]].count(None) == 1  # 4 of 12 have no group: 1 of 3 test subjects


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError):
        split_subjects(cohort(4, 4), val, test, seed=0)


def test_repeated_keys() -> None:
    with pytest.raises(ValueError, match="sub-01"):
        split_subjects([Item("sub-01", "HC"), Item("sub-01", "ALS")], 0.2, 0.2, seed=0)


def test_crossfit_folds_cover_everyone_once_stratified_and_seeded():
    from ssl_pretrain.data.split import crossfit_folds, crossfit_split

    subjects = cohort(7, 6)
    folds = crossfit_folds(subjects, 3, seed=0)
    keys = [s.key for f in folds for s in f]
    assert sorted(keys) == sorted(s.key for s in subjects) and len(set(keys)) == len(keys)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for f in folds:
        assert {s.group for s in f} == {"HC", "ALS"}
    assert crossfit_folds(list(reversed(subjects)), 3, seed=0) == folds  # order does not matter
    split = crossfit_split(subjects, 3, 1, seed=0)
    assert split["test"] == folds[1] and split["val"] == []
    assert not {s.key for s in split["train"]} & {s.key for s in split["test"]}
    with pytest.raises(ValueError):
        crossfit_split(subjects, 3, 3, seed=0)
    with pytest.raises(ValueError):
        crossfit_folds(subjects, 1, seed=0)
