"""write_dataset: every format it writes reads back through ssdkit's readers as the same annotations and pixels."""

from pathlib import Path

import pytest
import torch

from ssdkit.data.readers import read_dataset
from ssdkit.data.shapes import ShapesDataset, write_shapes
from ssdkit.data.writers import WRITE_FORMATS, write_dataset
from ssdkit.errors import SSDKitError


@pytest.fixture(scope="module")
def source():
    return ShapesDataset(4, seed=3, image_size=(80, 64), min_size=12, max_size=40, class_names=("circle", "star"))


def _read(root, fmt, split):
    if fmt == "coco":
        return read_dataset(root / "annotations" / f"instances_{split}.json")
    if fmt == "listfile":
        return read_dataset(root / f"{split}.txt", classes=root / "classes.txt")
    if fmt == "yolo":
        by_yaml = read_dataset(root / "data.yaml", split=split)
        by_folder = read_dataset(root, split=split)
        assert [s.image_id for s in by_yaml.samples] == [s.image_id for s in by_folder.samples]
        assert by_yaml.class_names == by_folder.class_names
        return by_yaml
    return read_dataset(root, split=split)


@pytest.mark.parametrize("fmt", WRITE_FORMATS)
def test_round_trip(tmp_path, source, fmt):
    splits = ["train", "train", "val", "train"]
    write_dataset(source, tmp_path, fmt, splits, quality=95)
    for split in ("train", "val"):
        back = _read(tmp_path, fmt, split)
        assert back.class_names == source.class_names
        want = [i for i, s in enumerate(splits) if s == split]
        assert len(back) == len(want)
        by_id = {Path(back.sample(j).image_path).stem: j for j in range(len(back))}
        for i in want:
            s, j = source.sample(i), by_id[source.sample(i).image_id]
            b = back.sample(j)
            assert (b.width, b.height) == (s.width, s.height)
            assert torch.equal(b.labels, s.labels)
            tol = 1e-3 * max(s.width, s.height) if fmt == "yolo" else 1e-2  # YOLO stores 6 decimals of 0-1
            assert torch.allclose(b.boxes, s.boxes, atol=tol)
            pixels = back.load_image(j).float()  # the same image (JPEG-compressed), not another one
            other = source.load_image((i + 1) % len(source)).float()
            assert (pixels - source.load_image(i).float()).abs().mean() < 0.3 * (pixels - other).abs().mean()


def test_unknown_format_and_non_empty_folder(tmp_path, source):
    with pytest.raises(SSDKitError, match="format"):
        write_dataset(source, tmp_path, "vedai")
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(SSDKitError, match="not empty"):
        write_shapes(tmp_path, count=2, image_size=32, min_size=8, max_size=16)
    assert (tmp_path / "old.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]
    write_shapes(tmp_path, count=2, image_size=32, min_size=8, max_size=16, overwrite=True)
    assert (tmp_path / "old.txt").read_text() == "keep me" and (tmp_path / "Annotations").is_dir()
