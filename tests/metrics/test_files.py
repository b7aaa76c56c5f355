"""Metrics of COCO files: equal to pycocotools on valid files; one DataError line for every broken one."""

from __future__ import annotations

import json

import pytest

from ssdkit.errors import DataError
from ssdkit.metrics import evaluate_coco_files, evaluate_voc, evaluate_voc_files

from . import (
    BBOX,
    DEL,
    HUGE,
    ID,
    IMAGE_ID,
    WH,
    assert_coco_equal,
    put,
    pycocotools_on_files,
    random_dataset,
    write_json,
)


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
# careless or hostile files: one DataError line naming the file and the field, never a traceback


def small_gt():
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}, {"id": 2, "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 20], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 5, "bbox": [5, 5, 8, 8], "area": 64.0, "iscrowd": 1},
            {"id": 3, "image_id": 2, "category_id": 5, "bbox": [30, 5, 8, 8]},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
    }


def small_results():
    return [
        {"image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 19], "score": 0.9},
        {"image_id": 2, "category_id": 5, "bbox": [30, 6, 8, 8], "score": 0.8},
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 5, 5], "score": 0.1},
    ]


def both_metrics_refuse(gt_file, dt_file, *parts):
    """Both file metrics raise one DataError line containing each of ``parts``."""
    for evaluate in (evaluate_coco_files, evaluate_voc_files):
        with pytest.raises(DataError) as e:
            evaluate(gt_file, dt_file)
        assert all(p in str(e.value) for p in parts) and "\n" not in str(e.value), str(e.value)


NAN, INF = float("nan"), float("inf")
# (field, value put there, what the message says after "gt.json: "); DEL removes the field
GT_CASES = [
    ("annotations.0.bbox", "1234", f'annotations[0].bbox: {BBOX} "1234"'),
    ("annotations.0.bbox", [True, 2, 10, 20], f"annotations[0].bbox: {BBOX} [true, 2, 10, 20]"),
    ("annotations.1.bbox", [5, 5, NAN, 8], f"annotations[1].bbox: {BBOX} [5, 5, NaN, 8]"),
    ("annotations.1.bbox", [5, INF, 8, 8], f"annotations[1].bbox: {BBOX} [5, Infinity, 8, 8]"),
    ("annotations.0.bbox", [10**400, 2, 10, 20], f"annotations[0].bbox: {BBOX} a list of 4 items"),
    ("annotations.0.bbox", [1, 2, -10, 20], f"annotations[0].bbox: {WH} [1, 2, -10, 20]"),
    ("annotations.0.bbox", [1, 2, 10], f"annotations[0].bbox: {BBOX} [1, 2, 10]"),
    ("annotations.0.bbox", {"x": 1}, f'annotations[0].bbox: {BBOX} an object {{"x"}}'),
    ("annotations.0.bbox", DEL, f"annotations[0].bbox: {BBOX} nothing (the field is missing)"),
    ("annotations.0.iscrowd", "no", 'annotations[0].iscrowd: expected 0 or 1 (or false / true), got "no"'),
    ("annotations.0.iscrowd", 2, "annotations[0].iscrowd: expected 0 or 1 (or false / true), got 2"),
    ("annotations.0.area", "200", 'annotations[0].area: expected a finite number >= 0, got "200"'),
    ("annotations.0.area", True, "annotations[0].area: expected a finite number >= 0, got true"),
    ("annotations.0.area", NAN, "annotations[0].area: expected a finite number >= 0, got NaN"),
    ("annotations.0.area", -1, "annotations[0].area: expected a finite number >= 0, got -1"),
    ("annotations.0.id", True, f"annotations[0].id: {ID} true"),
    ("annotations.0.id", "1", f'annotations[0].id: {ID} "1"'),
    ("annotations.0.id", HUGE, f"annotations[0].id: {ID} an integer of 5000 digits"),
    ("annotations.0.id", 2**60, f"annotations[0].id: {ID} {2**60}"),
    ("annotations.0.image_id", True, f"annotations[0].image_id: {IMAGE_ID} true"),
    ("annotations.0.image_id", [1], f"annotations[0].image_id: {IMAGE_ID} [1]"),
    ("annotations.0.image_id", DEL, f"annotations[0].image_id: {IMAGE_ID} nothing"),
    ("annotations.0.category_id", 3.0, f"annotations[0].category_id: {ID} 3.0"),
    ("annotations.0.category_id", DEL, f"annotations[0].category_id: {ID} nothing"),
    ("annotations.0.image_id", 9, "annotations[0]: image_id 9 is not in 'images'"),
    ("annotations.0.category_id", 4, "annotations[0]: category_id 4 is not in 'categories'"),
    ("images.0.id", True, f"images[0].id: {IMAGE_ID} true"),
    ("images.0.id", 1.0, f"images[0].id: {IMAGE_ID} 1.0"),
    ("images.0.id", {"a": 1}, f'images[0].id: {IMAGE_ID} an object {{"a"}}'),
    ("images.1.id", "2", 'images[1].id: expected an integer, as the id of images[0] (one kind for all), got "2"'),
    ("images.0.width", "640", 'images[0].width: expected a size in pixels >= 0, got "640"'),
    ("images.0.file_name", 7, "images[0].file_name: expected a file name (a non-empty string), got 7"),
    ("categories.0.id", "3", f'categories[0].id: {ID} "3"'),
    ("categories.0.name", ["cat"], 'categories[0].name: expected a string, got ["cat"]'),
    ("images.2", {"id": 1}, "images[2].id: duplicate id 1 (also the id of images[0])"),
    ("annotations.2.id", 1, "annotations[2].id: duplicate id 1 (also the id of annotations[0])"),
    ("categories.2", {"id": 3, "name": "cow"}, "categories[2].id: duplicate id 3 (also the id of categories[0])"),
    ("images", {"id": 1}, 'images: expected a list of image objects, got an object {"id"}'),
    ("annotations", None, "annotations: expected a list of annotation objects, got null"),
    ("annotations.0", [1, 2], "annotations[0]: expected an object, got [1, 2]"),
    ("categories", [[3, "cat"]], 'categories[0]: expected an object, got [3, "cat"]'),
    ("images", DEL, "images: missing (a COCO instances file has 'images', 'annotations' and 'categories')"),
    ("annotations", DEL, "annotations: missing"),
    ("categories", [], "categories: empty"),
    ("annotations", [], "annotations: empty, so every AP is undefined"),  # the no-annotation decision
]


@pytest.mark.parametrize("field, value, message", GT_CASES)
def test_broken_ground_truth_is_one_line(tmp_path, field, value, message):
    gt_file = write_json(tmp_path / "gt.json", put(small_gt(), field, value))
    both_metrics_refuse(gt_file, write_json(tmp_path / "dt.json", small_results()), f"gt.json: {message}")


RESULT_CASES = [
    ("0.bbox", "1234", f'results[0].bbox: {BBOX} "1234"'),
    ("0.bbox", [1, 2, 10, False], f"results[0].bbox: {BBOX} [1, 2, 10, false]"),
    ("1.bbox", [NAN, 6, 8, 8], f"results[1].bbox: {BBOX} [NaN, 6, 8, 8]"),
    ("1.bbox", [30, 6, 8, -8], f"results[1].bbox: {WH} [30, 6, 8, -8]"),
    ("0.bbox", DEL, f"results[0].bbox: {BBOX} nothing"),
    ("0.score", True, "results[0].score: expected a finite number, got true"),
    ("0.score", "0.9", 'results[0].score: expected a finite number, got "0.9"'),
    ("0.score", NAN, "results[0].score: expected a finite number, got NaN"),
    ("0.score", -INF, "results[0].score: expected a finite number, got -Infinity"),
    ("0.score", HUGE, "results[0].score: expected a finite number, got an integer of 5000 digits"),
    ("0.score", DEL, "results[0].score: expected a finite number, got nothing"),
    ("0.image_id", True, f"results[0].image_id: {IMAGE_ID} true"),
    ("0.image_id", 1.0, f"results[0].image_id: {IMAGE_ID} 1.0"),
    ("0.image_id", [1], f"results[0].image_id: {IMAGE_ID} [1]"),
    ("0.image_id", "1", 'results[0]: image_id "1" is not an image of'),
    ("0.image_id", 999, "results[0]: image_id 999 is not an image of"),
    ("0.category_id", "3", f'results[0].category_id: {ID} "3"'),
    ("0.category_id", 4, "results[0]: category_id 4 is not a category of"),
    ("0", [1, 3, [1, 2, 10, 19], 0.9], "results[0]: expected an object, got a list of 4 items"),
]


@pytest.mark.parametrize("field, value, message", RESULT_CASES)
def test_broken_results_are_one_line(tmp_path, field, value, message):
    dt_file = write_json(tmp_path / "dt.json", put(small_results(), field, value))
    both_metrics_refuse(write_json(tmp_path / "gt.json", small_gt()), dt_file, f"dt.json: {message}")


FILE_CASES = [
    pytest.param(lambda p: p.write_bytes(b""), "empty file", id="empty"),
    pytest.param(lambda p: p.write_bytes(b" \n\t\n"), "empty file", id="blank"),
    pytest.param(lambda p: p.write_bytes(b'["caf\xe9"]'), "not UTF-8 text (byte 0xe9 at offset 5)", id="latin-1"),
    pytest.param(lambda p: p.write_bytes(b"[" * 100_000 + b"]" * 100_000), "nested too deeply", id="nested"),
    pytest.param(lambda p: p.write_text('{"images": [1,, 2]}'), "malformed JSON at line 1, column 15", id="malformed"),
    pytest.param(lambda p: p.write_text("[1, 2"), "malformed JSON at line 1, column 6", id="truncated"),
    pytest.param(lambda p: p.mkdir(), "is a folder, not a", id="folder"),
    pytest.param(lambda p: None, "file not found", id="missing"),
]


@pytest.mark.parametrize("which", ["gt", "dt"])
@pytest.mark.parametrize("make, message", FILE_CASES)
def test_unreadable_files_are_one_line(tmp_path, make, message, which):
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    write_json(gt_file, small_gt()) if which == "dt" else write_json(dt_file, small_results())
    make(gt_file if which == "gt" else dt_file)
    both_metrics_refuse(gt_file, dt_file, f"{which}.json: ", message)


def test_whole_file_of_the_wrong_kind(tmp_path):
    gt_file = write_json(tmp_path / "gt.json", small_gt())
    instances = "expected a COCO instances object {'images', 'annotations', 'categories'}, got a list"
    both_metrics_refuse(write_json(tmp_path / "list.json", [small_gt()]), gt_file, f"list.json: {instances}")
    results = "expected a list of results {'image_id', 'category_id', 'bbox', 'score'}, got an object"
    both_metrics_refuse(gt_file, write_json(tmp_path / "dt.json", {"results": []}), f"dt.json: {results}")
    both_metrics_refuse(gt_file, gt_file, "gt.json: annotations[0].score: expected a finite number, got nothing")


def test_odd_but_valid_files_give_the_numbers_of_their_plain_form(tmp_path):
    gt_file = write_json(tmp_path / "gt.json", small_gt())
    dt_file = write_json(tmp_path / "dt.json", small_results())
    want, want_voc = evaluate_coco_files(gt_file, dt_file), evaluate_voc_files(gt_file, dt_file)
    assert 0 < want["AP"] < 1 and want_voc["map"] > 0

    def same(gt_path, dt_path):
        assert evaluate_coco_files(gt_path, dt_path) == want
        assert evaluate_voc_files(gt_path, dt_path)["ap"] == want_voc["ap"]

    # annotation ids counted from 0 (some exporters): 0 would read as "unmatched" inside COCOeval
    d = small_gt()
    for k, ann in enumerate(d["annotations"]):
        ann["id"] = k
    same(write_json(tmp_path / "gt0.json", d), dt_file)
    # no annotation ids, iscrowd as booleans, a byte-order mark, fields nothing reads (a huge integer)
    d = small_gt()
    for ann in d["annotations"]:
        ann.pop("id")
        ann["iscrowd"] = bool(ann.get("iscrowd", 0))
    d["info"] = {"note": HUGE}
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + write_json(tmp_path / "tmp.json", d).read_bytes())
    r = small_results()
    r[0]["extra"] = json.loads("[" * 500 + "]" * 500)  # the old loader's deepcopy of it overflowed the stack
    r[0]["caption"] = "a cat"  # pycocotools' loadRes reads every entry as a caption when the first has one
    same(bom, write_json(tmp_path / "odd.json", r))
    # a whole COCO dict holding the detections (some tools write this)
    same(gt_file, write_json(tmp_path / "wrapped.json", {"annotations": small_results()}))


def test_duplicate_category_names_keep_one_result_each(tmp_path):
    gt_file = write_json(tmp_path / "gt.json", put(small_gt(), "categories.1.name", "cat"))
    dt_file = write_json(tmp_path / "dt.json", small_results())
    assert set(evaluate_coco_files(gt_file, dt_file)["ap"]) == {"cat (3)", "cat (5)"}
    assert set(evaluate_voc_files(gt_file, dt_file)["ap"]) == {"cat (3)", "cat (5)"}


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from ssdkit.cli import main

    gt_file = write_json(tmp_path / "gt.json", put(small_gt(), "annotations.0.bbox", "1234"))
    dt_file = write_json(tmp_path / "dt.json", small_results())
    for metric in ("coco", "voc07"):
        assert main(["evaluate", "--gt", str(gt_file), "--detections", str(dt_file), "--metric", metric]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ssdkit: error: ") and err.count("\n") == 1 and "annotations[0].bbox" in err
