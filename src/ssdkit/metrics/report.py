"""An evaluation report that explains errors: one folder of PNG + JSON files and a ``report.md`` showing them.

:func:`write_report` computes, on one set of detections (formats of :mod:`ssdkit.metrics.common`): AP per class
and PR curves (:func:`~ssdkit.metrics.evaluate_voc`), COCO AP with object-size ranges
(:func:`~ssdkit.metrics.evaluate_coco`), precision / recall / F1 by score threshold and the F1-optimal threshold,
the confusion matrix at a score threshold (:mod:`ssdkit.metrics.errors`) and TIDE's error breakdown
(:mod:`ssdkit.metrics.tide`). Files written to ``out_dir`` (atomically):

==========================  ===========================================================================
``report.md``               everything below in one page, pictures embedded by relative links
``summary.json``            the headline numbers and the paths (what :func:`write_report` returns)
``ap.json``                 AP per class (the chosen metric and COCO's AP / AP50), objects and detections
``coco.json``               the COCOeval numbers, AP / AR by object size
``pr_f1.json``              P, R, F1 per threshold, overall and per class, and the best thresholds
``confusion_matrix.json``   counts and row-normalised matrix
``tide.json``               TIDE dAPs and error counts
``pr_curves.png``, ``pr_f1.png``, ``confusion_matrix.png``, ``tide.png``
==========================  ===========================================================================

JSON is strict: NaN and infinities are written as ``null``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssdkit import viz, viz_report
from ssdkit.choices import DECODE_PRESETS, METRICS, PREDICT_PRESET
from ssdkit.errors import SSDKitError
from ssdkit.metrics.coco import COCO_SIZE_RANGES, evaluate_coco
from ssdkit.metrics.errors import confusion_matrix, precision_recall_f1
from ssdkit.metrics.tide import TIDE_MAIN_ERRORS, TIDE_SPECIAL_ERRORS, evaluate_tide
from ssdkit.metrics.voc import evaluate_voc
from ssdkit.utils import atomic_write_text

__all__ = ["write_report"]

_PNG = {"pr_curves": "pr_curves.png", "pr_f1": "pr_f1.png", "confusion_matrix": "confusion_matrix.png",
        "tide": "tide.png"}  # fmt: skip
_JSON = ("summary", "ap", "coco", "pr_f1", "confusion_matrix", "tide")


def _strict(o: Any) -> Any:
    """``o`` with arrays as lists and non-finite floats as None, for ``json.dumps(allow_nan=False)``."""
    if isinstance(o, np.ndarray | np.generic):
        o = o.tolist()
    if isinstance(o, dict):
        return {str(k): _strict(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_strict(v) for v in o]
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    return o


def _num(v: Any, digits: int = 4) -> str:
    """A number for the markdown tables; "n/a" for None / NaN and "-" for pycocotools' -1 (nothing there)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float) and v == -1.0:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(c if isinstance(c, str) else _num(c) for c in row) + " |" for row in rows]


def _top_confusions(cm: dict, k: int = 10) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal counts between object classes (not background): ``(true, predicted, n)``."""
    counts = np.asarray(cm["counts"])[:-1, :-1].copy()
    np.fill_diagonal(counts, 0)
    names = cm["class_names"]
    order = np.argsort(-counts, axis=None, kind="stable")[:k]
    return [(names[r], names[c], int(counts[r, c])) for r, c in zip(*np.unravel_index(order, counts.shape))
            if counts[r, c] > 0]  # fmt: skip


def _headline(s: dict, coco: dict, prf: dict, tide: dict) -> list[str]:
    ov = prf["overall"]
    at_best = " / ".join(_num(ov[k], 3) for k in ("best_f1", "best_precision", "best_recall"))
    rows = [
        [f"mAP ({s['metric']})", s["map"]],
        ["COCO AP@[.5:.95]", coco["AP"]],
        ["COCO AP50", coco["AP50"]],
        ["best score threshold (max F1, ship as `--score`)", _num(s["best_score_threshold"], 2)],
        ["F1 / precision / recall there", at_best],
        ["TIDE AP (IoU >= pos threshold)", tide["ap"]],
    ]
    return _table(["metric", "value"], rows)


def _per_class(s: dict, voc: dict, coco: dict, prf: dict, names: list[str]) -> list[str]:
    voc_name = s["metric"] if s["metric"] != "coco" else "voc07"
    header = ["class", f"AP ({voc_name})", "COCO AP", "COCO AP50", "objects", "detections", "best threshold", "F1"]
    rows = []
    for n in names:
        c = prf["per_class"][n]
        rows.append([n, voc["ap"][n], coco["ap"][n], coco["ap50"][n], voc["num_gt"][n], voc["num_detections"][n],
                     _num(c["best_threshold"], 2), c["best_f1"]])  # fmt: skip
    return _table(header, rows)


def _confusion(cm: dict) -> list[str]:
    counts = np.asarray(cm["counts"])
    bg = len(counts) - 1
    hits = int(np.trace(counts[:bg, :bg]))
    lines = [
        f"Matches of the right class {hits}, class confusions {int(counts[:bg, :bg].sum()) - hits}, false positives "
        f"{int(counts[bg].sum())}, missed objects {int(counts[:, bg].sum())}.",
        "",
    ]
    top = _top_confusions(cm)
    if top:
        lines += ["Most frequent confusions:", "", *_table(["true class", "predicted as", "count"], top), ""]
    return lines


def _markdown(s: dict, voc: dict, coco: dict, prf: dict, cm: dict, tide: dict, names: list[str]) -> str:
    sizes = [[k, v["num_objects"], v["AP"], v["AP50"], v["AP75"], v["AR100"]] for k, v in coco["by_size"].items()]
    errors = [[k, tide["dAP"][k], tide["counts"][k]] for k in TIDE_MAIN_ERRORS]
    errors += [[k, tide["special"][k], ""] for k in TIDE_SPECIAL_ERRORS]
    lines = [
        "# Evaluation report",
        "",
        f"{s['num_images']} images, {s['num_objects']} objects (not ignored), {s['num_detections']} detections, "
        f"{len(names)} classes. Matching IoU > {s['iou_threshold']:g}.",
        "",
        *_headline(s, coco, prf, tide),
        "",
        "## AP per class",
        "",
        *_per_class(s, voc, coco, prf, names),
        "",
        f"![precision-recall curves]({_PNG['pr_curves']})",
        "",
        "## Precision, recall and F1 by score threshold",
        "",
        "A detection is kept at threshold t when its score is above t (as `ssdkit predict --score t`); the bold "
        "line is all classes together (micro average), thin lines are single classes.",
        "",
        f"![precision, recall and F1 against the score threshold]({_PNG['pr_f1']})",
        "",
        f"## Confusion matrix (score > {cm['score_threshold']:.2f})",
        "",
        "Rows: true class; columns: predicted class. The background row holds false positives (duplicates "
        "included), the background column missed objects; ignored (difficult / crowd) objects are left out.",
        "",
        f"![confusion matrix]({_PNG['confusion_matrix']})",
        "",
        *_confusion(cm),
        "## AP by object size",
        "",
        "Size is the square root of the box area in pixels (COCOeval's area ranges; -: no object of that size).",
        "",
        *_table(["size (px)", "objects", "AP", "AP50", "AP75", "AR100"], sizes),
        "",
        "## TIDE error breakdown",
        "",
        "dAP: the AP gained by fixing only that error type (Bolya et al., ECCV 2020; fractions, tidecv prints them "
        "x100).",
        "",
        *_table(["error", "dAP", "count"], errors),
        "",
        f"![TIDE error breakdown]({_PNG['tide']})",
        "",
        "## Files",
        "",
        *[f"- [{name}.json]({name}.json)" for name in _JSON],
        "",
    ]
    return "\n".join(lines)


def _write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(_strict(data), indent=2, allow_nan=False) + "\n")


def write_report(
    out_dir: str | os.PathLike,
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    score_threshold: float | None = None,
    size_ranges: Sequence[float] = COCO_SIZE_RANGES,
    metric: str = "voc07",
    pixel_offset: bool = False,
) -> dict:
    """Compute every error analysis of ``detections`` and write them to ``out_dir`` (module docstring).

    Args:
        out_dir: the report folder (created; files in it are replaced).
        detections: N detection sets; ground_truths: N ground truths (``ignore``: difficult / crowd).
        class_names: the C object class names, in label order.
        iou_threshold: IoU of a match for VOC AP, P / R / F1, the confusion matrix and TIDE's positives.
        score_threshold: the confusion matrix's threshold; default the F1-optimal one (the ``visualize``
            preset's where no threshold has a true positive).
        size_ranges: object-size bounds (pixels, sqrt of area) of the COCO breakdown.
        metric: the headline mAP, one of ``ssdkit.choices.METRICS`` (``"voc07"``, ``"voc"``, ``"coco"``).
        pixel_offset: the VOC devkit's ``+1`` box widths (VOC's integer boxes) for VOC AP, P / R / F1 and the
            confusion matrix.

    Returns:
        ``{"map": float, "metric": str, "coco_AP", "coco_AP50": float, "best_score_threshold": float | None,
        "best_f1": float, "score_threshold": float`` (the confusion matrix's), ``"tide_ap": float, "tide": {error
        type: dAP}`` (the six main types, then FalsePos and FalseNeg), ``"num_images", "num_objects",
        "num_detections": int, "iou_threshold": float, "paths": {"report", "summary", "ap", "coco", "pr_f1",
        "confusion_matrix", "tide", "pr_curves_png", "pr_f1_png", "confusion_matrix_png", "tide_png": str}}``.
    """
    if metric not in METRICS:
        raise SSDKitError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    names = [str(n) for n in class_names]
    c = len(names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    voc = evaluate_voc(detections, ground_truths, c, names, iou_threshold, metric != "voc", pixel_offset)
    coco = evaluate_coco(detections, ground_truths, names, size_ranges=size_ranges)
    prf = precision_recall_f1(detections, ground_truths, c, iou_threshold, class_names=names,
                              pixel_offset=pixel_offset)  # fmt: skip
    best = prf["overall"]["best_threshold"]
    if score_threshold is None:
        score_threshold = best if best is not None else float(DECODE_PRESETS[PREDICT_PRESET]["score_thresh"])
    cm = confusion_matrix(detections, ground_truths, c, iou_threshold, score_threshold, names, pixel_offset)
    tide = evaluate_tide(detections, ground_truths, c, names, pos_threshold=iou_threshold)

    paths = {name: str(out / f"{name}.json") for name in _JSON}
    paths["report"] = str(out / "report.md")
    paths.update({f"{k}_png": str(out / v) for k, v in _PNG.items()})
    summary = {
        "map": coco["AP"] if metric == "coco" else voc["map"],
        "metric": metric,
        "coco_AP": coco["AP"],
        "coco_AP50": coco["AP50"],
        "best_score_threshold": best,
        "best_f1": prf["overall"]["best_f1"],
        "score_threshold": float(score_threshold),
        "tide_ap": tide["ap"],
        "tide": {**tide["dAP"], **tide["special"]},
        "num_images": len(ground_truths),
        "num_objects": int(sum(voc["num_gt"].values())),
        "num_detections": int(sum(voc["num_detections"].values())),
        "iou_threshold": float(iou_threshold),
        "paths": paths,
    }
    _write_json(Path(paths["ap"]), {"metric": metric, "map": summary["map"], "ap": voc["ap"], "coco_ap": coco["ap"],
                                    "coco_ap50": coco["ap50"], "num_gt": voc["num_gt"],
                                    "num_detections": voc["num_detections"]})  # fmt: skip
    _write_json(Path(paths["coco"]), coco)
    _write_json(Path(paths["pr_f1"]), prf)
    _write_json(Path(paths["confusion_matrix"]), cm)
    _write_json(Path(paths["tide"]), tide)
    viz.plot_pr_curves(voc, paths["pr_curves_png"])
    viz_report.plot_pr_f1(prf, paths["pr_f1_png"])
    viz_report.plot_confusion_matrix(cm, paths["confusion_matrix_png"])
    viz_report.plot_tide(tide, paths["tide_png"])
    atomic_write_text(paths["report"], _markdown(summary, voc, coco, prf, cm, tide, names))
    _write_json(Path(paths["summary"]), summary)
    return summary
