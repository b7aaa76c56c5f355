"""Metric tests: the shared data builders, pycocotools reading files as the COCO reference, broken-JSON helpers.

References live beside the tests that use them: the VOC devkit's loops in ``test_voc.py``; pycocotools here, as
``test_coco.py``, ``test_files.py`` and ``tests/engine/test_metric.py`` all compare against it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdkit.metrics import COCO_STAT_NAMES

# ---------------------------------------------------------------------------------------------------------------
# data


def det(boxes, labels, scores):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "scores": torch.tensor(scores, dtype=torch.float32),
    }


def gt(boxes, labels, ignore=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    out["labels"] = out["labels"].to(torch.int64)
    if ignore is not None:
        out["ignore"] = torch.tensor(ignore, dtype=torch.bool)
    return out


def random_dataset(seed, num_images=24, num_classes=5, integer=True, empty_class=None, undetected_class=None):
    """Objects of varied sizes, some ignored; detections = jittered objects, duplicates, and random boxes.

    Image 0 has no objects but detections; image 1 has objects but no detections; image 2 has neither.
    ``empty_class`` gets no ground truth (detections only); ``undetected_class`` gets no detections.
    """
    g = np.random.default_rng(seed)
    classes = [c for c in range(num_classes) if c != empty_class]
    dets, gts = [], []
    for i in range(num_images):
        m = 0 if i in (0, 2) else int(g.integers(1, 7))
        wh = np.exp(g.uniform(np.log(6), np.log(250), (m, 2)))
        xy = g.uniform(0, 300, (m, 2))
        boxes = np.concatenate([xy, xy + wh], 1)
        labels = g.choice(classes, m)
        ignore = g.random(m) < 0.15
        if integer:
            boxes = np.round(boxes)
        gts.append(gt(boxes.tolist(), labels.tolist(), ignore.tolist()))
        db, dl = [], []
        if i not in (1, 2):
            for b, lab in zip(boxes, labels):
                for _ in range(int(g.integers(0, 3))):  # 0: missed, 2: a duplicate
                    j = g.normal(0, 0.12, 4) * np.r_[b[2:] - b[:2], b[2:] - b[:2]]
                    db.append(b + j)
                    dl.append(lab if g.random() > 0.1 else g.integers(num_classes))
            for _ in range(int(g.integers(0, 4))):
                xy0 = g.uniform(0, 300, 2)
                db.append(np.r_[xy0, xy0 + g.uniform(5, 150, 2)])
                dl.append(g.integers(num_classes))
        db = np.asarray(db, dtype=np.float64).reshape(-1, 4)
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
        if integer:
            db = np.round(db)
        dl = np.asarray(dl, dtype=np.int64)
        keep = dl != undetected_class if undetected_class is not None else np.ones(len(dl), bool)
        dets.append(det(db[keep].tolist(), dl[keep].tolist(), g.random(int(keep.sum())).tolist()))
    return dets, gts


# ---------------------------------------------------------------------------------------------------------------
# the COCO reference


def pycocotools_on_files(tmp_path, detections, ground_truths, num_classes):
    """stats and per-class (AP, AP50) of pycocotools reading JSON files, built here independently of ssdkit."""
    images, anns, results = [], [], []
    for i, gt in enumerate(ground_truths):
        images.append({"id": i + 100, "width": 640, "height": 480})
        ignore = gt.get("ignore", torch.zeros(len(gt["labels"]), dtype=torch.bool))
        for b, lab, ig in zip(gt["boxes"].tolist(), gt["labels"].tolist(), ignore.tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 100, "category_id": 10 + 2 * lab, "bbox": [b[0], b[1], w, h],
                 "area": w * h, "iscrowd": int(ig)}
            )  # fmt: skip
    for i, det in enumerate(detections):
        for b, lab, s in zip(det["boxes"].tolist(), det["labels"].tolist(), det["scores"].tolist()):
            results.append(
                {"image_id": i + 100, "category_id": 10 + 2 * lab, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                 "score": s}
            )  # fmt: skip
    cats = [{"id": 10 + 2 * c, "name": f"c{c}"} for c in range(num_classes)]
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt_file.write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(gt_file))
        ev = COCOeval(coco_gt, coco_gt.loadRes(str(dt_file)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_class = {}
    for k in range(num_classes):
        p = ev.eval["precision"][:, :, k, 0, 2]
        p50 = ev.eval["precision"][0, :, k, 0, 2]
        per_class[f"c{k}"] = (
            np.mean(p[p > -1]) if (p > -1).any() else math.nan,
            np.mean(p50[p50 > -1]) if (p50 > -1).any() else math.nan,
        )
    return ev.stats, per_class, gt_file, dt_file


def assert_coco_equal(result, stats, per_class):
    for name, v in zip(COCO_STAT_NAMES, stats):
        assert result[name] == pytest.approx(v, abs=1e-6), name
    for name, (ap, ap50) in per_class.items():
        for got, want in ((result["ap"][name], ap), (result["ap50"][name], ap50)):
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, abs=1e-6), name


# ---------------------------------------------------------------------------------------------------------------
# broken COCO JSON (here and in tests/data/readers/test_coco.py)

HUGE = "@an integer of 5000 digits@"  # json.dumps cannot write one: write_json puts it in the text
DEL = object()  # put() removes the field
BBOX = "expected 4 finite numbers [x, y, w, h], got"
WH = "expected [x, y, w, h] with w >= 0 and h >= 0, got"
ID = "expected an integer id (|id| < 2**53), got"
IMAGE_ID = "expected an integer id or a non-empty string (|id| < 2**53), got"


def write_json(path, value):
    """``value`` as JSON at ``path`` (NaN and Infinity as Python writes them; ``HUGE`` as 5000 digits)."""
    path.write_text(json.dumps(value).replace(json.dumps(HUGE), "9" * 5000))
    return path


def put(doc, field, value):
    """``doc`` with ``value`` at ``field`` (``"annotations.0.bbox"``; one past a list's end appends; DEL removes)."""
    *parents, last = (int(k) if k.isdigit() else k for k in field.split("."))
    d = doc
    for k in parents:
        d = d[k]
    if value is DEL:
        del d[last]
    elif isinstance(d, list) and last == len(d):
        d.append(value)
    else:
        d[last] = value
    return doc
