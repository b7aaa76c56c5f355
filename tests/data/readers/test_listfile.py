"""torchcv list-file reader."""

from __future__ import annotations

from ssdkit.data.readers import read_dataset, read_listfile


def test_torchcv_list(tmp_path, make_image):
    make_image(tmp_path / "JPEGImages" / "000005.jpg", (100, 80))
    make_image(tmp_path / "JPEGImages" / "000007.PNG", (50, 50))
    make_image(tmp_path / "JPEGImages" / "000009.jpg", (50, 50))
    lst = tmp_path / "voc07_test.txt"
    lst.write_text(
        "JPEGImages/000005.jpg 10 20 30 40 8 1.5 2.5 60 70 0\n"
        "JPEGImages/000007.PNG\n"  # image without objects
        "JPEGImages/000009.jpg 1 2 3\n"  # not a multiple of 5
        "JPEGImages/missing.jpg 1 2 3 4 0\n"
        "JPEGImages/000005.jpg 1 2 3 4 0\n"  # same image twice
    )
    ds = read_dataset(lst)
    assert ds.format == "listfile"
    assert ds.class_names == tuple(f"class{i}" for i in range(9))
    assert [s.image_id for s in ds.samples] == ["JPEGImages/000005", "JPEGImages/000007"]
    s = ds.sample(0)
    assert s.boxes.tolist() == [[10, 20, 30, 40], [1.5, 2.5, 60, 70]] and s.labels.tolist() == [8, 0]
    assert (s.width, s.height) == (100, 80) and len(ds.sample(1)) == 0
    assert sorted(p.kind for p in ds.problems) == ["duplicate_id", "missing_image", "parse_error"]
    assert {p.element for p in ds.problems if p.kind != "duplicate_id"} == {"line 3", "line 4"}
    assert ds.load_image(0).shape == (3, 80, 100)


def test_root_and_classes(tmp_path, make_image):
    make_image(tmp_path / "imgs" / "a.jpg", (20, 20))
    (tmp_path / "lists").mkdir()
    lst = tmp_path / "lists" / "train.txt"
    lst.write_text("a.jpg 1 1 5 5 0 2 2 6 6 3\n")
    ds = read_listfile(lst, classes=["cat", "dog"], root=tmp_path / "imgs")
    assert ds.class_names == ("cat", "dog")
    assert ds.sample(0).labels.tolist() == [0]
    assert [p.kind for p in ds.problems] == ["unknown_class"]


def test_read_dataset_detection_forcing_and_errors(tmp_path, make_image):
    import pytest

    from ssdkit.data.readers import detect_format
    from ssdkit.errors import DataError

    make_image(tmp_path / "a.jpg", (10, 10))
    lst = tmp_path / "list.txt"
    lst.write_text("a.jpg 1 1 5 5 0\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("just some text\n")
    (tmp_path / "voc" / "Annotations").mkdir(parents=True)
    (tmp_path / "yolo" / "labels").mkdir(parents=True)
    (tmp_path / "vedai" / "Annotations512").mkdir(parents=True)
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "instances_val.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    assert detect_format(lst) == "listfile"
    assert detect_format(tmp_path / "voc") == "voc"
    assert detect_format(tmp_path / "yolo") == "yolo"
    assert detect_format(tmp_path / "vedai") == "vedai"
    assert detect_format(tmp_path / "coco") == "coco"
    assert detect_format(tmp_path / "coco" / "annotations" / "instances_val.json") == "coco"
    for bad in (notes, tmp_path / "empty"):
        with pytest.raises(DataError, match=r"unknown dataset layout; looked for Annotations/.*format="):
            read_dataset(bad)
    with pytest.raises(DataError, match="no such file"):
        read_dataset(tmp_path / "nope")
    # format= forces a reader on a file detection would refuse
    notes.write_text("a.jpg 1 1 5 5 0\n")
    assert len(read_dataset(notes, format="listfile")) == 1
    with pytest.raises(DataError, match="unknown format 'pascal'"):
        read_dataset(lst, format="pascal")
    with pytest.raises(DataError, match="classes: .*missing.txt is not a file"):
        read_dataset(lst, classes=str(tmp_path / "missing.txt"))
