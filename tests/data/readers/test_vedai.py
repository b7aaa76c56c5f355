"""VEDAI reader: oriented corners to axis-aligned boxes, class-id mapping, folds."""

from __future__ import annotations

import pytest

from ssdkit.data.readers import VEDAI_CLASSES, read_dataset, read_vedai
from ssdkit.errors import DataError


@pytest.fixture
def vedai(tmp_path, make_image):
    root = tmp_path / "VEDAI"
    for i in ("00000000", "00000001", "00000002"):
        make_image(root / "Vehicules512" / f"{i}_co.png", (512, 512))
        make_image(root / "Vehicules512" / f"{i}_ir.png", (512, 512), mode="L")
    ann = root / "Annotations512"
    ann.mkdir(parents=True)
    # the real first line of 00000000.txt: a truck (class 2) at the bottom border, corners reaching y=511
    (ann / "00000000.txt").write_text(
        "290.348971 504.611640 3.012318 2 1 0 277 303 304 279 502 498 508 511\n"
        "100.0 100.0 0.5 31 1 1 90 110 112 88 95 90 110 105\n"  # plane
        "10.0 10.0 0.0 201 1 0 5 15 15 5 5 5 15 15\n"  # unknown class id
    )
    (ann / "00000001.txt").write_text("500 500 0 1 0 0 505 520 520 505 490 490 515 515\n")  # car past the corner
    # 00000002: no annotation file
    (ann / "fold01.txt").write_text("00000000\n00000002\n")
    (ann / "fold01test.txt").write_text("1\n")
    return root


def test_corners_to_boxes_and_classes(vedai):
    ds = read_dataset(vedai)
    assert ds.format == "vedai" and ds.class_names == VEDAI_CLASSES
    assert [s.image_id for s in ds.samples] == ["00000000", "00000001", "00000002"]
    s0 = ds.sample(0)
    assert s0.boxes.tolist() == [[277, 498, 304, 511], [88, 90, 112, 110]]
    assert [ds.class_names[i] for i in s0.labels.tolist()] == ["truck", "plane"]
    assert s0.extra["is_occluded"] == [False, True]
    assert ds.sample(1).boxes.tolist() == [[505, 490, 512, 512]]  # clipped to the image
    assert ds.sample(1).labels.tolist() == [VEDAI_CLASSES.index("car")]
    assert len(ds.sample(2)) == 0
    assert [(p.kind, p.element) for p in ds.problems] == [("unknown_class", "line 3")]
    assert ds.load_image(0).shape == (3, 512, 512)


def test_folds_and_infrared(vedai):
    assert [s.image_id for s in read_vedai(vedai, split="fold01").samples] == ["00000000", "00000002"]
    test = read_vedai(vedai, split="fold01test", modality="ir")
    assert [s.image_id for s in test.samples] == ["00000001"]
    assert test.sample(0).image_path.endswith("00000001_ir.png")
    with pytest.raises(DataError, match="fold01, fold01test"):
        read_vedai(vedai, split="fold02")


def test_combined_annotation_file(tmp_path, make_image):
    root = tmp_path / "v"
    make_image(root / "Vehicules512" / "00000003_co.png", (512, 512))
    (root / "Annotations512").mkdir(parents=True)
    (root / "Annotations512" / "annotation512.txt").write_text(
        "00000003 50 50 0 9 1 0 40 60 60 40 45 45 55 55\n00000004 5 5 0 1 1 0 1 2 3\n"
    )
    ds = read_vedai(root)
    assert ds.sample(0).boxes.tolist() == [[40, 45, 60, 55]]
    assert ds.sample(0).labels.tolist() == [VEDAI_CLASSES.index("van")]
    assert sorted(p.kind for p in ds.problems) == ["parse_error"]
