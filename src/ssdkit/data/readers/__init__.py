"""Dataset readers: one format per module, each returning an :class:`AnnotatedDataset`.

``read_dataset`` picks the reader from the path (or ``format=``):

==========  ================================================================================
format      recognised by
==========  ================================================================================
voc         a folder with ``Annotations/``, or a ``VOCdevkit`` holding ``VOC*/Annotations/``
coco        a ``.json`` file, or a folder with ``annotations/instances_*.json``
yolo        a ``.yaml``/``.yml`` data file, or a folder with ``labels/``
listfile    a ``.txt`` whose lines are ``path x1 y1 x2 y2 label ...`` (torchcv)
vedai       a folder with ``Annotations512/`` or ``Annotations1024/``
==========  ================================================================================
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ssdkit.data.readers.base import AnnotatedDataset, resolve_classes
from ssdkit.data.readers.coco import read_coco
from ssdkit.data.readers.listfile import looks_like_listfile, read_listfile
from ssdkit.data.readers.vedai import VEDAI_CLASSES, is_vedai_dir, read_vedai
from ssdkit.data.readers.voc import VOC_CLASSES, is_voc_dir, is_vocdevkit_dir, read_voc
from ssdkit.data.readers.yolo import is_yolo_dir, read_yolo
from ssdkit.errors import DataError

__all__ = [
    "FORMATS",
    "AnnotatedDataset",
    "VEDAI_CLASSES",
    "VOC_CLASSES",
    "detect_format",
    "read_coco",
    "read_dataset",
    "read_listfile",
    "read_vedai",
    "read_voc",
    "read_yolo",
    "resolve_classes",
]

FORMATS = ("voc", "coco", "yolo", "listfile", "vedai")


def detect_format(path: str | os.PathLike) -> str:
    """The format name of ``path`` (see the module table).

    Raises:
        DataError: nothing recognisable; the message lists what was looked for.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        suffix = p.suffix.lower()
        if suffix == ".json":
            return "coco"
        if suffix in (".yaml", ".yml"):
            return "yolo"
        if looks_like_listfile(p):
            return "listfile"
    else:
        if is_voc_dir(p) or is_vocdevkit_dir(p):
            return "voc"
        if is_vedai_dir(p):
            return "vedai"
        if any((p / "annotations").glob("instances_*.json")):
            return "coco"
        if is_yolo_dir(p):
            return "yolo"
    raise DataError(
        f"{p}: unknown dataset layout; looked for Annotations/ or VOC*/Annotations/ (voc), a .json or "
        "annotations/instances_*.json (coco), a .yaml or a labels/ folder (yolo), a .txt of "
        "'path x1 y1 x2 y2 label ...' lines (listfile), Annotations512/ (vedai); pass format= to force one"
    )


def read_dataset(
    path: str | os.PathLike,
    format: str | None = None,
    split: str | None = None,
    classes: Sequence[str] | str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
) -> AnnotatedDataset:
    """Read any supported dataset.

    Args:
        path: dataset folder or annotation file.
        format: ``"voc" | "coco" | "yolo" | "listfile" | "vedai"``; ``None`` = :func:`detect_format`.
        split: split name in that format's sense (VOC ``trainval``, COCO ``val2017``, YOLO ``val``,
            VEDAI ``fold01``); ignored by listfile.
        classes: class names, as a list or a names file (one per line); VEDAI has fixed classes.
        root: image folder for formats whose image paths are relative (coco, listfile).

    Returns:
        :class:`AnnotatedDataset`: boxes xyxy float pixels, labels 0-based, ``problems`` listing what
        was skipped.
    """
    fmt = format or detect_format(path)
    if fmt == "voc":
        return read_voc(path, split=split, classes=classes)
    if fmt == "coco":
        return read_coco(path, split=split, classes=classes, root=root)
    if fmt == "yolo":
        return read_yolo(path, split=split, classes=classes)
    if fmt == "listfile":
        return read_listfile(path, classes=classes, root=root)
    if fmt == "vedai":
        if classes is not None:
            raise DataError(f"classes: VEDAI has fixed classes {VEDAI_CLASSES}; leave classes unset")
        return read_vedai(path, split=split)
    raise DataError(f"format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
