"""``ssdkit evaluate``: one function for the three ways to evaluate, and the error report.

- ``checkpoint`` + ``data``: run the checkpoint on the dataset (:func:`ssdkit.engine.evaluate.evaluate_checkpoint`,
  tiled or not);
- ``gt`` + ``detections``: any detector's COCO results file against a COCO instances file;
- ``data`` + ``detections``: ``ssdkit predict``'s output (``detections.json`` with the ``images.json`` written beside
  it) against a dataset in any format, images matched by file name and classes by name.

With ``report=DIR`` every mode also writes :func:`ssdkit.metrics.report.write_report`'s folder: confusion matrix,
P/R/F1 against the score threshold, TIDE errors, AP by object size, PR curves and ``report.md``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssdkit.choices import METRICS
from ssdkit.data.tiles import TileSpec
from ssdkit.errors import DataError, SSDKitError

__all__ = ["evaluate", "format_metrics", "load_predictions"]


def _ground_truth_of(source) -> list[dict]:  # noqa: ANN001 - a DetectionSource
    out = []
    for i in range(len(source)):
        s = source.sample(i)
        out.append({"boxes": s.boxes, "labels": s.labels, "ignore": s.ignore})
    return out


def load_predictions(detections_json: str | os.PathLike, source) -> list[dict]:  # noqa: ANN001
    """``ssdkit predict``'s ``detections.json`` as one detection set per image of ``source`` (in its order).

    The ``images.json`` beside it maps predict's image ids to file names and its category ids to class names;
    each image of ``source`` is found by its file's name, each category by its class name.

    Raises:
        DataError: no ``images.json`` beside the file, an image of ``source`` that predict did not see, or class
            names that do not match (each listed).
    """
    from ssdkit.data.coco_json import load_json, parse_instances, parse_results

    path = Path(detections_json)
    index_path = path.parent / "images.json"
    if not index_path.is_file():
        raise DataError(f"{path}: no images.json beside it (ssdkit predict writes both); for another detector's "
                        "COCO results give --gt with its COCO ground truth instead of --data")
    index = parse_instances({**load_json(index_path, "image index"), "annotations": []}, index_path)
    by_name = {Path(img["file_name"]).name: img["id"] for img in index.images}
    category_name = {c["id"]: c.get("name", str(c["id"])) for c in index.categories}
    label_of_name = {n: k for k, n in enumerate(source.class_names)}
    unknown = sorted({n for n in category_name.values() if n not in label_of_name})
    if unknown:
        raise DataError(f"{index_path}: classes {unknown} are not classes of the data ({list(source.class_names)})")
    missing, image_ids = [], []
    for i in range(len(source)):
        name = Path(source.sample(i).image_path or "").name
        if name not in by_name:
            missing.append(name or source.sample(i).image_id)
        image_ids.append(by_name.get(name))
    if missing:
        raise DataError(f"{index_path}: {len(missing)} image(s) of the data were not predicted (first: "
                        f"{', '.join(missing[:5])})")
    results = parse_results(load_json(path, "detection results"), path, index)
    rows: dict = {}
    for r in results:
        rows.setdefault(r["image_id"], []).append(r)
    out = []
    for image_id in image_ids:
        rs = rows.get(image_id, [])
        b = np.asarray([r["bbox"] for r in rs], np.float64).reshape(-1, 4)
        out.append({"boxes": np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1),
                    "labels": np.asarray([label_of_name[category_name[r["category_id"]]] for r in rs], np.int64),
                    "scores": np.asarray([r["score"] for r in rs], np.float64)})
    return out


def evaluate(
    checkpoint: str | os.PathLike | None = None,
    data: str | None = None,
    gt: str | os.PathLike | None = None,
    detections: str | os.PathLike | None = None,
    metric: str = "voc07",
    split: str | None = None,
    format: str | None = None,
    batch_size: int = 8,
    device: str = "auto",
    plot_dir: str | os.PathLike | None = None,
    progress: bool = True,
    tile: TileSpec | str | None = "auto",
    report: str | os.PathLike | None = None,
    size_ranges: Sequence[float] | None = None,
    precision: str = "fp32",
) -> dict:
    """``ssdkit evaluate`` in any of its three modes (module docstring).

    Returns:
        The metric dict (VOC: ``"map"``, per-class ``"ap"``, PR arrays; COCO: ``"AP"``, ``"AP50"``, ...,
        ``"by_size"``) with ``"metric"``; ``"pr_curves"`` (PNG path) with ``plot_dir`` and a VOC metric;
        ``"report"`` (:func:`~ssdkit.metrics.report.write_report`'s summary) with ``report``.

    Raises:
        SSDKitError: a wrong combination of arguments; DataError / CheckpointError from the inputs.
    """
    from ssdkit.data.sources import build_source
    from ssdkit.engine.evaluate import evaluate_checkpoint
    from ssdkit.metrics import COCO_SIZE_RANGES, evaluate_coco, evaluate_voc, load_files

    if metric not in METRICS:
        raise SSDKitError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    size_ranges = tuple(size_ranges) if size_ranges is not None else COCO_SIZE_RANGES
    if detections is not None:
        if checkpoint is not None:
            raise SSDKitError("evaluate: --detections is evaluated as it is; it does not go with --checkpoint")
        if tile not in (None, "auto"):
            raise SSDKitError("evaluate: --tile runs a checkpoint; it does not apply to --detections")
        if (gt is None) == (data is None):
            raise SSDKitError("evaluate: --detections needs --gt (a COCO ground truth) or --data (a dataset)")
        if gt is not None:
            dets, gts, names = load_files(gt, detections)
            pixel_offset = False  # COCO boxes are continuous coordinates
        else:
            source = build_source(data, split=split, format=format)
            dets, gts, names = load_predictions(detections, source), _ground_truth_of(source), source.class_names
            pixel_offset = getattr(source, "format", "") == "voc"
        if metric == "coco":
            result = evaluate_coco(dets, gts, names, size_ranges=size_ranges)
        else:
            result = evaluate_voc(dets, gts, len(names), names, use_07_metric=metric == "voc07",
                                  pixel_offset=pixel_offset)
        result["metric"] = metric
    else:
        if gt is not None:
            raise SSDKitError("evaluate: --gt goes with --detections")
        if checkpoint is None or data is None:
            raise SSDKitError("evaluate: give --checkpoint and --data, --gt and --detections, or --data and "
                              "--detections")
        result = evaluate_checkpoint(checkpoint, data, split=split, metric=metric, format=format,
                                     batch_size=batch_size, device=device, progress=progress, tile=tile,
                                     return_detections=report is not None, precision=precision)
        if report is not None:
            dets, gts = result.pop("detections"), result.pop("ground_truths")
            names, pixel_offset = result["class_names"], result["pixel_offset"]
    if plot_dir is not None and metric != "coco" and "precision" in result:
        from ssdkit.viz import plot_pr_curves

        path = Path(plot_dir) / "pr_curves.png"
        plot_pr_curves(result, path)
        result["pr_curves"] = str(path)
    if report is not None:
        from ssdkit.metrics import write_report

        result["report"] = write_report(report, dets, gts, names, size_ranges=size_ranges, metric=metric,
                                        pixel_offset=pixel_offset)
    return result


def format_metrics(result: dict) -> str:
    """Human-readable text of an :func:`evaluate` result: the headline numbers, AP per size and per class."""
    from ssdkit.metrics import COCO_STAT_NAMES

    lines = []
    if result.get("metric") == "coco":
        lines += [f"{k:>6}: {result[k]:.4f}" for k in COCO_STAT_NAMES if k in result]
        for name, v in result.get("by_size", {}).items():
            lines.append(f"  AP size {name:>10}: {v.get('AP', float('nan')):.4f} ({v.get('num_objects', '?')} "
                         "objects)")
    else:
        lines.append(f"mAP ({result.get('metric', 'voc07')}, IoU 0.5): {result['map']:.4f}")
    per_class = result.get("ap", {})
    if per_class:
        lines += ["", f"{'class':<20} {'AP':>8}"]
        lines += [f"{name:<20} {ap:>8.4f}" for name, ap in per_class.items()]
    if "pr_curves" in result:
        lines.append(f"\nPR curves: {result['pr_curves']}")
    if "report" in result:
        r = result["report"]
        best = r.get("best_score_threshold")
        lines.append(f"\nreport: {r['paths']['report']}  (best score threshold {best if best is not None else '-'}"
                     f", F1 {r.get('best_f1', float('nan')):.3f})")
    return "\n".join(lines)
