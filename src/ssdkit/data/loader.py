"""Dataset wrapper, collate and DataLoader construction.

Augmentation randomness is a function of ``(seed, epoch, index)`` only: every item gets its own
``torch.Generator`` seeded from those three numbers, and the epoch travels with the index from the sampler
(which runs in the main process) to the workers. So a run gives the same batches with 0, 2 or 8 workers, with
persistent workers, and after resuming at an epoch.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler

from ssdkit.data.sample import DetectionSource

__all__ = ["DetectionDataset", "DetectionLoader", "collate", "make_loader", "item_seed"]

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed from ``(seed, epoch, index)`` (nearby triples give unrelated streams)."""
    h = _splitmix64(int(seed) & _MASK64)
    h = _splitmix64(h ^ (int(epoch) & _MASK64))
    h = _splitmix64(h ^ (int(index) & _MASK64))
    return h >> 1


class DetectionDataset(Dataset):
    """A :class:`DetectionSource` + a joint transform, as a torch ``Dataset``.

    Args:
        source: the annotations and images (``sample(i)``, ``load_image(i)``).
        transform: ``(image, boxes, labels, ignore, generator=...) -> (image, boxes, labels, ignore)``, e.g.
            :class:`~ssdkit.data.transforms.SSDTrainTransform`; ``None`` passes the image and boxes unchanged.
        seed: augmentation seed; item ``i`` of epoch ``e`` draws from a generator seeded by ``(seed, e, i)``.

    ``dataset[i]`` (or ``dataset[(i, epoch)]``, as :func:`make_loader`'s sampler asks) is
    ``(image Tensor[3, S, S] uint8, target)`` with ``target`` a dict: ``boxes`` ``Tensor[M, 4]`` float32 xyxy
    output pixels, ``labels`` ``Tensor[M]`` int64 (0-based), ``ignore`` ``Tensor[M]`` bool, ``image_id`` str,
    ``orig_size`` ``(h, w)``, ``index`` int. An image that fails to load is reported once (``warnings.warn``
    naming the file) and the item is ``None``, which :func:`collate` drops.
    """

    def __init__(self, source: DetectionSource, transform: Callable | None = None, seed: int = 0) -> None:
        self.source = source
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0
        self._reported: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        """Epoch used by plain integer indexing (the loader's sampler passes its own epoch with each index)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.source.class_names)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]] | None:
        index, epoch = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), self.epoch)
        sample = self.source.sample(index)
        try:
            image = self.source.load_image(index)
        except (OSError, ValueError, RuntimeError) as e:  # DataError is a ValueError; PIL raises OSError
            if index not in self._reported:
                self._reported.add(index)
                where = sample.image_path or sample.image_id
                warnings.warn(f"{where}: skipped, image cannot be loaded ({e})", RuntimeWarning, stacklevel=2)
            return None
        boxes, labels, ignore = sample.boxes, sample.labels, sample.ignore
        if self.transform is not None:
            generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, index))
            image, boxes, labels, ignore = self.transform(image, boxes, labels, ignore, generator=generator)
        target = {
            "boxes": boxes,
            "labels": labels,
            "ignore": ignore,
            "image_id": sample.image_id,
            "orig_size": (sample.height, sample.width),
            "index": index,
        }
        return image, target


def collate(batch: list) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Stack dataset items, dropping ``None`` (unloadable images).

    Returns:
        ``images`` ``Tensor[N, 3, S, S]`` uint8 and the list of ``N`` target dicts. When every image is stored
        channels-last (``H x W x 3`` memory, as decoders and the transforms produce), the batch is stacked in
        ``torch.channels_last`` memory format, which skips a transpose here; :func:`ssdkit.data.transforms.normalize`
        returns a contiguous float batch either way. An all-``None`` batch gives ``Tensor[0, 3, 0, 0]`` and ``[]``.
    """
    items = [item for item in batch if item is not None]
    if not items:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8), []
    images = [image for image, _ in items]
    if all(im.dim() == 3 and im.stride(0) == 1 and im.shape[0] > 1 for im in images):
        stacked = torch.stack([im.permute(1, 2, 0) for im in images]).permute(0, 3, 1, 2)
    else:
        stacked = torch.stack(images)
    return stacked, [target for _, target in items]


class _EpochSampler(Sampler):
    """Yields ``(index, epoch)``; the order is a function of ``(seed, epoch)`` (and rank when distributed).

    Each ``iter()`` uses the current epoch and then advances it, so a loop over epochs gets fresh shuffles and
    augmentations without calling :meth:`DetectionLoader.set_epoch`; calling it pins the next epoch.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, distributed: DistributedSampler | None) -> None:
        self.size, self.shuffle, self.seed, self.distributed = size, shuffle, seed, distributed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.distributed) if self.distributed is not None else self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.distributed is not None:
            self.distributed.set_epoch(epoch)
            order = list(self.distributed)
        elif self.shuffle:
            gen = torch.Generator().manual_seed(item_seed(self.seed, epoch, -1))
            order = torch.randperm(self.size, generator=gen).tolist()
        else:
            order = range(self.size)
        for index in order:
            yield index, epoch


class DetectionLoader(DataLoader):
    """A ``DataLoader`` with :meth:`set_epoch` (see :func:`make_loader`)."""

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (shuffle order and augmentation); later passes count up from it."""
        self.batch_sampler.sampler.epoch = int(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        """The epoch the next pass will use."""
        return self.batch_sampler.sampler.epoch


def _worker_init(worker_id: int) -> None:
    # Items seed their own generators; this only keeps stray global-RNG users apart and the worker single-threaded.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


def make_loader(
    dataset: DetectionDataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    distributed: bool = False,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
) -> DetectionLoader:
    """A loader of ``(images Tensor[N, 3, S, S] uint8, targets list[dict])`` batches (see :func:`collate`).

    Shuffle order and augmentation depend only on ``(seed, epoch, index)``, not on ``num_workers``. With
    ``distributed`` each process reads its ``DistributedSampler`` shard (world size and rank from
    ``ignite.distributed``; ``drop_last`` applies to the shards too). ``pin_memory`` and
    ``persistent_workers`` default to on when ``num_workers > 0`` (pinning only with CUDA available).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size!r}")
    if num_workers < 0:
        raise ValueError(f"num_workers: must be >= 0, got {num_workers!r}")
    if isinstance(dataset, DetectionDataset):
        dataset.seed = int(seed)
    dist_sampler = None
    if distributed:
        import ignite.distributed as idist

        dist_sampler = DistributedSampler(
            dataset,
            num_replicas=idist.get_world_size(),
            rank=idist.get_rank(),
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
    sampler = _EpochSampler(len(dataset), shuffle, seed, dist_sampler)
    workers = num_workers > 0
    return DetectionLoader(
        dataset,
        batch_sampler=BatchSampler(sampler, batch_size, drop_last),
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=(workers and torch.cuda.is_available()) if pin_memory is None else pin_memory,
        persistent_workers=workers if persistent_workers is None else persistent_workers,
        worker_init_fn=_worker_init if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )
