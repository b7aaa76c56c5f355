"""COCO bbox metrics through pycocotools (the metric of record: called, never re-derived).

In-memory detection sets and ground truths (formats of :mod:`ssdkit.metrics.common`) become a COCO dataset and a
results list; ``COCOeval`` computes the numbers, whose order :data:`COCO_STAT_NAMES` names. Object-size ranges
beyond COCO's small / medium / large are extra ``params.areaRng`` entries of the same ``COCOeval`` run.

Backends (:data:`COCO_BACKENDS`): ``"pycocotools"`` (default) or ``"faster"``, the C++ ``faster-coco-eval``
package (optional; same numbers, about 6x faster on 5000 images), whose ``COCO`` / ``COCOeval_faster`` stand in
for pycocotools' classes.
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

__all__ = [
    "COCO_STAT_NAMES",
    "COCO_SIZE_RANGES",
    "COCO_BACKENDS",
    "evaluate_coco",
    "detections_to_coco_results",
    "coco_from_dataset",
    "run_cocoeval",
    "size_range_labels",
]

# The order of ``COCOeval.stats`` for iouType='bbox'.
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: Object-size bounds (square root of the area, pixels) of ``"by_size"``: COCO's small / medium / large.
COCO_SIZE_RANGES = (0.0, 32.0, 96.0, math.inf)
#: What ``backend=`` accepts.
COCO_BACKENDS = ("pycocotools", "faster")
# pycocotools' own "no upper bound" (its areaRng 'all' and 'large' end at 1e5 ** 2): inf maps to it, so COCO's
# ranges are the very entries COCOeval already evaluates
_AREA_MAX = 1e5**2


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


def size_range_labels(size_ranges: Sequence[float]) -> list[tuple[str, float, float]]:
    """``[(label, min_area, max_area)]`` of consecutive size bounds (square root of area, pixels, increasing).

    ``(0, 16, 32, inf)`` gives ``[("0-16", 0, 256), ("16-32", 256, 1024), ("32-inf", 1024, 1e10)]``: areas are the
    squared bounds, ``inf`` becomes pycocotools' ``1e5 ** 2``. COCOeval counts an object of area ``a`` in a range
    when ``min_area <= a <= max_area`` (both ends), as pycocotools does.
    """
    try:
        bounds = [float(b) for b in size_ranges]
    except (TypeError, ValueError):
        raise SSDKitError(f"size_ranges: expected increasing numbers (pixels), got {size_ranges!r}") from None
    increasing = all(b < c for b, c in zip(bounds, bounds[1:]))
    if len(bounds) < 2 or any(math.isnan(b) or b < 0 for b in bounds) or not increasing:
        raise SSDKitError(
            f"size_ranges: expected at least two increasing numbers >= 0 (object size bounds in pixels, sqrt of "
            f"the area, e.g. 0 16 32 96 inf), got {list(size_ranges)}"
        )

    def fmt(b: float) -> str:
        return "inf" if math.isinf(b) else (str(int(b)) if b.is_integer() else f"{b:g}")

    return [(f"{fmt(lo)}-{fmt(hi)}", lo * lo, _AREA_MAX if math.isinf(hi) else hi * hi)
            for lo, hi in zip(bounds, bounds[1:])]  # fmt: skip


def _cocoeval(coco_gt, results: list[dict], verbose: bool, backend: str):
    """A ``COCOeval(iouType="bbox")`` of ``backend`` on ``results``, not yet run."""
    if backend == "pycocotools":
        from pycocotools.cocoeval import COCOeval

        coco_dt = _load_results(coco_gt, results, verbose)
        with _quiet(verbose):
            return COCOeval(coco_gt, coco_dt, iouType="bbox")
    if backend != "faster":
        raise SSDKitError(f"backend: expected one of {', '.join(COCO_BACKENDS)}, got {backend!r}")
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        raise SSDKitError("backend 'faster' needs the faster-coco-eval package: pip install faster-coco-eval") from None

    def say(*args: Any) -> None:
        if verbose:
            print(*args)

    gt = COCO(copy.deepcopy(coco_gt.dataset), print_function=say)
    # loadRes writes into the dicts it is given; an empty list is handled by faster-coco-eval itself
    dt = gt.loadRes(copy.deepcopy(results))
    return COCOeval_faster(gt, dt, iouType="bbox", print_function=say)


def _mean_valid(a: np.ndarray) -> float:
    """Mean of the entries > -1 (pycocotools' -1 means "no ground truth there"), -1 without any: summarize's rule."""
    return float(np.mean(a[a > -1])) if (a > -1).any() else -1.0


def run_cocoeval(
    coco_gt,
    results: list[dict],
    verbose: bool,
    size_ranges: Sequence[float] = COCO_SIZE_RANGES,
    backend: str = "pycocotools",
) -> dict:
    """COCOeval(bbox) of ``results`` against ``coco_gt``; stats, per-category AP / AP50 and AP / AR by object size.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` of the ground truth (:func:`coco_from_dataset`).
        results: COCO results ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``, left unchanged.
        verbose: let the backend print.
        size_ranges: object-size bounds for ``"by_size"`` (:func:`size_range_labels`), evaluated in the same run.
        backend: ``"pycocotools"`` or ``"faster"`` (:data:`COCO_BACKENDS`).

    Returns:
        The dict of :func:`evaluate_coco`; per-class keys are the categories' ``name`` (their id without one).
    """
    ranges = size_range_labels(size_ranges)
    ev = _cocoeval(coco_gt, results, verbose, backend)
    p = ev.params
    range_index = {}  # a size range's index in params.areaRng: COCO's own entry where the bounds are the same
    for label, lo, hi in ranges:
        same = [a for a, r in enumerate(p.areaRng) if list(r) == [lo, hi]]
        if same:
            range_index[label] = same[0]
        else:
            range_index[label] = len(p.areaRng)
            p.areaRng = [*map(list, p.areaRng), [lo, hi]]
            p.areaRngLbl = [*p.areaRngLbl, f"size {label}"]
    with _quiet(verbose):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats, np.float64)
    if backend == "faster":
        # its summarize() reports every area range: AP, AP50, AP75, AP per range, AR per maxDets, AR per range
        nb = len(p.areaRngLbl) - 1
        stats = stats[[0, 1, 2, 3, 4, 5, 3 + nb, 4 + nb, 5 + nb, 6 + nb, 7 + nb, 8 + nb]]
    out: dict[str, Any] = {k: float(v) for k, v in zip(COCO_STAT_NAMES, stats)}

    # eval["precision"]: [T iou thresholds, R recall points, K categories, A area ranges, M max-dets];
    # eval["recall"]: [T, K, A, M]; -1 marks "no ground truth" and is skipped exactly as COCOeval.summarize skips it.
    prec, rec = ev.eval["precision"], ev.eval["recall"]
    a = list(p.areaRngLbl).index("all")
    m = len(p.maxDets) - 1
    t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
    t75 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.75)))
    cats = {c["id"]: c for c in coco_gt.dataset["categories"]}
    ap, ap50 = {}, {}
    for k, cat_id in enumerate(p.catIds):
        name = str(cats[int(cat_id)].get("name", cat_id))
        pk, p50 = _mean_valid(prec[:, :, k, a, m]), _mean_valid(prec[t50, :, k, a, m])
        ap[name] = pk if pk > -1 else math.nan
        ap50[name] = p50 if p50 > -1 else math.nan
    out["ap"], out["ap50"] = ap, ap50
    areas = [(ann.get("area", 0.0), bool(ann.get("iscrowd", 0))) for ann in coco_gt.dataset["annotations"]]
    by_size = {}
    for label, lo, hi in ranges:
        i = range_index[label]
        by_size[label] = {
            "AP": _mean_valid(prec[:, :, :, i, m]),
            "AP50": _mean_valid(prec[t50, :, :, i, m]),
            "AP75": _mean_valid(prec[t75, :, :, i, m]),
            "AR100": _mean_valid(rec[:, :, i, m]),
            "num_objects": sum(1 for area, crowd in areas if not crowd and lo <= area <= hi),
            "area_range": [lo, hi],
        }
    out["by_size"] = by_size
    return out


def evaluate_coco(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    class_names: Sequence[str],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    verbose: bool = False,
    size_ranges: Sequence[float] = COCO_SIZE_RANGES,
    backend: str = "pycocotools",
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
        size_ranges: bounds of object-size ranges (square root of the area, pixels, increasing; ``inf`` allowed),
            e.g. ``(0, 16, 32, 96, inf)`` to see 0-16 and 16-32 px objects apart; evaluated by the same
            ``COCOeval`` (extra ``params.areaRng`` entries, squared bounds). Default: COCO's 0 / 32 / 96.
        backend: ``"pycocotools"`` or ``"faster"`` (faster-coco-eval, optional package; the same numbers).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}`` floats
        straight from ``COCOeval.stats`` (``-1`` where pycocotools reports -1: no ground truth in that area
        range), plus ``"ap"`` and ``"ap50"``: ``{name: float}`` per-class AP@[.5:.95] and AP@.5 (``NaN`` for a
        class without ground truth), and ``"by_size": {label: {"AP", "AP50", "AP75", "AR100": float,
        "num_objects": int, "area_range": [min_area, max_area]}}`` for each size range (labels ``"0-16"``, ...,
        ``"96-inf"``; -1 where the range holds no object; ``num_objects`` counts non-crowd objects, and an object on
        a bound counts in both ranges, as COCOeval counts it). No detections at all gives 0 (or -1) everywhere, as
        pycocotools would.
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
    return run_cocoeval(coco_gt, results, verbose, size_ranges, backend)


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
