"""What a detector gets wrong at an operating point: a detection confusion matrix, and P / R / F1 by score threshold.

Inputs are the formats of :mod:`ssdkit.metrics.common` (N images; K detections and M objects per image; C object
classes, labels in ``[0, C)``). A detection is *kept* at score threshold ``t`` when ``score > t``: strictly above,
as ``postprocess.decode_batch`` keeps scores above its ``score_thresh``, so the threshold this module recommends
is the value to pass as ``ssdkit predict --score``. IoU is the VOC formula (:func:`ssdkit.metrics.voc`'s, with
``+1`` in widths only with ``pixel_offset``); a match needs IoU strictly above ``iou_threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssdkit.errors import SSDKitError
from ssdkit.metrics.common import check_labels, check_pair, det_arrays, gt_arrays, resolve_class_names, to_numpy
from ssdkit.metrics.voc import _voc_overlaps

__all__ = ["confusion_matrix", "precision_recall_f1", "BACKGROUND"]

#: The name of the extra row / column of :func:`confusion_matrix`.
BACKGROUND = "background"


def _image_arrays(detections: Sequence[dict], ground_truths: Sequence[dict], num_classes: int):
    """Per image ``(dboxes [K, 4], dlabels [K], dscores [K], gboxes [M, 4], glabels [M], gignore [M])``, checked."""
    check_pair(detections, ground_truths)
    if int(num_classes) < 1:
        raise SSDKitError(f"num_classes: expected at least 1 object class, got {num_classes}")
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        dboxes, dlabels, dscores = det_arrays(det, i)
        gboxes, glabels, gignore = gt_arrays(gt, i)
        check_labels(dlabels, num_classes, f"detections[{i}]")
        check_labels(glabels, num_classes, f"ground_truths[{i}]")
        yield dboxes, dlabels, dscores, gboxes, glabels, gignore


def _check_iou(iou_threshold: float) -> float:
    if not 0.0 <= float(iou_threshold) < 1.0:
        raise SSDKitError(f"iou_threshold: expected a number in [0, 1), got {iou_threshold}")
    return float(iou_threshold)


def confusion_matrix(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
    class_names: Sequence[str] | None = None,
    pixel_offset: bool = False,
) -> dict:
    """Detection confusion matrix at one score threshold: which class each object got, background included.

    Matching, per image: the kept detections (``score > score_threshold``) are taken in decreasing score (stable:
    ties keep their order in the detection set). Each looks at the objects of *any* class that no earlier
    detection took, plus every ``ignore`` object, and picks the one of highest IoU (the first of equal ones):

    - IoU ``> iou_threshold`` with an object that is not ignored: a match; the object is taken and
      ``counts[object class, detection class]`` grows by one (the diagonal when the classes agree, a class
      confusion otherwise);
    - IoU ``> iou_threshold`` with an ignored object (VOC difficult, COCO crowd): the detection is dropped, it is
      neither a match nor a false positive, and the ignored object can absorb any number of detections;
    - otherwise a false positive: ``counts[C, detection class]`` (background row). A duplicate, a detection on
      an object already taken with no other free object above the IoU threshold, lands here too.

    After all detections, each object that is not ignored and was not taken is missed:
    ``counts[object class, C]`` (background column). Ignored objects are never counted. ``counts[C, C]`` is 0.

    Args:
        detections: N detection sets; ground_truths: N ground truths (``ignore`` optional).
        num_classes: C, object classes only (no background).
        iou_threshold: a match needs IoU strictly above this.
        score_threshold: detections with ``score > score_threshold`` take part.
        class_names: C names (default ``"0"``, ``"1"``, ...).
        pixel_offset: the VOC devkit's ``+1`` in box widths (inclusive integer boxes).

    Returns:
        ``{"counts": ndarray[C + 1, C + 1] int64`` (rows: true class, last row background = false positives;
        columns: predicted class, last column background = missed objects), ``"normalized": ndarray[C + 1, C + 1]
        float64`` (each row divided by its sum: the fate of the objects of a class, or how the false positives
        spread over classes; a row with no count is NaN), ``"class_names"``: C names then ``"background"``,
        ``"iou_threshold"``, ``"score_threshold"}``.
    """
    names = resolve_class_names(num_classes, class_names)
    iou_threshold = _check_iou(iou_threshold)
    score_threshold = float(score_threshold)
    bg = len(names)
    counts = np.zeros((bg + 1, bg + 1), np.int64)
    for dboxes, dlabels, dscores, gboxes, glabels, gignore in _image_arrays(detections, ground_truths, bg):
        kept = np.flatnonzero(dscores > score_threshold)
        kept = kept[np.argsort(-dscores[kept], kind="stable")]
        taken = np.zeros(len(glabels), bool)
        if len(kept) and len(glabels):
            ious = _voc_overlaps(dboxes[kept], gboxes, pixel_offset)  # [kept, M]
            for row, d in zip(ious, kept):
                free = np.where(taken, -np.inf, row)
                j = int(np.argmax(free))
                if free[j] <= iou_threshold:
                    counts[bg, dlabels[d]] += 1
                elif not gignore[j]:
                    taken[j] = True
                    counts[glabels[j], dlabels[d]] += 1
        else:
            np.add.at(counts, (bg, dlabels[kept]), 1)
        np.add.at(counts, (glabels[~taken & ~gignore], bg), 1)
    rows = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(rows > 0, counts / np.maximum(rows, 1), np.nan)
    return {
        "counts": counts,
        "normalized": normalized,
        "class_names": [*names, BACKGROUND],
        "iou_threshold": iou_threshold,
        "score_threshold": score_threshold,
    }


def _voc_flags(dboxes, dlabels, dscores, gboxes, glabels, gignore, iou_threshold: float, pixel_offset: bool):
    """Per detection of one image: ``(tp [K] bool, counted [K] bool)`` under the VOC devkit's matching.

    Each detection's best object is the same-class object of highest IoU, ignored and already-taken ones
    included (the devkit's rule). Above the threshold: on an ignored object it is not counted; the first
    detection in score order to reach an object is a true positive, later ones are duplicates (false positives).
    """
    k = len(dlabels)
    tp, counted = np.zeros(k, bool), np.ones(k, bool)
    if k == 0 or len(glabels) == 0:
        return tp, counted
    ious = _voc_overlaps(dboxes, gboxes, pixel_offset)
    ious[dlabels[:, None] != glabels[None, :]] = -np.inf
    best = ious.argmax(1)
    hit = ious[np.arange(k), best] > iou_threshold
    counted[hit] = ~gignore[best[hit]]
    order = np.argsort(-dscores, kind="stable")
    cand = order[hit[order] & counted[order]]  # counted hits, in score order
    _, first = np.unique(best[cand], return_index=True)
    tp[cand[first]] = True
    return tp, counted


def _curves(scores: np.ndarray, tp: np.ndarray, num_gt: int, thresholds: np.ndarray) -> dict:
    """P, R, F1 ``[T]`` of detections ``(scores [D], tp [D] bool)`` against ``num_gt`` objects, kept at ``> t``."""
    order = np.argsort(scores)
    s, hits = scores[order], tp[order].astype(np.int64)
    # detections kept at t are those after searchsorted(..., "right"): suffix sums give their TP counts
    suffix_tp = np.concatenate([np.cumsum(hits[::-1])[::-1], [0]])
    start = np.searchsorted(s, thresholds, side="right")
    n_tp = suffix_tp[start].astype(np.float64)
    n_kept = (len(s) - start).astype(np.float64)
    n_fp, n_fn = n_kept - n_tp, num_gt - n_tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_kept > 0, n_tp / n_kept, np.nan)
        recall = np.full(len(thresholds), np.nan) if num_gt == 0 else n_tp / num_gt
        denom = 2 * n_tp + n_fp + n_fn
        f1 = np.where(denom > 0, 2 * n_tp / np.maximum(denom, 1), np.nan)
    out: dict[str, Any] = {"precision": precision, "recall": recall, "f1": f1, "num_gt": int(num_gt),
                           "num_detections": len(s)}  # fmt: skip
    out.update(_best(thresholds, precision, recall, f1))
    return out


def _best(thresholds: np.ndarray, precision: np.ndarray, recall: np.ndarray, f1: np.ndarray) -> dict:
    """The F1-optimal threshold: the middle grid point of the first run of thresholds reaching the maximum F1.

    A run of equal F1 means no detection scores between its thresholds; its middle is the choice farthest from
    the scores that change the answer. None (and NaN numbers) when F1 never exceeds 0.
    """
    f = np.where(np.isnan(f1), -1.0, f1)
    if len(f) == 0 or f.max() <= 0:
        return {"best_threshold": None, "best_f1": math.nan, "best_precision": math.nan, "best_recall": math.nan}
    at_max = f >= f.max() - 1e-12
    first = int(np.argmax(at_max))
    end = first + (int(np.argmin(at_max[first:])) if not at_max[first:].all() else len(f) - first)
    k = first + (end - 1 - first) // 2
    return {
        "best_threshold": float(thresholds[k]),
        "best_f1": float(f1[k]),
        "best_precision": float(precision[k]),
        "best_recall": float(recall[k]),
    }


def precision_recall_f1(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
    thresholds: Any = None,
    class_names: Sequence[str] | None = None,
    pixel_offset: bool = False,
) -> dict:
    """Precision, recall and F1 against the score threshold, per class and overall, and the F1-optimal threshold.

    Matching is the VOC devkit's (:func:`ssdkit.metrics.evaluate_voc`): per class, greedy in decreasing score,
    a detection's best same-class object (IoU ``> iou_threshold``) is a true positive if no higher-scored
    detection took it, a duplicate (false positive) if one did, and not counted if that object is ``ignore``
    (difficult). Greedy matching in score order makes the matches at threshold ``t`` those of the full list
    restricted to ``score > t``, so one matching serves every threshold. At the lowest threshold below every score
    the numbers are the last point of ``evaluate_voc``'s PR curve (same ``pixel_offset``).

    Per threshold t: ``TP``, ``FP`` (kept detections, ``score > t``, not true positives, not uncounted), ``FN``
    (objects, not ignored, without a true positive): ``precision = TP / (TP + FP)`` (NaN with nothing kept),
    ``recall = TP / (TP + FN)`` (NaN for a class without objects), ``F1 = 2 TP / (2 TP + FP + FN)`` (NaN when all
    three are 0). ``"overall"`` is micro-averaged: the counts summed over classes.

    Args:
        detections: N detection sets; ground_truths: N ground truths, same order.
        num_classes: C object classes.
        iou_threshold: a true positive needs IoU strictly above this.
        thresholds: ``[T]`` score thresholds (sorted, duplicates dropped); default 0, 0.01, ..., 1.
        class_names: C names keying ``"per_class"`` (default ``"0"``, ``"1"``, ...).
        pixel_offset: the VOC devkit's ``+1`` in box widths.

    Returns:
        ``{"thresholds": ndarray[T], "iou_threshold": float, "overall": curve, "per_class": {name: curve}}`` where
        a curve is ``{"precision", "recall", "f1": ndarray[T] float64, "num_gt": int, "num_detections": int,
        "best_threshold": float | None, "best_f1", "best_precision", "best_recall": float}``. ``best_threshold``
        maximises F1 on the grid (the middle of the first run of maxima); the value to ship as ``--score``.
    """
    names = resolve_class_names(num_classes, class_names)
    iou_threshold = _check_iou(iou_threshold)
    if thresholds is None:
        grid = np.round(np.linspace(0.0, 1.0, 101), 2)
    else:
        grid = np.unique(to_numpy(thresholds, np.float64).ravel())
        if len(grid) == 0 or not np.isfinite(grid).all():
            raise SSDKitError(f"thresholds: expected a non-empty list of finite numbers, got {thresholds!r}")
    scores, labels, tps, num_gt = [], [], [], np.zeros(len(names), np.int64)
    for arrays in _image_arrays(detections, ground_truths, len(names)):
        dboxes, dlabels, dscores, gboxes, glabels, gignore = arrays
        tp, counted = _voc_flags(*arrays, iou_threshold, pixel_offset)
        scores.append(dscores[counted])
        labels.append(dlabels[counted])
        tps.append(tp[counted])
        num_gt += np.bincount(glabels[~gignore], minlength=len(names))
    scores_all = np.concatenate(scores) if scores else np.zeros(0)
    labels_all = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    tp_all = np.concatenate(tps) if tps else np.zeros(0, bool)
    per_class = {}
    for c, name in enumerate(names):
        sel = labels_all == c
        per_class[name] = _curves(scores_all[sel], tp_all[sel], int(num_gt[c]), grid)
    return {
        "thresholds": grid,
        "iou_threshold": iou_threshold,
        "overall": _curves(scores_all, tp_all, int(num_gt.sum()), grid),
        "per_class": per_class,
    }
