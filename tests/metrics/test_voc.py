"""VOC AP against the VOC devkit's definition (py-faster-rcnn ``voc_eval.py``, transcribed as loops below)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssdkit.errors import SSDKitError
from ssdkit.metrics import evaluate_voc, voc_ap

from . import det, gt, random_dataset

# ---------------------------------------------------------------------------------------------------------------
# the reference


def devkit_voc_ap(rec, prec, use_07_metric):
    """py-faster-rcnn ``voc_eval.voc_ap``, verbatim in substance."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def devkit_voc_eval(detections, ground_truths, num_classes, iou_threshold, use_07_metric, pixel_offset):
    """py-faster-rcnn ``voc_eval`` as loops, one class at a time; returns ({c: ap}, {c: (rec, prec)})."""
    o = 1.0 if pixel_offset else 0.0
    aps, curves = {}, {}
    for c in range(num_classes):
        class_recs, npos = {}, 0
        for i, truth in enumerate(ground_truths):
            labels = truth["labels"].numpy()
            ignore = truth["ignore"].numpy() if "ignore" in truth else np.zeros(len(labels), bool)
            m = labels == c
            class_recs[i] = {
                "bbox": truth["boxes"].double().numpy()[m],
                "difficult": ignore[m],
                "det": [False] * int(m.sum()),
            }
            npos += int((~ignore[m]).sum())
        image_ids, confidence, bbs = [], [], []
        for i, d in enumerate(detections):
            for b, lab, s in zip(d["boxes"].double().numpy(), d["labels"].numpy(), d["scores"].double().numpy()):
                if lab == c:
                    image_ids.append(i)
                    confidence.append(s)
                    bbs.append(b)
        order = np.argsort(-np.asarray(confidence), kind="stable")
        nd = len(order)
        tp, fp = np.zeros(nd), np.zeros(nd)
        for d in range(nd):
            r = class_recs[image_ids[order[d]]]
            bb = bbs[order[d]]
            ovmax, jmax = -np.inf, -1
            for j, g in enumerate(r["bbox"]):
                iw = max(min(bb[2], g[2]) - max(bb[0], g[0]) + o, 0.0)
                ih = max(min(bb[3], g[3]) - max(bb[1], g[1]) + o, 0.0)
                inters = iw * ih
                uni = (bb[2] - bb[0] + o) * (bb[3] - bb[1] + o) + (g[2] - g[0] + o) * (g[3] - g[1] + o) - inters
                ov = inters / uni
                if ov > ovmax:
                    ovmax, jmax = ov, j
            if ovmax > iou_threshold:
                if not r["difficult"][jmax]:
                    if not r["det"][jmax]:
                        tp[d] = 1.0
                        r["det"][jmax] = True
                    else:
                        fp[d] = 1.0
            else:
                fp[d] = 1.0
        fp, tp = np.cumsum(fp), np.cumsum(tp)
        if npos == 0:
            aps[c] = math.nan
            continue
        rec = tp / float(npos)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps[c] = devkit_voc_ap(rec, prec, use_07_metric)
        curves[c] = (rec, prec)
    return aps, curves


# ---------------------------------------------------------------------------------------------------------------
# voc_ap / evaluate_voc


def test_voc_ap_hand_computed():
    # one TP then one FP, 2 objects: recall (0.5, 0.5), precision (1, 0.5)
    rec, prec = np.array([0.5, 0.5]), np.array([1.0, 0.5])
    assert voc_ap(rec, prec, True) == pytest.approx(6 / 11)  # t = 0, .1, ..., .5 reach precision 1
    assert voc_ap(rec, prec, False) == pytest.approx(0.5)
    # FP then TP, 1 object: the envelope lifts the first point to 0.5
    rec, prec = np.array([0.0, 1.0]), np.array([0.0, 0.5])
    assert voc_ap(rec, prec, True) == pytest.approx(0.5)
    assert voc_ap(rec, prec, False) == pytest.approx(0.5)
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0


@pytest.mark.parametrize("use_07", [True, False])
def test_voc_ap_matches_devkit_on_random_curves(use_07):
    g = np.random.default_rng(0)
    for _ in range(20):
        n = int(g.integers(1, 50))
        tp = np.cumsum(g.random(n) < 0.6)
        rec = tp / max(1, tp[-1] + int(g.integers(0, 5)))
        prec = tp / np.arange(1, n + 1)
        assert voc_ap(rec, prec, use_07) == pytest.approx(devkit_voc_ap(rec, prec, use_07), abs=1e-12)


def test_evaluate_voc_one_tp_one_fp():
    gts = [gt([[0, 0, 10, 10], [50, 50, 70, 70]], [0, 0])]
    dets = [det([[0, 0, 10, 10], [100, 100, 120, 120]], [0, 0], [0.9, 0.8])]
    r07 = evaluate_voc(dets, gts, 1, ["cat"], use_07_metric=True)
    r = evaluate_voc(dets, gts, 1, ["cat"], use_07_metric=False)
    assert r07["ap"]["cat"] == pytest.approx(6 / 11)
    assert r07["map"] == pytest.approx(6 / 11)
    assert r["ap"]["cat"] == pytest.approx(0.5)
    np.testing.assert_allclose(r["recall"]["cat"], [0.5, 0.5])
    np.testing.assert_allclose(r["precision"]["cat"], [1.0, 0.5])
    assert r["num_gt"]["cat"] == 2


def test_evaluate_voc_difficult_is_neither_and_duplicate_is_fp():
    gts = [gt([[0, 0, 10, 10], [40, 40, 60, 60]], [0, 0], [False, True])]
    # the top detection hits the difficult object: ignored, not a FP; npos is 1
    dets = [det([[40, 40, 60, 60], [0, 0, 10, 10]], [0, 0], [0.9, 0.8])]
    r = evaluate_voc(dets, gts, 1, use_07_metric=False)
    assert r["num_gt"]["0"] == 1
    assert r["ap"]["0"] == pytest.approx(1.0)
    np.testing.assert_allclose(r["recall"]["0"], [0.0, 1.0])
    # a second detection of the same object, higher-scored than nothing else: a false positive
    dets = [det([[0, 0, 10, 10], [1, 0, 10, 10]], [0, 0], [0.9, 0.8])]
    r = evaluate_voc(dets, gts, 1, use_07_metric=False)
    np.testing.assert_allclose(r["precision"]["0"], [1.0, 0.5])
    # the duplicate ranked first takes the object, the better box becomes the duplicate; AP still 1 at rank 1
    dets = [det([[0, 0, 10, 10], [1, 0, 10, 10]], [0, 0], [0.7, 0.8])]
    r = evaluate_voc(dets, gts, 1, use_07_metric=False)
    np.testing.assert_allclose(r["precision"]["0"], [1.0, 0.5])


def test_evaluate_voc_pixel_offset():
    # IoU 66/176 = 0.375 with the +1 convention, 50/150 = 0.333 without
    gts = [gt([[5, 0, 15, 10]], [0])]
    dets = [det([[0, 0, 10, 10]], [0], [0.9])]
    assert evaluate_voc(dets, gts, 1, iou_threshold=0.35, pixel_offset=True)["map"] == pytest.approx(1.0)
    assert evaluate_voc(dets, gts, 1, iou_threshold=0.35, pixel_offset=False)["map"] == pytest.approx(0.0)


def test_evaluate_voc_class_without_ground_truth_is_nan_and_excluded():
    gts = [gt([[0, 0, 10, 10]], [0])]
    dets = [det([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1], [0.9, 0.8])]
    r = evaluate_voc(dets, gts, 3, ["a", "b", "c"])
    assert r["ap"]["a"] == pytest.approx(1.0)
    assert math.isnan(r["ap"]["b"]) and math.isnan(r["ap"]["c"])
    assert r["map"] == pytest.approx(1.0)
    assert r["num_detections"] == {"a": 1, "b": 1, "c": 0}
    assert math.isnan(evaluate_voc([det([], [], [])], [gt([], [])], 2)["map"])


def test_evaluate_voc_rejects_bad_input():
    with pytest.raises(SSDKitError, match="label 3"):
        evaluate_voc([det([[0, 0, 1, 1]], [3], [0.5])], [gt([], [])], 3)
    with pytest.raises(SSDKitError, match="same images"):
        evaluate_voc([], [gt([], [])], 3)
    with pytest.raises(SSDKitError, match="class_names"):
        evaluate_voc([], [], 3, ["a"])


@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("pixel_offset", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_evaluate_voc_matches_devkit_loops(use_07, pixel_offset, seed):
    dets, gts = random_dataset(seed, integer=pixel_offset, empty_class=3, undetected_class=4)
    r = evaluate_voc(dets, gts, 5, use_07_metric=use_07, pixel_offset=pixel_offset)
    ref_ap, ref_curves = devkit_voc_eval(dets, gts, 5, 0.5, use_07, pixel_offset)
    for c in range(5):
        if math.isnan(ref_ap[c]):
            assert math.isnan(r["ap"][str(c)])
            continue
        assert r["ap"][str(c)] == pytest.approx(ref_ap[c], abs=1e-12)
        np.testing.assert_allclose(r["recall"][str(c)], ref_curves[c][0], atol=1e-12)
        np.testing.assert_allclose(r["precision"][str(c)], ref_curves[c][1], atol=1e-12)
    assert math.isnan(r["ap"]["3"]) and r["ap"]["4"] == 0.0
    valid = [v for v in ref_ap.values() if not math.isnan(v)]
    assert r["map"] == pytest.approx(np.mean(valid), abs=1e-12)
    assert 0.05 < r["map"] < 0.95  # the data exercises both hits and misses


def test_evaluate_voc_detections_on_images_without_objects():
    # the last image has detections but no object (once an IndexError), then a dataset without any object
    gts = [gt([[0, 0, 10, 10]], [0]), gt([], [])]
    dets = [det([[0, 0, 10, 10]], [0], [0.9]), det([[0, 0, 10, 10]], [0], [0.8])]
    r = evaluate_voc(dets, gts, 1, use_07_metric=False)
    ref_ap, ref_curves = devkit_voc_eval(dets, gts, 1, 0.5, False, True)
    assert r["ap"]["0"] == pytest.approx(ref_ap[0]) == pytest.approx(1.0)
    np.testing.assert_allclose(r["precision"]["0"], ref_curves[0][1])
    r = evaluate_voc(dets, [gt([], []), gt([], [])], 1)
    assert math.isnan(r["map"]) and math.isnan(r["ap"]["0"]) and r["num_detections"]["0"] == 2
