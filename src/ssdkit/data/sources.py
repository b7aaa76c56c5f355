"""Data sources from a data spec: the one place a dataset is opened by name or path.

:func:`build_source` turns ``"shapes"`` or a dataset path (any format) into a
:class:`~ssdkit.data.sample.DetectionSource`; :class:`SanitizedSource` applies the training box policy and
:class:`ShardSource` takes a process's shard. Training, evaluation, ``check-data`` and ``anchors`` all open data here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ssdkit.choices import SHAPES, data_format
from ssdkit.config import DataConfig
from ssdkit.data.check import sanitize_sample
from ssdkit.data.sample import Problem, Sample
from ssdkit.errors import DataError

__all__ = ["SHAPES", "SanitizedSource", "ShardSource", "build_source"]

logger = logging.getLogger("ssdkit.data")

# Splits that select the shapes training images; any other split name selects the validation images.
_SHAPES_TRAIN_SPLITS = (None, "train", "trainval")
# The shapes validation images use a different dataset seed than the training ones, so they are new images.
_SHAPES_VAL_SEED_OFFSET = 1_000_003


def build_source(
    spec: str,
    data_cfg: DataConfig | None = None,
    split: str | None = None,
    format: str | None = None,
    classes: Sequence[str] | str | None = None,
):
    """A dataset from a data spec.

    Args:
        spec: ``"shapes"`` (the built-in synthetic set, sized and seeded by ``data_cfg.shapes_*``; ``classes``
            picks a subset of its shapes) or a dataset
            path for :func:`ssdkit.data.readers.read_dataset` (VOC dir, COCO json, YOLO yaml/dir, list file,
            VEDAI dir).
        data_cfg: the run's data config (format and classes default to it); ``None`` = :class:`DataConfig`.
        split: split name in the format's sense (VOC ``trainval``/``test``, COCO ``val2017``, ...). For shapes,
            ``None``/``"train"``/``"trainval"`` give the ``shapes_train_count`` training images and any other
            name (``"val"``, ``"test"``) the ``shapes_val_count`` validation images.
        format: force a reader (``voc``, ``coco``, ``yolo``, ``listfile``/``list``, ``vedai``).
        classes: class names (list or names file); fixes the label order (pass the training names when
            reading a validation set).

    Returns:
        A :class:`~ssdkit.data.sample.DetectionSource` (``ShapesDataset`` or ``AnnotatedDataset``) with
        ``class_names``, ``sample(i)`` (boxes xyxy image pixels) and ``load_image(i)``. Boxes are as read; the
        training policy (clip, drop degenerate) is applied by :class:`SanitizedSource`.

    Raises:
        DataError: the path does not exist or cannot be read (the message names the file).
    """
    data_cfg = data_cfg or DataConfig()
    if spec == SHAPES:
        from ssdkit.data.shapes import ShapesDataset

        if split in _SHAPES_TRAIN_SPLITS:
            count, seed = data_cfg.shapes_train_count, data_cfg.shapes_seed
        else:
            count, seed = data_cfg.shapes_val_count, data_cfg.shapes_seed + _SHAPES_VAL_SEED_OFFSET
        names = classes if classes is not None else data_cfg.classes
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        kwargs = {"class_names": tuple(names)} if names else {}
        try:
            return ShapesDataset(count, seed=seed, image_size=data_cfg.shapes_image_size,
                                 min_size=data_cfg.shapes_min_size, max_size=data_cfg.shapes_max_size,
                                 min_objects=data_cfg.shapes_min_objects, max_objects=data_cfg.shapes_max_objects,
                                 **kwargs)
        except ValueError as e:
            raise DataError(f"shapes: {e} (data.classes / data.shapes_* settings)") from None
    from ssdkit.data.readers import detect_format, read_dataset

    fmt = data_format(format or data_cfg.format) or detect_format(spec)
    names = classes if classes is not None else data_cfg.classes
    if fmt == "vedai":
        names = None  # fixed classes; the reader rejects a list
    return read_dataset(spec, format=fmt, split=split, classes=list(names) if isinstance(names, tuple) else names)


class _SourceView:
    """A source read through another one, ``source``: keeps its ``class_names``, and its ``format`` and ``root``
    where it has them (reports and checkpoints name the data by them)."""

    def __init__(self, source) -> None:
        self.source = source
        self.class_names = tuple(source.class_names)
        for attr in ("format", "root"):
            if hasattr(source, attr):
                setattr(self, attr, getattr(source, attr))


class SanitizedSource(_SourceView):
    """A source whose samples follow the training box policy (:func:`ssdkit.data.check.sanitize_sample`).

    Boxes are clipped to the image and boxes under 1 px dropped, once per sample (cached); ``problems`` lists
    every fix. With ``strict`` the first problem raises :class:`~ssdkit.errors.DataError` instead.
    """

    def __init__(self, source, strict: bool = False) -> None:
        super().__init__(source)
        self.strict = bool(strict)
        self.problems: list[Problem] = []
        self._cache: dict[int, Sample] = {}

    def __len__(self) -> int:
        return len(self.source)

    def sample(self, index: int) -> Sample:
        if index not in self._cache:
            fixed, problems = sanitize_sample(self.source.sample(index), strict=self.strict)
            self.problems.extend(problems)
            self._cache[index] = fixed
        return self._cache[index]

    def load_image(self, index: int) -> torch.Tensor:
        return self.source.load_image(index)

    def scan(self) -> list[Problem]:
        """Sanitize every sample now (annotations only) and return all problems found."""
        for i in range(len(self)):
            self.sample(i)
        return self.problems


class ShardSource(_SourceView):
    """Images ``indices`` of ``source`` (e.g. ``rank::world_size``), renumbered from 0.

    Distributed evaluation reads shards without the padding of ``DistributedSampler`` (which repeats images
    and would count their ground truth twice in the mAP).
    """

    def __init__(self, source, indices: Sequence[int]) -> None:
        super().__init__(source)
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, index: int) -> Sample:
        return self.source.sample(self.indices[index])

    def load_image(self, index: int) -> torch.Tensor:
        return self.source.load_image(self.indices[index])
