"""The Lightning DataModule every training command uses: records -> cache -> split -> patch loaders.

``setup()`` validates the dataset (:func:`~ssl_pretrain.data.validate.load_records`), preprocesses it
into the cache (:func:`~ssl_pretrain.data.cache.preprocess`; ``prepare_data`` does it first on rank 0
only, so other DDP ranks just load finished entries) and splits the subjects by group with
``data.split_seed`` (:func:`~ssl_pretrain.data.split.split_subjects`). The split is made on *all*
subjects, before ``labelled_only`` filtering, so every command sees the same test subjects.

Loaders: ``train_dataloader`` serves ``data.patches_per_epoch`` augmented patches per epoch from the
train subjects through an :class:`~ssl_pretrain.data.sampler.EpochSampler`; Lightning calls its
``set_epoch`` at every epoch start (no callback needed), and the epoch reaches persistent workers with
each index. Training patches show the modalities of ``data.modality_subsets`` (e.g. T1w alone for a
quarter of them; :mod:`ssl_pretrain.data.subsets`), for pretraining and fine-tuning alike.
``val_dataloader`` serves ``data.val_patches`` fixed patches (same every epoch, no augmentation, every
acquired modality; two-view patches keep their bounded overlap and the per-view intensity augmentation,
so the validation loss measures the training task). Whole-volume evaluation uses
``val_subjects``/``test_subjects`` (cached volumes for MONAI's sliding window) instead of a loader.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ssl_pretrain.data.augment import augment_margin, build_augment, build_view_augment
from ssl_pretrain.data.cache import CachedSubject, preprocess
from ssl_pretrain.data.grid import parse_patch_size, parse_spacing
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.data.manifest import SubjectRecord
from ssl_pretrain.data.sampler import DEFAULT_VIEW_OVERLAP, EpochSampler, PatchDataset, check_view_overlap
from ssl_pretrain.data.split import crossfit_split, split_subjects
from ssl_pretrain.data.subsets import ModalitySubset, parse_modality_subsets
from ssl_pretrain.data.validate import check_region_nonempty, dataset_fingerprint, load_records
from ssl_pretrain.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers run side by side: one BLAS/OpenMP thread each


def _number(cfg: DictConfig, key: str, default: float, lo: float, hi: float, *, integer: bool = False) -> float:
    value = cfg.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not lo <= number <= hi or (integer and number != int(number)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"data.{key}", f"expected {kind} in [{lo:g}, {hi:g}], got {value!r}")
    return number


def _int(cfg: DictConfig, key: str, default: int, lo: int, hi: float = 1e12) -> int:
    return int(_number(cfg, key, default, lo, hi, integer=True))


def crossfit_setting(data_cfg: DictConfig) -> tuple[int, int] | None:
    """``(folds, fold)`` of ``data.crossfit`` (``None``: the usual train/val/test split).

    With it, the subjects are dealt into ``folds`` group-stratified folds (``data.split_seed``): the run's test
    subjects are fold ``fold``, its training subjects all others, and it has no validation subject
    (:func:`~ssl_pretrain.data.split.crossfit_split`).

    Raises:
        ConfigError: one of the two set without the other, fewer than 2 folds, or a fold out of range.
    """
    c = data_cfg.get("crossfit") or {}
    folds, fold = c.get("folds"), c.get("fold")
    if folds is None and fold is None:
        return None
    if folds is None or fold is None or isinstance(folds, bool) or isinstance(fold, bool):
        raise ConfigError("data.crossfit", f"set both folds and fold (or neither), got folds={folds!r}, fold={fold!r}")
    if int(folds) < 2 or not 0 <= int(fold) < int(folds):
        raise ConfigError("data.crossfit.fold", f"need folds >= 2 and 0 <= fold < folds, got {folds}, {fold}")
    return int(folds), int(fold)


def _kept(train: list[CachedSubject], keys: Sequence[str]) -> list[CachedSubject]:
    """The subjects of ``train`` named in ``keys`` (in split order).

    Raises:
        ConfigError: a key that is not a subject of ``train``.
    """
    unknown = sorted(set(keys) - {s.key for s in train})
    if unknown:
        raise ConfigError("train_keys", f"{unknown} are not (labelled) subjects of the train split")
    return [s for s in train if s.key in set(keys)]


class BrainDataModule(L.LightningDataModule):
    """Patches and whole volumes of one dataset for training and evaluation.

    Args:
        data_cfg: the ``data`` config group (``configs/data/default.yaml``).
        cache_dir: the preprocessing cache (``paths.cache_dir``), never inside ``data.root``.
        views: 1, or 2 for contrastive pretraining (adds ``image_b``/``presence_b``).
        roi: region group that centres ``data.roi_fraction`` of the patches; ``None`` uses ``data.roi``
            (``data.roi: null`` or ``data.roi_fraction: 0`` samples the brain uniformly).
        labelled_only: train/val/test keep only subjects with tissue labels (and, with an ROI, region
            labels whose ROI is not empty: an empty one raises :class:`DataError`).
        seed: sampling seed of this run (patch positions, augmentation, dropout); the split uses
            ``data.split_seed``.
        train_keys: if given, only these record keys of the train split are used for training
            (few-label experiments); keys outside the train split raise :class:`ConfigError`.
        clean_target: batches carry ``target``, the patch before intensity augmentation and modality
            dropout (MAE's reconstruction target).
    """

    def __init__(
        self,
        data_cfg: DictConfig,
        cache_dir: str | Path,
        *,
        views: int = 1,
        roi: str | None = None,
        labelled_only: bool = False,
        seed: int = 0,
        train_keys: Sequence[str] | None = None,
        clean_target: bool = False,
    ) -> None:
        super().__init__()
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        self.data_cfg = data_cfg
        self.cache_dir = Path(cache_dir)
        self.views = views
        self.roi = roi if roi is not None else (data_cfg.get("roi") or None)
        if self.roi:
            try:
                region_group_indices(self.roi)
            except KeyError as err:
                raise ConfigError("data.roi", str(err.args[0])) from None
        self.labelled_only = labelled_only
        self.seed = int(seed)
        self.train_keys = list(train_keys) if train_keys is not None else None
        self.patch_size = parse_patch_size(data_cfg.get("patch_size"))
        self.spacing = parse_spacing(data_cfg.get("spacing"))
        self.batch_size = _int(data_cfg, "batch_size", 2, 1, 1e9)
        self.num_workers = _int(data_cfg, "num_workers", 0, 0, 1024)
        self.patches_per_epoch = _int(data_cfg, "patches_per_epoch", 64, 1, 1e12)
        self.val_patches = _int(data_cfg, "val_patches", 32, 1, 1e12)
        self.roi_fraction = _number(data_cfg, "roi_fraction", 0.5, 0, 1)
        self.modality_dropout = _number(data_cfg, "modality_dropout", 0.0, 0, 0.999)
        self.min_modalities = _int(data_cfg, "min_modalities", 1, 1, 1e6)
        self.val_fraction = _number(data_cfg, "val_fraction", 0.15, 0, 0.999)
        self.test_fraction = _number(data_cfg, "test_fraction", 0.25, 0, 0.999)
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("data.val_fraction", "data.val_fraction + data.test_fraction must be below 1")
        self.split_seed = int(data_cfg.get("split_seed", 0))
        self.crossfit = crossfit_setting(data_cfg)
        aug_cfg = data_cfg.get("augmentation") or {}
        self.augment = build_augment(aug_cfg, self.patch_size) if data_cfg.get("augment", True) else None
        self.augment_margin = augment_margin(aug_cfg, self.patch_size, self.spacing) if self.augment else (0, 0, 0)
        self.clean_target = bool(clean_target)
        self.modality_subsets: tuple[ModalitySubset, ...] = parse_modality_subsets(
            data_cfg.get("modality_subsets"), self.modalities
        )
        try:
            self.view_overlap = check_view_overlap(
                data_cfg.get("view_overlap") or DEFAULT_VIEW_OVERLAP, self.patch_size
            )
        except (ValueError, TypeError) as err:
            raise ConfigError("data.view_overlap", str(err)) from None
        self.view_augment = build_view_augment(data_cfg.get("view_augmentation")) if views == 2 else None
        self.records: list[SubjectRecord] | None = None
        self._prepared = False
        self.splits: dict[str, list[CachedSubject]] | None = None
        self.train_dataset: PatchDataset | None = None
        self.val_dataset: PatchDataset | None = None

    @property
    def modalities(self) -> list[str]:
        """Channel names in order (``data.modalities``)."""
        return [str(m) for m in self.data_cfg.modalities]

    @property
    def in_channels(self) -> int:
        """Number of image channels."""
        return len(self.modalities)

    def prepare_data(self) -> None:
        """Validate and preprocess into the cache (Lightning runs this on one process per node; a command may
        call it first, so that bad input fails before training is set up: the second call does nothing)."""
        if self._prepared:
            return
        self.records = load_records(self.data_cfg)
        preprocess(self.records, self.data_cfg, self.cache_dir)
        self._prepared = True

    def setup(self, stage: str | None = None) -> None:
        """Load records and cached subjects, split them, build the patch datasets (idempotent)."""
        if self.splits is not None:
            return
        if self.records is None:
            self.records = load_records(self.data_cfg)
        subjects = preprocess(self.records, self.data_cfg, self.cache_dir)
        if self.crossfit is None:
            splits = split_subjects(subjects, self.val_fraction, self.test_fraction, self.split_seed)
        else:
            splits = crossfit_split(subjects, *self.crossfit, self.split_seed)
        if self.labelled_only:
            splits = {name: [s for s in subs if self._labelled(s)] for name, subs in splits.items()}
        if self.train_keys is not None:
            splits["train"] = _kept(splits["train"], self.train_keys)
        self.splits = splits
        if not splits["train"]:
            what = "labelled subjects" if self.labelled_only else "subjects"
            raise DataError(self.data_cfg.get("root") or "data", f"no {what} left for training after the split")
        self.train_dataset = self._patches(splits["train"], train=True)
        if splits["val"]:
            self.val_dataset = self._patches(splits["val"], train=False)

    def restrict_training(self, keys: Sequence[str]) -> None:
        """Train on these subjects of the (labelled) train split only, as ``train_keys`` would, without reading
        the dataset again: a few-label run chooses its k subjects from the module it has already set up.

        Raises:
            ConfigError: a key that is not a (labelled) subject of the train split.
        """
        if self.splits is None:
            raise RuntimeError("call setup() first")
        self.splits["train"] = _kept(self.splits["train"], keys)
        self.train_keys = list(keys)
        self.train_dataset = self._patches(self.splits["train"], train=True)

    def _patches(self, subjects: list[CachedSubject], *, train: bool) -> PatchDataset:
        """Training patches (augmented, ``patches_per_epoch``) or fixed validation patches (``val_patches``)."""
        common: dict[str, Any] = {
            "roi": self.roi, "roi_fraction": self.roi_fraction, "min_modalities": self.min_modalities,
            "views": self.views, "clean_target": self.clean_target, "view_overlap": self.view_overlap,
            "view_augment": self.view_augment,
        }  # fmt: skip
        if not train:
            seed = self.seed + 1_000_003
            return PatchDataset(subjects, self.patch_size, length=self.val_patches, seed=seed, **common)
        return PatchDataset(
            subjects,
            self.patch_size,
            length=self.patches_per_epoch,
            seed=self.seed,
            augment=self.augment,
            augment_margin=self.augment_margin,
            modality_dropout=self.modality_dropout,
            modality_subsets=self.modality_subsets,
            **common,
        )

    def _labelled(self, subject: CachedSubject) -> bool:
        if subject.tissue is None:
            return False
        if not self.roi:
            return True
        if subject.regions is None:
            log.warning("%s: tissue labels but no region labels; left out of the %s ROI stage", subject.key, self.roi)
            return False
        path = subject.record.regions or subject.entry
        check_region_nonempty(path, subject.regions, region_group_indices(self.roi), self.roi)
        return True

    def _splits(self) -> dict[str, list[CachedSubject]]:
        if self.splits is None:
            raise RuntimeError("call setup() first")
        return self.splits

    @property
    def train_subjects(self) -> list[CachedSubject]:
        """Cached subjects used for training."""
        return self._splits()["train"]

    @property
    def val_subjects(self) -> list[CachedSubject]:
        """Cached validation subjects (whole volumes for model selection)."""
        return self._splits()["val"]

    @property
    def test_subjects(self) -> list[CachedSubject]:
        """Cached test subjects (whole volumes; never used for selection)."""
        return self._splits()["test"]

    @property
    def fingerprint(self) -> str:
        """The dataset fingerprint (for weight sidecars)."""
        if self.records is None:
            raise RuntimeError("call setup() first")
        return dataset_fingerprint(self.records)

    def _loader(self, dataset: PatchDataset, sampler: EpochSampler | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_worker_init if self.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Augmented patches of the train subjects; ``sampler.set_epoch`` selects the epoch."""
        if self.train_dataset is None:
            raise RuntimeError("call setup() first")
        return self._loader(self.train_dataset, EpochSampler(self.train_dataset))

    def val_dataloader(self) -> DataLoader | list:
        """Fixed, unaugmented patches of the validation subjects (``[]`` when there are none)."""
        if self.val_dataset is None:
            return []
        return self._loader(self.val_dataset, None)
