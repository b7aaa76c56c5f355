"""Metrics against their references: the VOC devkit definition (a loop transcription below) and pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdkit.engine.metric import DetectionMAP
from ssdkit.errors import DataError, SSDKitError
from ssdkit.metrics import (
    COCO_STAT_NAMES,
    detections_to_coco_results,
    evaluate_coco,
    evaluate_coco_files,
    evaluate_voc,
    evaluate_voc_files,
    voc_ap,
)

# ---------------------------------------------------------------------------------------------------------------
# references


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
        for i, gt in enumerate(ground_truths):
            labels = gt["labels"].numpy()
            ignore = gt["ignore"].numpy() if "ignore" in gt else np.zeros(len(labels), bool)
            m = labels == c
            class_recs[i] = {
                "bbox": gt["boxes"].double().numpy()[m],
                "difficult": ignore[m],
                "det": [False] * int(m.sum()),
            }
            npos += int((~ignore[m]).sum())
        image_ids, confidence, bbs = [], [], []
        for i, det in enumerate(detections):
            for b, lab, s in zip(det["boxes"].double().numpy(), det["labels"].numpy(), det["scores"].double().numpy()):
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


# ---------------------------------------------------------------------------------------------------------------
# COCO


def assert_coco_equal(result, stats, per_class):
    for name, v in zip(COCO_STAT_NAMES, stats):
        assert result[name] == pytest.approx(v, abs=1e-6), name
    for name, (ap, ap50) in per_class.items():
        for got, want in ((result["ap"][name], ap), (result["ap50"][name], ap50)):
            if math.isnan(want):
                assert math.isnan(got)
            else:
                assert got == pytest.approx(want, abs=1e-6), name


@pytest.mark.parametrize("seed", [0, 3])
def test_evaluate_coco_matches_pycocotools_random(tmp_path, seed):
    dets, gts = random_dataset(seed, integer=False, empty_class=3, undetected_class=4)
    stats, per_class, _, _ = pycocotools_on_files(tmp_path, dets, gts, 5)
    r = evaluate_coco(dets, gts, [f"c{k}" for k in range(5)])
    assert_coco_equal(r, stats, per_class)
    assert 0.05 < r["AP"] < 0.95 and r["APs"] > -1 and r["APl"] > -1


def test_evaluate_coco_hand_made(tmp_path):
    gts = [
        gt([[10, 10, 60, 60], [100, 100, 300, 250], [0, 0, 400, 300]], [0, 1, 0], [False, False, True]),  # crowd
        gt([], []),  # empty image
        gt([[5, 5, 25, 25]], [1]),  # not detected
    ]
    dets = [
        det(
            [[12, 10, 60, 62], [100, 100, 290, 250], [200, 10, 260, 70], [101, 99, 300, 250]],
            [0, 1, 0, 1],
            [0.9, 0.8, 0.6, 0.7],
        ),  # fmt: skip
        det([[10, 10, 50, 50]], [1], [0.3]),
        det([], [], []),
    ]
    stats, per_class, _, _ = pycocotools_on_files(tmp_path, dets, gts, 3)
    r = evaluate_coco(dets, gts, ["c0", "c1", "c2"])
    assert_coco_equal(r, stats, per_class)
    assert math.isnan(r["ap"]["c2"])  # no ground truth
    # perfect detections give AP 1
    perfect = [det(g["boxes"].tolist(), g["labels"].tolist(), [0.9] * len(g["labels"])) for g in gts]
    assert evaluate_coco(perfect, gts, ["c0", "c1", "c2"])["AP"] == pytest.approx(1.0)


def test_evaluate_coco_without_detections():
    gts = [gt([[10, 10, 60, 60], [100, 100, 300, 250]], [0, 1]), gt([], [])]
    r = evaluate_coco([det([], [], []), det([], [], [])], gts, ["a", "b"])
    # pycocotools' values for no detections: 0 where there is ground truth, -1 for empty area ranges
    assert r["AP"] == 0.0 and r["AP50"] == 0.0 and r["AR100"] == 0.0
    assert r["APs"] == -1.0 and r["APm"] == 0.0 and r["APl"] == 0.0
    assert r["ap"] == {"a": 0.0, "b": 0.0}


def test_detections_to_coco_results():
    out = detections_to_coco_results([det([[1, 2, 11, 7]], [1], [0.5]), det([], [], [])], ["x", "y"], [4, 9])
    assert out == [{"image_id": "x", "category_id": 9, "bbox": [1.0, 2.0, 10.0, 5.0], "score": 0.5}]
    json.dumps(out)
    with pytest.raises(SSDKitError, match="image_ids"):
        detections_to_coco_results([det([], [], [])], [], [1])


def test_evaluate_coco_files_matches_pycocotools_and_voc_files(tmp_path):
    dets, gts = random_dataset(5, num_images=12, integer=False)
    stats, per_class, gt_file, dt_file = pycocotools_on_files(tmp_path, dets, gts, 5)
    assert_coco_equal(evaluate_coco_files(gt_file, dt_file), stats, per_class)
    # VOC from the same COCO pair: category ids 10, 12, ... map back to labels 0, 1, ...; crowd = difficult
    for use_07 in (True, False):
        r = evaluate_voc_files(gt_file, dt_file, use_07_metric=use_07)
        ref = evaluate_voc(dets, gts, 5, [f"c{k}" for k in range(5)], use_07_metric=use_07, pixel_offset=False)
        for k in range(5):
            assert r["ap"][f"c{k}"] == pytest.approx(ref["ap"][f"c{k}"], abs=1e-6)
        assert r["map"] == pytest.approx(ref["map"], abs=1e-6)


def test_evaluate_coco_files_errors(tmp_path):
    dets, gts = random_dataset(1, num_images=4)
    _, _, gt_file, dt_file = pycocotools_on_files(tmp_path, dets, gts, 5)
    with pytest.raises(DataError, match="missing.json"):
        evaluate_coco_files(tmp_path / "missing.json", dt_file)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        evaluate_coco_files(gt_file, bad)
    with pytest.raises(DataError, match="bad.json"):
        evaluate_voc_files(bad, dt_file)
    results = json.loads(dt_file.read_text())
    unknown_img = tmp_path / "img.json"
    unknown_img.write_text(json.dumps([{**results[0], "image_id": 999}]))
    with pytest.raises(DataError, match="image_id 999"):
        evaluate_coco_files(gt_file, unknown_img)
    unknown_cat = tmp_path / "cat.json"
    unknown_cat.write_text(json.dumps([{**results[0], "category_id": 11}]))
    with pytest.raises(DataError, match="category_id 11"):
        evaluate_coco_files(gt_file, unknown_cat)
    no_images = tmp_path / "gt_bad.json"
    no_images.write_text(json.dumps({"annotations": [], "categories": []}))
    with pytest.raises(DataError, match="'images'"):
        evaluate_coco_files(no_images, dt_file)
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    assert evaluate_coco_files(gt_file, empty)["AP"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# ignite


def run_metric(metric, dets, gts, batch_size=5):
    batches = [(dets[i : i + batch_size], gts[i : i + batch_size]) for i in range(0, len(dets), batch_size)]
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, "det")
    engine.run(batches, max_epochs=1)
    return engine.state.metrics["det"]


@pytest.mark.parametrize("kind", ["voc07", "voc"])
def test_detection_map_engine_equals_evaluate_voc(kind):
    dets, gts = random_dataset(2)
    got = run_metric(DetectionMAP(5, metric=kind), dets, gts)
    want = evaluate_voc(dets, gts, 5, use_07_metric=kind == "voc07")
    assert got["map"] == pytest.approx(want["map"], abs=1e-12)
    assert got["ap"] == pytest.approx(want["ap"], abs=1e-12)


def test_detection_map_coco_and_reset():
    dets, gts = random_dataset(4, num_images=10, integer=False)
    metric = DetectionMAP(5, metric="coco", class_names=[f"c{k}" for k in range(5)])
    got = run_metric(metric, dets, gts, batch_size=3)
    want = evaluate_coco(dets, gts, [f"c{k}" for k in range(5)])
    assert got["map"] == got["AP"] == pytest.approx(want["AP"], abs=1e-12)
    # a second run starts from scratch (reset at epoch start)
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, "det")
    engine.run([(dets[:3], gts[:3])], max_epochs=1)
    assert engine.state.metrics["det"]["AP"] == pytest.approx(
        evaluate_coco(dets[:3], gts[:3], metric.class_names)["AP"]
    )
    with pytest.raises(SSDKitError, match="metric"):
        DetectionMAP(5, metric="voc12")


def test_detection_map_gathers_across_processes(monkeypatch):
    # two simulated ranks: compute() must evaluate the union of what every process saw
    import ignite.distributed as idist

    dets, gts = random_dataset(6, num_images=10)
    rank0, rank1 = DetectionMAP(5), DetectionMAP(5)
    rank0.update((dets[:6], gts[:6]))
    rank1.update((dets[6:], gts[6:]))
    monkeypatch.setattr(idist, "get_world_size", lambda: 2)
    monkeypatch.setattr(idist, "all_gather", lambda obj: [obj, (rank1._detections, rank1._ground_truths)])
    assert rank0.compute()["map"] == pytest.approx(evaluate_voc(dets, gts, 5)["map"], abs=1e-12)


def _distributed_map(local_rank, out):
    import ignite.distributed as idist

    dets, gts = random_dataset(6, num_images=10)
    rank = idist.get_rank()
    metric = DetectionMAP(5)
    metric.update((dets[rank::2], gts[rank::2]))
    out.put((rank, metric.compute()["map"]))


@pytest.mark.slow
def test_detection_map_gloo_two_processes():
    import multiprocessing as mp

    import ignite.distributed as idist

    queue = mp.get_context("spawn").Manager().Queue()
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_distributed_map, queue)
    got = dict(queue.get() for _ in range(2))
    dets, gts = random_dataset(6, num_images=10)
    want = evaluate_voc(dets, gts, 5)["map"]
    assert got[0] == pytest.approx(want, abs=1e-12) and got[1] == pytest.approx(want, abs=1e-12)


def test_pycocotools_output_is_silenced(capsys):
    dets, gts = random_dataset(7, num_images=3, integer=False)
    evaluate_coco(dets, gts, [f"c{k}" for k in range(5)])
    assert capsys.readouterr().out == ""
    evaluate_coco(dets, gts, [f"c{k}" for k in range(5)], verbose=True)
    assert "Average Precision" in capsys.readouterr().out
