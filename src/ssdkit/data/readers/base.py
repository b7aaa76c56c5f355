"""What every reader returns (:class:`AnnotatedDataset`) and the helpers readers share."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ssdkit.data.image import IMAGE_EXTENSIONS, image_size, load_image
from ssdkit.data.sample import Problem, Sample
from ssdkit.errors import DataError
from ssdkit.safeio import read_text

__all__ = [
    "MAX_CLASS_ID",
    "parse_class_id",
    "parse_numbers",
    "AnnotatedDataset",
    "resolve_classes",
    "make_sample",
    "read_image_size",
    "error_reason",
    "drop_duplicate_ids",
    "ImageIndex",
]


@dataclass
class AnnotatedDataset:
    """A dataset read from annotation files; implements :class:`ssdkit.data.sample.DetectionSource`.

    Attributes:
        class_names: object class names, index = label (0-based; background is not listed).
        samples: one :class:`Sample` per usable image, annotations only (boxes xyxy float pixels).
        problems: everything the reader skipped or had to guess, one :class:`Problem` each.
        root: the dataset root the reader was given (a directory or an annotation file).
        format: ``"voc" | "coco" | "yolo" | "listfile" | "vedai"``.
        extra: format-specific metadata, e.g. COCO's ``label_to_category_id``.
    """

    class_names: tuple[str, ...]
    samples: list[Sample]
    problems: list[Problem] = field(default_factory=list)
    root: Path | None = None
    format: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def sample(self, index: int) -> Sample:
        """Annotations of image ``index`` (no pixel I/O)."""
        return self.samples[index]

    def load_image(self, index: int) -> torch.Tensor:
        """``Tensor[3, H, W]`` uint8 RGB of image ``index``, EXIF applied; ``H, W`` equal the sample's.

        Raises:
            DataError: the image is unreadable, or its size differs from the annotation's (boxes would be
                misplaced; ``ssdkit check`` lists all such images).
        """
        s = self.samples[index]
        if s.image_path is None:
            raise DataError(f"{self.root}: sample {s.image_id} has no image file")
        img = load_image(s.image_path)
        if img.shape[1] != s.height or img.shape[2] != s.width:
            raise DataError(
                f"{s.image_path}: image is {img.shape[2]}x{img.shape[1]} (WxH) but its annotation says "
                f"{s.width}x{s.height}"
            )
        return img

    def __repr__(self) -> str:
        return (
            f"AnnotatedDataset(format={self.format!r}, root={str(self.root)!r}, images={len(self.samples)}, "
            f"classes={len(self.class_names)}, problems={len(self.problems)})"
        )


def resolve_classes(classes: Sequence[str] | str | os.PathLike | None) -> tuple[str, ...] | None:
    """``classes=`` argument of every reader: ``None``, a sequence of names, or a names file (one per line).

    Blank lines and lines starting with ``#`` in a names file are skipped.
    """
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        path = Path(classes)
        if not path.is_file():
            raise DataError(f"classes: {path} is not a file (give a names file, one class per line, or a list)")
        names = read_names_file(path)
    else:
        names = tuple(str(c).strip() for c in classes)
    if not names:
        raise DataError(f"classes: no class names given ({classes!r})")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"classes: duplicate class names {dupes}")
    return names


def read_names_file(path: Path) -> tuple[str, ...]:
    """Class names from a text file, one per line (``classes.txt``, ``obj.names``, ``labels.txt``)."""
    lines = read_text(path, "class names file", DataError).splitlines()
    names = tuple(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))
    if len(names) > MAX_CLASS_ID + 1:
        raise DataError(f"{path}: {len(names)} class names; at most {MAX_CLASS_ID + 1} are supported")
    return names


#: Largest class id a label file may use: a typo like ``1e8`` must not size a class list of 10^8 names.
MAX_CLASS_ID = 9999


def parse_numbers(parts: Sequence[str]) -> list[float] | None:
    """The tokens as finite floats, or None when one is not a number or not finite (NaN, inf)."""
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        return None
    return vals if all(math.isfinite(v) for v in vals) else None


def parse_class_id(token: str) -> int | str:
    """A label file's class id token -> the id, or the reason it is not one (an integer in 0..MAX_CLASS_ID)."""
    try:
        value = float(token)
    except ValueError:
        return f"class id {token!r} is not a number"
    if not math.isfinite(value) or value != int(value) or value < 0:
        return f"class id {token!r} is not a non-negative integer"
    if value > MAX_CLASS_ID:
        return f"class id {token!r} is larger than {MAX_CLASS_ID}"
    return int(value)


def make_sample(
    image_id: str,
    image_path: str | os.PathLike | None,
    width: int,
    height: int,
    boxes: list[list[float]],
    labels: list[int],
    ignore: list[bool] | None,
    class_names: tuple[str, ...],
    **extra,
) -> Sample:
    """Build a :class:`Sample` from Python lists; ``boxes`` are ``[M][4]`` xyxy pixels (M may be 0)."""
    return Sample(
        image_id=image_id,
        image_path=None if image_path is None else os.fspath(image_path),
        width=int(width),
        height=int(height),
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels=torch.tensor(labels, dtype=torch.int64),
        ignore=torch.tensor(ignore if ignore is not None else [False] * len(labels), dtype=torch.bool),
        class_names=class_names,
        extra=dict(extra),
    )


def error_reason(err: DataError, path: str | os.PathLike) -> str:
    """``err``'s message without its leading ``"<path>: "``, for a :class:`Problem` whose ``file`` names ``path``."""
    return str(err).removeprefix(f"{os.fspath(path)}: ")


def read_image_size(
    image_path: Path, problems: list[Problem], file: str | None = None, element: str = ""
) -> tuple[int, int] | None:
    """``(width, height)`` from ``image_path``'s header, or None after adding one :class:`Problem` to ``problems``.

    The problem is ``missing_image`` when the file is gone, else ``unreadable``; it is filed under ``file`` and
    ``element`` (default: the image itself, and then its message does not repeat the path).
    """
    try:
        return image_size(image_path)
    except DataError as e:
        kind = "unreadable" if image_path.exists() else "missing_image"
        if file is None:
            file, reason = str(image_path), error_reason(e, image_path)
        else:
            reason = str(e)
        problems.append(Problem(file, element, f"{reason}; skipped", kind))
        return None


def drop_duplicate_ids(samples: list[Sample], problems: list[Problem]) -> list[Sample]:
    """Keep the first sample of each ``image_id``; report the others as ``duplicate_id`` problems."""
    seen: dict[str, Sample] = {}
    kept = []
    for s in samples:
        first = seen.get(s.image_id)
        if first is not None:
            problems.append(
                Problem(
                    file=str(s.extra.get("annotation_path") or s.image_path),
                    element=f"image {s.image_id}",
                    message=f"duplicate image id (first seen for {first.image_path}); skipped",
                    kind="duplicate_id",
                )
            )
            continue
        seen[s.image_id] = s
        kept.append(s)
    return kept


class ImageIndex:
    """Finds an image by stem in a few directories with one ``listdir`` each (not one ``stat`` per guess).

    Extensions are matched case-insensitively (``.JPG``, ``.Png``); when several files share a stem, the
    first extension in :data:`ssdkit.data.image.IMAGE_EXTENSIONS` wins.
    """

    def __init__(self, dirs: Sequence[Path]):
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        rank: dict[str, int] = {}
        for d in dirs:
            if not d.is_dir():
                continue
            for entry in sorted(os.scandir(d), key=lambda e: e.name):
                if not entry.is_file():
                    continue
                stem, ext = os.path.splitext(entry.name)
                self.by_name.setdefault(entry.name, Path(entry.path))
                ext = ext.lower()
                if ext not in IMAGE_EXTENSIONS:
                    continue
                r = IMAGE_EXTENSIONS.index(ext)
                if stem not in self.by_stem or r < rank[stem]:
                    # earlier directories win over later ones, whatever the extension
                    if stem in self.by_stem and self.by_stem[stem].parent != Path(entry.path).parent:
                        continue
                    self.by_stem[stem] = Path(entry.path)
                    rank[stem] = r

    def find(self, stem: str, filename: str | None = None) -> Path | None:
        """The image whose stem is ``stem``; else the file named ``filename`` (a tool's ``<filename>``)."""
        hit = self.by_stem.get(stem)
        if hit is None and filename:
            hit = self.by_name.get(os.path.basename(filename))
        return hit
