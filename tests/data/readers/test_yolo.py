"""YOLO reader: ultralytics data YAML and folder layouts, normalised labels to pixel xyxy."""

from __future__ import annotations

import pytest

from ssdkit.data.readers import read_dataset, read_yolo
from ssdkit.data.readers.yolo import label_path_for
from ssdkit.errors import DataError


@pytest.fixture
def ultra(tmp_path, make_image):
    """ultralytics layout: images/{train,val}, labels/{train,val}, data.yaml with names as a dict."""
    root = tmp_path / "ds"
    make_image(root / "images" / "train" / "a.jpg", (100, 50))
    make_image(root / "images" / "train" / "b.PNG", (40, 40))
    make_image(root / "images" / "train" / "c.jpg", (10, 10))  # no label file: no objects
    make_image(root / "images" / "val" / "v.jpg", (80, 60))
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.5 0.5\n\n")
    (root / "labels" / "train" / "b.txt").write_text("")  # empty = background image
    (root / "labels" / "val" / "v.txt").write_text("1 0.5 0.5 1.0 1.0\n")
    yaml = tmp_path / "data.yaml"
    yaml.write_text("path: ds\ntrain: images/train\nval: images/val\nnames:\n  0: person\n  1: bicycle\n")
    return yaml


def test_yaml_train_split_boxes_in_pixels(ultra):
    ds = read_yolo(ultra)
    assert ds.format == "yolo" and ds.problems == []
    assert ds.class_names == ("person", "bicycle")
    assert [s.image_id for s in ds.samples] == ["a", "b", "c"]
    a = ds.sample(0)
    assert (a.width, a.height) == (100, 50)
    assert a.boxes.tolist() == [[40.0, 15.0, 60.0, 35.0], [0.0, 25.0, 50.0, 50.0]]
    assert a.labels.tolist() == [0, 1] and a.ignore.tolist() == [False, False]
    assert len(ds.sample(1)) == 0 and len(ds.sample(2)) == 0
    assert ds.load_image(1).shape == (3, 40, 40)


def test_yaml_val_split_and_names_list(ultra):
    ultra.write_text("path: ds\ntrain: images/train\nval: images/val\nnc: 2\nnames: [person, bicycle]\n")
    ds = read_dataset(ultra, split="val")
    assert [s.image_id for s in ds.samples] == ["v"]
    assert ds.sample(0).boxes.tolist() == [[0.0, 0.0, 80.0, 60.0]] and ds.sample(0).labels.tolist() == [1]
    with pytest.raises(DataError, match="'test'"):
        read_yolo(ultra, split="test")
    ultra.write_text("path: ds\ntrain: images/train\nnc: 3\nnames: [person, bicycle]\n")
    with pytest.raises(DataError, match="nc is 3"):
        read_yolo(ultra)


def test_directory_layout_with_names_file_and_autodetect(ultra):
    root = ultra.parent / "ds"
    (root / "classes.txt").write_text("person\nbicycle\n")
    ds = read_dataset(root)
    assert ds.format == "yolo" and ds.class_names == ("person", "bicycle")
    assert len(ds) == 3  # images/train chosen by default
    assert len(read_dataset(root, split="val")) == 1
    assert read_dataset(root, classes=["p", "b"]).class_names == ("p", "b")


def test_flat_darknet_folder_generated_names(tmp_path, make_image):
    make_image(tmp_path / "images" / "x.jpg", (20, 10))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text("3 0.5 0.5 0.5 0.5\n")
    ds = read_dataset(tmp_path)
    assert ds.class_names == ("class0", "class1", "class2", "class3")
    assert ds.sample(0).boxes.tolist() == [[5.0, 2.5, 15.0, 7.5]]


def test_bad_lines_polygons_and_out_of_range_class(tmp_path, make_image):
    make_image(tmp_path / "images" / "x.jpg", (100, 100))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "x.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"
        "0 0.5 0.5\n"  # too few values
        "a 0.5 0.5 0.2 0.2\n"  # non-numeric class
        "1.5 0.5 0.5 0.2 0.2\n"  # non-integer class
        "0 0.1 0.1 0.3 0.1 0.3 0.4\n"  # polygon (segmentation export): box is its hull
        "5 0.5 0.5 0.1 0.1\n"  # class id beyond names
    )
    ds = read_yolo(tmp_path, classes=["a", "b"])
    s = ds.sample(0)
    assert s.labels.tolist() == [0, 0]
    assert [[round(v, 4) for v in b] for b in s.boxes.tolist()] == [[40.0, 40.0, 60.0, 60.0], [10.0, 10.0, 30.0, 40.0]]
    assert sorted(p.kind for p in ds.problems) == ["parse_error"] * 3 + ["unknown_class"]
    assert {p.element for p in ds.problems} == {"line 2", "line 3", "line 4", "line 6"}


def test_exif_rotated_image_uses_displayed_size(tmp_path, make_image):
    make_image(tmp_path / "images" / "r.jpg", (60, 30), exif_orientation=8)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "r.txt").write_text("0 0.5 0.5 1 1\n")
    ds = read_yolo(tmp_path)
    assert ds.sample(0).boxes.tolist() == [[0.0, 0.0, 30.0, 60.0]]
    assert ds.load_image(0).shape == (3, 60, 30)


def test_txt_image_list_in_yaml(tmp_path, make_image):
    make_image(tmp_path / "images" / "p.jpg", (10, 10))
    make_image(tmp_path / "images" / "q.jpg", (10, 10))
    (tmp_path / "train.txt").write_text("./images/q.jpg\n")
    (tmp_path / "d.yml").write_text("train: train.txt\nnames: [thing]\n")
    ds = read_dataset(tmp_path / "d.yml")
    assert [s.image_id for s in ds.samples] == ["q"]


def test_label_path_rule():
    from pathlib import Path

    assert label_path_for(Path("/d/images/train/a.b.jpg")) == Path("/d/labels/train/a.b.txt")
    assert label_path_for(Path("/d/pics/a.jpg")) == Path("/d/pics/a.txt")
