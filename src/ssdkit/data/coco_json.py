"""COCO JSON files, read safely and validated once: instances (ground truth) and results (detections).

Both consumers go through here, so a file is accepted or refused the same way by each: the training reader
(:mod:`ssdkit.data.readers.coco`) and the file metrics (:mod:`ssdkit.metrics.files`, ``ssdkit evaluate --gt``).

Formats (COCO's own, https://cocodataset.org/#format-data):

- instances: ``{"images": [{"id", "file_name", "width"?, "height"?}], "annotations": [{"id"?, "image_id",
  "category_id", "bbox": [x, y, w, h], "area"?, "iscrowd"?}], "categories": [{"id", "name"?}]}``; ``bbox`` is
  the top-left corner and the size in float pixels;
- results: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``, or that list as the
  ``"annotations"`` of an object (some tools write a whole COCO dict).

Rules; the first violation raises one :class:`DataError` line ``<file>: <field>: expected ..., got ...``:

- JSON types are taken strictly: a number is never a string or a boolean, a list never an object;
  ``iscrowd`` is 0, 1, false or true.
- Numbers are finite (Python's json reads ``NaN`` and ``Infinity``; COCO has neither); ``w``, ``h``, ``area``,
  ``width`` and ``height`` are >= 0 (``width``/``height`` 0 or null mean "unknown").
- Ids: image ids are integers or strings (all of one kind: pycocotools sorts them), annotation and category ids
  integers, all with ``|id| < 2**53`` (pycocotools keeps ids in float64 arrays); unique within their list.
- A required field that is missing is an error; unknown fields are ignored and left out of the result, so nothing
  a file adds reaches pycocotools.

Cross-references (an annotation naming an image or category the file lacks) are the caller's policy:
:func:`require_references` refuses them (metrics); the training reader reports and skips such annotations.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssdkit.errors import DataError
from ssdkit.safeio import read_text

__all__ = ["CocoInstances", "load_json", "parse_instances", "parse_results", "require_references"]

#: Larger files are refused before reading: Python's json needs ~10x the file size in memory.
MAX_JSON_BYTES = 4 * 2**30
#: Ids beyond this lose their identity in the float64 arrays of pycocotools.
MAX_ID = 2**53

_BBOX = "4 finite numbers [x, y, w, h]"
_MISSING = object()


class _HugeInt:
    """An integer literal longer than Python's int-conversion limit (4300 digits), kept so its field can be named."""

    def __init__(self, digits: int):
        self.digits = digits


def _parse_int(literal: str) -> int | _HugeInt:
    try:
        return int(literal)
    except ValueError:
        return _HugeInt(len(literal.lstrip("-")))


def load_json(path: str | os.PathLike, what: str) -> Any:
    """The parsed content of the JSON file ``path`` (``what`` names it in messages: ``"ground-truth"``).

    UTF-8 with or without a byte-order mark. Integer literals too long for ``int()`` become placeholders that the
    validators below report with their field.

    Raises:
        DataError: ``path`` is missing, a folder, unreadable, larger than ``MAX_JSON_BYTES``, empty, not UTF-8, not
            JSON (line and column given) or nested too deeply for the parser.
    """
    p = Path(path)
    text = read_text(p, f"{what} JSON file", DataError, MAX_JSON_BYTES)
    if not text.strip():
        raise DataError(f"{p}: empty file (expected {what} JSON)")
    try:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:
            # "Exceeds the limit (4300 digits) for integer string conversion": parse again, slower, with
            # placeholders for such literals (the hook is not used above, to keep valid files fast)
            return json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: malformed JSON at line {e.lineno}, column {e.colno} ({e.msg})") from None
    except RecursionError:
        raise DataError(f"{p}: JSON nested too deeply to parse (a COCO file nests 5 levels)") from None


# ---------------------------------------------------------------------------------------------------------------
# field checks: each takes ``ctx`` = "<file>: <field>" and the value (``_MISSING`` when absent)


def _show(v: Any) -> str:
    """A short rendering of a JSON value for a message (``"1234"``, ``NaN``, ``an object``, ``a list of 9``)."""
    if v is _MISSING:
        return "nothing (the field is missing)"
    if isinstance(v, _HugeInt):
        return f"an integer of {v.digits} digits"
    if isinstance(v, dict):
        keys = ", ".join(json.dumps(k) for k in list(v)[:4])
        return f"an object {{{keys}{', ...' if len(v) > 4 else ''}}}" if v else "an empty object {}"
    if isinstance(v, list):
        if len(v) <= 6 and all(isinstance(x, str | int | float | bool) or x is None for x in v):
            s = json.dumps(v)
            return s if len(s) <= 80 else f"a list of {len(v)} items"
        return f"a list of {len(v)} items"
    s = json.dumps(v)  # str, number, bool, null; NaN / Infinity spelled as JSON would
    return s if len(s) <= 80 else s[:76] + '..."'


def _fail(ctx: str, expected: str, v: Any) -> DataError:
    return DataError(f"{ctx}: expected {expected}, got {_show(v)}")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_finite(v: Any) -> bool:
    try:
        return _is_number(v) and math.isfinite(v)
    except OverflowError:  # an int beyond float range
        return False


def _number(ctx: str, v: Any, what: str = "a finite number >= 0", nonnegative: bool = True) -> float:
    if not _is_finite(v) or (nonnegative and v < 0):
        raise _fail(ctx, what, v)
    return float(v)


def _int_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -MAX_ID < v < MAX_ID


def _id(ctx: str, v: Any, strings: bool = False) -> int | str:
    if _int_id(v) or (strings and isinstance(v, str) and v):
        return v
    kind = "an integer id or a non-empty string" if strings else "an integer id"
    raise _fail(ctx, f"{kind} (|id| < 2**53)", v)


def _bbox(ctx: str, v: Any) -> list[float]:
    """``[x, y, w, h]`` as floats; w, h >= 0."""
    if not (isinstance(v, list) and len(v) == 4 and all(_is_finite(x) for x in v)):
        raise _fail(ctx, _BBOX, v)
    if v[2] < 0 or v[3] < 0:
        raise _fail(ctx, "[x, y, w, h] with w >= 0 and h >= 0", v)
    return [float(x) for x in v]


def _list(ctx: str, v: Any, of: str) -> list:
    if not isinstance(v, list):
        raise _fail(ctx, f"a list of {of}", v)
    return v


def _object(ctx: str, v: Any) -> dict:
    if not isinstance(v, dict):
        raise _fail(ctx, "an object", v)
    return v


def _unique(path: Path, where: str, value: Any, seen: dict) -> None:
    """Records the id ``value`` of the element ``where`` in ``seen`` (id -> element); a repeat names both."""
    if value in seen:
        raise DataError(f"{path}: {where}.id: duplicate id {_show(value)} (also the id of {seen[value]})")
    seen[value] = where


# ---------------------------------------------------------------------------------------------------------------
# instances


@dataclass
class CocoInstances:
    """A validated COCO instances file holding only the fields ssdkit and pycocotools read, in JSON order.

    Attributes:
        path: the file.
        images: ``[{"id": int | str, "file_name"?: str, "width": float | None, "height": float | None}]``.
        annotations: ``[{"id"?: int, "image_id": int | str, "category_id": int, "bbox": [x, y, w, h] floats,
            "area"?: float, "iscrowd": 0 | 1}]``; ``image_id`` / ``category_id`` not yet checked against the
            other lists (:func:`require_references`).
        categories: ``[{"id": int, "name"?: str}]``, at least one.
    """

    path: Path
    images: list[dict]
    annotations: list[dict]
    categories: list[dict]

    def dataset(self) -> dict:
        """``{"images", "annotations", "categories"}``: the dict pycocotools' ``COCO.dataset`` holds."""
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}


def _image(ctx: str, v: Any, file_names: bool) -> dict:
    img = _object(ctx, v)
    out: dict[str, Any] = {"id": _id(f"{ctx}.id", img.get("id", _MISSING), strings=True)}
    name = img.get("file_name", _MISSING)
    if file_names or name is not _MISSING:
        if not (isinstance(name, str) and name):
            raise _fail(f"{ctx}.file_name", "a file name (a non-empty string)", name)
        out["file_name"] = name
    for key in ("width", "height"):
        size = img.get(key)
        out[key] = None if size is None else _number(f"{ctx}.{key}", size, "a size in pixels >= 0")
    return out


def _annotation(ctx: str, v: Any) -> dict:
    ann = _object(ctx, v)
    out: dict[str, Any] = {}
    if "id" in ann:
        out["id"] = _id(f"{ctx}.id", ann["id"])
    out["image_id"] = _id(f"{ctx}.image_id", ann.get("image_id", _MISSING), strings=True)
    out["category_id"] = _id(f"{ctx}.category_id", ann.get("category_id", _MISSING))
    out["bbox"] = _bbox(f"{ctx}.bbox", ann.get("bbox", _MISSING))
    if "area" in ann:
        out["area"] = _number(f"{ctx}.area", ann["area"])
    crowd = ann.get("iscrowd", 0)
    if not (isinstance(crowd, int) and crowd in (0, 1)):
        raise _fail(f"{ctx}.iscrowd", "0 or 1 (or false / true)", crowd)
    out["iscrowd"] = int(crowd)
    return out


def _category(ctx: str, v: Any) -> dict:
    cat = _object(ctx, v)
    out: dict[str, Any] = {"id": _id(f"{ctx}.id", cat.get("id", _MISSING))}
    if "name" in cat:
        if not isinstance(cat["name"], str):
            raise _fail(f"{ctx}.name", "a string", cat["name"])
        out["name"] = cat["name"]
    return out


def parse_instances(
    data: Any, path: str | os.PathLike, *, file_names: bool = False, annotations: bool = True
) -> CocoInstances:
    """Validate the parsed instances file ``data`` (from :func:`load_json`) under the module's rules.

    Args:
        data: the parsed JSON.
        path: the file (named in messages).
        file_names: every image needs a ``file_name`` (training does; evaluation does not).
        annotations: the file needs an ``annotations`` list; when False a file without one (an image-info file)
            has no annotations.

    Raises:
        DataError: the first violation, naming the file and the field (``annotations[3].bbox``).
    """
    p = Path(path)
    if not isinstance(data, dict):
        raise _fail(f"{p}", "a COCO instances object {'images', 'annotations', 'categories'}", data)
    sections = {"images": "image objects", "annotations": "annotation objects", "categories": "category objects"}
    if "annotations" not in data and not annotations:
        sections.pop("annotations")
    for key, of in sections.items():
        if key not in data:
            raise DataError(f"{p}: {key}: missing (a COCO instances file has 'images', 'annotations' and 'categories')")
        _list(f"{p}: {key}", data[key], of)

    images, seen = [], {}
    for k, v in enumerate(data["images"]):
        images.append(_image(f"{p}: images[{k}]", v, file_names))
        image_id = images[-1]["id"]
        if type(image_id) is not type(images[0]["id"]):
            kind = "an integer" if isinstance(images[0]["id"], int) else "a string"
            raise _fail(f"{p}: images[{k}].id", f"{kind}, as the id of images[0] (one kind for all)", image_id)
        _unique(p, f"images[{k}]", image_id, seen)
    anns, seen = [], {}
    for k, v in enumerate(data.get("annotations", [])):
        anns.append(_annotation(f"{p}: annotations[{k}]", v))
        if "id" in anns[-1]:
            _unique(p, f"annotations[{k}]", anns[-1]["id"], seen)
    cats, seen = [], {}
    for k, v in enumerate(data["categories"]):
        cats.append(_category(f"{p}: categories[{k}]", v))
        _unique(p, f"categories[{k}]", cats[-1]["id"], seen)
    if not cats:
        raise DataError(f"{p}: categories: empty (expected at least one {{'id', 'name'}})")
    return CocoInstances(p, images, anns, cats)


def require_references(gt: CocoInstances) -> None:
    """Raise unless every annotation's ``image_id`` is in ``images`` and its ``category_id`` in ``categories``."""
    image_ids = {img["id"] for img in gt.images}
    cat_ids = {cat["id"] for cat in gt.categories}
    for k, ann in enumerate(gt.annotations):
        if ann["image_id"] not in image_ids:
            raise DataError(f"{gt.path}: annotations[{k}]: image_id {_show(ann['image_id'])} is not in 'images'")
        if ann["category_id"] not in cat_ids:
            raise DataError(f"{gt.path}: annotations[{k}]: category_id {ann['category_id']} is not in 'categories'")


# ---------------------------------------------------------------------------------------------------------------
# results


def parse_results(data: Any, path: str | os.PathLike, gt: CocoInstances) -> list[dict]:
    """Validate the parsed results file ``data`` against the ground truth ``gt``.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h] floats, "score": float}]`` in file order, each image
        and category one of ``gt``'s; nothing else of the entries is kept.

    Raises:
        DataError: the first violation (``results[3].score: expected a finite number, got NaN``), or an entry
            naming an image or a category that ``gt`` lacks.
    """
    p = Path(path)
    where = "results"
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data, where = data["annotations"], "annotations"  # a whole COCO dict holding detections
    _list(f"{p}", data, "results {'image_id', 'category_id', 'bbox', 'score'}")
    image_ids = {img["id"] for img in gt.images}
    cat_ids = {cat["id"] for cat in gt.categories}
    out = []
    for k, v in enumerate(data):
        ctx = f"{p}: {where}[{k}]"
        r = _object(ctx, v)
        image_id = _id(f"{ctx}.image_id", r.get("image_id", _MISSING), strings=True)
        if image_id not in image_ids:
            raise DataError(f"{ctx}: image_id {_show(image_id)} is not an image of {gt.path}")
        category_id = _id(f"{ctx}.category_id", r.get("category_id", _MISSING))
        if category_id not in cat_ids:
            raise DataError(f"{ctx}: category_id {category_id} is not a category of {gt.path}")
        bbox = _bbox(f"{ctx}.bbox", r.get("bbox", _MISSING))
        score = _number(f"{ctx}.score", r.get("score", _MISSING), "a finite number", nonnegative=False)
        out.append({"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score})
    return out
