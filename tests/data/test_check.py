"""check_dataset report and the sanitize_sample training policy."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from ssdkit.data.check import CheckReport, check_dataset, sanitize_sample
from ssdkit.data.readers import AnnotatedDataset, read_dataset
from ssdkit.data.sample import Problem, Sample
from ssdkit.errors import DataError

NAMES = ("cat", "dog")


def sample(image_id, boxes, labels, ignore=None, path=None, size=(100, 80)):
    return Sample(
        image_id,
        path,
        size[0],
        size[1],
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(labels),
        None if ignore is None else torch.tensor(ignore),
        NAMES,
        extra={"annotation_path": f"{image_id}.xml"},
    )


def test_sanitize_clips_drops_and_reports():
    s = sample(
        "000005",
        [[10, 10, 50, 40], [-5, 10, 120, 90], [40, 10, 12, 30], [20, 20, 20, 30], [99.5, 0, 130, 10]],
        [0, 1, 0, 1, 0],
        [False, True, False, False, False],
    )
    fixed, problems = sanitize_sample(s, strict=False)
    assert fixed.boxes.tolist() == [[10, 10, 50, 40], [0, 10, 100, 80]]
    assert fixed.labels.tolist() == [0, 1] and fixed.ignore.tolist() == [False, True]
    assert [(p.kind, p.element) for p in problems] == [
        ("out_of_image", "image 000005 box 1 (dog)"),
        ("degenerate", "image 000005 box 2 (cat)"),  # inverted
        ("degenerate", "image 000005 box 3 (dog)"),  # zero width
        ("degenerate", "image 000005 box 4 (cat)"),  # 0.5 px wide once clipped
    ]
    assert all(p.fixable and p.file == "000005.xml" for p in problems)
    assert "xmax < xmin" in problems[1].message and "zero area" in problems[2].message
    assert len(s) == 5 and s.boxes[1].tolist() == [-5, 10, 120, 90]  # input untouched


def test_sanitize_clean_and_empty_samples_unchanged():
    s = sample("a", [[0, 0, 100, 80]], [1])
    assert sanitize_sample(s, strict=True) == (s, [])
    e = sample("b", [], [])
    out, problems = sanitize_sample(e, strict=True)
    assert len(out) == 0 and problems == []


def test_sanitize_strict_raises_naming_file_and_box():
    s = sample("000005", [[10, 10, 50, 40], [40, 10, 12, 30]], [0, 1])
    with pytest.raises(DataError, match=r"000005\.xml: image 000005 box 1 \(dog\): .*inverted"):
        sanitize_sample(s, strict=True)


def test_check_counts_sizes_and_problems(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (100, 80)).save(good)
    wrong = tmp_path / "wrong.png"
    Image.new("RGB", (50, 50)).save(wrong)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    samples = [
        # sqrt areas: 10 (<16), 20 (16-32), 40 (32-96), 100x80 -> 89.4 (32-96)
        sample("a", [[0, 0, 10, 10], [0, 0, 20, 20], [0, 0, 40, 40]], [0, 0, 1], [False, True, False], path=good),
        sample("b", [[0, 0, 100, 80], [5, 5, 5, 9]], [1, 1], path=wrong),  # size mismatch + zero-area box
        sample("c", [], [], path=broken),
        sample("d", [[-10, 0, 10, 10]], [0], path=good, size=(100, 80)),
    ]
    reader_problem = Problem("x.xml", "", "malformed XML (line 1)", "parse_error")
    ds = AnnotatedDataset(NAMES, samples, [reader_problem], root=tmp_path, format="voc")
    r = check_dataset(ds)
    assert isinstance(r, CheckReport)
    assert (r.num_images, r.num_objects, r.num_ignored) == (4, 6, 1)
    assert r.per_class == [
        {"name": "cat", "objects": 3, "ignored": 1, "images": 2},
        {"name": "dog", "objects": 3, "ignored": 0, "images": 2},
    ]
    # the zero-area box is left out; the -10..10 box is 20x10 -> 14.1
    assert r.size_buckets == {"<16": 2, "16-32": 1, "32-96": 2, ">=96": 0}
    assert r.box_width == {"min": 10.0, "median": 20.0, "max": 100.0}
    assert r.box_height == {"min": 10.0, "median": 20.0, "max": 80.0}
    assert r.images_without_objects == ["c"]
    assert r.problem_counts == {
        "parse_error": 1,
        "degenerate": 1,
        "size_mismatch": 1,
        "unreadable": 1,
        "out_of_image": 1,
    }
    assert r.problems[0] is reader_problem
    unreadable = next(p for p in r.problems if p.kind == "unreadable")
    assert unreadable.file == str(broken) and "cannot read image" in unreadable.message
    assert not r.ok

    d = json.loads(json.dumps(r.to_dict()))
    assert d["num_objects"] == 6 and d["problem_counts"]["unreadable"] == 1
    assert d["problems"][0] == {
        "file": "x.xml",
        "element": "",
        "message": "malformed XML (line 1)",
        "kind": "parse_error",
        "fixable": False,
    }
    text = r.format()
    assert "images: 4  objects: 6 (1 ignored)" in text and "cat" in text and "[unreadable]" in text
    assert "32-96: 2" in text

    r2 = check_dataset(ds, verify_images=False)
    assert "unreadable" not in r2.problem_counts and "size_mismatch" not in r2.problem_counts


def test_check_decode_catches_truncated_image(tmp_path):
    p = tmp_path / "t.jpg"
    Image.effect_noise((128, 128), 60).convert("RGB").save(p, quality=95)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    ds = AnnotatedDataset(NAMES, [sample("t", [], [], path=p, size=(128, 128))], [], root=tmp_path, format="voc")
    # found from the missing end-of-image marker without decoding, and by the decode itself
    assert [(p.kind, p.message) for p in check_dataset(ds, decode=False).problems] == [
        ("unreadable", "cannot read image (truncated JPEG: no end-of-image marker)")]
    assert [p.kind for p in check_dataset(ds, decode=True).problems] == ["unreadable"]


def test_check_on_a_read_voc_dataset(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "JPEGImages").mkdir()
    Image.new("RGB", (30, 20)).save(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><object><name>dog</name><difficult>1</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>31</xmax><ymax>10</ymax></bndbox></object></annotation>"
    )
    (tmp_path / "Annotations" / "b.xml").write_text("<annotation><filename>b.jpg</filename></annotation>")
    r = check_dataset(read_dataset(tmp_path))
    assert r.num_images == 1 and r.num_ignored == 1
    assert sorted(r.problem_counts) == ["missing_image", "out_of_image"]
    assert r.per_class[11] == {"name": "dog", "objects": 1, "ignored": 1, "images": 1}
