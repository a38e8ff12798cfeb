"""Region-aware patch sampling from the preprocessing cache.

:class:`PatchDataset` is a map-style dataset: item ``i`` of epoch ``e`` is a pure function of
``(seed, e, i)``, so runs are reproducible whatever the number of DataLoader workers. An item

1. takes a subject from a per-epoch permutation of the subjects (every subject once per round);
2. picks a patch centre: with probability ``roi_fraction`` a random voxel of the ROI (the region group
   ``roi``, e.g. ``brainstem``; ROI voxels are indexed once per subject), otherwise a random brain voxel
   (subjects without regions or with an empty ROI always use brain voxels);
3. cuts the patch (plus the augmentation context margin) from the memory map, padding outside the
   cached box with each channel's background value;
4. augments it (TorchIO, seeded from the item): the spatial transforms first, then (with
   ``clean_target``) a copy is kept as the reconstruction target, then the intensity transforms and
   artefacts;
5. chooses the modalities the patch shows (:mod:`ssl_pretrain.data.subsets`: a subset drawn from
   ``modality_subsets``, e.g. T1w alone for a quarter of the patches, or per-modality dropout); the
   others become zero channels and ``presence`` says which remain (``acquired``: which the subject has);
6. returns the batch dict of :mod:`ssl_pretrain.data.batch`. With ``views=2`` a second crop of the same
   subject is added as ``image_b``/``presence_b``: its centre is moved so that the two crops share a
   fraction of their voxels inside ``view_overlap`` (bounded, so the views cannot be matched by copying
   voxels, and never disjoint), each view with its own augmentation draws, its own strong per-view
   intensity augmentation (``view_augment``, always applied) and its own modality subset.

Epochs: :class:`EpochSampler` yields ``(epoch, i)`` pairs, so the epoch travels with each index into
persistent worker processes. Lightning calls ``set_epoch`` on the train loader's sampler at every epoch
start (also through its ``DistributedSamplerWrapper``), so a :class:`BrainDataModule
<ssl_pretrain.data.datamodule.BrainDataModule>` needs no callback. A plain integer index uses the
dataset's own epoch (:meth:`PatchDataset.set_epoch`).

Mid-epoch resume: a checkpoint records how many items of its epoch each rank had consumed
(:class:`~ssl_pretrain.training.callbacks.SamplerPositionCallback`); on resume
:meth:`PatchDataset.resume_at` makes the next :class:`EpochSampler` pass of that epoch start there. The
pass is *rotated* (this rank's items from ``start`` on, then the first ``start``) rather than shortened,
so its length stays what Lightning expects: Lightning ends the resumed epoch after the batches it still
owed, before reaching the rotated tail.

DDP: when ``torch.distributed`` is initialised as the dataset is built (Lightning builds it in
``setup``, after the process group exists), rank ``r`` of ``w`` keeps ``subjects[r::w]`` (all subjects
if there are fewer than ``w``), so ranks read disjoint subjects; ``length`` stays the per-epoch budget of
indices, which :class:`EpochSampler` splits across ranks (disjoint items also when the dataset was built
before the process group, as ``bssl finetune`` does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
import torchio as tio
from torch.utils.data import Dataset, DistributedSampler

from ssl_pretrain.data import batch as B
from ssl_pretrain.data.augment import split_augment
from ssl_pretrain.data.cache import CachedSubject
from ssl_pretrain.data.grid import parse_patch_size, read_box
from ssl_pretrain.data.labels import region_group_indices
from ssl_pretrain.data.subsets import ALL, RANDOM, ModalitySubset, draw_subset, keep_modalities

log = logging.getLogger(__name__)

MAX_REJECTIONS = 64  # brain-centre draws by rejection before falling back to the voxel list
DEFAULT_VIEW_OVERLAP = (0.2, 0.5)  # data.view_overlap's default (configs/data/default.yaml says why)


def crop_overlap(offset: Sequence[int] | np.ndarray, patch_size: Sequence[int] | np.ndarray) -> float:
    """Fraction of voxels two crops of ``patch_size`` share when their centres differ by ``offset``.

    ``prod_i max(P_i - |d_i|, 0) / P_i``: 1 for the same crop, 0 for disjoint crops.
    """
    d = np.abs(np.asarray(offset, dtype=np.float64))
    p = np.asarray(patch_size, dtype=np.float64)
    return float(np.prod(np.clip(p - d, 0, None) / p))


def draw_view_offset(
    patch_size: Sequence[int] | np.ndarray, overlap: tuple[float, float], rng: np.random.Generator, tries: int = 64
) -> np.ndarray:
    """A centre offset ``(3,)`` (voxels) whose :func:`crop_overlap` lies in ``[overlap[0], overlap[1]]``.

    A target overlap ``o ~ U(lo, hi)`` is split over the axes (per-axis fractions ``o ** w``, ``w`` drawn
    uniformly on the simplex), rounded to whole voxels with random signs, and redrawn until the rounded
    overlap lies in the bounds; after ``tries`` draws the offset is put on one axis only, whose rounding
    :func:`check_view_overlap` guarantees.
    """
    p = np.asarray(patch_size, dtype=np.int64)
    lo, hi = overlap
    for _ in range(tries):
        target = rng.uniform(lo, hi)
        weights = rng.dirichlet(np.ones(3))
        shift = np.rint((1.0 - target**weights) * p).astype(np.int64)
        offset = shift * rng.choice((-1, 1), size=3)
        if lo <= crop_overlap(offset, p) <= hi:
            return offset
    offset = np.zeros(3, np.int64)
    offset[0] = _one_axis_shift(int(p[0]), lo, hi)
    return offset


def _one_axis_shift(p: int, lo: float, hi: float) -> int:
    """The shift along one axis of ``p`` voxels whose overlap is nearest the middle of ``[lo, hi]``."""
    shifts = np.arange(p + 1)
    fractions = (p - shifts) / p
    inside = shifts[(fractions >= lo) & (fractions <= hi)]
    if len(inside) == 0:
        raise ValueError(f"no crop offset of a {p}-voxel patch gives an overlap in [{lo}, {hi}]")
    return int(inside[np.argmin(np.abs((p - inside) / p - (lo + hi) / 2))])


def check_view_overlap(overlap: Sequence[float], patch_size: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """``(lo, hi)`` of a valid ``data.view_overlap`` for ``patch_size``; raises ValueError otherwise."""
    values = [float(v) for v in overlap]
    if len(values) != 2 or not 0.0 < values[0] <= values[1] <= 1.0:
        raise ValueError(f"view_overlap must be [low, high] with 0 < low <= high <= 1, got {list(overlap)}")
    _one_axis_shift(int(patch_size[0]), values[0], values[1])
    return values[0], values[1]


def shard_for_rank(subjects: Sequence[CachedSubject]) -> list[CachedSubject]:
    """``subjects[rank::world]`` under an initialised ``torch.distributed`` group, else all subjects."""
    subjects = list(subjects)
    if not (dist.is_available() and dist.is_initialized()):
        return subjects
    world, rank = dist.get_world_size(), dist.get_rank()
    if len(subjects) < world:
        log.warning("%d subjects for %d ranks: every rank samples all subjects", len(subjects), world)
        return subjects
    return subjects[rank::world]


class PatchDataset(Dataset):
    """Patches from cached subjects; item ``i`` is deterministic in ``(seed, epoch, i)``.

    Args:
        subjects: cached subjects (:func:`ssl_pretrain.data.cache.preprocess`).
        patch_size: patch edge (int) or ``(X, Y, Z)`` in voxels.
        roi: region group whose voxels centre ``roi_fraction`` of the patches (``None``: brain only).
        roi_fraction: probability that a patch is centred inside the ROI.
        length: items per epoch.
        seed: base seed.
        augment: a TorchIO transform (:func:`ssl_pretrain.data.augment.build_augment`) or ``None``.
        augment_margin: context voxels per side cut for the spatial transforms
            (:func:`~ssl_pretrain.data.augment.augment_margin`); ``augment`` must crop back to the patch.
        modality_dropout: probability of zeroing each present modality (the ``random`` subset).
        min_modalities: modalities that always remain under ``random`` (if the subject has them).
        views: 1, or 2 for two independently augmented crops with a bounded overlap.
        shard: keep only this DDP rank's share of the subjects (see the module docstring).
        modality_subsets: the subsets a patch may show (:func:`ssl_pretrain.data.subsets.parse_modality_subsets`);
            ``None``: per-modality dropout when ``modality_dropout > 0``, else every acquired modality.
        clean_target: add ``target``, the patch before intensity augmentation and modality dropout.
        view_overlap: ``(low, high)`` fraction of voxels the two views share (``views=2``).
        view_augment: intensity transform applied to each view of a two-view item, always
            (:func:`ssl_pretrain.data.augment.build_view_augment`), also when ``augment`` is ``None``.

    Items (see :mod:`ssl_pretrain.data.batch`): ``image`` ``(C, X, Y, Z)`` float32, ``presence`` and
    ``acquired`` ``(C,)`` float32, ``tissue`` ``(1, X, Y, Z)`` int64 (``IGNORE_INDEX`` where the subject has
    none), ``regions`` ``(1, X, Y, Z)`` int64 (0 where none), ``subject`` and ``group`` strings; with
    ``clean_target`` also ``target`` ``(C, X, Y, Z)``; with ``views=2`` also ``image_b`` and ``presence_b``.
    """

    def __init__(
        self,
        subjects: Sequence[CachedSubject],
        patch_size: int | Sequence[int],
        *,
        roi: str | None = None,
        roi_fraction: float = 0.0,
        length: int = 64,
        seed: int = 0,
        augment: tio.Transform | None = None,
        augment_margin: int | Sequence[int] = 0,
        modality_dropout: float = 0.0,
        min_modalities: int = 1,
        views: int = 1,
        shard: bool = True,
        modality_subsets: Sequence[ModalitySubset] | None = None,
        clean_target: bool = False,
        view_overlap: Sequence[float] = DEFAULT_VIEW_OVERLAP,
        view_augment: tio.Transform | None = None,
    ) -> None:
        if not subjects:
            raise ValueError("PatchDataset needs at least one subject")
        if not 0 <= roi_fraction <= 1:
            raise ValueError(f"roi_fraction must lie in [0, 1], got {roi_fraction}")
        if not 0 <= modality_dropout < 1:
            raise ValueError(f"modality_dropout must lie in [0, 1), got {modality_dropout}")
        if min_modalities < 1:
            raise ValueError(f"min_modalities must be >= 1, got {min_modalities}")
        if views not in (1, 2):
            raise ValueError(f"views must be 1 or 2, got {views}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        self.subjects = shard_for_rank(subjects) if shard else list(subjects)
        self.patch_size = np.asarray(parse_patch_size(patch_size, "patch_size"))
        margin = np.broadcast_to(np.asarray(augment_margin, dtype=int), (3,))
        if np.any(margin < 0):
            raise ValueError(f"augment_margin must be >= 0, got {augment_margin}")
        self.margin = margin.copy()
        self.roi = roi
        self.roi_fraction = float(roi_fraction) if roi else 0.0
        self.length = int(length)
        self.seed = int(seed)
        self.augment = augment
        self._spatial, self._intensity = split_augment(augment)
        self.modality_dropout = float(modality_dropout)
        self.min_modalities = int(min_modalities)
        if modality_subsets:
            self.modality_subsets = tuple(modality_subsets)
        else:
            fallback = RANDOM if self.modality_dropout > 0 else ALL
            self.modality_subsets = (ModalitySubset(fallback, None, 1.0),)
        self.clean_target = bool(clean_target)
        self.views = views
        self.view_overlap = check_view_overlap(view_overlap, self.patch_size)
        self.view_augment = view_augment
        self.epoch = 0
        roi_labels = np.asarray(region_group_indices(roi), dtype=np.uint8) if roi else None
        # ROI voxels as int32 flat indices, once per subject (empty: fall back to brain voxels)
        self.roi_voxels: list[np.ndarray] = []
        for subject in self.subjects:
            if roi_labels is None or subject.regions is None:
                self.roi_voxels.append(np.zeros(0, np.int32))
            else:
                inside = np.isin(np.asarray(subject.regions), roi_labels)
                self.roi_voxels.append(np.flatnonzero(inside).astype(np.int32))
        self._brain_voxels: dict[int, np.ndarray] = {}
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self.resume_position: tuple[int, int] | None = None  # (epoch, first item) of a mid-epoch resume

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for plain integer indices (the :class:`EpochSampler` passes its own)."""
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, start: int) -> None:
        """Make the next :class:`EpochSampler` pass serve epoch ``epoch`` from item ``start`` on (a resume).

        Args:
            epoch: the epoch the resumed run continues in (also becomes this dataset's epoch). The next
                pass uses it even if its sampler was built earlier or iterates before Lightning's
                ``set_epoch`` (DataLoader workers prefetch at iterator creation).
            start: items of that epoch this process already consumed (under DDP: of its own share);
                0 resumes at the epoch's start.
        """
        if epoch < 0 or start < 0:
            raise ValueError(f"epoch and start must be >= 0, got {epoch}, {start}")
        self.epoch = int(epoch)
        self.resume_position = (int(epoch), int(start))

    def _subject_index(self, epoch: int, i: int) -> int:
        n = len(self.subjects)
        key = (epoch, i // n)
        if key not in self._perm_cache:
            if len(self._perm_cache) > 8:
                self._perm_cache.clear()
            self._perm_cache[key] = np.random.default_rng([self.seed, epoch, i // n, 7]).permutation(n)
        return int(self._perm_cache[key][i % n])

    def _brain_centre(self, s: int, rng: np.random.Generator) -> np.ndarray:
        brain = self.subjects[s].brain
        shape = np.asarray(brain.shape)
        for _ in range(MAX_REJECTIONS):
            voxel = rng.integers(0, shape)
            if brain[tuple(voxel)]:
                return voxel
        if s not in self._brain_voxels:  # a small brain in a large box: list its voxels once
            self._brain_voxels[s] = np.flatnonzero(np.asarray(brain)).astype(np.int32)
        voxels = self._brain_voxels[s]
        if len(voxels) == 0:
            return shape // 2
        return np.asarray(np.unravel_index(voxels[rng.integers(len(voxels))], brain.shape))

    def locate(self, index: int | tuple[int, int]) -> tuple[int, np.ndarray, bool]:
        """Where item ``index`` comes from: ``(subject index, centre voxel (3,), drawn from the ROI)``."""
        epoch, i = self._split_index(index)
        return self._locate(epoch, i, self._rng(epoch, i))

    def _split_index(self, index: int | tuple[int, int]) -> tuple[int, int]:
        if isinstance(index, tuple | list):
            epoch, i = (int(v) for v in index)
        else:
            epoch, i = self.epoch, int(index)
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} items")
        return epoch, i

    def _rng(self, epoch: int, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, epoch, i])

    def _locate(self, epoch: int, i: int, rng: np.random.Generator) -> tuple[int, np.ndarray, bool]:
        s = self._subject_index(epoch, i)
        roi_voxels = self.roi_voxels[s]
        if len(roi_voxels) and rng.random() < self.roi_fraction:
            flat = roi_voxels[rng.integers(len(roi_voxels))]
            return s, np.asarray(np.unravel_index(flat, self.subjects[s].brain.shape)), True
        return s, self._brain_centre(s, rng), False

    def _augment(
        self, image: torch.Tensor, labels: dict[str, np.ndarray], tio_affine: np.ndarray, seed: int, per_view: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """``(augmented image, clean target or None, labels)`` of one cut-out box, seeded by ``seed``."""
        fields: dict[str, tio.Image] = {B.IMAGE: tio.ScalarImage(tensor=image, affine=tio_affine)}
        for name, array in labels.items():
            fields[name] = tio.LabelMap(tensor=torch.from_numpy(array), affine=tio_affine)
        subject = tio.Subject(fields)
        target = None
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)  # CPU only: cheap
            if self._spatial is not None:
                subject = self._spatial(subject)
            if self.clean_target:
                target = cast(tio.Image, subject[B.IMAGE]).data.float().clone()
            if self._intensity is not None:
                subject = self._intensity(subject)
            if per_view and self.view_augment is not None:
                subject = self.view_augment(subject)
        image_t = cast(tio.Image, subject[B.IMAGE]).data.float()
        return image_t, target, {name: cast(tio.Image, subject[name]).data.long() for name in labels}

    def _view(self, subject: CachedSubject, centre: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        size = self.patch_size + 2 * self.margin if self._spatial is not None else self.patch_size
        lo = centre - size // 2
        image = read_box(subject.image, lo, size, fill=subject.background, dtype=np.float32)
        tio_affine = np.diag([*np.linalg.norm(subject.affine[:3, :3], axis=0), 1.0])
        labels: dict[str, np.ndarray] = {}
        for name, array in ((B.TISSUE, subject.tissue), (B.REGIONS, subject.regions)):
            if array is not None:
                labels[name] = read_box(array, lo, size, fill=0, dtype=np.int64)[None]
        acquired = np.asarray(subject.presence, dtype=bool).copy()
        two_view = self.views == 2 and self.view_augment is not None
        if self.augment is not None or two_view:
            seed = int(rng.integers(2**62))
            image_t, target, label_t = self._augment(torch.from_numpy(image), labels, tio_affine, seed, two_view)
        else:
            image_t = torch.from_numpy(image)
            target = image_t.clone() if self.clean_target else None
            label_t = {name: torch.from_numpy(array) for name, array in labels.items()}
        if tuple(image_t.shape[1:]) != tuple(self.patch_size):
            raise ValueError(f"the augmentation returned {tuple(image_t.shape[1:])}, expected the patch size")
        subset = draw_subset(self.modality_subsets, rng)
        presence = keep_modalities(subset, acquired, rng, self.modality_dropout, self.min_modalities)
        image_t[torch.from_numpy(~presence)] = 0.0  # missing and dropped modalities are zero channels
        shape = (1, *(int(n) for n in self.patch_size))
        item = {
            B.IMAGE: image_t.contiguous(),
            B.PRESENCE: torch.from_numpy(presence.astype(np.float32)),
            B.ACQUIRED: torch.from_numpy(acquired.astype(np.float32)),
            B.TISSUE: label_t.get(B.TISSUE, torch.full(shape, B.IGNORE_INDEX, dtype=torch.int64)),
            B.REGIONS: label_t.get(B.REGIONS, torch.zeros(shape, dtype=torch.int64)),
        }
        if target is not None:
            target[torch.from_numpy(~acquired)] = 0.0  # what was never acquired is never a target
            item[B.TARGET] = target.contiguous()
        return item

    def _second_centre(self, s: int, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The second view's centre: an offset with a bounded overlap, inside the brain when one is found."""
        brain = self.subjects[s].brain
        shape = np.asarray(brain.shape)
        candidate = centre
        for _ in range(8):
            candidate = centre + draw_view_offset(self.patch_size, self.view_overlap, rng)
            if np.all(candidate >= 0) and np.all(candidate < shape) and brain[tuple(candidate)]:
                return candidate
        return candidate

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        epoch, i = self._split_index(index)
        rng = self._rng(epoch, i)
        s, centre, _ = self._locate(epoch, i, rng)
        subject = self.subjects[s]
        item = self._view(subject, centre, rng)
        item[B.SUBJECT] = subject.key
        item[B.GROUP] = subject.group
        if self.views == 2:
            second = self._view(subject, self._second_centre(s, centre, rng), rng)
            item[B.IMAGE_B] = second[B.IMAGE]
            item[B.PRESENCE_B] = second[B.PRESENCE]
        return item


def _world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(DistributedSampler):
    """Yields ``(epoch, i)`` pairs: all items of the epoch in order, or under DDP this rank's share of them.

    Rank ``r`` of ``w`` takes items ``r, r + w, r + 2w, …`` (``ceil(length / w)`` of them, wrapping around
    like :class:`~torch.utils.data.DistributedSampler`'s padding), so ranks draw disjoint items. The rank
    and world size are read from ``torch.distributed`` when the sampler is used, not when it is built (a
    loader may be built before Lightning starts the process group). Being a ``DistributedSampler``,
    Lightning uses it as it is instead of wrapping it in its own, shuffling one; the items need no
    shuffle, each is already a random draw of ``(seed, epoch, i)``.

    ``set_epoch`` (called by Lightning at every epoch start) moves both this sampler and the dataset to
    the new epoch; the pairs carry it into persistent worker processes. A pending
    :meth:`PatchDataset.resume_at` position sets the next pass's epoch and rotates this rank's share to
    start there.
    """

    def __init__(self, dataset: PatchDataset) -> None:  # no DistributedSampler.__init__: the world is read later
        self.dataset = dataset
        self.patches = dataset
        self.epoch = dataset.epoch
        self.shuffle, self.drop_last, self.seed = False, False, 0
        self.rank, self.num_replicas = _world()

    def _refresh(self) -> None:
        """Read this process's rank and the world size from ``torch.distributed`` now."""
        self.rank, self.num_replicas = _world()

    def set_epoch(self, epoch: int) -> None:
        """Draw epoch ``epoch``'s items next."""
        self.epoch = int(epoch)
        self.patches.set_epoch(epoch)

    def __len__(self) -> int:
        self._refresh()
        return -(-len(self.patches) // self.num_replicas)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        share = len(self)
        rank, world, n = self.rank, self.num_replicas, len(self.patches)
        epoch, start = self.epoch, 0
        position = getattr(self.patches, "resume_position", None)
        if position is not None:  # the first pass after a resume; later passes start at their first item
            epoch, start = position
            self.epoch, self.patches.resume_position = epoch, None
        items = [(rank + world * k) % n for k in range(share)]
        start %= share
        return iter([(epoch, i) for i in items[start:] + items[:start]])
