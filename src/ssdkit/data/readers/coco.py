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
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ssdkit.data.readers.base import (
    AnnotatedDataset,
    drop_duplicate_ids,
    make_sample,
    read_image_size,
    resolve_classes,
)
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
        DataError: the JSON is malformed (line and column given) or lacks ``images``/``categories``.
    """
    json_path = find_coco_json(Path(path), split)
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{json_path}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{json_path}: cannot read ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{json_path}: not a COCO detection file (no 'images' list at the top level)")
    categories = data.get("categories")
    if not isinstance(categories, list) or not all(isinstance(c, dict) and "id" in c for c in categories):
        raise DataError(f"{json_path}: 'categories' missing or malformed (need a list of {{'id', 'name'}})")
    annotations = data.get("annotations") or []
    file = str(json_path)
    problems: list[Problem] = []

    cats = sorted(categories, key=lambda c: c["id"])
    fixed = resolve_classes(classes)
    if fixed is None:
        class_names = tuple(str(c.get("name", c["id"])) for c in cats)
        label_of_cat = {c["id"]: i for i, c in enumerate(cats)}
    else:
        class_names = fixed
        by_name = {n: i for i, n in enumerate(fixed)}
        label_of_cat = {c["id"]: by_name[c.get("name")] for c in cats if c.get("name") in by_name}
    label_to_cat = {label: cid for cid, label in label_of_cat.items()}

    split_name = json_path.stem.rsplit("_", 1)[-1]
    image_root = Path(root) if root is not None else _find_image_root(json_path, data["images"], split_name)

    per_image: dict = {}
    images = []
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            problems.append(Problem(file, f"images[{k}]", "needs 'id' and 'file_name'; skipped", "parse_error"))
            continue
        if img["id"] in per_image:
            problems.append(Problem(file, f"images[{k}]", f"duplicate image id {img['id']!r}; skipped", "duplicate_id"))
            continue
        per_image[img["id"]] = ([], [], [])
        images.append(img)

    for k, ann in enumerate(annotations):
        where = f"annotations[{k}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            problems.append(Problem(file, where, "not an object; skipped", "parse_error"))
            continue
        image_id = ann.get("image_id")
        target = per_image.get(image_id) if isinstance(image_id, (int, str)) else None
        if target is None:
            problems.append(
                Problem(file, where, f"image_id {ann.get('image_id')!r} is not in 'images'; skipped", "unknown_image")
            )
            continue
        cid = ann.get("category_id")
        if cid not in label_of_cat:
            known = any(c["id"] == cid for c in cats)
            msg = "is not in the class list" if known else "is not in 'categories'"
            problems.append(Problem(file, where, f"category_id {cid!r} {msg}; skipped", "unknown_class"))
            continue
        bbox = ann.get("bbox")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            problems.append(Problem(file, where, f"bbox {bbox!r} is not [x, y, w, h]; skipped", "parse_error"))
            continue
        target[0].append([x, y, x + w, y + h])
        target[1].append(label_of_cat[cid])
        target[2].append(bool(ann.get("iscrowd", 0)))

    samples = []
    for img in images:
        image_path = image_root / img["file_name"]
        where = f"image {img['id']} ({img['file_name']})"
        if not image_path.is_file():
            problems.append(Problem(file, where, f"image file {image_path} not found; skipped", "missing_image"))
            continue
        width, height = img.get("width"), img.get("height")
        if not (isinstance(width, (int, float)) and isinstance(height, (int, float)) and width > 0 and height > 0):
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
    samples = drop_duplicate_ids(samples, problems)  # ids 1 and "1" collide as strings
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


def _find_image_root(json_path: Path, images: list, split_name: str) -> Path:
    jd = json_path.parent
    candidates = [
        jd,
        jd / "images",
        jd.parent / "images",
        jd.parent / "images" / split_name,
        jd.parent / split_name,
        jd / split_name,
    ]
    names = [img["file_name"] for img in images[:20] if isinstance(img, dict) and "file_name" in img]
    if not names:
        return candidates[0]
    for c in candidates:
        if any((c / n).is_file() for n in names):
            return c
    # None holds the images: report each as missing against the JSON's own folder.
    return candidates[0]
