import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from ssdkit.data.sample import DetectionSource
from ssdkit.data.shapes import SHAPE_CLASSES, ShapesDataset, write_shapes


def test_protocol_and_determinism():
    a, b = ShapesDataset(6, seed=3), ShapesDataset(6, seed=3)
    assert isinstance(a, DetectionSource) and len(a) == 6
    for i in (0, 5, 2):  # any order, any instance
        assert torch.equal(a.load_image(i), b.load_image(i))
        assert torch.equal(a.sample(i).boxes, b.sample(i).boxes)
        assert torch.equal(a.sample(i).labels, b.sample(i).labels)
    assert torch.equal(a.load_image(1), a.load_image(1))
    other = ShapesDataset(6, seed=4)
    assert not torch.equal(a.load_image(0), other.load_image(0))


def test_image_format_and_sample_fields():
    ds = ShapesDataset(3, image_size=(200, 120))
    img, s = ds.load_image(0), ds.sample(0)
    assert img.shape == (3, 120, 200) and img.dtype == torch.uint8
    assert (s.width, s.height) == (200, 120) and s.image_path is None
    assert s.class_names == SHAPE_CLASSES and len(s.ignore) == len(s.labels)


def test_class_coverage_sizes_and_boxes_inside():
    ds = ShapesDataset(150, seed=0, image_size=300)
    boxes = torch.cat([ds.sample(i).boxes for i in range(len(ds))])
    labels = torch.cat([ds.sample(i).labels for i in range(len(ds))])
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))
    assert bool((boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 300).all() and (boxes[:, 3] <= 300).all())
    assert bool((boxes[:, 2:] > boxes[:, :2]).all())
    side = (boxes[:, 2:] - boxes[:, :2]).max(1).values
    assert side.min() <= 12 and side.max() >= 200  # ~8 px up to most of the image
    assert 20 < side.median() < 80  # log-uniform: the median is near the geometric mean sqrt(8 * 270)
    counts = [len(ds.sample(i)) for i in range(len(ds))]
    assert min(counts) >= 1 and max(counts) <= 6


def test_box_is_tight_around_topmost_object():
    ds = ShapesDataset(40, seed=1, image_size=160)
    for i in range(len(ds)):
        _, records = ds._layout(i)
        rec = records[-1]  # drawn last, so nothing covers it
        x0, y0, x1, y1 = rec["box"]
        img = ds.load_image(i).permute(1, 2, 0).numpy().astype(int)
        pad = 3
        ys0, xs0 = max(0, y0 - pad), max(0, x0 - pad)
        win = img[ys0 : y1 + pad, xs0 : x1 + pad]
        match = (win == np.array(rec["color"])).all(-1)
        ys, xs = np.nonzero(match)
        assert xs.min() + xs0 == x0 and xs.max() + xs0 + 1 == x1, (i, rec)
        assert ys.min() + ys0 == y0 and ys.max() + ys0 + 1 == y1, (i, rec)


def test_class_subset_and_validation():
    ds = ShapesDataset(30, class_names=("circle", "star"))
    assert ds.class_names == ("circle", "star")
    assert set(torch.cat([ds.sample(i).labels for i in range(30)]).tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="class_names"):
        ShapesDataset(3, class_names=("circle", "blob"))
    with pytest.raises(IndexError):
        ds.sample(30)


def test_write_voc(tmp_path):
    out = write_shapes(tmp_path / "voc", format="voc", count=10, seed=2, val_fraction=0.2, image_size=96)
    ds = ShapesDataset(10, seed=2, image_size=96)
    train = (out / "ImageSets/Main/train.txt").read_text().split()
    val = (out / "ImageSets/Main/val.txt").read_text().split()
    assert len(train) == 8 and len(val) == 2
    assert (out / "ImageSets/Main/trainval.txt").read_text().split() == train + val
    for i in range(10):
        stem = f"{i:06d}"
        assert (out / "JPEGImages" / f"{stem}.jpg").is_file()
        root = ET.parse(out / "Annotations" / f"{stem}.xml").getroot()
        objects = root.findall("object")
        sample = ds.sample(i)
        assert len(objects) == len(sample)
        for obj, box, label in zip(objects, sample.boxes.tolist(), sample.labels.tolist()):
            assert obj.findtext("name") == SHAPE_CLASSES[label]
            assert [float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")] == box
    assert not list(out.rglob("*.tmp"))


def test_write_coco_loads_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    out = write_shapes(tmp_path / "coco", format="coco", count=10, seed=2, val_fraction=0.3, image_size=96)
    ds = ShapesDataset(10, seed=2, image_size=96)
    total = 0
    for split, n in (("train", 7), ("val", 3)):
        path = out / "annotations" / f"instances_{split}.json"
        coco = COCO(str(path))
        assert len(coco.getImgIds()) == n
        assert sorted(coco.getCatIds()) == list(range(1, len(SHAPE_CLASSES) + 1))
        for img in coco.loadImgs(coco.getImgIds()):
            assert (out / "images" / img["file_name"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert len(anns) == len(ds.sample(img["id"]))
            total += len(anns)
        assert json.loads(path.read_text())["categories"][0]["name"] == SHAPE_CLASSES[0]
    assert total == sum(len(ds.sample(i)) for i in range(10))
