"""VEDAI (Vehicle Detection in Aerial Imagery, Razakarivony & Jurie 2015).

Layout (as distributed; 1024 variants ``Annotations1024``/``Vehicules1024`` read the same way)::

    <root>/Annotations512/<id>.txt          # one object per line (format below)
    <root>/Annotations512/annotation512.txt # optional: all objects, each line prefixed with the image id
    <root>/Annotations512/fold01.txt ...    # split files: one image id per line (fold01 .. fold10,
    <root>/Annotations512/fold01test.txt    #   and fold01test .. fold10test)
    <root>/Vehicules512/<id>_co.png         # colour; <id>_ir.png infrared

Object line: ``x_center y_center orientation class is_contained is_occluded x1 x2 x3 x4 y1 y2 y3 y4``
(the four corner x's, then the four corner y's, of the oriented box).

Assumptions (checked against public copies of the annotation files, e.g. ``00000000.txt`` =
``290.35 504.61 3.01 2 1 0 277 303 304 279 502 498 508 511``):
    - The axis-aligned box is the min/max of the four corners, clipped to the image (corners can lie
      outside it).
    - Class ids -> labels in this order: 1 car, 2 truck, 4 tractor, 5 camping car, 7 motorcycle, 8 bus,
      9 van, 10 other, 11 pickup, 23 boat, 31 plane. Other ids found in some copies (e.g. 12, 13, 201) are
      reported as ``unknown_class`` and skipped.
    - ``is_contained``/``is_occluded`` are kept in ``sample.extra`` (lists), not turned into ``ignore``.
    - Image ids are the 8-digit names (``00000000``); split files with unpadded numbers are zero-padded.
    - ``split=None`` reads every ``*_co.png`` (or ``*_ir.png``) image; images without an annotation file
      have no objects.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ssdkit.data.readers.base import (
    AnnotatedDataset,
    drop_duplicate_ids,
    make_sample,
    parse_class_id,
    parse_numbers,
    read_image_size,
)
from ssdkit.data.sample import Problem
from ssdkit.errors import DataError
from ssdkit.safeio import read_text

__all__ = ["VEDAI_CLASS_IDS", "VEDAI_CLASSES", "read_vedai", "is_vedai_dir"]

VEDAI_CLASS_IDS = (1, 2, 4, 5, 7, 8, 9, 10, 11, 23, 31)
VEDAI_CLASSES = (
    "car", "truck", "tractor", "camping car", "motorcycle", "bus", "van", "other", "pickup", "boat", "plane",
)  # fmt: skip
_LABEL_OF_ID = {cid: i for i, cid in enumerate(VEDAI_CLASS_IDS)}
_ID_RE = re.compile(r"^\d+$")


def is_vedai_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f"Annotations{r}").is_dir() for r in (512, 1024))


def read_vedai(
    path: str | os.PathLike,
    split: str | None = None,
    modality: str = "co",
    resolution: int | None = None,
) -> AnnotatedDataset:
    """Read VEDAI.

    Args:
        path: the folder holding ``Annotations512/`` and ``Vehicules512/``.
        split: ``"fold01"`` .. ``"fold10"`` (train) or ``"fold01test"`` .. (test); ``None`` = all images.
        modality: ``"co"`` (colour) or ``"ir"`` (infrared) image files.
        resolution: 512 or 1024; default 512 when present, else 1024.

    Returns:
        :class:`AnnotatedDataset` (format ``"vedai"``), classes :data:`VEDAI_CLASSES`.
    """
    root = Path(path)
    if modality not in ("co", "ir"):
        raise DataError(f"modality: expected 'co' or 'ir', got {modality!r}")
    if resolution is None:
        resolution = next((r for r in (512, 1024) if (root / f"Annotations{r}").is_dir()), None)
    ann_dir, img_dir = root / f"Annotations{resolution}", root / f"Vehicules{resolution}"
    if resolution is None or not ann_dir.is_dir():
        raise DataError(f"{root}: not a VEDAI dataset (looked for Annotations512/ or Annotations1024/)")
    problems: list[Problem] = []

    objects: dict[str, list[tuple]] = {}
    sources: dict[str, str] = {}
    combined = ann_dir / f"annotation{resolution}.txt"
    per_image = [p for p in ann_dir.glob("*.txt") if _ID_RE.match(p.stem)]
    if per_image:
        for p in per_image:
            objects[p.stem] = _parse_lines(p, read_text(p, "annotation file", DataError).splitlines(), False,
                                           problems)
            sources[p.stem] = str(p)
    elif combined.is_file():
        lines = read_text(combined, "annotation file", DataError).splitlines()
        for image_id, obj in _parse_lines(combined, lines, True, problems):
            objects.setdefault(image_id, []).append(obj)
            sources[image_id] = str(combined)

    if split is None:
        suffix = f"_{modality}"
        ids = sorted({p.stem[: -len(suffix)] for p in img_dir.glob(f"*{suffix}.*")} | set(objects))
    else:
        split_file = ann_dir / f"{split}.txt"
        if not split_file.is_file():
            folds = sorted(p.stem for p in ann_dir.glob("fold*.txt"))
            raise DataError(f"{split_file}: split file not found (available: {', '.join(folds) or 'none'})")
        ids = [
            _norm_id(line.split()[0]) for line in read_text(split_file, "split file", DataError).splitlines()
            if line.split()
        ]

    samples = []
    for image_id in ids:
        image_path = next(
            (p for p in (img_dir / f"{image_id}_{modality}{e}" for e in (".png", ".jpg", ".tif")) if p.is_file()), None
        )
        if image_path is None:
            problems.append(
                Problem(str(img_dir / f"{image_id}_{modality}.png"), "", "image not found; skipped", "missing_image")
            )
            continue
        size = read_image_size(image_path, problems)
        if size is None:
            continue
        width, height = size
        boxes, labels, contained, occluded = [], [], [], []
        for line_no, cid, xs, ys, is_contained, is_occluded in objects.get(image_id, []):
            if cid not in _LABEL_OF_ID:
                problems.append(
                    Problem(
                        sources[image_id],
                        f"line {line_no}",
                        f"class id {cid} is not a VEDAI class {VEDAI_CLASS_IDS}; object skipped",
                        "unknown_class",
                    )
                )
                continue
            # oriented box -> its axis-aligned hull, clipped: corners of vehicles at the border lie outside
            boxes.append(
                [max(0.0, min(xs)), max(0.0, min(ys)), min(float(width), max(xs)), min(float(height), max(ys))]
            )
            labels.append(_LABEL_OF_ID[cid])
            contained.append(is_contained)
            occluded.append(is_occluded)
        samples.append(
            make_sample(
                image_id,
                image_path,
                width,
                height,
                boxes,
                labels,
                None,
                VEDAI_CLASSES,
                annotation_path=sources.get(image_id),
                is_contained=contained,
                is_occluded=occluded,
            )
        )
    samples = drop_duplicate_ids(samples, problems)
    return AnnotatedDataset(VEDAI_CLASSES, samples, problems, root=root, format="vedai")


def _norm_id(token: str) -> str:
    return token.zfill(8) if _ID_RE.match(token) else token


def _parse_lines(path: Path, lines: list[str], with_id: bool, problems: list[Problem]) -> list:
    out = []
    n_expected = 15 if with_id else 14
    for line_no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        where = f"line {line_no}"
        if len(parts) != n_expected:
            problems.append(
                Problem(
                    str(path),
                    where,
                    f"expected {n_expected} values (x y orientation class "
                    f"contained occluded x1..x4 y1..y4), got {len(parts)}; skipped",
                    "parse_error",
                )
            )
            continue
        image_id = None
        if with_id:
            image_id, parts = _norm_id(parts[0]), parts[1:]
        vals = parse_numbers(parts)
        cid = parse_class_id(parts[3])
        if vals is None or isinstance(cid, str):
            reason = cid if isinstance(cid, str) else "non-numeric or non-finite value"
            problems.append(Problem(str(path), where, f"{reason}; skipped", "parse_error"))
            continue
        obj = (line_no, cid, vals[6:10], vals[10:14], bool(vals[4]), bool(vals[5]))
        out.append((image_id, obj) if with_id else obj)
    return out
