"""PASCAL VOC detection AP: VOC2007 11-point and VOC2010+ area AP, with the VOC devkit's matching.

Reproduces the devkit (``VOCevalcode`` / py-faster-rcnn ``voc_eval.py``) exactly, vectorised; the input formats
(detection sets and ground truths per image) are those of :mod:`ssdkit.metrics.common`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssdkit.metrics.common import check_labels, check_pair, det_arrays, gt_arrays, resolve_class_names, to_numpy

__all__ = ["voc_ap", "evaluate_voc"]


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
    rec = to_numpy(recall, np.float64).ravel()
    prec = to_numpy(precision, np.float64).ravel()
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
        detections: N detection sets (:mod:`ssdkit.metrics.common`).
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
    check_pair(detections, ground_truths)
    names = resolve_class_names(num_classes, class_names)

    # Per detection: class, score, best IoU with a same-class object of its image, and that object's global index.
    # The best match does not depend on which objects are already taken (the devkit also looks at taken ones and
    # calls the detection a duplicate), so it is computed for all detections at once, one IoU matrix per image.
    det_cls, det_score, det_ov, det_gid = [], [], [], []
    gt_labels_all, gt_ignore_all = [], []
    gt_offset = 0
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        gboxes, glabels, gignore = gt_arrays(gt, i)
        dboxes, dlabels, dscores = det_arrays(det, i)
        check_labels(glabels, num_classes, f"ground_truths[{i}]")
        check_labels(dlabels, num_classes, f"detections[{i}]")
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
        # gid only means something where a detection hit an object (it is out of range when the dataset has none)
        hit_difficult = np.zeros(len(order), bool)
        hit_difficult[hit] = gt_ignore[gid[hit]]
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
