"""Pascal VOC XML (VOCdevkit layout, and what labelImg / CVAT export).

Layout::

    VOC2007/                          # or a VOCdevkit/ holding VOC2007/, VOC2012/, ...
      Annotations/<id>.xml
      JPEGImages/<id>.jpg             # any of .jpg .jpeg .png .bmp ..., any case
      ImageSets/Main/<split>.txt      # one id per line (extra columns, as in aeroplane_train.txt, ignored)

Conventions:
    - Boxes are taken as written: ``(xmin, ymin, xmax, ymax)`` floats, the VOC devkit's 1-based pixel
      coordinates are *not* shifted by -1 (torchvision's ``VOCDetection`` and the labelImg/CVAT exports
      do the same; the <= 1 px offset is below annotation noise, and evaluation reads boxes the same way).
    - ``<difficult>1</difficult>`` -> ``ignore=True``; a missing ``<difficult>`` means 0.
    - Image size comes from the image header (``image_size``), not ``<size>``, which tools often leave
      missing, zero or stale; a disagreeing ``<size>`` is reported as a fixable ``size_mismatch``.
    - The image is found by the annotation's stem in ``JPEGImages/`` (then ``images/``, then next to the
      XML, as labelImg saves), falling back to ``<filename>``.
    - XML is parsed only through ``defusedxml``: entity declarations (billion laughs) and external
      references are refused at once and the file is reported as a ``parse_error``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from ssdkit.data.readers.base import (
    AnnotatedDataset,
    ImageIndex,
    drop_duplicate_ids,
    error_reason,
    make_sample,
    read_image_size,
    resolve_classes,
)
from ssdkit.data.sample import Problem
from ssdkit.errors import DataError
from ssdkit.safeio import read_text

__all__ = ["VOC_CLASSES", "read_voc", "parse_voc_xml", "is_voc_dir", "is_vocdevkit_dir"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def is_voc_dir(path: Path) -> bool:
    return (path / "Annotations").is_dir()


def is_vocdevkit_dir(path: Path) -> bool:
    return path.is_dir() and any(is_voc_dir(d) for d in _year_dirs(path))


def _year_dirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and d.name.upper().startswith("VOC") and is_voc_dir(d))


def parse_voc_xml(path: str | os.PathLike) -> dict:
    """Parse one VOC annotation file.

    Returns:
        ``{"filename": str | None, "size": (w, h) | None, "objects": [{"name", "box": [x1, y1, x2, y2],
        "difficult": bool}], "problems": [(element, message)]}``; objects with a missing or non-numeric box
        are left out and listed in ``problems``.

    Raises:
        DataError: the file is unreadable, not well-formed XML (line/column given), not an ``<annotation>``,
            or declares entities (possible entity-expansion attack; refused before any expansion).
    """
    path = os.fspath(path)
    try:
        root = DET.parse(path).getroot()
    except DefusedXmlException as e:
        raise DataError(
            f"{path}: refused XML ({type(e).__name__}: {e}); entity declarations and external references are "
            "not allowed in annotations"
        ) from None
    except DET.ParseError as e:
        # str(e) reads "mismatched tag: line 5, column 2"
        raise DataError(f"{path}: malformed XML ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if root.tag != "annotation":
        raise DataError(f"{path}: root element is <{root.tag}>, expected <annotation>")

    filename = (root.findtext("filename") or "").strip() or None
    size = None
    size_el = root.find("size")
    if size_el is not None:
        try:
            w, h = int(float(size_el.findtext("width") or 0)), int(float(size_el.findtext("height") or 0))
            if w > 0 and h > 0:
                size = (w, h)
        except ValueError:
            pass
    objects, problems = [], []
    for k, obj in enumerate(root.iter("object")):
        where = f"object {k}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            problems.append((where, "has no <name>; skipped"))
            continue
        where = f"object {k} ({name})"
        bnd = obj.find("bndbox")
        if bnd is None:
            problems.append((where, "has no <bndbox>; skipped"))
            continue
        try:
            box = [float((bnd.findtext(t) or "").strip()) for t in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError:
            vals = {t: bnd.findtext(t) for t in ("xmin", "ymin", "xmax", "ymax")}
            problems.append((where, f"<bndbox> has a missing or non-numeric coordinate {vals}; skipped"))
            continue
        objects.append({"name": name, "box": box, "difficult": _flag(obj.findtext("difficult"))})
    return {"filename": filename, "size": size, "objects": objects, "problems": problems}


def _flag(text: str | None) -> bool:
    if text is None:
        return False
    t = text.strip().lower()
    if t in ("", "0", "false", "no"):
        return False
    if t in ("true", "yes"):
        return True
    try:
        return float(t) != 0
    except ValueError:
        return False


def read_voc(
    path: str | os.PathLike,
    split: str | None = None,
    classes: Sequence[str] | str | os.PathLike | None = None,
) -> AnnotatedDataset:
    """Read a VOC year directory (``VOC2007/``) or a ``VOCdevkit/`` holding several years.

    Args:
        path: a directory with ``Annotations/``, or a VOCdevkit with ``VOC*/Annotations/``.
        split: ``ImageSets/Main/<split>.txt`` to read (``"trainval"``, ``"test"``, ...); ``None`` = every XML.
            For a VOCdevkit, every year that has that split file is read (``trainval`` -> 07+12).
        classes: class names (list or names file). Objects of other classes are skipped as
            ``unknown_class``. Default: VOC's 20 classes in the standard order when every name is a VOC
            name, else the sorted set of names found.

    Returns:
        :class:`AnnotatedDataset` (format ``"voc"``); samples in split-file order (sorted ids without a split).
    """
    root = Path(path)
    if is_voc_dir(root):
        year_dirs = [root]
    elif root.is_dir() and _year_dirs(root):
        year_dirs = _year_dirs(root)
        if split is not None:
            year_dirs = [d for d in year_dirs if (d / "ImageSets" / "Main" / f"{split}.txt").is_file()]
            if not year_dirs:
                raise DataError(f"{root}: no VOC*/ImageSets/Main/{split}.txt found ({_available_splits(root)})")
    else:
        raise DataError(f"{root}: not a VOC dataset (looked for Annotations/ or VOC*/Annotations/)")

    fixed_classes = resolve_classes(classes)
    problems: list[Problem] = []
    records = []  # (year_dir, image_id, xml_path, parsed)
    for year_dir in year_dirs:
        ann_dir = year_dir / "Annotations"
        if split is None:
            ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
        else:
            split_file = year_dir / "ImageSets" / "Main" / f"{split}.txt"
            if not split_file.is_file():
                raise DataError(f"{split_file}: split file not found ({_available_splits(year_dir)})")
            lines = read_text(split_file, "split file", DataError).splitlines()
            ids = [line.split()[0] for line in lines if line.split()]
        index = ImageIndex([year_dir / "JPEGImages", year_dir / "images", ann_dir])
        for image_id in ids:
            xml_path = ann_dir / f"{image_id}.xml"
            if not xml_path.is_file():
                problems.append(
                    Problem(
                        str(xml_path),
                        "",
                        f"listed in split {split!r} but the annotation file is missing; image skipped",
                        "missing_annotation",
                    )
                )
                continue
            try:
                parsed = parse_voc_xml(xml_path)
            except DataError as e:
                problems.append(Problem(str(xml_path), "", f"{error_reason(e, xml_path)}; file skipped", "parse_error"))
                continue
            records.append((index, image_id, xml_path, parsed))

    names_found = {o["name"] for *_, parsed in records for o in parsed["objects"]}
    if fixed_classes is not None:
        class_names = fixed_classes
    elif names_found <= set(VOC_CLASSES):
        class_names = VOC_CLASSES
    else:
        class_names = tuple(sorted(names_found))
    label_of = {n: i for i, n in enumerate(class_names)}

    samples = []
    for index, image_id, xml_path, parsed in records:
        for element, message in parsed["problems"]:
            problems.append(Problem(str(xml_path), element, message, "parse_error"))
        image_path = index.find(image_id, parsed["filename"])
        if image_path is None:
            problems.append(
                Problem(
                    str(xml_path),
                    "filename",
                    f"no image found for {image_id!r} (<filename> {parsed['filename']!r}); skipped",
                    "missing_image",
                )
            )
            continue
        size = read_image_size(image_path, problems)
        if size is None:
            continue
        width, height = size
        if parsed["size"] is not None and parsed["size"] != (width, height):
            problems.append(
                Problem(
                    str(xml_path),
                    "size",
                    f"<size> says {parsed['size'][0]}x{parsed['size'][1]} "
                    f"but the image is {width}x{height}; the image size is used",
                    "size_mismatch",
                    fixable=True,
                )
            )
        boxes, labels, ignore = [], [], []
        for k, obj in enumerate(parsed["objects"]):
            label = label_of.get(obj["name"])
            if label is None:
                problems.append(
                    Problem(
                        str(xml_path),
                        f"object {k}",
                        f"class {obj['name']!r} is not in the class list; object skipped",
                        "unknown_class",
                    )
                )
                continue
            boxes.append(obj["box"])
            labels.append(label)
            ignore.append(obj["difficult"])
        samples.append(
            make_sample(
                image_id, image_path, width, height, boxes, labels, ignore, class_names, annotation_path=str(xml_path)
            )
        )
    samples = drop_duplicate_ids(samples, problems)
    return AnnotatedDataset(class_names, samples, problems, root=root, format="voc")


def _available_splits(path: Path) -> str:
    found = sorted({p.stem for p in path.glob("**/ImageSets/Main/*.txt") if "_" not in p.stem})
    return f"available: {', '.join(found)}" if found else "no ImageSets/Main/*.txt found"
