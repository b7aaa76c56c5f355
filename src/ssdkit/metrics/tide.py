"""TIDE error breakdown (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020).

Reproduces the reference implementation (the ``tidecv`` package, ``TIDE().evaluate(..., mode=TIDE.BOX)``) on
bounding boxes, numbers included; ``tidecv`` is not imported (the tests compare against it). Its definitions:

- Matching, per image: detections sorted by decreasing score (stable), the first ``max_dets`` kept; each takes
  the unused same-class object (not crowd) of highest IoU when that IoU is ``>= pos_threshold`` (note ``>=``).
  Unmatched detections whose crowd IoU (intersection over the detection's area) with a same-class crowd region
  is ``> pos_threshold`` are *ignored*: left out of AP, still classified below.
- AP: per class over all images, 101-point interpolated as COCO does, but TIDE's own code (a class with
  detections and no object counts as AP 0); the mean over classes with detections or objects. IoU is
  pycocotools' ``maskUtils.iou``.
- Each unmatched detection gets one error, tested in this order (``IoU_c``: IoU with objects of its class,
  ``IoU_o``: of other classes, all non-crowd objects of its image, matched or not): no object in the image:
  **Bkg**; ``bg <= max IoU_c <= pos``: **Loc**; ``max IoU_o >= pos``: **Cls**; ``max IoU_c`` over matched
  objects ``>= pos``: **Dupe**; ``max IoU <= bg``: **Bkg**; otherwise **Both**. An object never matched and
  named by no Loc / Cls error is a **Miss**.
- dAP of an error type: AP after fixing only those errors, minus AP, clipped at 0. Fixing a Loc / Cls error
  makes the highest-scored such detection of an unmatched object a true positive (of the object's class) and
  drops the others; fixing Dupe, Bkg, Both drops the detection; fixing Miss removes the object from the count.
  **FalsePos**: AP with every true positive scored 1 and every false positive 0; **FalseNeg**: AP with the
  unmatched objects removed (both not clipped).

Numbers are fractions in [0, 1] like every ssdkit AP (``tidecv`` prints them times 100).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ssdkit.metrics.common import check_labels, check_pair, det_arrays, gt_arrays, resolve_class_names

__all__ = ["TIDE_MAIN_ERRORS", "TIDE_SPECIAL_ERRORS", "evaluate_tide", "tide_from_xywh"]

#: The main error types, in TIDE's order (its short names).
TIDE_MAIN_ERRORS = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
#: The special error types.
TIDE_SPECIAL_ERRORS = ("FalsePos", "FalseNeg")

_REMOVE, _TRUE_POSITIVE, _LESS_GT = 0, 1, 2  # what fixing an error does


class _Error(NamedTuple):
    kind: str  # a TIDE_MAIN_ERRORS name
    original: tuple[int, float] | None  # the false positive (class, score) it is in AP; None: not in AP
    fix: int  # _REMOVE, _TRUE_POSITIVE, _LESS_GT; while an image is classified, -1 - object for Loc / Cls
    cls: int  # the class the fix applies to
    score: float


class _Run:
    """The matched data of one TIDE run: AP data points, objects per class, and one record per error.

    Data points ``(class, score, tp)`` are kept in TIDE's insertion order: its AP sorts by score with a stable
    sort, so the order decides ties between equal scores.
    """

    def __init__(self) -> None:
        self.points: list[tuple[int, float, bool]] = []
        self.num_gt: dict[int, int] = {}
        self.unmatched_gt: dict[int, int] = {}
        self.errors: list[_Error] = []
        self.touched: set[int] = set()  # the classes TIDE makes an AP record for

    def point(self, c: int, s: float, tp: bool) -> None:
        self.points.append((c, s, tp))
        self.touched.add(c)

    def missed(self, c: int, error: bool) -> None:
        self.unmatched_gt[c] = self.unmatched_gt.get(c, 0) + 1
        if error:
            self.errors.append(_Error("Miss", None, _LESS_GT, c, 0.0))


def _match(g_box, g_cls, gt_xywh, gt_cls, gt_crowd, d_box, d_cls, pos: float):
    """TIDE's matching of one image's score-sorted detections (``TIDEExample._run``).

    Returns ``(iou [K, M], used [K] int8, gt_used [M] bool)``: ``used`` is TIDE's tri-state, 1 matched, 0 not,
    -1 ignored (unmatched, inside a same-class crowd region).
    """
    from pycocotools import mask as mask_utils

    k, m = len(d_cls), len(g_cls)
    iou = np.asarray(mask_utils.iou(d_box, g_box, [0] * m), np.float64).reshape(k, m) if m else np.zeros((k, 0))
    used = np.zeros(k, np.int8)
    gt_used = np.zeros(m, bool)
    if m:
        buffer = iou * (d_cls[:, None] == g_cls[None, :])
        for p in range(k):
            j = int(np.argmax(buffer[p]))
            if buffer[p, j] >= pos:
                used[p], gt_used[j] = 1, True
                buffer[:, j] = 0
    crowd = np.flatnonzero(gt_crowd)
    if len(crowd):
        ciou = np.asarray(mask_utils.iou(d_box, gt_xywh[crowd], [1] * len(crowd)), np.float64).reshape(k, -1)
        hit = ((ciou > pos) & (d_cls[:, None] == gt_cls[crowd][None, :])).any(1)
        used[hit & (used != 1)] = -1
    return iou, used, gt_used


def _image(run: _Run, gt_xywh, gt_cls, gt_crowd, dt_xywh, dt_cls, dt_score, pos: float, bg: float, max_dets: int):
    """Match one image and classify its errors into ``run`` (TIDE's ``TIDEExample`` and ``TIDERun._eval_image``)."""
    real = np.flatnonzero(~gt_crowd)
    g_box, g_cls = gt_xywh[real], gt_cls[real]
    for c in g_cls.tolist():
        run.num_gt[c] = run.num_gt.get(c, 0) + 1
        run.touched.add(c)
    if len(dt_cls) == 0:
        for c in g_cls.tolist():
            run.missed(c, error=True)
        return
    order = np.argsort(-dt_score, kind="stable")[:max_dets]
    d_box, d_cls, d_score = dt_xywh[order], dt_cls[order], dt_score[order]
    iou, used, gt_used = _match(g_box, g_cls, gt_xywh, gt_cls, gt_crowd, d_box, d_cls, pos)
    for p in range(len(d_cls)):
        if used[p] >= 0:
            run.point(int(d_cls[p]), float(d_score[p]), bool(used[p]))
    same = d_cls[:, None] == g_cls[None, :]
    cls_iou, noncls_iou = iou * same, iou * ~same
    used_cls_iou = cls_iou * gt_used[None, :]
    usable = np.zeros(len(g_cls), bool)  # named by a Loc / Cls error: not a Miss
    best: dict[int, tuple[float, int]] = {}  # object -> (score, error index) of its best Loc / Cls error
    start = len(run.errors)
    for p in np.flatnonzero(used != 1):
        c, s = int(d_cls[p]), float(d_score[p])
        original = None if used[p] < 0 else (c, s)
        kind, target = "Bkg", -1
        if len(g_cls):
            j, jo = int(np.argmax(cls_iou[p])), int(np.argmax(noncls_iou[p]))
            if bg <= cls_iou[p, j] <= pos:
                kind, target = "Loc", j
            elif noncls_iou[p, jo] >= pos:
                kind, target = "Cls", jo
            elif used_cls_iou[p].max() >= pos:
                kind = "Dupe"
            elif iou[p].max() > bg:
                kind = "Both"
        if target >= 0 and not gt_used[target]:
            usable[target] = True
            if best.get(target, (-1.0, -1))[0] < s:  # TIDE's BestGTMatch: the first of the highest score wins
                best[target] = (s, len(run.errors))
            fixed_cls = int(g_cls[target]) if kind == "Cls" else c
            run.errors.append(_Error(kind, original, -1 - target, fixed_cls, s))
        else:
            run.errors.append(_Error(kind, original, _REMOVE, c, s))
    # now that every candidate of each object is known: only its best Loc / Cls error becomes a true positive
    for e in range(start, len(run.errors)):
        if run.errors[e].fix < 0:
            won = best[-1 - run.errors[e].fix][1] == e
            run.errors[e] = run.errors[e]._replace(fix=_TRUE_POSITIVE if won else _REMOVE)
    for j in np.flatnonzero(~gt_used).tolist():
        run.missed(int(g_cls[j]), error=not usable[j])


def _class_ap(score: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """TIDE's AP of one class (``APDataObject.get_ap``), as a fraction: 101 recall points, precision envelope."""
    if num_gt == 0 or len(score) == 0:
        return 0.0
    order = np.argsort(-score, kind="stable")
    hits = tp[order]
    n_tp = np.cumsum(hits)
    precision = n_tp / np.arange(1, len(hits) + 1)
    recall = n_tp / num_gt
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.arange(101) / 100, side="left")
    return float(np.sum(np.where(idx < len(hits), precision[np.minimum(idx, len(hits) - 1)], 0.0)) / 101)


def _map(points: list[tuple[int, float, bool]], num_gt: dict[int, int]) -> float:
    """Mean of :func:`_class_ap` over classes with data points or objects (``ClassedAPDataObject.get_mAP``)."""
    by_class: dict[int, list[tuple[float, bool]]] = {}
    for c, s, t in points:
        by_class.setdefault(c, []).append((s, t))
    classes = [c for c in set(by_class) | set(num_gt) if by_class.get(c) or num_gt.get(c, 0) > 0]
    if not classes:
        return math.nan
    aps = []
    for c in classes:
        pts = by_class.get(c, [])
        s = np.asarray([p[0] for p in pts], np.float64)
        t = np.asarray([p[1] for p in pts], bool)
        aps.append(_class_ap(s, t, num_gt.get(c, 0)))
    return float(np.mean(aps))


def _fixed_map(run: _Run, fix_types: set[str], perfect_scores: bool = False, drop_fn: bool = False) -> float:
    """TIDE's ``fix_errors``: errors first (fixed or original), then the true positives; AP of the result."""
    num_gt = {c: run.num_gt.get(c, 0) for c in run.touched}
    points: list[tuple[int, float, bool]] = []
    for e in run.errors:
        if e.kind in fix_types:
            if e.fix == _LESS_GT:
                num_gt[e.cls] -= 1
            elif e.fix == _TRUE_POSITIVE:
                points.append((e.cls, e.score, True))
        elif e.original is not None:
            points.append((*e.original, False))
    points += [p for p in run.points if p[2]]
    if perfect_scores:
        points = [(c, 1.0 if t else 0.0, t) for c, _, t in points]
    if drop_fn:
        num_gt = {c: n - run.unmatched_gt.get(c, 0) for c, n in num_gt.items()}
    return _map(points, num_gt)


def tide_from_xywh(images: Sequence[tuple], pos_threshold: float = 0.5, background_threshold: float = 0.1,
                   max_dets: int = 100) -> dict:  # fmt: skip
    """TIDE of images given as ``(gt_xywh [M, 4], gt_class [M], gt_crowd [M] bool, dt_xywh [K, 4], dt_class [K],
    dt_score [K])`` numpy arrays (COCO's top-left ``[x, y, w, h]``, any integer class ids); see
    :func:`evaluate_tide` for the result."""
    run = _Run()
    for gt_xywh, gt_cls, gt_crowd, dt_xywh, dt_cls, dt_score in images:
        _image(run, gt_xywh, gt_cls, gt_crowd, dt_xywh, dt_cls, dt_score, pos_threshold, background_threshold,
               max_dets)  # fmt: skip
    ap = _map(run.points, run.num_gt)
    # negative dAPs (score ties ordered differently) are clipped to 0, as TIDE does
    main = {name: max(_fixed_map(run, {name}) - ap, 0.0) if not math.isnan(ap) else math.nan
            for name in TIDE_MAIN_ERRORS}  # fmt: skip
    special = {
        "FalsePos": _fixed_map(run, set(), perfect_scores=True) - ap,
        "FalseNeg": _fixed_map(run, set(), drop_fn=True) - ap,
    }
    counts = {name: sum(1 for e in run.errors if e.kind == name) for name in TIDE_MAIN_ERRORS}
    return {"ap": ap, "dAP": main, "special": special, "counts": counts, "pos_threshold": float(pos_threshold),
            "background_threshold": float(background_threshold)}  # fmt: skip


def evaluate_tide(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    pos_threshold: float = 0.5,
    background_threshold: float = 0.1,
    max_dets: int = 100,
) -> dict:
    """TIDE's error breakdown of in-memory detections (:mod:`ssdkit.metrics.common` formats; ``ignore`` = crowd).

    Args:
        detections: N detection sets (xyxy pixels); ground_truths: N ground truths, same order.
        num_classes: C object classes (labels in ``[0, C)``); class_names: C names (only validated here).
        pos_threshold: IoU of a true positive (``>=``); background_threshold: IoU at or below which a false
            positive is background.
        max_dets: detections per image kept, highest scores first (TIDE's COCO default 100).

    Returns:
        ``{"ap": float`` (TIDE's AP at ``pos_threshold``, a fraction), ``"dAP": {"Cls", "Loc", "Both", "Dupe",
        "Bkg", "Miss": float}``, ``"special": {"FalsePos", "FalseNeg": float}``, ``"counts": {main type: int}``
        (errors of each type), ``"pos_threshold"``, ``"background_threshold"}``. NaN everywhere when there is
        no object and no detection.
    """
    check_pair(detections, ground_truths)
    resolve_class_names(num_classes, class_names)
    images = []
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        gboxes, glabels, gignore = gt_arrays(gt, i)
        dboxes, dlabels, dscores = det_arrays(det, i)
        check_labels(glabels, num_classes, f"ground_truths[{i}]")
        check_labels(dlabels, num_classes, f"detections[{i}]")
        images.append((_xywh(gboxes), glabels, gignore, _xywh(dboxes), dlabels, dscores))
    return tide_from_xywh(images, pos_threshold, background_threshold, max_dets)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    """``[n, 4]`` xyxy to COCO's ``[x, y, w, h]``, as :func:`ssdkit.metrics.detections_to_coco_results` writes."""
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
