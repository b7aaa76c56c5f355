"""The loaders of a run from a :class:`~ssdkit.config.Config`: the one place the trainer and evaluator get batches.

``build_loaders`` makes the training and validation loaders of a run (sources from
:func:`ssdkit.data.sources.build_source`), aware of the process's rank when distributed.

Loader contract (from :mod:`ssdkit.data.loader`): batches are ``(images Tensor[B, 3, S, S] uint8, targets)``
with per-image target dicts (``boxes [M, 4]`` float32 xyxy input pixels, ``labels [M]`` 0-based, ``ignore [M]``,
``image_id``, ``orig_size (h, w)``, ``index``). Shuffle order and augmentation are functions of
``(seed, epoch, index)``, so a resumed run sees the same batches; :func:`set_loader_position` starts a pass at
any batch of any epoch without loading the skipped images.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import Sampler

from ssdkit.choices import SHAPES
from ssdkit.config import Config
from ssdkit.data.loader import DetectionDataset, DetectionLoader, make_loader
from ssdkit.data.sources import SanitizedSource, ShardSource, build_source
from ssdkit.engine.interrupt import IgnoreSigintInWorkers
from ssdkit.errors import ConfigError, DataError

__all__ = ["Loaders", "build_loaders", "set_loader_position", "train_fill"]


class _ResumableBatchSampler(Sampler):
    """Wraps a ``BatchSampler``; the next pass starts ``skip`` batches in (index lists only, no image loading)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.skip = 0

    @property
    def sampler(self):  # DetectionLoader.set_epoch reaches the epoch sampler through this
        return self.inner.sampler

    @property
    def batch_size(self) -> int:
        return self.inner.batch_size

    @property
    def drop_last(self) -> bool:
        return self.inner.drop_last

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list]:
        skip, self.skip = self.skip, 0
        it = iter(self.inner)
        for _ in range(skip):
            if next(it, None) is None:
                return
        yield from it


def _resumable(loader: DetectionLoader) -> DetectionLoader:
    """The same loader with a batch sampler that can start mid-epoch (see :func:`set_loader_position`)."""
    kwargs = dict(
        batch_sampler=_ResumableBatchSampler(loader.batch_sampler),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        # workers ignore Ctrl-C: the main process stops the run cleanly (ssdkit.engine.interrupt)
        worker_init_fn=IgnoreSigintInWorkers(loader.worker_init_fn) if loader.num_workers > 0 else None,
        generator=loader.generator,
    )
    if loader.num_workers > 0:
        kwargs["persistent_workers"] = loader.persistent_workers
    return type(loader)(loader.dataset, **kwargs)


def set_loader_position(loader: DetectionLoader, epoch: int, skip_batches: int = 0) -> None:
    """Make the next pass over ``loader`` epoch ``epoch`` (0-based) starting at batch ``skip_batches``.

    The skipped batches' indices are drawn (so the order is exactly the uninterrupted one) but their images
    are never loaded. ``loader`` must come from :func:`build_loaders` for ``skip_batches > 0``.
    """
    loader.set_epoch(epoch)
    if skip_batches:
        if not isinstance(loader.batch_sampler, _ResumableBatchSampler):
            raise TypeError("set_loader_position: skip_batches needs a loader made by build_loaders")
        loader.batch_sampler.skip = int(skip_batches)


def train_fill(cfg: Config) -> tuple[int, int, int]:
    """The zoom-out canvas colour: the model's input mean in RGB pixels."""
    mean = cfg.model.mean[::-1] if cfg.model.channel_order == "bgr" else cfg.model.mean
    return tuple(int(round(255 * m)) for m in mean)  # type: ignore[return-value]


@dataclass
class Loaders:
    """What :func:`build_loaders` returns.

    ``train_source`` is sanitized (the training box policy); ``val_source`` is the full validation set as read
    (ground truth of record) and ``val_loader`` reads this process's shard of it when distributed.
    ``reader_problems`` are what the training set's reader reported (unreadable files, unknown classes, ...).

    Every training batch holds ``per_process_batch_size`` indices (``drop_last`` on the shards and the batches:
    no short last batch, whatever ``N % batch_size``); only images that fail to load make a batch smaller
    (the training step skips one too small for BatchNorm).
    """

    train_loader: DetectionLoader
    val_loader: DetectionLoader | None
    class_names: tuple[str, ...]
    train_source: SanitizedSource
    val_source: object | None
    per_process_batch_size: int
    reader_problems: list = field(default_factory=list)
    tile: object | None = None  # the TileSpec of tiled training: validation then runs tiled on whole images

    @property
    def val_pixel_offset(self) -> bool:
        """Whether validation boxes use the VOC devkit's ``+1`` widths (VOC's integer boxes)."""
        return getattr(self.val_source, "format", "") == "voc"


def build_loaders(cfg: Config, distributed: bool | None = None, with_val: bool = True) -> Loaders:
    """Training and validation loaders of a run.

    Args:
        cfg: the run config; ``train.batch_size`` is the global batch (divided among processes).
        distributed: shard the data among ``ignite.distributed`` processes; ``None`` = when world size > 1.
        with_val: also build the validation loader (``data.val``; skipped when it is empty/None).

    Raises:
        ConfigError: ``model.num_classes`` does not fit the data's class list, or ``train.batch_size`` does not
            fit the world size or the dataset.
        DataError: a dataset cannot be read (the reader's message).
    """
    import ignite.distributed as idist

    from ssdkit.data.preprocess import SSDEvalTransform
    from ssdkit.data.transforms import SSDTrainTransform

    world = idist.get_world_size()
    rank = idist.get_rank()
    if distributed is None:
        distributed = world > 1
    d, t = cfg.data, cfg.train
    if t.batch_size % (world if distributed else 1):
        raise ConfigError(f"train.batch_size: {t.batch_size} is not divisible by the {world} processes")
    batch = t.batch_size // (world if distributed else 1)

    raw_train = build_source(d.train, d, d.train_split)
    reader_problems = list(getattr(raw_train, "problems", ()))
    held_out = None
    if d.holdout_fraction > 0:  # a seeded share of the training images validates; the rest trains
        n = len(raw_train)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(d.holdout_seed)).tolist()
        k = max(1, round(n * d.holdout_fraction))
        if n - k < 1:
            raise ConfigError(f"data.holdout_fraction: {d.holdout_fraction} leaves no training image of {n}")
        held_out = ShardSource(raw_train, sorted(order[:k]))
        raw_train = ShardSource(raw_train, sorted(order[k:]))
    if d.strict and reader_problems:
        raise DataError(f"data.strict: {len(reader_problems)} problem(s) in the training data {d.train!r} (first: "
                        f"{reader_problems[0]}); fix them or set data.strict=false to skip what cannot be read")
    train_source = SanitizedSource(raw_train, strict=d.strict)
    if d.strict:
        train_source.scan()  # the box policy's fixes are errors too: fail now, not mid-epoch
    tile = None
    if d.tile_size is not None:
        from ssdkit.data.tiles import TileSpec
        from ssdkit.data.window_source import WindowSource

        tile = TileSpec(size=d.tile_size, overlap=d.tile_overlap)
        train_source = WindowSource(train_source, tile, min_visible=d.tile_min_visible, cut=d.tile_cut,
                                    empty_fraction=d.tile_empty_fraction, seed=t.seed)
    class_names = tuple(train_source.class_names)
    if cfg.model.num_classes != len(class_names) + 1:
        raise ConfigError(
            f"model.num_classes: {cfg.model.num_classes} but the training data {d.train!r} has {len(class_names)} "
            f"classes ({', '.join(class_names[:5])}{', ...' if len(class_names) > 5 else ''}); "
            f"set model.num_classes={len(class_names) + 1} (classes + background)"
        )
    shards = world if distributed else 1
    if len(train_source) < batch * shards:  # each process's shard must fill one batch
        raise ConfigError(
            f"train.batch_size: {t.batch_size} ({batch} per process) is larger than the {len(train_source)} "
            f"training images of {d.train!r}"
        )
    size = cfg.model.input_size
    if d.augment:
        transform = SSDTrainTransform(size, fill=train_fill(cfg), max_expand=d.zoom_out, expand_p=0.5 if
                                      d.zoom_out > 1 else 0.0, min_scale=d.crop_min_scale, photometric=d.photometric)
    else:
        transform = SSDEvalTransform(size)
    train_loader = make_loader(
        DetectionDataset(train_source, transform),
        batch_size=batch,
        shuffle=True,
        num_workers=d.num_workers,
        seed=t.seed,
        drop_last=True,  # equal batches: BatchNorm statistics and per-iteration LR schedule stay comparable
        distributed=distributed,
    )
    train_loader = _resumable(train_loader)

    val_loader, val_source = None, None
    if with_val and (d.val or held_out is not None):
        val_source = held_out if held_out is not None else build_source(
            d.val, d, d.val_split, classes=None if d.val == SHAPES else class_names)
        if tuple(val_source.class_names) != class_names:
            raise DataError(
                f"{d.val}: validation classes {list(val_source.class_names)} differ from the training classes "
                f"{list(class_names)}"
            )
        shard = ShardSource(val_source, range(rank, len(val_source), world)) if distributed else val_source
        if tile is not None:  # tiled training validates as it will be used: tiled, on the whole images
            from ssdkit.engine.evaluate import tiled_loader

            val_loader = tiled_loader(shard, t.eval_batch_size or batch, num_workers=d.num_workers)
        else:
            val_loader = make_loader(
                DetectionDataset(shard, SSDEvalTransform(size)),
                batch_size=t.eval_batch_size or batch,
                shuffle=False,
                num_workers=d.num_workers,
                seed=t.seed,
            )
    return Loaders(train_loader, val_loader, class_names, train_source, val_source, batch, reader_problems, tile)
