"""A batch of one never reaches BatchNorm, and every skipped or fixed sample is counted and reported."""

import ignite.distributed as idist
import pytest

from ssdkit.data.shapes import write_shapes
from ssdkit.data.sources import SanitizedSource
from ssdkit.engine.data import build_loaders
from ssdkit.engine.train import train

from . import tiny_config


@pytest.fixture()
def voc_with_problems(tmp_path):
    """6 training images of 64 px: one box outside its image (clipped), one of an unknown class (a reader
    problem), and one truncated JPEG (a reader problem: the reader drops it)."""
    root = write_shapes(tmp_path / "voc", count=8, image_size=64, min_size=10, max_size=30, progress=False,
                        class_names=("circle", "square", "star"))
    ids = (root / "ImageSets" / "Main" / "train.txt").read_text().split()
    xml = root / "Annotations" / f"{ids[0]}.xml"
    text = xml.read_text()
    first = text.index("<object>")
    second = text.index("<object>", first + 1)
    text = text[:second] + text[second:].replace("<xmax>", "<xmax>9", 1)  # xmax 9xx in a 64 px image
    xml.write_text(text.replace("<name>square</name>", "<name>hexagon</name>", 1))
    image = root / "JPEGImages" / f"{ids[1]}.jpg"
    image.write_bytes(image.read_bytes()[:200])
    return root


def test_unreadable_images_never_leave_a_batch_of_one_for_batchnorm(tmp_path, voc_with_problems, monkeypatch,
                                                                     caplog):
    """An image that fails to load mid-training (its item is None, collate drops it) leaves 1 image in a batch
    of 2: with BatchNorm that step is skipped and counted, never a crash; the epoch line and summary.json say
    what was skipped, clipped and reported."""
    real = SanitizedSource.load_image
    failing = set()

    def load_image(self, index):
        if index in failing:
            raise OSError("disk error")
        return real(self, index)

    monkeypatch.setattr(SanitizedSource, "load_image", load_image)
    failing.add(2)  # of the 5 readable training images
    cfg = tiny_config(tmp_path / "run", model={"num_classes": 4},
                      data={"train": str(voc_with_problems), "val": str(voc_with_problems), "augment": False,
                            "classes": ["circle", "square", "star"], "shapes_train_count": 0},
                      train={"epochs": 3, "batch_size": 2, "log_every": 1})
    with caplog.at_level("INFO", logger="ssdkit.train"), pytest.warns(RuntimeWarning, match="disk error"):
        summary = train(cfg, progress=False)
    assert summary["finished"] and summary["iteration"] == 6  # 5 images // 2 = 2 steps per epoch
    data = summary["data"]
    # image 2 is read once per epoch unless it falls in the dropped fifth place of the shuffle
    assert 1 <= data["images_skipped"] <= 3 and data["steps_skipped"] == data["images_skipped"]
    assert data == {"train_images": 5, "images_skipped": data["images_skipped"],
                    "steps_skipped": data["steps_skipped"], "boxes_clipped": 1, "boxes_dropped": 0,
                    "windows_cutting_objects": 0,
                    "reader_problems": 2}
    lines = [r.getMessage() for r in caplog.records if " data: " in r.getMessage()]
    # the first epoch's line says everything; later epochs have a line only when they skipped something
    assert lines[0].startswith("epoch 1 data: ") and "1 box(es) clipped" in lines[0]
    assert "2 reader problem(s)" in lines[0] and all("clipped" not in line for line in lines[1:])
    assert len(lines) == 1 + sum(1 for line in lines[1:] if int(line.split("data: ")[1].split()[0]) > 0)
    assert sum(int(line.split("data: ")[1].split()[0]) for line in lines) == data["images_skipped"]


def test_no_short_batch_whatever_the_size_or_the_shards(tmp_path, monkeypatch):
    """N % batch_size == 1, the last batch of an epoch, per-process shards: every batch is full (drop_last on the
    shards and the batches), so only an unreadable image can make a short one."""
    for world in (1, 2):
        monkeypatch.setattr(idist, "get_world_size", lambda world=world: world)
        for rank in range(world):
            monkeypatch.setattr(idist, "get_rank", lambda rank=rank: rank)
            cfg = tiny_config(tmp_path, data={"shapes_train_count": 4 * world + 1, "augment": False,
                                              "shapes_image_size": 32}, train={"batch_size": 2 * world})
            loaders = build_loaders(cfg)
            sizes = [len(targets) for _, targets in loaders.train_loader]
            assert sizes == [2, 2], (world, rank, sizes)
