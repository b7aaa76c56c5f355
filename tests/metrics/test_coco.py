"""COCO metrics of in-memory detections against pycocotools reading the same data from files; size ranges against
pycocotools run with the same areaRng; the faster-coco-eval backend against pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ssdkit.errors import SSDKitError
from ssdkit.metrics import COCO_STAT_NAMES, detections_to_coco_results, evaluate_coco, evaluate_coco_files

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


# ---------------------------------------------------------------------------------------------------------------
# object-size ranges and the faster backend


def pycocotools_by_size(gt_file, dt_file, size_ranges):
    """AP / AR (maxDets 100) of each size range from pycocotools' own summarize(), one run per range: the range is
    put in the areaRng slots that summarize() reports as small / medium / large."""
    out = {}
    for lo, hi in zip(size_ranges, size_ranges[1:]):
        area = [lo**2, hi**2 if math.isfinite(hi) else 1e5**2]
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(str(gt_file))
            ev = COCOeval(coco_gt, coco_gt.loadRes(str(dt_file)), "bbox")
            ev.params.areaRng = [[0, 1e5**2], area, area, area]
            ev.params.areaRngLbl = ["all", "small", "medium", "large"]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        n = sum(1 for a in coco_gt.dataset["annotations"] if not a["iscrowd"] and area[0] <= a["area"] <= area[1])
        out[(lo, hi)] = (ev.stats[3], ev.stats[9], n)
    return out


@pytest.mark.parametrize("size_ranges", [(0, 16, 32, 96, math.inf), (0, 8, 24, 64, 128, 1000)])
def test_size_ranges_match_pycocotools(tmp_path, size_ranges):
    dets, gts = random_dataset(2, num_images=30, integer=False)
    stats, per_class, gt_file, dt_file = pycocotools_on_files(tmp_path, dets, gts, 5)
    names = [f"c{k}" for k in range(5)]
    r = evaluate_coco(dets, gts, names, size_ranges=size_ranges)
    assert_coco_equal(r, stats, per_class)  # the extra area ranges change nothing else
    r_files = evaluate_coco_files(gt_file, dt_file, size_ranges=size_ranges)
    ref = pycocotools_by_size(gt_file, dt_file, size_ranges)
    labels = list(r["by_size"])
    assert len(labels) == len(size_ranges) - 1 and labels[0] == f"0-{size_ranges[1]}"
    for label, (ap, ar, n) in zip(labels, ref.values()):
        for got in (r["by_size"][label], r_files["by_size"][label]):
            assert got["AP"] == pytest.approx(ap, abs=1e-12), label
            assert got["AR100"] == pytest.approx(ar, abs=1e-12), label
            assert got["num_objects"] == n
    assert sum(v["num_objects"] for v in r["by_size"].values()) >= 1
    if size_ranges[-1] == math.inf:
        assert labels == ["0-16", "16-32", "32-96", "96-inf"]
        # COCO's own ranges are COCO's numbers
        assert r["by_size"]["32-96"]["AP"] == pytest.approx(r["APm"], abs=1e-12)
        assert r["by_size"]["96-inf"]["AR100"] == pytest.approx(r["ARl"], abs=1e-12)


def test_default_size_ranges_are_coco_small_medium_large():
    dets, gts = random_dataset(6, num_images=12, integer=False)
    r = evaluate_coco(dets, gts, [f"c{k}" for k in range(5)])
    assert list(r["by_size"]) == ["0-32", "32-96", "96-inf"]
    for label, key in zip(r["by_size"], ("s", "m", "l")):
        assert r["by_size"][label]["AP"] == pytest.approx(r[f"AP{key}"], abs=1e-12)
        assert r["by_size"][label]["AR100"] == pytest.approx(r[f"AR{key}"], abs=1e-12)
    for bad in ([0], [0, 32, 16], [-1, 10], ["a", "b"], [0, float("nan")]):
        with pytest.raises(SSDKitError, match="size_ranges"):
            evaluate_coco(dets, gts, [f"c{k}" for k in range(5)], size_ranges=bad)
    with pytest.raises(SSDKitError, match="backend"):
        evaluate_coco(dets, gts, [f"c{k}" for k in range(5)], backend="fast")


@pytest.mark.parametrize("seed", [0, 8])
def test_faster_backend_equals_pycocotools(tmp_path, seed):
    pytest.importorskip("faster_coco_eval")
    dets, gts = random_dataset(seed, num_images=30, integer=False, empty_class=3)
    names = [f"c{k}" for k in range(5)]
    ranges = (0, 16, 32, 96, math.inf)
    ref = evaluate_coco(dets, gts, names, size_ranges=ranges)
    got = evaluate_coco(dets, gts, names, size_ranges=ranges, backend="faster")
    for k in COCO_STAT_NAMES:
        assert got[k] == pytest.approx(ref[k], abs=1e-6), k
    for key in ("ap", "ap50"):
        for name in names:
            if math.isnan(ref[key][name]):
                assert math.isnan(got[key][name])
            else:
                assert got[key][name] == pytest.approx(ref[key][name], abs=1e-6), (key, name)
    for label, v in ref["by_size"].items():
        for k in ("AP", "AP50", "AP75", "AR100", "num_objects"):
            assert got["by_size"][label][k] == pytest.approx(v[k], abs=1e-6), (label, k)
    stats, per_class, gt_file, dt_file = pycocotools_on_files(tmp_path, dets, gts, 5)
    assert_coco_equal(evaluate_coco_files(gt_file, dt_file, backend="faster"), stats, per_class)
    # no detections at all
    empty = [det([], [], []) for _ in gts]
    a, b = evaluate_coco(empty, gts, names), evaluate_coco(empty, gts, names, backend="faster")
    assert [a[k] for k in COCO_STAT_NAMES] == pytest.approx([b[k] for k in COCO_STAT_NAMES], abs=1e-6)
