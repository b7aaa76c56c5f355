"""COCO reader: pycocotools-style JSON, checked against pycocotools' own loading."""

from __future__ import annotations

import json

import pytest
import torch
from metrics import BBOX, DEL, HUGE, ID, IMAGE_ID, WH, put, write_json
from pycocotools.coco import COCO

from ssdkit.data.readers import read_coco, read_dataset
from ssdkit.errors import DataError


def coco_dict():
    return {
        "info": {"description": "test"},
        "licenses": [],
        "images": [
            {"id": 42, "file_name": "000000000042.jpg", "width": 64, "height": 48},
            {"id": 7, "file_name": "000000000007.jpg", "width": 32, "height": 40},
            {"id": 9, "file_name": "000000000009.jpg", "width": 20, "height": 20},  # no annotations
        ],
        # ids deliberately out of order and non-contiguous, as COCO's 1..90
        "categories": [
            {"id": 18, "name": "dog", "supercategory": "animal"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 18, "bbox": [10.5, 5.0, 20.0, 15.25], "area": 305.0, "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 1, "bbox": [0, 0, 30, 40], "area": 1200.0, "iscrowd": 1},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12.0, "iscrowd": 0},
        ],
    }


@pytest.fixture
def coco_tree(tmp_path, make_image):
    """COCO 2017 layout: annotations/instances_val2017.json and val2017/*.jpg."""
    d = coco_dict()
    for img in d["images"]:
        make_image(tmp_path / "val2017" / img["file_name"], (img["width"], img["height"]))
    (tmp_path / "annotations").mkdir()
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps(d))
    return path


def test_matches_pycocotools(coco_tree):
    ds = read_coco(coco_tree)
    assert ds.format == "coco" and ds.problems == []
    coco = COCO(str(coco_tree))
    cat_ids = sorted(coco.getCatIds())
    assert ds.class_names == tuple(coco.loadCats(c)[0]["name"] for c in cat_ids) == ("person", "car", "dog")
    assert ds.extra["label_to_category_id"] == cat_ids
    assert [s.image_id for s in ds.samples] == ["42", "7", "9"]  # JSON order
    for s in ds.samples:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[s.extra["coco_id"]]))
        img = coco.loadImgs(s.extra["coco_id"])[0]
        assert (s.width, s.height) == (img["width"], img["height"])
        expected = torch.tensor(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            dtype=torch.float32,
        ).reshape(-1, 4)
        assert torch.equal(s.boxes, expected)
        assert s.labels.tolist() == [cat_ids.index(a["category_id"]) for a in anns]
        assert s.ignore.tolist() == [bool(a["iscrowd"]) for a in anns]
    assert len(ds.sample(2)) == 0  # image without annotations kept
    assert ds.load_image(1).shape == (3, 40, 32)


def test_directory_with_split_and_autodetect(coco_tree):
    root = coco_tree.parent.parent
    assert read_dataset(root, split="val2017").format == "coco"
    assert len(read_dataset(root)) == 3  # one instances_*.json: no split needed
    assert len(read_dataset(coco_tree)) == 3
    with pytest.raises(DataError, match="instances_train2017.json"):
        read_dataset(root, split="train2017")


@pytest.mark.parametrize("layout", ["beside", "images", "parent_images", "root_arg"])
def test_image_root_search(tmp_path, make_image, layout):
    d = coco_dict()
    json_dir = tmp_path / "ann"
    img_dir = {
        "beside": json_dir,
        "images": json_dir / "images",
        "parent_images": tmp_path / "images",
        "root_arg": tmp_path / "elsewhere",
    }[layout]
    for img in d["images"]:
        make_image(img_dir / img["file_name"], (img["width"], img["height"]))
    json_dir.mkdir(exist_ok=True)
    (json_dir / "export.json").write_text(json.dumps(d))
    ds = read_coco(json_dir / "export.json", root=img_dir if layout == "root_arg" else None)
    assert len(ds) == 3 and ds.problems == []


def test_malformed_json_names_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "images": [\n    {"id": 1,, "file_name": "a.jpg"}\n  ]\n}\n')
    with pytest.raises(DataError, match=r"bad\.json: malformed JSON at line 3, column 14"):
        read_coco(p)
    p.write_text('{"annotations": []}')
    with pytest.raises(DataError, match="'images'"):
        read_coco(p)


def test_unknown_ids_missing_image_and_missing_size(coco_tree):
    d = coco_dict()
    d["annotations"] += [
        {"id": 10, "image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 0},
        {"id": 11, "image_id": 42, "category_id": 77, "bbox": [0, 0, 5, 5], "iscrowd": 0},
    ]
    d["images"].append({"id": 5, "file_name": "gone.jpg", "width": 10, "height": 10})
    del d["images"][2]["width"], d["images"][2]["height"]  # CVAT exports sometimes omit sizes
    coco_tree.write_text(json.dumps(d))
    ds = read_coco(coco_tree)
    by_kind = {p.kind: p for p in ds.problems}
    # (a duplicate image id and an annotation without bbox, once problems here, are errors: see test_broken_file)
    assert sorted(by_kind) == ["missing_image", "unknown_class", "unknown_image"]
    assert "999" in by_kind["unknown_image"].message and "annotations[3]" in by_kind["unknown_image"].element
    assert "77" in by_kind["unknown_class"].message
    assert "gone.jpg" in by_kind["missing_image"].message
    assert [s.image_id for s in ds.samples] == ["42", "7", "9"]
    assert (ds.sample(2).width, ds.sample(2).height) == (20, 20)  # read from the image header
    assert len(ds.sample(0)) == 2


def test_classes_by_name(coco_tree):
    ds = read_coco(coco_tree, classes=["dog", "person"])
    assert ds.class_names == ("dog", "person")
    assert ds.sample(0).labels.tolist() == [0, 1]
    assert [p.kind for p in ds.problems] == ["unknown_class"]  # the car annotation
    assert ds.extra["label_to_category_id"] == [18, 1]


def test_image_info_file_without_annotations(coco_tree):
    d = coco_dict()
    del d["annotations"]  # image_info_test2017.json: images and categories only
    coco_tree.write_text(json.dumps(d))
    ds = read_coco(coco_tree)
    assert len(ds) == 3 and ds.problems == [] and all(len(s) == 0 for s in ds.samples)


# Careless or hostile files: one DataError line naming the file and the field (the rules of ssdkit.data.coco_json,
# which `ssdkit evaluate --gt` applies too). (field, value put there, the message after "instances_val.json: ")
NAN = float("nan")
BROKEN = [
    ("annotations.0.bbox", "1234", f'annotations[0].bbox: {BBOX} "1234"'),  # was read as [1, 2, 3, 4]
    ("annotations.0.bbox", [10.5, 5.0, True, 15.25], f"annotations[0].bbox: {BBOX} [10.5, 5.0, true, 15.25]"),
    ("annotations.2.bbox", [1, NAN, 3, 4], f"annotations[2].bbox: {BBOX} [1, NaN, 3, 4]"),
    ("annotations.2.bbox", [1, 2, 3, float("-inf")], f"annotations[2].bbox: {BBOX} [1, 2, 3, -Infinity]"),
    ("annotations.2.bbox", [1, 2, 3, -4], f"annotations[2].bbox: {WH} [1, 2, 3, -4]"),
    ("annotations.2.bbox", [[1, 2], [3, 4]], f"annotations[2].bbox: {BBOX} a list of 2 items"),
    ("annotations.2.bbox", {"x": 1, "y": 2}, f'annotations[2].bbox: {BBOX} an object {{"x", "y"}}'),
    ("annotations.2.bbox", DEL, f"annotations[2].bbox: {BBOX} nothing (the field is missing)"),
    ("annotations.1.iscrowd", "no", 'annotations[1].iscrowd: expected 0 or 1 (or false / true), got "no"'),
    ("annotations.1.iscrowd", None, "annotations[1].iscrowd: expected 0 or 1 (or false / true), got null"),
    ("annotations.1.area", "1200", 'annotations[1].area: expected a finite number >= 0, got "1200"'),
    ("annotations.1.area", False, "annotations[1].area: expected a finite number >= 0, got false"),
    ("annotations.1.area", float("inf"), "annotations[1].area: expected a finite number >= 0, got Infinity"),
    ("annotations.0.id", [1], f"annotations[0].id: {ID} [1]"),
    ("annotations.0.id", HUGE, f"annotations[0].id: {ID} an integer of 5000 digits"),
    ("annotations.0.image_id", False, f"annotations[0].image_id: {IMAGE_ID} false"),
    ("annotations.0.image_id", 42.0, f"annotations[0].image_id: {IMAGE_ID} 42.0"),
    ("annotations.0.image_id", {"id": 42}, f'annotations[0].image_id: {IMAGE_ID} an object {{"id"}}'),
    ("annotations.0.category_id", "18", f'annotations[0].category_id: {ID} "18"'),
    ("annotations.0.category_id", True, f"annotations[0].category_id: {ID} true"),
    ("annotations.0.category_id", DEL, f"annotations[0].category_id: {ID} nothing"),
    ("images.0.id", True, f"images[0].id: {IMAGE_ID} true"),
    ("images.0.id", "", f'images[0].id: {IMAGE_ID} ""'),
    ("images.0.id", [42], f"images[0].id: {IMAGE_ID} [42]"),
    ("images.0.id", DEL, f"images[0].id: {IMAGE_ID} nothing"),
    ("images.1.id", "7", 'images[1].id: expected an integer, as the id of images[0] (one kind for all), got "7"'),
    ("images.0.file_name", DEL, "images[0].file_name: expected a file name (a non-empty string), got nothing"),
    ("images.0.file_name", ["a.jpg"], 'images[0].file_name: expected a file name (a non-empty string), got ["a.jpg"]'),
    ("images.0.width", "64", 'images[0].width: expected a size in pixels >= 0, got "64"'),
    ("images.0.height", -48, "images[0].height: expected a size in pixels >= 0, got -48"),
    ("categories.0.id", 18.5, f"categories[0].id: {ID} 18.5"),
    ("categories.0.id", HUGE, f"categories[0].id: {ID} an integer of 5000 digits"),
    ("categories.0.name", 18, "categories[0].name: expected a string, got 18"),
    ("images.3", {"id": 42, "file_name": "again.jpg"}, "images[3].id: duplicate id 42 (also the id of images[0])"),
    ("annotations.2.id", 2, "annotations[2].id: duplicate id 2 (also the id of annotations[1])"),
    ("categories.3", {"id": 1, "name": "human"}, "categories[3].id: duplicate id 1 (also the id of categories[1])"),
    ("images", {}, "images: expected a list of image objects, got an empty object {}"),
    ("annotations", {"1": {}}, 'annotations: expected a list of annotation objects, got an object {"1"}'),
    ("annotations.0", "bbox", 'annotations[0]: expected an object, got "bbox"'),
    ("categories", "person", 'categories: expected a list of category objects, got "person"'),
    ("categories", [], "categories: empty"),
    ("categories", DEL, "categories: missing (a COCO instances file has 'images', 'annotations' and 'categories')"),
]


@pytest.mark.parametrize("field, value, message", BROKEN)
def test_broken_file(tmp_path, field, value, message):
    path = write_json(tmp_path / "instances_val.json", put(coco_dict(), field, value))
    with pytest.raises(DataError) as e:
        read_coco(path)
    assert f"instances_val.json: {message}" in str(e.value) and "\n" not in str(e.value), str(e.value)


UNREADABLE = [
    pytest.param(b"", "empty file", id="empty"),
    pytest.param(b"\n \n", "empty file", id="blank"),
    pytest.param(b'{"images": [{"file_name": "\xff.jpg"}]}', "not UTF-8 text (byte 0xff at offset 27)", id="latin-1"),
    pytest.param(b'{"images": ' + b"[" * 100_000, "JSON nested too deeply", id="nested"),
    pytest.param(b"[]", "expected a COCO instances object", id="list"),
]


@pytest.mark.parametrize("content, message", UNREADABLE)
def test_unreadable_file(tmp_path, content, message):
    path = tmp_path / "instances_val.json"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_coco(path)
    assert f"instances_val.json: {message}" in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_json_that_is_a_folder_or_missing(tmp_path):
    (tmp_path / "instances_val.json").mkdir()
    with pytest.raises(DataError, match="no annotations/instances_"):
        read_coco(tmp_path / "instances_val.json")
    with pytest.raises(DataError, match="no annotations/instances_"):
        read_coco(tmp_path / "gone.json")
