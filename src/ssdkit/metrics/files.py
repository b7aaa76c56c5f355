"""Metrics of files: a COCO instances file (ground truth) against a COCO results file (any detector's output).

COCO AP (pycocotools), VOC AP and the TIDE error breakdown of the same validated pair.

Both files are read and validated by :mod:`ssdkit.data.coco_json`, under the rules the training reader uses; any
problem raises one :class:`~ssdkit.errors.DataError` line naming the file and the field. Evaluation adds:

- every annotation's image and category is in the ground truth, and so is every result's;
- the ground truth has at least one annotation. With none every AP is undefined (pycocotools answers -1
  everywhere, the VOC devkit divides by zero); that is refused with a message, as it is mostly an image-info file
  (``image_info_test2017.json``) given in place of an instances file.

Annotation ids are renumbered 1..M for pycocotools: they only tell its matches apart, and an id 0 (some exporters
count from 0) would read as "unmatched" there. Category names are made unique (``"car (3)"``) to key the
per-class results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ssdkit.data.coco_json import CocoInstances, load_json, parse_instances, parse_results, require_references
from ssdkit.errors import DataError
from ssdkit.metrics.coco import COCO_SIZE_RANGES, coco_from_dataset, run_cocoeval
from ssdkit.metrics.tide import tide_from_xywh
from ssdkit.metrics.voc import evaluate_voc

__all__ = ["evaluate_coco_files", "evaluate_voc_files", "evaluate_tide_files", "load_files"]


def _load_pair(gt_json: str | os.PathLike, dt_json: str | os.PathLike) -> tuple[CocoInstances, list[dict]]:
    """The validated ground truth (categories sorted by id, unique names, ids 1..M, areas) and results."""
    gt = parse_instances(load_json(gt_json, "ground-truth"), gt_json)
    require_references(gt)
    if not gt.annotations:
        raise DataError(
            f"{gt.path}: annotations: empty, so every AP is undefined (no object to find); give an instances "
            "file with annotations (an image-info file has none)"
        )
    for k, ann in enumerate(gt.annotations):
        ann["id"] = k + 1
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    gt.categories.sort(key=lambda c: c["id"])
    names = [c.get("name", str(c["id"])) for c in gt.categories]
    if len(set(names)) != len(names):
        names = [f"{n} ({c['id']})" for n, c in zip(names, gt.categories)]
    for cat, name in zip(gt.categories, names):
        cat["name"] = name
    results = parse_results(load_json(dt_json, "detection results"), dt_json, gt)
    return gt, results


def evaluate_coco_files(
    gt_json: str | os.PathLike,
    dt_json: str | os.PathLike,
    verbose: bool = False,
    size_ranges: Sequence[float] = COCO_SIZE_RANGES,
    backend: str = "pycocotools",
) -> dict:
    """COCO bbox metrics of any detector's COCO results file against a COCO instances file (pycocotools).

    Args:
        gt_json: COCO instances JSON (``images``, ``annotations``, ``categories``).
        dt_json: COCO results JSON: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.
        verbose: let pycocotools print.
        size_ranges: object-size bounds of ``"by_size"`` (see :func:`ssdkit.metrics.evaluate_coco`).
        backend: ``"pycocotools"`` or ``"faster"`` (see :func:`ssdkit.metrics.evaluate_coco`).

    Returns:
        The dict of :func:`ssdkit.metrics.evaluate_coco` (per-class keys are the category names).

    Raises:
        DataError: a file is missing or malformed (module docstring), the ground truth has no annotation, or a
            result names an image or category the ground truth lacks.
    """
    gt, results = _load_pair(gt_json, dt_json)
    return run_cocoeval(coco_from_dataset(gt.dataset(), verbose), results, verbose, size_ranges, backend)


def _per_image(gt: CocoInstances, results: list[dict]) -> list[tuple[np.ndarray, ...]]:
    """Per image of ``gt`` (file order): ``(gt_xywh [M, 4] float64, gt_category [M] int64, gt_crowd [M] bool,
    dt_xywh [K, 4] float64, dt_category [K] int64, dt_score [K] float64)``, boxes as the files give them."""
    index_of = {img["id"]: i for i, img in enumerate(gt.images)}
    rows: list[tuple[list, ...]] = [([], [], [], [], [], []) for _ in index_of]
    for ann in gt.annotations:
        row = rows[index_of[ann["image_id"]]]
        row[0].append(ann["bbox"])
        row[1].append(ann["category_id"])
        row[2].append(bool(ann["iscrowd"]))
    for r in results:
        row = rows[index_of[r["image_id"]]]
        row[3].append(r["bbox"])
        row[4].append(r["category_id"])
        row[5].append(r["score"])
    return [
        (np.asarray(gb, np.float64).reshape(-1, 4), np.asarray(gc, np.int64), np.asarray(crowd, bool),
         np.asarray(db, np.float64).reshape(-1, 4), np.asarray(dc, np.int64), np.asarray(ds, np.float64))
        for gb, gc, crowd, db, dc, ds in rows
    ]  # fmt: skip


def load_files(gt_json: str | os.PathLike, dt_json: str | os.PathLike) -> tuple[list[dict], list[dict], list[str]]:
    """A COCO ground-truth / results pair as ssdkit's in-memory lists (see :mod:`ssdkit.metrics.common`).

    Categories become 0-based labels in ascending id order (names from the ``name`` field); ``iscrowd`` objects
    become ``ignore``; boxes become xyxy. Returns ``(detections, ground_truths, class_names)``, one entry per
    image of the ground truth, in its order.

    Raises:
        DataError: as :func:`evaluate_coco_files`.
    """
    gt, results = _load_pair(gt_json, dt_json)
    label = {c["id"]: k for k, c in enumerate(gt.categories)}

    def label_of(category_ids: np.ndarray) -> np.ndarray:
        return np.asarray([label[c] for c in category_ids.tolist()], np.int64)

    def xyxy(b: np.ndarray) -> np.ndarray:
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1)

    ground_truths, detections = [], []
    for gb, gc, crowd, db, dc, ds in _per_image(gt, results):
        ground_truths.append({"boxes": xyxy(gb), "labels": label_of(gc), "ignore": crowd})
        detections.append({"boxes": xyxy(db), "labels": label_of(dc), "scores": ds})
    return detections, ground_truths, [c["name"] for c in gt.categories]


def evaluate_voc_files(
    gt_json: str | os.PathLike,
    dt_json: str | os.PathLike,
    use_07_metric: bool = True,
    iou_threshold: float = 0.5,
    pixel_offset: bool = False,
) -> dict:
    """VOC metrics (:func:`ssdkit.metrics.evaluate_voc`) of a COCO-format ground-truth / results pair
    (:func:`load_files`). ``pixel_offset`` defaults to False because COCO boxes are continuous coordinates; pass
    True for files converted from VOC's inclusive integer boxes.

    Raises:
        DataError: as :func:`evaluate_coco_files`.
    """
    detections, ground_truths, names = load_files(gt_json, dt_json)
    return evaluate_voc(detections, ground_truths, len(names), names, iou_threshold, use_07_metric, pixel_offset)


def evaluate_tide_files(
    gt_json: str | os.PathLike,
    dt_json: str | os.PathLike,
    pos_threshold: float = 0.5,
    background_threshold: float = 0.1,
    max_dets: int = 100,
) -> dict:
    """TIDE's error breakdown (:func:`ssdkit.metrics.evaluate_tide`) of a COCO ground-truth / results pair.

    Boxes and category ids are used as the files give them (``iscrowd`` objects are TIDE's ignore regions), so the
    numbers are those of ``tidecv``'s ``datasets.COCO`` / ``datasets.COCOResult`` on the same files.

    Raises:
        DataError: as :func:`evaluate_coco_files`.
    """
    gt, results = _load_pair(gt_json, dt_json)
    return tide_from_xywh(_per_image(gt, results), pos_threshold, background_threshold, max_dets)
