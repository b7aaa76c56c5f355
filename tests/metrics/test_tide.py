"""TIDE error breakdown equal to the ``tidecv`` package (the reference implementation) on the same COCO files.

tidecv (1.0.1) runs unpatched on numpy 2 / Python 3.11; it is a test-only reference (``pip install tidecv``), the
comparisons skip without it. Its COCO loader reads a ``segmentation`` and the image size of every annotation, so
the files written here carry a box polygon and ``width`` / ``height``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ssdkit.metrics import TIDE_MAIN_ERRORS, TIDE_SPECIAL_ERRORS, evaluate_tide, evaluate_tide_files

from . import det, gt, random_dataset


def write_coco(tmp_path, detections, ground_truths, num_classes):
    """COCO instances + results files of in-memory data (category id 10 + 2 * label), readable by tidecv."""
    images, anns, results = [], [], []
    for i, g in enumerate(ground_truths):
        images.append({"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"})
        ignore = g["ignore"].tolist() if "ignore" in g else [False] * len(g["labels"])
        for b, lab, ig in zip(g["boxes"].tolist(), g["labels"].tolist(), ignore):
            x, y, w, h = b[0], b[1], b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 10 + 2 * lab,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(ig),
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                }
            )
    for i, d in enumerate(detections):
        for b, lab, s in zip(d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist()):
            results.append({"image_id": i + 1, "category_id": 10 + 2 * lab,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})  # fmt: skip
    cats = [{"id": 10 + 2 * c, "name": f"c{c}"} for c in range(num_classes)]
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dt_file.write_text(json.dumps(results))
    return gt_file, dt_file


def tidecv_numbers(gt_file, dt_file):
    """``(ap, {main: dAP}, {special: dAP}, {main: count})`` of tidecv, in its units (AP points, x100)."""
    tidecv = pytest.importorskip("tidecv")
    tide = tidecv.TIDE()
    tide.evaluate(tidecv.datasets.COCO(str(gt_file)), tidecv.datasets.COCOResult(str(dt_file)), mode=tidecv.TIDE.BOX)
    (run,) = tide.runs.values()
    errors = tide.get_all_errors()
    (main,) = errors["main"].values()
    (special,) = errors["special"].values()
    counts = {k.short_name: v for k, v in run.count_errors().items()}
    return run.ap, main, special, counts


def assert_equal_to_tidecv(result, ref):
    ap, main, special, counts = ref
    assert result["ap"] * 100 == pytest.approx(ap, abs=1e-6)
    for k in TIDE_MAIN_ERRORS:
        assert result["dAP"][k] * 100 == pytest.approx(main[k], abs=1e-6), k
        assert result["counts"][k] == counts[k], k
    for k in TIDE_SPECIAL_ERRORS:
        assert result["special"][k] * 100 == pytest.approx(special[k], abs=1e-6), k


def good_dataset(seed, num_images=20, num_classes=4):
    """Detections close to every object with high scores, a few low-score background boxes and misses."""
    g = np.random.default_rng(seed)
    dets, gts = [], []
    for _ in range(num_images):
        m = int(g.integers(1, 6))
        xy = g.uniform(0, 300, (m, 2))
        boxes = np.concatenate([xy, xy + g.uniform(20, 150, (m, 2))], 1)
        labels = g.integers(0, num_classes, m)
        gts.append(gt(boxes.tolist(), labels.tolist()))
        keep = g.random(m) > 0.1
        jitter = g.normal(0, 2.0, (m, 4))
        db = (boxes + jitter)[keep].tolist()
        dl = labels[keep].tolist()
        ds = g.uniform(0.6, 1.0, int(keep.sum())).tolist()
        for _ in range(int(g.integers(0, 2))):
            xy0 = g.uniform(0, 300, 2)
            db.append([*xy0, *(xy0 + 30)])
            dl.append(int(g.integers(num_classes)))
            ds.append(float(g.uniform(0.0, 0.5)))
        dets.append(det(db, dl, ds))
    return dets, gts


def messy_dataset(seed, num_images=16, num_classes=3):
    """Duplicates, class flips, poorly placed boxes (Loc / Both), background boxes, crowd regions with
    detections inside, an image past max_dets, images with detections and no object."""
    g = np.random.default_rng(seed)
    dets, gts = [], []
    for i in range(num_images):
        m = 0 if i % 5 == 0 else int(g.integers(1, 6))
        xy = g.uniform(0, 300, (m, 2))
        boxes = np.concatenate([xy, xy + g.uniform(10, 120, (m, 2))], 1)
        labels = g.integers(0, num_classes, m)
        crowd = g.random(m) < 0.2
        gts.append(gt(boxes.tolist(), labels.tolist(), crowd.tolist()))
        db, dl = [], []
        for b, lab in zip(boxes, labels):
            wh = b[2:] - b[:2]
            for _ in range(int(g.integers(0, 4))):  # duplicates
                db.append(b + g.normal(0, 0.05, 4) * np.r_[wh, wh])
                dl.append(lab if g.random() > 0.25 else int(g.integers(num_classes)))
            if g.random() < 0.4:  # shifted by about half its size: Loc, or Both with a flipped class
                db.append(b + np.r_[wh, wh] * g.uniform(0.3, 0.6))
                dl.append(lab if g.random() > 0.5 else int(g.integers(num_classes)))
            if g.random() < 0.3:  # inside the object: a crowd region ignores it (crowd IoU is over the detection)
                db.append(np.r_[b[:2] + wh * 0.3, b[:2] + wh * 0.6])
                dl.append(lab)
        n_bg = 110 if i == 3 else int(g.integers(1, 8))
        for _ in range(n_bg):
            xy0 = g.uniform(0, 500, 2)
            db.append(np.r_[xy0, xy0 + g.uniform(5, 80, 2)])
            dl.append(int(g.integers(num_classes)))
        db = np.asarray(db, np.float64).reshape(-1, 4)
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
        dets.append(det(db.tolist(), dl, g.random(len(dl)).tolist()))
    return dets, gts


CASES = {
    "random": lambda: (random_dataset(0, num_images=24, integer=False), 5),
    "random_integer": lambda: (random_dataset(3, num_images=24, integer=True), 5),
    "good": lambda: (good_dataset(1), 4),
    "messy": lambda: (messy_dataset(2), 3),
    "messy_2": lambda: (messy_dataset(5, num_images=30), 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tide_equals_tidecv(tmp_path, case):
    (dets, gts), num_classes = CASES[case]()
    gt_file, dt_file = write_coco(tmp_path, dets, gts, num_classes)
    ref = tidecv_numbers(gt_file, dt_file)
    assert_equal_to_tidecv(evaluate_tide(dets, gts, num_classes), ref)
    assert_equal_to_tidecv(evaluate_tide_files(gt_file, dt_file), ref)


def test_tide_cases_exercise_every_error():
    """The reference cases above are only worth as much as the errors they contain."""
    seen = {k: 0 for k in TIDE_MAIN_ERRORS}
    for make in CASES.values():
        (dets, gts), num_classes = make()
        for k, n in evaluate_tide(dets, gts, num_classes)["counts"].items():
            seen[k] += n
    assert all(n > 0 for n in seen.values()), seen
    good = evaluate_tide(*good_dataset(1), 4)
    messy = evaluate_tide(*messy_dataset(2), 3)
    assert good["ap"] > 0.8 > messy["ap"]
    assert messy["dAP"]["Dupe"] > good["dAP"]["Dupe"] and messy["dAP"]["Bkg"] > good["dAP"]["Bkg"]


def test_tide_perfect_and_empty():
    gts = [gt([[0, 0, 10, 10], [20, 20, 50, 40]], [0, 1]), gt([], [])]
    perfect = [det(g["boxes"].tolist(), g["labels"].tolist(), [0.9] * len(g["labels"])) for g in gts]
    r = evaluate_tide(perfect, gts, 2)
    assert r["ap"] == pytest.approx(1.0)
    assert all(v == 0 for v in r["dAP"].values()) and all(v == 0 for v in r["counts"].values())
    # nothing detected: every object is a Miss; fixing them leaves no class, AP undefined (NaN)
    r = evaluate_tide([det([], [], []), det([], [], [])], gts, 2)
    assert r["ap"] == 0.0 and r["counts"]["Miss"] == 2
    assert math.isnan(r["dAP"]["Miss"])  # tidecv divides by zero there
