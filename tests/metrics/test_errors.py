"""Confusion matrix against a brute-force reference written here; P / R / F1 and the F1-optimal threshold by hand and
against evaluate_voc's PR curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssdkit.errors import SSDKitError
from ssdkit.metrics import confusion_matrix, evaluate_voc, precision_recall_f1

from . import det, gt, random_dataset

# ---------------------------------------------------------------------------------------------------------------
# the reference: the documented rule, one Python loop per detection, nothing shared with ssdkit


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def brute_confusion(detections, ground_truths, num_classes, iou_thr, score_thr):
    bg = num_classes
    counts = [[0] * (bg + 1) for _ in range(bg + 1)]
    for d, g in zip(detections, ground_truths):
        gboxes, glabels = g["boxes"].tolist(), g["labels"].tolist()
        gignore = g["ignore"].tolist() if "ignore" in g else [False] * len(glabels)
        dets = [(s, k) for k, s in enumerate(d["scores"].tolist()) if s > score_thr]
        dets.sort(key=lambda x: -x[0])  # stable: ties keep their order
        taken = [False] * len(glabels)
        for _, k in dets:
            box, label = d["boxes"][k].tolist(), int(d["labels"][k])
            best, best_j = -1.0, None
            for j in range(len(glabels)):
                if taken[j]:
                    continue
                v = iou(box, gboxes[j])
                if v > best:
                    best, best_j = v, j
            if best_j is None or best <= iou_thr:
                counts[bg][label] += 1  # false positive
            elif gignore[best_j]:
                pass  # on an ignored object: not counted
            else:
                taken[best_j] = True
                counts[glabels[best_j]][label] += 1
        for j in range(len(glabels)):
            if not taken[j] and not gignore[j]:
                counts[glabels[j]][bg] += 1  # missed
    return np.array(counts)


# ---------------------------------------------------------------------------------------------------------------
# confusion matrix


def scenes():
    """Hand-made images, each with one kind of outcome; classes 0, 1, 2."""
    return [
        # right class, wrong class (a box on a class-1 object called 2), a low-IoU detection (false positive + miss)
        (gt([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 70, 70]], [0, 1, 2]),
         det([[0, 0, 10, 10], [21, 20, 40, 41], [60, 60, 80, 80]], [0, 2, 2], [0.9, 0.8, 0.7])),
        # duplicates: the second and third detection on the same object are false positives
        (gt([[0, 0, 20, 20]], [1]), det([[0, 0, 20, 20], [1, 0, 20, 20], [0, 1, 20, 20]], [1, 1, 0], [0.9, 0.8, 0.95])),
        # missed objects, no detection
        (gt([[0, 0, 20, 20], [30, 30, 60, 60]], [0, 2]), det([], [], [])),
        # empty image with detections: false positives; one under the score threshold is not counted
        (gt([], []), det([[0, 0, 5, 5], [10, 10, 20, 20]], [2, 0], [0.6, 0.1])),
        # empty image, nothing
        (gt([], []), det([], [], [])),
        # ignored objects: a detection on one is dropped, an undetected one is not missed
        (gt([[0, 0, 20, 20], [40, 40, 60, 60], [80, 80, 90, 90]], [0, 1, 2], [True, True, False]),
         det([[0, 0, 20, 19], [80, 80, 90, 90]], [1, 2], [0.9, 0.5])),
        # two detections competing: the higher score takes the object, the other matches a neighbour of another
        # class above the threshold (a confusion), not a duplicate
        (gt([[0, 0, 20, 20], [2, 0, 22, 20]], [0, 1]), det([[1, 0, 21, 20], [1, 0, 21, 20]], [0, 0], [0.8, 0.9])),
    ]  # fmt: skip


def test_confusion_matrix_hand_made_scenes():
    gts, dets = zip(*scenes())
    r = confusion_matrix(dets, gts, 3, iou_threshold=0.5, score_threshold=0.25, class_names=["a", "b", "c"])
    ref = brute_confusion(dets, gts, 3, 0.5, 0.25)
    np.testing.assert_array_equal(r["counts"], ref)
    assert r["counts"].dtype == np.int64 and r["class_names"] == ["a", "b", "c", "background"]
    assert r["counts"][3, 3] == 0
    # counted by hand, scene by scene (rows true a, b, c, background; columns predicted a, b, c, missed):
    # 0: a->a, b->c, c missed, FP c | 1: b object taken by the 0.95 "a" box (b->a), the others FP b, b
    # 2: a, c missed | 3: FP c | 5: c->c, the "b" box on the ignored a is dropped | 6: 0.9 box takes a, 0.8 box b->a
    want = np.array([[2, 0, 0, 1], [2, 0, 1, 0], [0, 0, 1, 2], [0, 2, 2, 0]])
    np.testing.assert_array_equal(r["counts"], want)
    rows = want.sum(1, keepdims=True)
    np.testing.assert_allclose(r["normalized"], want / rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("score_thr", [0.0, 0.3, 0.7])
def test_confusion_matrix_matches_brute_force_random(seed, score_thr):
    dets, gts = random_dataset(seed, num_images=30, integer=False)
    r = confusion_matrix(dets, gts, 5, iou_threshold=0.5, score_threshold=score_thr)
    np.testing.assert_array_equal(r["counts"], brute_confusion(dets, gts, 5, 0.5, score_thr))
    # every non-ignored object is either matched or missed exactly once
    n_obj = sum(int((~g["ignore"]).sum()) for g in gts)
    assert r["counts"][:5].sum() == n_obj


def test_confusion_matrix_empty_rows_and_errors():
    r = confusion_matrix([det([[0, 0, 5, 5]], [0], [0.9])], [gt([], [])], 2)
    assert r["counts"].tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert np.isnan(r["normalized"][:2]).all() and r["normalized"][2].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(SSDKitError, match="label 2"):
        confusion_matrix([det([[0, 0, 5, 5]], [2], [0.9])], [gt([], [])], 2)
    with pytest.raises(SSDKitError, match="iou_threshold"):
        confusion_matrix([det([], [], [])], [gt([], [])], 2, iou_threshold=1.5)


# ---------------------------------------------------------------------------------------------------------------
# precision / recall / F1


def test_f1_optimal_threshold_hand_made():
    # one class, 4 objects; detections by score: TP .9, TP .8, FP .7, TP .6, FP .4, FP .3, TP .2
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]
    g = gt(boxes, [0, 0, 0, 0])
    d = det([boxes[0], boxes[1], [100, 100, 110, 110], boxes[2], [200, 0, 210, 10], [300, 0, 310, 10], boxes[3]],
            [0] * 7, [0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2])  # fmt: skip
    r = precision_recall_f1([d], [g], 1, thresholds=[0.1, 0.25, 0.35, 0.5, 0.55, 0.65, 0.75, 0.85, 0.95])
    curve = r["per_class"]["0"]
    # kept at t: score > t. F1 = 2TP / (2TP + FP + FN)
    # t=.1: 4TP 3FP -> 8/11; .25: 3TP 3FP 1FN -> 6/10; .35: 3TP 2FP -> 6/9; .5, .55: 3TP 1FP 1FN -> 6/8
    # .65: 2TP 1FP 2FN -> 4/7; .75: 2TP 2FN -> 4/6; .85: 1TP 3FN -> 2/5; .95: nothing -> 0
    want = [8 / 11, 6 / 10, 6 / 9, 6 / 8, 6 / 8, 4 / 7, 4 / 6, 2 / 5, 0.0]
    np.testing.assert_allclose(curve["f1"], want)
    # the maximum 0.75 holds at 0.5 and 0.55: the first of the run's middle points
    assert curve["best_threshold"] == 0.5
    assert curve["best_f1"] == pytest.approx(0.75)
    assert curve["best_precision"] == pytest.approx(0.75) and curve["best_recall"] == pytest.approx(0.75)
    assert math.isnan(curve["precision"][-1]) and curve["recall"][-1] == 0.0
    assert r["overall"]["best_threshold"] == 0.5  # one class: overall is the class
    # a run of three equal maxima: its middle
    r = precision_recall_f1([d], [g], 1, thresholds=[0.45, 0.5, 0.55, 0.75])
    assert r["per_class"]["0"]["best_threshold"] == 0.5


def test_precision_recall_f1_matches_voc_curve_and_micro_average():
    dets, gts = random_dataset(4, num_images=30, integer=False)
    names = [f"c{k}" for k in range(5)]
    r = precision_recall_f1(dets, gts, 5, thresholds=[-1.0, 0.5], class_names=names, pixel_offset=True)
    voc = evaluate_voc(dets, gts, 5, names, pixel_offset=True)
    tp_total = fp_total = gt_total = 0
    for name in names:
        c = r["per_class"][name]
        # below every score: the last point of the devkit's PR curve
        assert c["precision"][0] == pytest.approx(voc["precision"][name][-1])
        assert c["recall"][0] == pytest.approx(voc["recall"][name][-1])
        assert c["num_gt"] == voc["num_gt"][name]
        tp = round(c["recall"][0] * c["num_gt"])
        tp_total += tp
        fp_total += c["num_detections"] - tp
        gt_total += c["num_gt"]
    o = r["overall"]
    assert o["recall"][0] == pytest.approx(tp_total / gt_total)
    assert o["precision"][0] == pytest.approx(tp_total / (tp_total + fp_total))
    assert o["f1"][0] == pytest.approx(2 * tp_total / (2 * tp_total + fp_total + gt_total - tp_total))
    # the default grid, and recall falls with the threshold
    d = precision_recall_f1(dets, gts, 5)
    assert len(d["thresholds"]) == 101 and d["thresholds"][0] == 0.0 and d["thresholds"][-1] == 1.0
    assert (np.diff(d["overall"]["recall"]) <= 1e-12).all()
    assert 0.0 < d["overall"]["best_threshold"] < 1.0


def test_precision_recall_f1_edge_cases():
    # no detections at all: no best threshold; a class without objects has NaN recall
    r = precision_recall_f1([det([], [], [])], [gt([[0, 0, 5, 5]], [0])], 2)
    assert r["overall"]["best_threshold"] is None and math.isnan(r["overall"]["best_f1"])
    assert np.isnan(r["per_class"]["1"]["recall"]).all() and np.isnan(r["per_class"]["1"]["f1"]).all()
    assert (r["per_class"]["0"]["f1"] == 0).all()
    # a detection on a difficult object is neither TP nor FP
    r = precision_recall_f1([det([[0, 0, 5, 5]], [0], [0.9])], [gt([[0, 0, 5, 5]], [0], [True])], 1)
    assert r["overall"]["num_detections"] == 0 and r["overall"]["num_gt"] == 0
    with pytest.raises(SSDKitError, match="thresholds"):
        precision_recall_f1([det([], [], [])], [gt([], [])], 1, thresholds=[])
