"""COCO metrics of in-memory detections against pycocotools reading the same data from files."""

from __future__ import annotations

import json
import math

import pytest

from ssdkit.errors import SSDKitError
from ssdkit.metrics import detections_to_coco_results, evaluate_coco

from . import assert_coco_equal, det, gt, pycocotools_on_files, random_dataset


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


def test_evaluate_coco_rejects_duplicate_class_names():
    # the names key the per-class results: a repeated one would hide a class
    with pytest.raises(SSDKitError, match="unique"):
        evaluate_coco([det([], [], [])], [gt([], [])], ["a", "a"])


def test_pycocotools_output_is_silenced(capsys):
    dets, gts = random_dataset(7, num_images=3, integer=False)
    evaluate_coco(dets, gts, [f"c{k}" for k in range(5)])
    assert capsys.readouterr().out == ""
    evaluate_coco(dets, gts, [f"c{k}" for k in range(5)], verbose=True)
    assert "Average Precision" in capsys.readouterr().out
