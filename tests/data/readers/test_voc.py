"""Pascal VOC reader: VOCdevkit layout, labelImg/CVAT quirks, broken and hostile files."""

from __future__ import annotations

import pytest
import torch

from ssdkit.data.readers import VOC_CLASSES, read_dataset, read_voc
from ssdkit.data.readers.voc import parse_voc_xml
from ssdkit.data.sample import DetectionSource
from ssdkit.errors import DataError


def kinds(ds):
    return sorted(p.kind for p in ds.problems)


def test_labelimg_layout_voc_classes_difficult_and_boxes(tmp_path, write_voc):
    write_voc(
        tmp_path,
        "000001",
        [
            {"name": "dog", "box": (10, 12, 40, 30), "difficult": 0},
            {"name": "person", "box": (1, 2, 20, 40), "difficult": 1},
        ],
    )
    write_voc(tmp_path, "000002", [{"name": "car", "box": (5, 5, 25, 25)}])
    ds = read_voc(tmp_path)
    assert isinstance(ds, DetectionSource)
    assert ds.format == "voc" and len(ds) == 2 and ds.problems == []
    assert ds.class_names == VOC_CLASSES  # every name is a VOC name -> the standard 20 in standard order
    s = ds.sample(0)
    assert s.image_id == "000001" and (s.width, s.height) == (64, 48)
    assert s.boxes.dtype == torch.float32
    assert s.boxes.tolist() == [[10, 12, 40, 30], [1, 2, 20, 40]]  # as written: no -1 shift
    assert s.labels.tolist() == [VOC_CLASSES.index("dog"), VOC_CLASSES.index("person")]
    assert s.ignore.tolist() == [False, True]
    assert ds.sample(1).ignore.tolist() == [False]  # missing <difficult> = 0
    img = ds.load_image(0)
    assert img.shape == (3, 48, 64) and img.dtype == torch.uint8


def test_split_file_order_and_extra_columns(tmp_path, write_voc):
    for i in ("a", "b", "c"):
        write_voc(tmp_path, i, [{"name": "cat", "box": (1, 1, 9, 9)}])
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("c\na\n\n")
    (tmp_path / "ImageSets" / "Main" / "cat_val.txt").write_text("c  1\na -1\n")
    assert [s.image_id for s in read_voc(tmp_path, split="val").samples] == ["c", "a"]
    assert [s.image_id for s in read_voc(tmp_path, split="cat_val").samples] == ["c", "a"]
    with pytest.raises(DataError, match=r"train\.txt.*available: val"):
        read_voc(tmp_path, split="train")


def test_vocdevkit_trainval_reads_all_years_test_only_2007(tmp_path, write_voc):
    devkit = tmp_path / "VOCdevkit"
    for year, ids in (("VOC2007", ["000005", "000007"]), ("VOC2012", ["2008_000001"])):
        for i in ids:
            write_voc(devkit / year, i, [{"name": "bird", "box": (2, 2, 30, 30)}])
        (devkit / year / "ImageSets" / "Main").mkdir(parents=True)
        (devkit / year / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    (devkit / "VOC2007" / "ImageSets" / "Main" / "test.txt").write_text("000007\n")
    ds = read_dataset(devkit, split="trainval")
    assert ds.format == "voc"
    assert [s.image_id for s in ds.samples] == ["000005", "000007", "2008_000001"]
    assert [s.image_id for s in read_dataset(devkit, split="test").samples] == ["000007"]
    assert len(read_dataset(devkit)) == 3  # no split: every XML of every year


def test_quirks_filename_tag_order_floats_missing_size(tmp_path, make_image):
    (tmp_path / "Annotations").mkdir()
    make_image(tmp_path / "JPEGImages" / "img_01.JPG", (50, 40))
    make_image(tmp_path / "JPEGImages" / "img_02.png", (30, 20))
    # CVAT-like: tags reordered, <filename> naming a file that no longer exists, float coordinates,
    # no <size>, no <difficult>
    (tmp_path / "Annotations" / "img_01.xml").write_text(
        "<annotation><object><bndbox><ymax>30.75</ymax><xmax>40.5</xmax><ymin>3</ymin><xmin>12.5</xmin></bndbox>"
        "<name> horse </name></object><filename>DSC_0001.jpeg</filename></annotation>"
    )
    # zero objects, <size> wrong (says 640x480, image is 30x20)
    (tmp_path / "Annotations" / "img_02.xml").write_text(
        "<annotation><filename>img_02.png</filename><size><width>640</width><height>480</height></size></annotation>"
    )
    ds = read_voc(tmp_path)
    s1, s2 = ds.samples
    assert s1.image_path.endswith("img_01.JPG") and (s1.width, s1.height) == (50, 40)
    assert s1.boxes.tolist() == [[12.5, 3.0, 40.5, 30.75]]
    assert s1.labels.tolist() == [VOC_CLASSES.index("horse")] and s1.ignore.tolist() == [False]
    assert s2.image_path.endswith("img_02.png") and (s2.width, s2.height) == (30, 20) and len(s2) == 0
    assert [(p.kind, p.fixable) for p in ds.problems] == [("size_mismatch", True)]
    assert "640x480" in ds.problems[0].message
    assert ds.load_image(1).shape == (3, 20, 30)


def test_filename_tag_used_when_stem_differs(tmp_path, make_image):
    (tmp_path / "Annotations").mkdir()
    make_image(tmp_path / "JPEGImages" / "photo.jpg", (20, 20))
    (tmp_path / "Annotations" / "ann_7.xml").write_text(
        "<annotation><filename>photo.jpg</filename><object><name>cow</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"
    )
    ds = read_voc(tmp_path)
    assert ds.samples[0].image_path.endswith("photo.jpg") and ds.samples[0].image_id == "ann_7"


def test_exif_rotated_image_size_matches_load_image(tmp_path, make_image):
    (tmp_path / "Annotations").mkdir()
    make_image(tmp_path / "JPEGImages" / "r.jpg", (60, 30), exif_orientation=6)
    (tmp_path / "Annotations" / "r.xml").write_text("<annotation><filename>r.jpg</filename></annotation>")
    ds = read_voc(tmp_path)
    assert (ds.sample(0).width, ds.sample(0).height) == (30, 60)
    assert ds.load_image(0).shape == (3, 60, 30)


def test_non_voc_names_sorted_and_explicit_classes(tmp_path, write_voc):
    write_voc(tmp_path, "a", [{"name": "zebra", "box": (1, 1, 9, 9)}, {"name": "apple", "box": (2, 2, 8, 8)}])
    ds = read_voc(tmp_path)
    assert ds.class_names == ("apple", "zebra") and ds.sample(0).labels.tolist() == [1, 0]
    names = tmp_path / "names.txt"
    names.write_text("zebra\n# comment\n\nlion\n")
    ds = read_dataset(tmp_path, classes=names)
    assert ds.class_names == ("zebra", "lion")
    assert ds.sample(0).labels.tolist() == [0]
    assert kinds(ds) == ["unknown_class"] and "'apple'" in ds.problems[0].message
    assert read_voc(tmp_path, classes=["apple"]).sample(0).labels.tolist() == [0]


def test_bad_files_are_skipped_with_problems(tmp_path, write_voc):
    write_voc(tmp_path, "good", [{"name": "cat", "box": (1, 1, 9, 9)}])
    trunc = write_voc(tmp_path, "trunc", [{"name": "cat", "box": (1, 1, 9, 9)}])
    trunc.write_text(trunc.read_text()[:120])
    write_voc(tmp_path, "noimage", [{"name": "cat", "box": (1, 1, 9, 9)}], image=False)
    write_voc(tmp_path, "badbox", [{"name": "cat", "box": ("x", 1, 9, 9)}, {"name": "dog", "box": (1, 1, 9, 9)}])
    ds = read_voc(tmp_path)
    assert [s.image_id for s in ds.samples] == ["badbox", "good"]
    assert ds.sample(0).labels.tolist() == [VOC_CLASSES.index("dog")]
    assert kinds(ds) == ["missing_image", "parse_error", "parse_error"]
    parse = [p for p in ds.problems if p.kind == "parse_error"]
    assert any(p.file.endswith("trunc.xml") and "malformed XML" in p.message and "line" in p.message for p in parse)
    assert any(p.file.endswith("badbox.xml") and p.element.startswith("object 0") for p in parse)
    with pytest.raises(DataError, match=r"trunc\.xml: malformed XML"):
        parse_voc_xml(trunc)


def test_billion_laughs_is_refused_quickly(tmp_path, write_voc):
    write_voc(tmp_path, "good", [{"name": "cat", "box": (1, 1, 9, 9)}])
    lol = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    bomb = (
        f'<?xml version="1.0"?>\n<!DOCTYPE annotation [\n{chr(10).join(lol)}\n]>\n'
        "<annotation><filename>&lol9;</filename></annotation>\n"
    )
    (tmp_path / "Annotations" / "bomb.xml").write_text(bomb)
    ds = read_voc(tmp_path)  # refused by defusedxml before any expansion (an expanded lol9 is 3 GB)
    assert [s.image_id for s in ds.samples] == ["good"]
    assert kinds(ds) == ["parse_error"] and "entity" in ds.problems[0].message.lower()
    with pytest.raises(DataError, match="Entities"):
        parse_voc_xml(tmp_path / "Annotations" / "bomb.xml")


def test_duplicate_ids_across_years(tmp_path, write_voc):
    for year in ("VOC2007", "VOC2012"):
        write_voc(tmp_path / year, "000001", [{"name": "cat", "box": (1, 1, 9, 9)}])
    ds = read_voc(tmp_path)
    assert len(ds) == 1 and kinds(ds) == ["duplicate_id"]
    assert "VOC2012" in ds.problems[0].file


def test_not_a_voc_dir(tmp_path):
    with pytest.raises(DataError, match="Annotations"):
        read_voc(tmp_path)
