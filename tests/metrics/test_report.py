"""write_report on a small synthetic case: every file is there, report.md's links resolve, the JSON is strict."""

from __future__ import annotations

import json
import math
import re

import pytest
from PIL import Image

from ssdkit.errors import SSDKitError
from ssdkit.metrics import (
    confusion_matrix,
    evaluate_coco,
    evaluate_tide,
    evaluate_voc,
    precision_recall_f1,
    write_report,
)

from . import random_dataset


def strict_load(path):
    """JSON that Python's parser accepts with NaN / Infinity refused."""

    def refuse(token):
        raise AssertionError(f"{path}: non-strict JSON number {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_write_report(tmp_path):
    # class 3 has no ground truth (NaN AP, NaN confusion row): the JSON must still be strict
    dets, gts = random_dataset(1, num_images=20, integer=False, empty_class=3)
    names = ["cat", "dog", "bird", "ghost", "fish"]
    out = tmp_path / "report"
    r = write_report(out, dets, gts, names, size_ranges=(0, 16, 32, 96, math.inf))

    for key, path in r["paths"].items():
        assert (out / path.split("/")[-1]).is_file(), key
    for key in ("pr_curves_png", "pr_f1_png", "confusion_matrix_png", "tide_png"):
        with Image.open(r["paths"][key]) as im:
            assert im.format == "PNG" and im.size[0] > 400
    data = {p.stem: strict_load(p) for p in out.glob("*.json")}
    assert set(data) == {"summary", "ap", "coco", "pr_f1", "confusion_matrix", "tide"}
    assert data["ap"]["ap"]["ghost"] is None  # NaN written as null
    assert data["confusion_matrix"]["normalized"][3] == [None] * 6
    assert data["summary"]["paths"] == r["paths"]

    # every relative link of report.md resolves; every picture and JSON file is linked
    md = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert links and all((out / link).is_file() for link in links)
    assert {p.name for p in out.iterdir() if p.suffix in (".png", ".json")} <= set(links)
    assert "96-inf" in md and "16-32" in md and "Dupe" in md and "ghost" in md

    # the headline numbers are those of the library functions
    voc = evaluate_voc(dets, gts, 5, names, pixel_offset=False)
    assert r["map"] == pytest.approx(voc["map"]) and r["metric"] == "voc07"
    assert r["coco_AP"] == pytest.approx(evaluate_coco(dets, gts, names)["AP"])
    best = precision_recall_f1(dets, gts, 5, class_names=names)["overall"]["best_threshold"]
    assert r["best_score_threshold"] == best and r["score_threshold"] == best
    cm = confusion_matrix(dets, gts, 5, score_threshold=best, class_names=names)
    assert data["confusion_matrix"]["counts"] == cm["counts"].tolist()
    tide = evaluate_tide(dets, gts, 5)
    assert r["tide"] == {**tide["dAP"], **tide["special"]}
    assert r["num_images"] == 20 and r["num_objects"] == sum(int((~g["ignore"]).sum()) for g in gts)


def test_write_report_options(tmp_path):
    dets, gts = random_dataset(2, num_images=6, integer=True)
    names = [f"c{k}" for k in range(5)]
    r = write_report(tmp_path, dets, gts, names, score_threshold=0.5, metric="coco", pixel_offset=True)
    assert r["score_threshold"] == 0.5 and r["map"] == r["coco_AP"]
    assert strict_load(tmp_path / "confusion_matrix.json")["score_threshold"] == 0.5
    with pytest.raises(SSDKitError, match="metric"):
        write_report(tmp_path, dets, gts, names, metric="map")
