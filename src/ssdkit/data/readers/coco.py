"""COCO instances JSON (``instances_train2017.json``, and what CVAT / Label Studio / Roboflow export).

Conventions:
    - ``bbox`` ``[x, y, w, h]`` -> ``(x, y, x + w, y + h)`` float pixels; ``iscrowd`` -> ``ignore=True``.
    - Labels: category ids in increasing id order -> 0, 1, 2, ... (COCO's 80 ids 1..90 become 0..79);
      ``dataset.extra["label_to_category_id"]`` maps back for COCO-results JSON. With ``classes=``, the
      categories are matched by name instead and annotations of other categories are ``unknown_class``.
    - Image ids stay the JSON's ids (as strings in ``Sample.image_id``; the original value in
      ``sample.extra["coco_id"]``). Images without annotations are kept (zero objects).
    - Width/height come from the JSON's ``images`` entries (header read only when missing);
      ``ssdkit check`` verifies them against the files.
    - Image root: ``root=`` if given, else the first of ``<json dir>``, ``<json dir>/images``,
      ``<json dir>/../images``, ``<json dir>/../images/<split>``, ``<json dir>/../<split>`` (split = the json
      stem after its last ``_``, e.g. ``train2017``) in which the first images' ``file_name`` exist.
    - The file is read and validated by :mod:`ssdkit.data.coco_json`, as ``ssdkit evaluate --gt`` reads it: a
      malformed file (wrong JSON types, NaN, negative sizes, duplicate ids, missing fields) is a ``DataError``
      naming the field. An annotation whose image or category is not in the file, or an image whose file is
      missing, is a :class:`Problem` and is skipped. ``annotations`` may be absent (an image-info file).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ssdkit.data.coco_json import load_json, parse_instances
from ssdkit.data.readers.base import AnnotatedDataset, make_sample, read_image_size, resolve_classes
from ssdkit.data.sample import Problem
from ssdkit.errors import DataError

__all__ = ["read_coco", "find_coco_json"]


def find_coco_json(path: Path, split: str | None) -> Path:
    """The annotation JSON for ``path``: the file itself, or ``<dir>/annotations/instances_<split>.json``."""
    if path.is_file():
        return path
    ann_dir = path / "annotations" if (path / "annotations").is_dir() else path
    candidates = sorted(ann_dir.glob("instances_*.json"))
    if split is not None:
        for name in (f"instances_{split}.json", f"{split}.json"):
            if (ann_dir / name).is_file():
                return ann_dir / name
        raise DataError(
            f"{path}: no annotations/instances_{split}.json (found: {', '.join(p.name for p in candidates) or 'none'})"
        )
    if len(candidates) == 1:
        return candidates[0]
    raise DataError(
        f"{path}: {'several' if candidates else 'no'} annotations/instances_*.json "
        f"({', '.join(p.name for p in candidates) or 'none'}); pass split= or the JSON file"
    )


def read_coco(
    path: str | os.PathLike,
    split: str | None = None,
    classes: Sequence[str] | str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
) -> AnnotatedDataset:
    """Read a COCO-style detection JSON.

    Args:
        path: the JSON file, or a directory holding ``annotations/instances_<split>.json``.
        split: picks the JSON in a directory (``"train2017"``); also names the image folder to try.
        classes: restrict/reorder classes by category name; default = all categories in id order.
        root: image directory that ``file_name`` is relative to (default: searched, see module doc).

    Raises:
        DataError: the file is unreadable, not JSON (line and column given) or not a valid COCO instances file
            (the message names the field: ``annotations[3].bbox: expected 4 finite numbers ...``).
    """
    json_path = find_coco_json(Path(path), split)
    coco = parse_instances(load_json(json_path, "COCO annotation"), json_path, file_names=True, annotations=False)
    file = str(json_path)
    problems: list[Problem] = []

    cats = sorted(coco.categories, key=lambda c: c["id"])
    fixed = resolve_classes(classes)
    if fixed is None:
        class_names = tuple(c.get("name", str(c["id"])) for c in cats)
        label_of_cat = {c["id"]: i for i, c in enumerate(cats)}
    else:
        class_names = fixed
        by_name = {n: i for i, n in enumerate(fixed)}
        label_of_cat = {c["id"]: by_name[c.get("name")] for c in cats if c.get("name") in by_name}
    label_to_cat = {label: cid for cid, label in label_of_cat.items()}

    split_name = json_path.stem.rsplit("_", 1)[-1]
    image_root = Path(root) if root is not None else _find_image_root(json_path, coco.images, split_name)

    # image ids are unique (validated), so each annotation has at most one image
    per_image: dict = {img["id"]: ([], [], []) for img in coco.images}
    cat_ids = {c["id"] for c in cats}
    for k, ann in enumerate(coco.annotations):
        where = f"annotations[{k}]" + (f" (id {ann['id']})" if "id" in ann else "")
        target = per_image.get(ann["image_id"])
        if target is None:
            problems.append(
                Problem(file, where, f"image_id {ann['image_id']!r} is not in 'images'; skipped", "unknown_image")
            )
            continue
        cid = ann["category_id"]
        if cid not in label_of_cat:
            msg = "is not in the class list" if cid in cat_ids else "is not in 'categories'"
            problems.append(Problem(file, where, f"category_id {cid!r} {msg}; skipped", "unknown_class"))
            continue
        x, y, w, h = ann["bbox"]
        target[0].append([x, y, x + w, y + h])
        target[1].append(label_of_cat[cid])
        target[2].append(bool(ann["iscrowd"]))

    samples = []
    for img in coco.images:
        image_path = image_root / img["file_name"]
        where = f"image {img['id']} ({img['file_name']})"
        if not image_path.is_file():
            problems.append(Problem(file, where, f"image file {image_path} not found; skipped", "missing_image"))
            continue
        width, height = img["width"], img["height"]
        if not (width and height):  # missing, null or 0: read the header
            size = read_image_size(image_path, problems)
            if size is None:
                continue
            width, height = size
        boxes, labels, ignore = per_image[img["id"]]
        samples.append(
            make_sample(
                str(img["id"]),
                image_path,
                width,
                height,
                boxes,
                labels,
                ignore,
                class_names,
                coco_id=img["id"],
                annotation_path=file,
            )
        )
    return AnnotatedDataset(
        class_names,
        samples,
        problems,
        root=json_path,
        format="coco",
        extra={
            "label_to_category_id": [label_to_cat.get(i) for i in range(len(class_names))],
            "image_root": str(image_root),
        },
    )


def _find_image_root(json_path: Path, images: list[dict], split_name: str) -> Path:
    """The first candidate folder (module docstring) holding one of the first 20 images' ``file_name``."""
    jd = json_path.parent
    candidates = [
        jd,
        jd / "images",
        jd.parent / "images",
        jd.parent / "images" / split_name,
        jd.parent / split_name,
        jd / split_name,
    ]
    names = [img["file_name"] for img in images[:20]]
    if not names:
        return candidates[0]
    for c in candidates:
        if any((c / n).is_file() for n in names):
            return c
    # None holds the images: report each as missing against the JSON's own folder.
    return candidates[0]
