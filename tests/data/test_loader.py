import warnings

import pytest
import torch

from ssdkit.data.loader import DetectionDataset, collate, item_seed, make_loader
from ssdkit.data.preprocess import SSDEvalTransform
from ssdkit.data.shapes import ShapesDataset
from ssdkit.data.transforms import SSDTrainTransform
from ssdkit.errors import DataError


class _Broken(ShapesDataset):
    """Image 1 cannot be read."""

    def load_image(self, index):
        if index == 1:
            raise DataError("/data/broken.jpg: cannot read image (truncated)")
        return super().load_image(index)


def test_item_and_target_fields():
    ds = DetectionDataset(ShapesDataset(3, image_size=(120, 90)), SSDEvalTransform(64))
    image, target = ds[2]
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    assert set(target) == {"boxes", "labels", "ignore", "image_id", "orig_size", "index"}
    assert target["orig_size"] == (90, 120) and target["index"] == 2 and target["image_id"] == "000002"
    src = ds.source.sample(2)
    assert torch.allclose(target["boxes"], src.boxes * torch.tensor([64 / 120, 64 / 90] * 2))
    assert torch.equal(target["labels"], src.labels)


def test_broken_image_warned_once_and_dropped():
    ds = DetectionDataset(_Broken(4, image_size=64), SSDEvalTransform(32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ds[1] is None
        assert ds[1] is None
    assert len(caught) == 1 and "broken.jpg" in str(caught[0].message)
    images, targets = collate([ds[0], None, ds[2]])
    assert images.shape == (2, 3, 32, 32) and [t["index"] for t in targets] == [0, 2]
    empty, none = collate([None, None])
    assert empty.shape[0] == 0 and none == []


def test_collate_layouts_give_same_batch():
    a = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    t = {"index": 0}
    contiguous, _ = collate([(a, t), (b, t)])
    cl = [x.permute(1, 2, 0).contiguous().permute(2, 0, 1) for x in (a, b)]
    stacked, _ = collate([(cl[0], t), (cl[1], t)])
    assert torch.equal(contiguous, stacked) and stacked.is_contiguous(memory_format=torch.channels_last)


def test_augmentation_depends_on_seed_epoch_index():
    ds = DetectionDataset(ShapesDataset(4, image_size=96), SSDTrainTransform(64), seed=7)
    first = ds[(2, 0)][0]
    assert torch.equal(first, ds[(2, 0)][0])
    ds.set_epoch(0)
    assert torch.equal(first, ds[2][0])
    assert not torch.equal(first, ds[(2, 1)][0])
    assert len({item_seed(0, e, i) for e in range(5) for i in range(50)}) == 250


def _batches(loader, epochs=2):
    out = []
    for _ in range(epochs):
        for images, targets in loader:
            out.append((images.clone(), [t["index"] for t in targets], [t["boxes"].clone() for t in targets]))
    return out


def test_reproducible_across_num_workers():
    source = ShapesDataset(6, seed=1, image_size=80)
    runs = []
    for workers in (0, 2):
        ds = DetectionDataset(source, SSDTrainTransform(48))
        runs.append(_batches(make_loader(ds, batch_size=4, shuffle=True, num_workers=workers, seed=3)))
    (a, b) = runs
    assert len(a) == len(b) == 4
    for (ia, xa, ba), (ib, xb, bb) in zip(a, b):
        assert xa == xb and torch.equal(ia, ib)
        assert all(torch.equal(p, q) for p, q in zip(ba, bb))
    # Epochs differ in order and augmentation.
    assert a[0][1] + a[1][1] != a[2][1] + a[3][1] or not torch.equal(a[0][0], a[2][0])


def test_set_epoch_pins_the_pass():
    ds = DetectionDataset(ShapesDataset(5, image_size=64), SSDTrainTransform(32))
    loader = make_loader(ds, batch_size=5, shuffle=True, seed=0)
    first = _batches(loader, epochs=2)
    loader.set_epoch(1)
    assert loader.epoch == 1
    again = _batches(loader, epochs=1)
    assert again[0][1] == first[1][1] and torch.equal(again[0][0], first[1][0])


def test_distributed_single_process_shard():
    ds = DetectionDataset(ShapesDataset(5, image_size=32), SSDEvalTransform(16))
    loader = make_loader(ds, batch_size=2, shuffle=True, distributed=True, seed=1)
    seen = sorted(i for _, targets in loader for i in (t["index"] for t in targets))
    assert seen == [0, 1, 2, 3, 4]


def test_make_loader_validation():
    ds = DetectionDataset(ShapesDataset(2, image_size=32), SSDEvalTransform(16))
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, batch_size=0, shuffle=False)
    loader = make_loader(ds, batch_size=2, shuffle=False, drop_last=True)
    assert len(loader) == 1
