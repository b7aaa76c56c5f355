"""COCO bbox metrics through pycocotools (the metric of record: called, never re-derived).

In-memory detection sets and ground truths (formats of :mod:`ssdkit.metrics.common`) become a COCO dataset and a
results list; ``COCOeval`` computes the numbers, whose order :data:`COCO_STAT_NAMES` names.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssdkit.errors import SSDKitError
from ssdkit.metrics.common import check_labels, check_pair, det_arrays, gt_arrays, resolve_class_names

__all__ = ["COCO_STAT_NAMES", "evaluate_coco", "detections_to_coco_results", "coco_from_dataset", "run_cocoeval"]

# The order of ``COCOeval.stats`` for iouType='bbox'.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _quiet(verbose: bool) -> contextlib.AbstractContextManager:
    """pycocotools prints progress and tables: shown with ``verbose``, swallowed otherwise."""
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def coco_from_dataset(dataset: dict, verbose: bool):
    """A ``pycocotools.coco.COCO`` indexing ``dataset`` (``{"images", "annotations", "categories"}``, not copied)."""
    from pycocotools.coco import COCO

    with _quiet(verbose):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def _load_results(coco_gt, results: list[dict], verbose: bool):
    """``coco_gt.loadRes(results)``, also for an empty list (on which pycocotools fails with IndexError)."""
    if results:
        with _quiet(verbose):
            return coco_gt.loadRes(copy.deepcopy(results))  # loadRes writes into the dicts it is given
    # what loadRes would build for no detections: the same images and categories, no annotations
    return coco_from_dataset(
        {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        },
        verbose,
    )


def run_cocoeval(coco_gt, results: list[dict], verbose: bool) -> dict:
    """COCOeval(bbox) of ``results`` against ``coco_gt``; stats plus per-category AP / AP50 keyed by name.

    Args:
        coco_gt: a ``COCO`` of the ground truth (:func:`coco_from_dataset`).
        results: COCO results ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``, left unchanged.
        verbose: let pycocotools print.

    Returns:
        The dict of :func:`evaluate_coco`; per-class keys are the categories' ``name`` (their id without one).
    """
    from pycocotools.cocoeval import COCOeval

    coco_dt = _load_results(coco_gt, results, verbose)
    with _quiet(verbose):
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: dict[str, Any] = {k: float(v) for k, v in zip(COCO_STAT_NAMES, ev.stats)}

    # eval["precision"]: [T iou thresholds, R recall points, K categories, A area ranges, M max-dets];
    # -1 marks "no ground truth" and is skipped exactly as COCOeval.summarize skips it.
    prec = ev.eval["precision"]
    a = list(ev.params.areaRngLbl).index("all")
    m = len(ev.params.maxDets) - 1
    t50 = int(np.argmin(np.abs(ev.params.iouThrs - 0.5)))
    cats = {c["id"]: c for c in coco_gt.dataset["categories"]}
    ap, ap50 = {}, {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = str(cats[cat_id].get("name", cat_id))
        p = prec[:, :, k, a, m]
        p50 = prec[t50, :, k, a, m]
        ap[name] = float(np.mean(p[p > -1])) if (p > -1).any() else math.nan
        ap50[name] = float(np.mean(p50[p50 > -1])) if (p50 > -1).any() else math.nan
    out["ap"], out["ap50"] = ap, ap50
    return out


def evaluate_coco(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    class_names: Sequence[str],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    verbose: bool = False,
) -> dict:
    """COCO bbox metrics of in-memory detections, computed by pycocotools' ``COCOeval``.

    The ground truth becomes an in-memory COCO dataset: image ``i`` gets id ``i`` (its position; ``image_id`` keys
    are not needed), class ``c`` gets category id ``c + 1``, boxes become top-left ``xywh`` with
    ``area = w * h`` and ``iscrowd = ignore``. Detections go through ``COCO.loadRes``.

    Args:
        detections: N detection sets (:mod:`ssdkit.metrics.common`); images without detections are fine.
        ground_truths: N ground truths; ``ignore`` marks crowd regions.
        class_names: one name per object class, in label order.
        image_sizes: optional N ``(h, w)``, written to the image records (COCOeval does not use them for bbox);
            defaults to each ground truth's ``size`` when present.
        verbose: let pycocotools print its progress and summary table.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}`` floats
        straight from ``COCOeval.stats`` (``-1`` where pycocotools reports -1: no ground truth in that area
        range), plus ``"ap"`` and ``"ap50"``: ``{name: float}`` per-class AP@[.5:.95] and AP@.5 (``NaN`` for a
        class without ground truth). No detections at all gives 0 (or -1) everywhere, as pycocotools would.
    """
    check_pair(detections, ground_truths)
    names = [str(n) for n in class_names]
    if not names:
        raise SSDKitError("class_names: at least one class is needed")
    names = resolve_class_names(len(names), names)  # unique: they key the per-class results
    if image_sizes is not None and len(image_sizes) != len(ground_truths):
        raise SSDKitError(f"image_sizes: expected {len(ground_truths)} (h, w) pairs, got {len(image_sizes)}")

    images, annotations = [], []
    for i, gt in enumerate(ground_truths):
        boxes, labels, ignore = gt_arrays(gt, i)
        check_labels(labels, len(names), f"ground_truths[{i}]")
        img: dict[str, Any] = {"id": i}
        size = image_sizes[i] if image_sizes is not None else gt.get("size")
        if size is not None:
            img["height"], img["width"] = int(size[0]), int(size[1])
        if gt.get("image_id") is not None:
            img["file_name"] = str(gt["image_id"])
        images.append(img)
        for b, c, ig in zip(boxes.tolist(), labels.tolist(), ignore.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,  # COCO ids start at 1; 0 means "unmatched" inside COCOeval
                    "image_id": i,
                    "category_id": c + 1,
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": int(ig),
                }
            )
    categories = [{"id": c + 1, "name": n} for c, n in enumerate(names)]
    coco_gt = coco_from_dataset({"images": images, "annotations": annotations, "categories": categories}, verbose)

    results = detections_to_coco_results(detections, list(range(len(images))), [c + 1 for c in range(len(names))])
    return run_cocoeval(coco_gt, results, verbose)


def detections_to_coco_results(
    detections: Sequence[dict], image_ids: Sequence[Any], category_ids: Sequence[int]
) -> list[dict]:
    """Detections in the COCO results format (what ``COCO.loadRes`` and the evaluation server read).

    Args:
        detections: N detection sets (xyxy pixels, 0-based labels).
        image_ids: N COCO image ids, same order.
        category_ids: COCO category id of each 0-based label (``category_ids[label]``).

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h] (top-left corner), "score"}, ...]`` with plain Python
        numbers (JSON-serialisable).
    """
    if len(image_ids) != len(detections):
        raise SSDKitError(f"image_ids: expected {len(detections)} ids (one per detection set), got {len(image_ids)}")
    cat_ids = list(category_ids)
    out = []
    for i, (det, image_id) in enumerate(zip(detections, image_ids)):
        boxes, labels, scores = det_arrays(det, i)
        check_labels(labels, len(cat_ids), f"detections[{i}]")
        for b, c, s in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            out.append(
                {
                    "image_id": image_id,
                    "category_id": cat_ids[c],
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": s,
                }
            )
    return out
