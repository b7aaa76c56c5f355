"""YOLO text labels, ultralytics layout (YOLOv5/v8 data YAML, Darknet-style folders).

Layouts::

    data.yaml                      # path: ..., train: images/train, val: images/val, names: [...] or {0: ...}
    <root>/images/<split>/x.jpg    # or <root>/images/x.jpg
    <root>/labels/<split>/x.txt    # one "cls cx cy w h" line per object, normalised to [0, 1]

Conventions (as ultralytics):
    - The label of ``.../images/.../x.jpg`` is ``.../labels/.../x.txt`` (last ``/images/`` replaced);
      without an ``images`` folder the label sits next to the image.
    - No label file, or an empty one, = an image without objects.
    - A line with more than 5 values is a polygon (``cls x1 y1 x2 y2 ...``, segmentation export); its box
      is the polygon's min/max.
    - YAML ``path`` relative to the YAML's folder; ``train``/``val``/``test`` are folders of images, ``.txt``
      lists of image paths, or lists of those. ``split=None`` reads ``train``.
    - Class names: ``classes=``, else YAML ``names``, else ``classes.txt`` / ``obj.names`` in the root,
      else ``class0``, ``class1``, ... up to the largest id found.
    - ``Sample.image_id`` is the path under the images folder without extension (the stem for flat folders).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ssdkit.data.image import IMAGE_EXTENSIONS
from ssdkit.data.readers.base import (
    MAX_CLASS_ID,
    AnnotatedDataset,
    drop_duplicate_ids,
    error_reason,
    make_sample,
    parse_class_id,
    parse_numbers,
    read_image_size,
    read_names_file,
    resolve_classes,
)
from ssdkit.data.sample import Problem
from ssdkit.errors import DataError
from ssdkit.safeio import load_yaml, read_text

__all__ = ["read_yolo", "label_path_for", "is_yolo_dir"]

_NAMES_FILES = ("classes.txt", "obj.names", "classes.names", "labels.txt")


def is_yolo_dir(path: Path) -> bool:
    return path.is_dir() and (path / "labels").is_dir()


def label_path_for(image_path: Path) -> Path:
    """Ultralytics' ``img2label_paths``: ``.../images/a/b.jpg`` -> ``.../labels/a/b.txt``."""
    s = os.fspath(image_path)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        head, tail = s.rsplit(sa, 1)
        s = head + sb + tail
    return Path(os.path.splitext(s)[0] + ".txt")


def read_yolo(
    path: str | os.PathLike,
    split: str | None = None,
    classes: Sequence[str] | str | os.PathLike | None = None,
) -> AnnotatedDataset:
    """Read a YOLO dataset from a data YAML or a directory with ``images/`` and ``labels/``.

    Args:
        path: ``data.yaml`` or a dataset directory.
        split: YAML key (``"train"``, ``"val"``, ``"test"``) or ``images/<split>`` subfolder; ``None`` =
            ``train`` when the data has splits, else all images.
        classes: class names (list or names file); overrides the YAML's ``names`` and any names file.

    Returns:
        :class:`AnnotatedDataset` (format ``"yolo"``); boxes converted to xyxy pixels with the image size
        read from each image header.
    """
    path = Path(path)
    names: tuple[str, ...] | None = None
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml"):
        root, image_sources, names, base = _from_yaml(path, split)
    elif path.is_dir():
        root = path
        images_dir = path / "images" if (path / "images").is_dir() else path
        subdirs = sorted(d.name for d in images_dir.iterdir() if d.is_dir())
        if split is not None:
            if not (images_dir / split).is_dir():
                raise DataError(f"{path}: no images/{split}/ folder (found: {', '.join(subdirs) or 'none'})")
            images_dir = images_dir / split
        elif "train" in subdirs and not _list_images(images_dir, recursive=False):
            images_dir = images_dir / "train"
        image_sources, base = [images_dir], images_dir
    else:
        raise DataError(f"{path}: not a YOLO dataset (looked for a .yaml file or a folder with labels/)")

    fixed = resolve_classes(classes)
    if fixed is not None:
        names = fixed
    if names is None:
        for d in (root, root / "labels", path.parent if path.is_file() else path):
            for n in _NAMES_FILES:
                if (d / n).is_file():
                    names = read_names_file(d / n)
                    break
            if names is not None:
                break

    image_paths = []
    for src in image_sources:
        image_paths.extend(_expand_source(src))

    problems: list[Problem] = []
    records = []
    for image_path in image_paths:
        label_path = label_path_for(image_path)
        size = read_image_size(image_path, problems)
        if size is None:
            continue
        width, height = size
        objs = _read_label_file(label_path, problems) if label_path.is_file() else []
        records.append((image_path, label_path, width, height, objs))

    if names is None:
        max_id = max((o[0] for *_, objs in records for o in objs), default=-1)
        names = tuple(f"class{i}" for i in range(max_id + 1))

    samples = []
    for image_path, label_path, width, height, objs in records:
        boxes, labels = [], []
        for cls, cx, cy, w, h, line_no in objs:
            if cls >= len(names):
                problems.append(
                    Problem(
                        str(label_path),
                        f"line {line_no}",
                        f"class id {cls} >= number of classes {len(names)}; object skipped",
                        "unknown_class",
                    )
                )
                continue
            boxes.append([(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height])
            labels.append(cls)
        image_id = _image_id(image_path, base)
        samples.append(
            make_sample(
                image_id, image_path, width, height, boxes, labels, None, names, annotation_path=str(label_path)
            )
        )
    samples = drop_duplicate_ids(samples, problems)
    return AnnotatedDataset(names, samples, problems, root=path, format="yolo")


def _from_yaml(yaml_path: Path, split: str | None):
    data = load_yaml(yaml_path, "data YAML", DataError)
    if not isinstance(data, dict):
        raise DataError(f"{yaml_path}: expected a mapping with 'train'/'val' and 'names'")
    root = Path(str(data.get("path") or "."))
    if not root.is_absolute():
        # ultralytics resolves against its datasets_dir setting; the YAML's folder is what users mean here.
        root = (yaml_path.parent / root).resolve()
    key = split or "train"
    if key not in data or data[key] in (None, ""):
        avail = [k for k in ("train", "val", "test") if data.get(k)]
        raise DataError(f"{yaml_path}: no '{key}' entry (has: {', '.join(avail) or 'none'})")
    entries = data[key] if isinstance(data[key], list) else [data[key]]
    sources = [p if p.is_absolute() else root / p for p in (Path(str(e)) for e in entries)]
    for s in sources:
        if not s.exists():
            raise DataError(f"{yaml_path}: {key}: {s} does not exist")
    names = data.get("names")
    if names is None:
        class_names = None
    elif isinstance(names, dict):
        ids = {}
        for k, v in names.items():
            k_id = parse_class_id(str(k)) if not isinstance(k, bool) else "a boolean"
            if isinstance(k_id, str):
                raise DataError(f"{yaml_path}: names: keys must be integers 0..{MAX_CLASS_ID}, got {k!r}")
            ids[k_id] = str(v)
        class_names = tuple(ids.get(i, f"class{i}") for i in range(max(ids, default=-1) + 1))
    elif isinstance(names, list):
        if len(names) > MAX_CLASS_ID + 1:
            raise DataError(f"{yaml_path}: names: {len(names)} names; at most {MAX_CLASS_ID + 1} are supported")
        class_names = tuple(str(n) for n in names)
    else:
        raise DataError(f"{yaml_path}: names: expected a list or a mapping, got {type(names).__name__}")
    nc = data.get("nc")
    if class_names is not None and isinstance(nc, int) and nc != len(class_names):
        raise DataError(f"{yaml_path}: nc is {nc} but names has {len(class_names)} entries")
    base = sources[0] if len(sources) == 1 and sources[0].is_dir() else None
    return root, sources, class_names, base


def _expand_source(src: Path) -> list[Path]:
    if src.is_dir():
        return _list_images(src, recursive=True)
    if src.suffix.lower() == ".txt":
        out = []
        for line in read_text(src, "image list", DataError).splitlines():
            line = line.strip()
            if line:
                p = Path(line)
                # ultralytics: "./images/x.jpg" entries are relative to the list file's folder
                out.append(p if p.is_absolute() else src.parent / p)
        return out
    return [src]


def _list_images(d: Path, recursive: bool) -> list[Path]:
    it = d.rglob("*") if recursive else d.iterdir()
    return sorted(p for p in it if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _image_id(image_path: Path, base: Path | None) -> str:
    """Path under ``base`` (the images folder) without extension; for list files, under the last ``images/``."""
    if base is not None:
        try:
            return image_path.relative_to(base).with_suffix("").as_posix()
        except ValueError:
            pass
    parts = image_path.parts
    if "images" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("images")
        return Path(*parts[i + 1 :]).with_suffix("").as_posix()
    return image_path.stem


def _read_label_file(label_path: Path, problems: list[Problem]) -> list[tuple]:
    """``[(cls, cx, cy, w, h, line_no)]`` normalised; bad lines become problems."""
    try:
        text = read_text(label_path, "label file", DataError)
    except DataError as e:
        problems.append(Problem(str(label_path), "", f"{error_reason(e, label_path)}; image kept without objects",
                                "parse_error"))
        return []
    out = []
    for line_no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {line_no}"
        cls = parse_class_id(parts[0])
        if isinstance(cls, str):
            problems.append(Problem(str(label_path), where, f"{cls}; skipped", "parse_error"))
            continue
        vals = parse_numbers(parts[1:])
        if vals is None:
            problems.append(Problem(str(label_path), where, f"non-numeric or non-finite value in "
                                    f"{line.strip()[:80]!r}; skipped", "parse_error"))
            continue
        if len(vals) == 4:
            cx, cy, w, h = vals
        elif len(vals) >= 6 and len(vals) % 2 == 0:
            xs, ys = vals[0::2], vals[1::2]
            cx, cy, w, h = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)
        else:
            problems.append(
                Problem(
                    str(label_path),
                    where,
                    f"expected 'cls cx cy w h' (5 values), got {len(parts)} in {line.strip()!r}; skipped",
                    "parse_error",
                )
            )
            continue
        out.append((cls, cx, cy, w, h, line_no))
    return out
