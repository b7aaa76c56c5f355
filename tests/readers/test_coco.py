"""COCO reader: pycocotools-style JSON, checked against pycocotools' own loading."""

from __future__ import annotations

import json

import pytest
import torch
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
        {"id": 12, "image_id": 42, "category_id": 1, "segmentation": [[0, 0, 1, 1]], "iscrowd": 0},
    ]
    d["images"].append({"id": 5, "file_name": "gone.jpg", "width": 10, "height": 10})
    del d["images"][2]["width"], d["images"][2]["height"]  # CVAT exports sometimes omit sizes
    d["images"].append({"id": 42, "file_name": "000000000042.jpg", "width": 64, "height": 48})
    coco_tree.write_text(json.dumps(d))
    ds = read_coco(coco_tree)
    by_kind = {p.kind: p for p in ds.problems}
    assert sorted(by_kind) == ["duplicate_id", "missing_image", "parse_error", "unknown_class", "unknown_image"]
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
