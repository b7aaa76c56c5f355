"""torchcv list files (kuangliu/torchcv ``voc07_trainval.txt`` style).

One image per line::

    relative/path.jpg x1 y1 x2 y2 label x1 y1 x2 y2 label ...

Boxes are xyxy pixels as written, labels 0-based ints. Paths are relative to ``root=`` or, by default, the
list file's folder; they may not contain spaces (the format splits on whitespace). ``image_id`` is the path
as written, without extension.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ssdkit.data.image import IMAGE_EXTENSIONS
from ssdkit.data.readers.base import (
    AnnotatedDataset,
    drop_duplicate_ids,
    make_sample,
    parse_class_id,
    parse_numbers,
    read_image_size,
    resolve_classes,
)
from ssdkit.data.sample import Problem
from ssdkit.errors import DataError
from ssdkit.safeio import read_text

__all__ = ["read_listfile", "looks_like_listfile"]


def looks_like_listfile(path: Path) -> bool:
    """A ``.txt`` whose first non-empty line starts with an image path followed by a multiple of 5 numbers."""
    if not (path.is_file() and path.suffix.lower() == ".txt"):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if parts:
                    return Path(parts[0]).suffix.lower() in IMAGE_EXTENSIONS and (len(parts) - 1) % 5 == 0
    except (OSError, UnicodeDecodeError):
        return False
    return False


def read_listfile(
    path: str | os.PathLike,
    classes: Sequence[str] | str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
) -> AnnotatedDataset:
    """Read a torchcv list file.

    Args:
        path: the ``.txt`` list.
        classes: class names (list or names file); default ``class0`` ... ``class<max label>``.
        root: folder the image paths are relative to (default: the list file's folder).
    """
    path = Path(path)
    lines = read_text(path, "list file", DataError).splitlines()
    image_root = Path(root) if root is not None else path.parent
    file = str(path)
    problems: list[Problem] = []
    records = []
    for line_no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {line_no}"
        rel, nums = parts[0], parts[1:]
        if len(nums) % 5:
            problems.append(
                Problem(
                    file,
                    where,
                    f"{len(nums)} numbers after the path, not a multiple of 5 (x1 y1 x2 y2 label); line skipped",
                    "parse_error",
                )
            )
            continue
        boxes = parse_numbers([v for i, v in enumerate(nums) if i % 5 != 4])
        ids = [parse_class_id(v) for v in nums[4::5]]
        if boxes is None:
            problems.append(Problem(file, where, "non-numeric or non-finite box value; line skipped", "parse_error"))
            continue
        bad = next((r for r in ids if isinstance(r, str)), None)
        if bad is not None:
            problems.append(Problem(file, where, f"{bad.replace('class id', 'label')}; line skipped", "parse_error"))
            continue
        objs = [[*boxes[4 * i:4 * i + 4], ids[i]] for i in range(len(ids))]
        image_path = image_root / rel
        if not image_path.is_file():
            problems.append(Problem(file, where, f"image {image_path} not found; skipped", "missing_image"))
            continue
        size = read_image_size(image_path, problems, file, where)
        if size is None:
            continue
        width, height = size
        records.append((line_no, rel, image_path, width, height, objs))

    names = resolve_classes(classes)
    if names is None:
        max_label = max((int(o[4]) for *_, objs in records for o in objs), default=-1)
        names = tuple(f"class{i}" for i in range(max_label + 1))
    samples = []
    for line_no, rel, image_path, width, height, objs in records:
        boxes, labels = [], []
        for k, o in enumerate(objs):
            if int(o[4]) >= len(names):
                problems.append(
                    Problem(
                        file,
                        f"line {line_no} object {k}",
                        f"label {int(o[4])} >= number of classes {len(names)}; object skipped",
                        "unknown_class",
                    )
                )
                continue
            boxes.append(o[:4])
            labels.append(int(o[4]))
        samples.append(
            make_sample(
                os.path.splitext(rel)[0],
                image_path,
                width,
                height,
                boxes,
                labels,
                None,
                names,
                annotation_path=f"{file}:{line_no}",
            )
        )
    samples = drop_duplicate_ids(samples, problems)
    return AnnotatedDataset(names, samples, problems, root=path, format="listfile")
