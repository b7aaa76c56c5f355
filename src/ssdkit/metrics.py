"""Detection metrics: VOC07 11-point AP, VOC2010+ area AP, COCO AP through pycocotools.

Formats shared by every function here (N images, K detections and M objects per image):

- a detection set for one image is a dict ``{"boxes": Tensor[K, 4] float xyxy pixels, "labels": Tensor[K] int64
  0-based object classes, "scores": Tensor[K] float}``;
- a ground truth for one image is a dict ``{"boxes": Tensor[M, 4] float xyxy pixels, "labels": Tensor[M] int64
  0-based, "ignore": Tensor[M] bool (optional; VOC difficult / COCO crowd), "image_id" (optional), "size": (h, w)
  (optional)}``.

``detections[i]`` and ``ground_truths[i]`` describe the same image; numpy arrays and lists are accepted wherever a
tensor is. Labels never include background here: ``num_classes`` counts object classes only (the model's
``num_classes`` minus one).

The VOC functions reproduce the VOC devkit (``VOCevalcode`` / py-faster-rcnn ``voc_eval.py``) exactly; COCO numbers
are pycocotools' own (``COCOeval``), never re-derived.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssdkit.errors import DataError, SSDKitError

__all__ = [
    "voc_ap",
    "evaluate_voc",
    "evaluate_coco",
    "evaluate_coco_files",
    "evaluate_voc_files",
    "detections_to_coco_results",
    "COCO_STAT_NAMES",
]

# The order of ``COCOeval.stats`` for iouType='bbox'.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# --------------------------------------------------------------------------------------------------------------
# input normalisation


def _np(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if a.size == 0:
        a = a.reshape((0, *shape_tail))
    return a


def _as_gt(gt: dict, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes [M, 4] float64 xyxy, labels [M] int64, ignore [M] bool)`` of ``ground_truths[i]``."""
    try:
        boxes = _np(gt["boxes"], np.float64, (4,))
        labels = _np(gt["labels"], np.int64)
    except KeyError as e:
        raise SSDKitError(f"ground_truths[{i}]: missing key {e.args[0]!r} (expected 'boxes' and 'labels')") from None
    ignore = _np(gt["ignore"], bool) if gt.get("ignore") is not None else np.zeros(len(labels), bool)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(labels) or len(ignore) != len(labels):
        raise SSDKitError(
            f"ground_truths[{i}]: expected boxes [M, 4], labels [M], ignore [M]; got boxes {list(boxes.shape)}, "
            f"labels {list(labels.shape)}, ignore {list(ignore.shape)}"
        )
    return boxes, labels, ignore


def _as_det(det: dict, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes [K, 4] float64 xyxy, labels [K] int64, scores [K] float64)`` of ``detections[i]``."""
    try:
        boxes = _np(det["boxes"], np.float64, (4,))
        labels = _np(det["labels"], np.int64)
        scores = _np(det["scores"], np.float64)
    except KeyError as e:
        raise SSDKitError(
            f"detections[{i}]: missing key {e.args[0]!r} (expected 'boxes', 'labels' and 'scores')"
        ) from None
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(labels) or len(scores) != len(labels):
        raise SSDKitError(
            f"detections[{i}]: expected boxes [K, 4], labels [K], scores [K]; got boxes {list(boxes.shape)}, "
            f"labels {list(labels.shape)}, scores {list(scores.shape)}"
        )
    return boxes, labels, scores


def _check_pair(detections: Sequence[dict], ground_truths: Sequence[dict]) -> None:
    if len(detections) != len(ground_truths):
        raise SSDKitError(
            f"detections and ground_truths must describe the same images: got {len(detections)} detection sets "
            f"and {len(ground_truths)} ground truths"
        )


def _check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise SSDKitError(
            f"{what}: label {bad} outside [0, {num_classes}) (labels are 0-based object classes, no background)"
        )


def _class_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise SSDKitError(f"class_names: expected {num_classes} names (num_classes), got {len(names)}")
    if len(set(names)) != len(names):
        raise SSDKitError(f"class_names: names must be unique, got {names}")
    return names


# --------------------------------------------------------------------------------------------------------------
# VOC


def voc_ap(recall: Any, precision: Any, use_07_metric: bool = True) -> float:
    """Average precision of one class from its PR points, as the VOC devkit defines it.

    Args:
        recall: ``[D]`` float, recall after each of the D score-sorted detections (non-decreasing).
        precision: ``[D]`` float, precision after each detection.
        use_07_metric: True: VOC2007's 11-point interpolated AP (mean over t in 0, 0.1, ..., 1 of the highest
            precision at recall >= t, 0 where none). False: VOC2010+ area under the monotone precision envelope.

    Returns:
        AP in [0, 1]; 0.0 for empty inputs.
    """
    rec = _np(recall, np.float64).ravel()
    prec = _np(precision, np.float64).ravel()
    if rec.shape != prec.shape:
        raise ValueError(f"recall and precision must have the same length, got {rec.shape} and {prec.shape}")
    if use_07_metric:
        ap = 0.0
        # the devkit's own thresholds, floating-point quirks (0.30000000000000004) included
        for t in np.arange(0.0, 1.1, 0.1):
            mask = rec >= t
            p = float(np.max(prec[mask])) if mask.any() else 0.0
            ap += p / 11.0
        return float(ap)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # precision envelope: the max precision at any recall >= r (the devkit's backwards loop)
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _voc_overlaps(det: np.ndarray, gt: np.ndarray, pixel_offset: bool) -> np.ndarray:
    """IoU ``[K, M]`` float64 of xyxy boxes with the devkit's formula (``+1`` in widths when ``pixel_offset``)."""
    o = 1.0 if pixel_offset else 0.0
    ixmin = np.maximum(det[:, None, 0], gt[None, :, 0])
    iymin = np.maximum(det[:, None, 1], gt[None, :, 1])
    ixmax = np.minimum(det[:, None, 2], gt[None, :, 2])
    iymax = np.minimum(det[:, None, 3], gt[None, :, 3])
    iw = np.maximum(ixmax - ixmin + o, 0.0)
    ih = np.maximum(iymax - iymin + o, 0.0)
    inters = iw * ih
    area_d = (det[:, 2] - det[:, 0] + o) * (det[:, 3] - det[:, 1] + o)
    area_g = (gt[:, 2] - gt[:, 0] + o) * (gt[:, 3] - gt[:, 1] + o)
    uni = area_d[:, None] + area_g[None, :] - inters
    # degenerate boxes (zero area without the pixel offset) overlap nothing instead of giving NaN
    return np.divide(inters, uni, out=np.zeros_like(inters), where=uni > 0)


def evaluate_voc(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
    pixel_offset: bool = True,
) -> dict:
    """PASCAL VOC AP per class and mAP, exactly as the VOC devkit computes them.

    Per class: the detections of the whole dataset are sorted by descending score (stable: ties keep image order,
    then in-image order); each is matched to the ground truth of that class in its image with the highest IoU
    (difficult ones included). IoU > ``iou_threshold`` with a non-difficult, not yet matched object: true
    positive (the object becomes matched); with an already matched one: false positive (duplicate); with a
    difficult (``ignore``) object: neither. Otherwise false positive. The number of positives excludes difficult
    objects.

    Args:
        detections: N detection sets (see the module docstring).
        ground_truths: N ground truths, same order; ``ignore`` marks VOC ``difficult`` objects.
        num_classes: number of object classes (no background); labels must lie in ``[0, num_classes)``.
        class_names: ``num_classes`` names used as keys of the result; default ``"0"``, ``"1"``, ...
        iou_threshold: a detection needs IoU strictly greater than this to match.
        use_07_metric: True: VOC2007 11-point AP; False: VOC2010+ area under the PR envelope.
        pixel_offset: True: the devkit's ``+1`` in widths and heights (integer pixel boxes, inclusive
            corners); False: continuous coordinates (``area = (x2 - x1) * (y2 - y1)``).

    Returns:
        ``{"map": float, "ap": {name: float}, "precision": {name: ndarray[D]}, "recall": {name: ndarray[D]},
        "num_gt": {name: int}, "num_detections": {name: int}}`` where D is the class's detection count.
        A class with no (non-difficult) ground truth has AP ``NaN`` and is left out of ``map``, as the devkit
        would divide by zero there; ``map`` is ``NaN`` when no class has ground truth.
    """
    _check_pair(detections, ground_truths)
    names = _class_names(num_classes, class_names)

    # Per detection: class, score, best IoU with a same-class object of its image, and that object's global index.
    # The best match does not depend on which objects are already taken (the devkit also looks at taken ones and
    # calls the detection a duplicate), so it is computed for all detections at once, one IoU matrix per image.
    det_cls, det_score, det_ov, det_gid = [], [], [], []
    gt_labels_all, gt_ignore_all = [], []
    gt_offset = 0
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        gboxes, glabels, gignore = _as_gt(gt, i)
        dboxes, dlabels, dscores = _as_det(det, i)
        _check_labels(glabels, num_classes, f"ground_truths[{i}]")
        _check_labels(dlabels, num_classes, f"detections[{i}]")
        gt_labels_all.append(glabels)
        gt_ignore_all.append(gignore)
        if len(dlabels):
            if len(glabels):
                ov = _voc_overlaps(dboxes, gboxes, pixel_offset)
                ov[dlabels[:, None] != glabels[None, :]] = -np.inf
                jmax = ov.argmax(1)  # first maximum, as np.argmax in the devkit
                ovmax = ov[np.arange(len(dlabels)), jmax]
            else:
                jmax = np.zeros(len(dlabels), np.int64)
                ovmax = np.full(len(dlabels), -np.inf)
            det_cls.append(dlabels)
            det_score.append(dscores)
            det_ov.append(ovmax)
            det_gid.append(jmax + gt_offset)
        gt_offset += len(glabels)

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    det_cls, det_score = cat(det_cls, np.int64), cat(det_score, np.float64)
    det_ov, det_gid = cat(det_ov, np.float64), cat(det_gid, np.int64)
    gt_labels, gt_ignore = cat(gt_labels_all, np.int64), cat(gt_ignore_all, bool)

    ap, precision, recall, num_gt, num_det = {}, {}, {}, {}, {}
    for c, name in enumerate(names):
        npos = int(np.sum((gt_labels == c) & ~gt_ignore))
        sel = np.flatnonzero(det_cls == c)
        order = sel[np.argsort(-det_score[sel], kind="stable")]
        ov, gid = det_ov[order], det_gid[order]
        hit = ov > iou_threshold
        hit_difficult = hit & gt_ignore[gid]
        cand = np.flatnonzero(hit & ~hit_difficult)
        tp = np.zeros(len(order))
        # greedy matching in score order: the first detection to reach an object takes it, later ones are duplicates
        _, first = np.unique(gid[cand], return_index=True)
        tp[cand[first]] = 1.0
        fp = (~hit_difficult).astype(np.float64) - tp
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        if npos > 0:
            rec = tp / float(npos)
            prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            ap[name] = voc_ap(rec, prec, use_07_metric)
        else:
            rec = np.zeros(len(order))
            prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            ap[name] = math.nan
        precision[name], recall[name] = prec, rec
        num_gt[name], num_det[name] = npos, len(order)

    valid = [v for v in ap.values() if not math.isnan(v)]
    mean = float(np.mean(valid)) if valid else math.nan
    return {
        "map": mean,
        "ap": ap,
        "precision": precision,
        "recall": recall,
        "num_gt": num_gt,
        "num_detections": num_det,
    }


# --------------------------------------------------------------------------------------------------------------
# COCO (pycocotools)


def _quiet(verbose: bool) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())


def _coco_from_dataset(dataset: dict, verbose: bool):
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
    return _coco_from_dataset(
        {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset["categories"]),
            "annotations": [],
        },
        verbose,
    )


def _run_cocoeval(coco_gt, results: list[dict], verbose: bool) -> dict:
    """COCOeval(bbox) of ``results`` against ``coco_gt``; stats plus per-category AP / AP50 keyed by name."""
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
        detections: N detection sets (module docstring); images without detections are fine.
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
    _check_pair(detections, ground_truths)
    names = [str(n) for n in class_names]
    if not names:
        raise SSDKitError("class_names: at least one class is needed")
    if image_sizes is not None and len(image_sizes) != len(ground_truths):
        raise SSDKitError(f"image_sizes: expected {len(ground_truths)} (h, w) pairs, got {len(image_sizes)}")

    images, annotations = [], []
    for i, gt in enumerate(ground_truths):
        boxes, labels, ignore = _as_gt(gt, i)
        _check_labels(labels, len(names), f"ground_truths[{i}]")
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
    coco_gt = _coco_from_dataset({"images": images, "annotations": annotations, "categories": categories}, verbose)

    for i, det in enumerate(detections):
        _check_labels(_as_det(det, i)[1], len(names), f"detections[{i}]")
    results = detections_to_coco_results(detections, list(range(len(images))), [c + 1 for c in range(len(names))])
    return _run_cocoeval(coco_gt, results, verbose)


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
        boxes, labels, scores = _as_det(det, i)
        _check_labels(labels, len(cat_ids), f"detections[{i}]")
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


# --------------------------------------------------------------------------------------------------------------
# COCO-format files


def _read_json(path: str | os.PathLike, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {what} file not found")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{p}: not valid JSON ({e})") from None


def _is_box(b: Any) -> bool:
    return (
        isinstance(b, list | tuple)
        and len(b) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in b)
    )


def _load_gt_dataset(path: str | os.PathLike) -> dict:
    """A validated COCO instances dict; fills ``id``, ``area`` (w*h), ``iscrowd`` (0) where an annotation lacks them."""
    data = _read_json(path, "ground-truth")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a COCO ground-truth object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: field '{key}' missing or not a list")
    image_ids = set()
    for j, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise DataError(f"{path}: images[{j}] has no 'id'")
        image_ids.add(img["id"])
    cat_ids = set()
    for j, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise DataError(f"{path}: categories[{j}] has no 'id'")
        cat_ids.add(cat["id"])
    if not data["categories"]:
        raise DataError(f"{path}: 'categories' is empty")
    used_ids = {a.get("id") for a in data["annotations"] if isinstance(a, dict)}
    next_id = max([i for i in used_ids if isinstance(i, int)] + [0]) + 1
    for j, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotations[{j}] is not an object")
        if not _is_box(ann.get("bbox")):
            raise DataError(
                f"{path}: annotations[{j}].bbox must be 4 finite numbers [x, y, w, h], got {ann.get('bbox')}"
            )
        if ann.get("image_id") not in image_ids:
            raise DataError(f"{path}: annotations[{j}].image_id {ann.get('image_id')!r} is not in 'images'")
        if ann.get("category_id") not in cat_ids:
            raise DataError(f"{path}: annotations[{j}].category_id {ann.get('category_id')!r} is not in 'categories'")
        if "id" not in ann:
            ann["id"], next_id = next_id, next_id + 1
        ann.setdefault("area", float(ann["bbox"][2]) * float(ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    return data


def _load_results_file(path: str | os.PathLike, gt: dict, gt_path: str | os.PathLike) -> list[dict]:
    data = _read_json(path, "detection results")
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]  # a full COCO dict holding detections (some tools write this)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a COCO results list [{{image_id, category_id, bbox, score}}, ...]")
    image_ids = {img["id"] for img in gt["images"]}
    cat_ids = {cat["id"] for cat in gt["categories"]}
    for j, r in enumerate(data):
        if not isinstance(r, dict):
            raise DataError(f"{path}: entry {j} is not an object")
        if r.get("image_id") not in image_ids:
            raise DataError(f"{path}: entry {j} has image_id {r.get('image_id')!r}, which is not an image of {gt_path}")
        if r.get("category_id") not in cat_ids:
            raise DataError(
                f"{path}: entry {j} has category_id {r.get('category_id')!r}, which is not a category of {gt_path}"
            )
        if not _is_box(r.get("bbox")):
            raise DataError(f"{path}: entry {j}: bbox must be 4 finite numbers [x, y, w, h], got {r.get('bbox')}")
        s = r.get("score")
        if not isinstance(s, int | float) or isinstance(s, bool) or not math.isfinite(s):
            raise DataError(f"{path}: entry {j}: score must be a finite number, got {s!r}")
    return data


def evaluate_coco_files(gt_json: str | os.PathLike, dt_json: str | os.PathLike, verbose: bool = False) -> dict:
    """COCO bbox metrics of any detector's COCO results file against a COCO instances file (pycocotools).

    Args:
        gt_json: COCO instances JSON (``images``, ``annotations``, ``categories``).
        dt_json: COCO results JSON: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]``.
        verbose: let pycocotools print.

    Returns:
        The dict of :func:`evaluate_coco` (per-class keys are the category names).

    Raises:
        DataError: a file is missing or malformed, or a result names an image or category the ground truth lacks.
    """
    gt = _load_gt_dataset(gt_json)
    results = _load_results_file(dt_json, gt, gt_json)
    coco_gt = _coco_from_dataset(gt, verbose)
    return _run_cocoeval(coco_gt, results, verbose)


def evaluate_voc_files(
    gt_json: str | os.PathLike,
    dt_json: str | os.PathLike,
    use_07_metric: bool = True,
    iou_threshold: float = 0.5,
    pixel_offset: bool = False,
) -> dict:
    """VOC metrics (:func:`evaluate_voc`) of a COCO-format ground-truth / results pair.

    Categories are mapped to 0-based labels in ascending id order (names from the ``name`` field); ``iscrowd``
    objects count as VOC ``difficult``. ``pixel_offset`` defaults to False because COCO boxes are continuous
    coordinates; pass True for files converted from VOC's inclusive integer boxes.

    Raises:
        DataError: as :func:`evaluate_coco_files`.
    """
    gt = _load_gt_dataset(gt_json)
    results = _load_results_file(dt_json, gt, gt_json)
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: k for k, c in enumerate(cats)}
    names = [str(c.get("name", c["id"])) for c in cats]
    if len(set(names)) != len(names):
        names = [f"{n} ({c['id']})" for n, c in zip(names, cats)]
    index_of = {img["id"]: i for i, img in enumerate(gt["images"])}

    def xyxy(b: list) -> list[float]:
        return [b[0], b[1], b[0] + b[2], b[1] + b[3]]

    gboxes: list[list] = [[] for _ in index_of]
    glabels: list[list] = [[] for _ in index_of]
    gignore: list[list] = [[] for _ in index_of]
    for ann in gt["annotations"]:
        i = index_of[ann["image_id"]]
        gboxes[i].append(xyxy(ann["bbox"]))
        glabels[i].append(label_of[ann["category_id"]])
        gignore[i].append(bool(ann.get("iscrowd", 0)))
    dboxes: list[list] = [[] for _ in index_of]
    dlabels: list[list] = [[] for _ in index_of]
    dscores: list[list] = [[] for _ in index_of]
    for r in results:
        i = index_of[r["image_id"]]
        dboxes[i].append(xyxy(r["bbox"]))
        dlabels[i].append(label_of[r["category_id"]])
        dscores[i].append(float(r["score"]))
    ground_truths = [
        {
            "boxes": np.asarray(b, np.float64).reshape(-1, 4),
            "labels": np.asarray(lab, np.int64),
            "ignore": np.asarray(ig, bool),
        }
        for b, lab, ig in zip(gboxes, glabels, gignore)
    ]
    detections = [
        {
            "boxes": np.asarray(b, np.float64).reshape(-1, 4),
            "labels": np.asarray(lab, np.int64),
            "scores": np.asarray(s, np.float64),
        }
        for b, lab, s in zip(dboxes, dlabels, dscores)
    ]
    return evaluate_voc(detections, ground_truths, len(cats), names, iou_threshold, use_07_metric, pixel_offset)
