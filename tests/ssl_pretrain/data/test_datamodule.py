"""BrainDataModule: setup, splits, loaders, Lightning's epoch hand-off, config errors."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ssl_pretrain.config import CONFIG_DIR
from ssl_pretrain.data import batch as B
from ssl_pretrain.data.datamodule import BrainDataModule
from ssl_pretrain.errors import ConfigError, DataError
from tests.synthetic import write_synthetic_bids

PATCH = 16


def data_cfg(root: Path, **overrides: object):
    cfg = OmegaConf.load(CONFIG_DIR / "data" / "default.yaml")
    cfg.root = str(root)
    cfg.patch_size = PATCH
    cfg.patches_per_epoch = 6
    cfg.val_patches = 4
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight subjects; sub-02 and sub-05 have no tissue map."""
    base = tmp_path_factory.mktemp("dm")
    return write_synthetic_bids(base / "bids", n_subjects=8, missing={"02": ["tissue"], "05": ["tissue", "FA"]})


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dm_cache")


def test_setup_splits_and_loaders(root: Path, cache: Path) -> None:
    dm = BrainDataModule(data_cfg(root), cache, seed=1)
    assert dm.in_channels == 4 and dm.modalities == ["T1w", "T2w", "FA", "MD"]
    dm.setup("fit")
    keys = [{s.key for s in subs} for subs in (dm.train_subjects, dm.val_subjects, dm.test_subjects)]
    assert sum(len(k) for k in keys) == 8 and len(set().union(*keys)) == 8
    assert len(keys[2]) == 2 and len(keys[1]) == 1
    assert len(dm.fingerprint) == 16
    batch = next(iter(dm.train_dataloader()))
    assert batch[B.IMAGE].shape == (2, 4, PATCH, PATCH, PATCH) and batch[B.IMAGE].dtype == torch.float32
    assert batch[B.PRESENCE].shape == (2, 4) and batch[B.TISSUE].shape == (2, 1, PATCH, PATCH, PATCH)
    assert len(batch[B.SUBJECT]) == 2 and set(batch[B.SUBJECT]) <= keys[0]
    val = [b[B.IMAGE] for b in dm.val_dataloader()]
    again = [b[B.IMAGE] for b in dm.val_dataloader()]
    assert all(torch.equal(a, b) for a, b in zip(val, again, strict=True))  # fixed validation patches
    assert sum(len(v) for v in val) == 4
    dm.setup("validate")  # idempotent
    assert {s.key for s in dm.train_subjects} == keys[0]


def test_same_split_for_every_seed_and_stage(root: Path, cache: Path) -> None:
    a = BrainDataModule(data_cfg(root), cache, seed=1)
    b = BrainDataModule(data_cfg(root), cache, seed=9, views=2)
    c = BrainDataModule(data_cfg(root), cache, labelled_only=True)
    for dm in (a, b, c):
        dm.setup()
    assert [s.key for s in a.test_subjects] == [s.key for s in b.test_subjects]
    assert {s.key for s in c.test_subjects} <= {s.key for s in a.test_subjects}
    assert all(s.tissue is not None for s in c.train_subjects + c.val_subjects + c.test_subjects)
    assert {"sub-02", "sub-05"} & {s.key for s in a.train_subjects + a.val_subjects + a.test_subjects}
    batch = next(iter(b.train_dataloader()))
    assert batch[B.IMAGE_B].shape == batch[B.IMAGE].shape and batch[B.PRESENCE_B].shape == (2, 4)


def test_train_keys_restrict_training(root: Path, cache: Path) -> None:
    full = BrainDataModule(data_cfg(root), cache, labelled_only=True)
    full.setup()
    chosen = [full.train_subjects[0].key]
    few = BrainDataModule(data_cfg(root), cache, labelled_only=True, train_keys=chosen)
    few.setup()
    assert [s.key for s in few.train_subjects] == chosen
    assert [s.key for s in few.test_subjects] == [s.key for s in full.test_subjects]
    with pytest.raises(ConfigError, match="train_keys"):
        BrainDataModule(data_cfg(root), cache, train_keys=["sub-99"]).setup()
    # restricting a module already set up gives the same subjects and the same patches, without a second read
    full.restrict_training(chosen)
    assert [s.key for s in full.train_subjects] == chosen
    assert [s.key for s in full.test_subjects] == [s.key for s in few.test_subjects]
    assert full.train_dataset is not None and few.train_dataset is not None
    a, b = full.train_dataset[3], few.train_dataset[3]
    assert all(torch.equal(a[key], b[key]) for key in a if isinstance(a[key], torch.Tensor))
    with pytest.raises(ConfigError, match="train_keys"):
        full.restrict_training(["sub-99"])
    assert [s.key for s in full.train_subjects] == chosen  # a refused restriction changes nothing


class _Recorder(L.LightningModule):
    """Records the image sums of every training batch, per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[torch.Tensor]] = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.setdefault(self.current_epoch, []).append(batch[B.IMAGE].sum(dim=(1, 2, 3, 4)))
        return (self.weight * batch[B.IMAGE].mean()).sum() + self.weight**2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_advances_the_epoch_of_the_sampler(root: Path, cache: Path) -> None:
    dm = BrainDataModule(data_cfg(root, augment=False, num_workers=1), cache, seed=5)
    model = _Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=dm)
    ds = dm.train_dataset
    for epoch in (0, 1):
        got = torch.cat(model.seen[epoch])
        want = torch.stack([ds[(epoch, i)][B.IMAGE].sum() for i in range(len(ds))])
        torch.testing.assert_close(got, want)
    assert not torch.equal(torch.cat(model.seen[0]), torch.cat(model.seen[1]))


def test_labelled_subject_with_empty_roi_is_refused(tmp_path: Path) -> None:
    bids = write_synthetic_bids(tmp_path / "bids", n_subjects=3)
    tsv = next(bids.rglob("sub-01_desc-regions_dseg.tsv"))
    tsv.write_text("index\tname\n0\tbackground\n1\tthalamus\n5\tunknown_blob\n9\tcortex\n10\tcerebral_wm\n")
    dm = BrainDataModule(data_cfg(bids, val_fraction=0, test_fraction=0), tmp_path / "cache", labelled_only=True)
    with pytest.raises(DataError, match=r"sub-01_desc-regions_dseg.nii.gz.*'brainstem'.*empty"):
        dm.setup()
    ok = BrainDataModule(
        data_cfg(bids, val_fraction=0, test_fraction=0), tmp_path / "cache", roi="thalamus", labelled_only=True
    )
    ok.setup()
    assert len(ok.train_subjects) == 3 and ok.val_dataloader() == []


def test_cache_inside_the_dataset_is_refused(root: Path) -> None:
    dm = BrainDataModule(data_cfg(root), root / "derivatives" / "bssl-cache")
    with pytest.raises(ConfigError, match=r"paths\.cache_dir"):
        dm.setup()


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"batch_size": 0}, "data.batch_size"),
        ({"num_workers": -1}, "data.num_workers"),
        ({"roi_fraction": 1.5}, "data.roi_fraction"),
        ({"modality_dropout": 1.0}, "data.modality_dropout"),
        ({"min_modalities": 0}, "data.min_modalities"),
        ({"roi": "hippocampus"}, "data.roi"),
        ({"patch_size": [16, 16]}, "data.patch_size"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "data.val_fraction"),
        ({"patches_per_epoch": 2.5}, "data.patches_per_epoch"),
        ({"augmentation.noise.p": 2.0}, "data.augmentation.noise.p"),
        ({"modality_subsets.all": 0.9}, "data.modality_subsets"),
        ({"modality_subsets.PD": 0.0}, "data.modality_subsets.PD"),
        ({"view_overlap": [0.6, 0.2]}, "data.view_overlap"),
        ({"view_augmentation.gamma.p": 0.5}, "data.view_augmentation.gamma"),
    ],
)
def test_bad_config_names_the_key(root: Path, cache: Path, override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        BrainDataModule(data_cfg(root, **override), cache, views=2)


def test_batches_carry_acquired_targets_and_the_configured_subsets(root: Path, cache: Path) -> None:
    dm = BrainDataModule(data_cfg(root), cache, seed=3, clean_target=True, views=2)
    assert [s.name for s in dm.modality_subsets] == ["T1w", "all", "random"]  # configs/data/default.yaml
    assert dm.modality_subsets[0].weight >= 0.25  # T1w-only is first-class
    dm.setup()
    assert dm.train_dataset.modality_subsets == dm.modality_subsets and dm.train_dataset.view_augment is not None
    batch = next(iter(dm.train_dataloader()))
    assert batch[B.TARGET].shape == batch[B.IMAGE].shape and batch[B.ACQUIRED].shape == (2, 4)
    assert torch.all(batch[B.PRESENCE] <= batch[B.ACQUIRED])
    val = next(iter(dm.val_dataloader()))
    assert torch.equal(val[B.PRESENCE], val[B.ACQUIRED])  # validation shows every acquired modality
    assert not torch.equal(val[B.IMAGE], val[B.IMAGE_B])
    plain = BrainDataModule(data_cfg(root), cache, seed=3)
    plain.setup()
    assert B.TARGET not in next(iter(plain.train_dataloader())) and plain.view_augment is None


def test_roi_none_in_config_samples_the_brain(root: Path, cache: Path) -> None:
    dm = BrainDataModule(data_cfg(root, roi=None, augment=False), cache)
    dm.setup()
    ds = dm.train_dataset
    assert ds.roi is None and ds.roi_fraction == 0.0
    assert all(not ds.locate(i)[2] for i in range(len(ds)))
    assert np.all([ds.subjects[ds.locate(i)[0]].brain[tuple(ds.locate(i)[1])] for i in range(len(ds))])


def test_prepare_data_validates_once_and_setup_reuses_its_records(root: Path, cache: Path, monkeypatch) -> None:
    import ssl_pretrain.data.datamodule as datamodule

    calls = []
    real = datamodule.load_records
    monkeypatch.setattr(datamodule, "load_records", lambda cfg: calls.append(1) or real(cfg))
    dm = BrainDataModule(data_cfg(root), cache)
    dm.prepare_data()  # a command calls it before the trainer exists ...
    dm.prepare_data()  # ... and Lightning calls it again
    dm.setup()
    assert len(calls) == 1 and dm.records is not None and len(dm.records) == 8
    fresh = BrainDataModule(data_cfg(root), cache)
    fresh.setup()  # without prepare_data, setup reads the records itself
    assert len(calls) == 2 and [r.key for r in fresh.records] == [r.key for r in dm.records]
