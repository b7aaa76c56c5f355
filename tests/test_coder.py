"""SSDBoxCoder: encoding against plain reference implementations (the notebook's loops, torchcv's coder), the
default boxes and variances it owns, and the encode/decode round trip (decoding itself: test_postprocess.py)."""

from types import SimpleNamespace

import pytest
import torch
from make_pinned import CONFIGS  # ssd300, ssd300 with clipped boxes (an uneven grid), small, ssd512
from reference import dense_match, hard_scene, notebook_encode, torchcv_encode
from torchvision import ops

from ssdkit import SSDBoxCoder
from ssdkit.anchors import default_boxes_for
from ssdkit.boxes import change_box_order
from ssdkit.config import ssd300_config


@pytest.fixture(scope="module")
def coder():
    return SSDBoxCoder(ssd300_config(num_classes=6))


def reference_encode(coder, boxes, labels):
    return notebook_encode(coder.default_boxes, boxes, labels)


def random_scene(gen, m, size=300):
    if m == 0:
        return torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
    xy = torch.rand(m, 2, generator=gen) * size
    wh = torch.rand(m, 2, generator=gen) ** 2 * size * 0.6 + 1
    boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    labels = torch.randint(0, 5, (m,), generator=gen)
    return boxes, labels


def assert_no_object_lost(coder, boxes, labels, cls):
    """Every object that overlaps some default box has a positive default box of its class overlapping it.

    "Overlaps" is IoU >= 1e-6: the notebook's coder treats smaller IoUs as no overlap.
    """
    ious = ops.box_iou(change_box_order(coder.default_boxes, "xywh2xyxy"), boxes)  # [A, M]
    for j in (ious.max(0).values >= 1e-6).nonzero().squeeze(1).tolist():
        mine = (cls == labels[j] + 1) & (ious[:, j] > 0)
        assert bool(mine.any()), f"object {j} {boxes[j].tolist()} (class {int(labels[j])}) has no default box"


def special_scenes():
    yield torch.tensor([[0.0, 0.0, 1.0, 1.0], [299.0, 299.0, 300.0, 300.0]]), torch.tensor([0, 1])  # tiny, corners
    yield torch.tensor([[0.0, 0.0, 300.0, 300.0]]), torch.tensor([4])  # whole image
    yield torch.tensor([[10.0, 10.0, 40.0, 40.0]] * 3), torch.tensor([0, 1, 2])  # identical boxes: collisions
    yield torch.tensor([[100.0, 100.0, 130.0, 130.0], [101.0, 100.0, 131.0, 130.0]]), torch.tensor([3, 3])
    yield torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)  # empty image


def test_coder_owns_the_default_boxes_and_variances_of_its_config():
    cfg = ssd300_config(num_classes=6, variances=(0.1, 0.25))
    for source in (cfg, SimpleNamespace(config=cfg)):  # a ModelConfig or anything with a ``config`` (a model)
        coder = SSDBoxCoder(source)
        assert torch.equal(coder.default_boxes, default_boxes_for(cfg))
        assert torch.equal(coder._get_default_boxes(), coder.default_boxes)
        assert coder.variances == (0.1, 0.25) and coder.config is cfg
    with pytest.raises(TypeError, match="expected an SSD model or a ModelConfig, got dict"):
        SSDBoxCoder({"num_classes": 6})


def test_encode_batch_rejects_mismatched_lists(coder):
    boxes = [torch.zeros(0, 4)] * 2
    with pytest.raises(ValueError, match="2 box tensors but 1 label tensors"):
        coder.encode_batch(boxes, [torch.zeros(0, dtype=torch.long)])
    with pytest.raises(ValueError, match="2 box tensors but 3 ignore tensors"):
        coder.encode_batch(boxes, [torch.zeros(0, dtype=torch.long)] * 2, [torch.zeros(0, dtype=torch.bool)] * 3)

def test_encode_batch_equals_reference_on_random_scenes(coder):
    gen = torch.Generator().manual_seed(0)
    scenes = [random_scene(gen, m) for m in (0, 1, 3, 8, 55, 2, 0, 17)] + list(special_scenes())
    boxes = [s[0] for s in scenes]
    labels = [s[1] for s in scenes]
    loc, cls = coder.encode_batch(boxes, labels)
    assert loc.shape == (len(scenes), 8732, 4) and cls.shape == (len(scenes), 8732)
    for i, (b, lab) in enumerate(scenes):
        ref_loc, ref_cls = reference_encode(coder, b, lab)
        assert torch.equal(cls[i], ref_cls), f"scene {i}"
        pos = ref_cls > 0
        assert torch.allclose(loc[i][pos], ref_loc[pos], atol=1e-5), f"scene {i}"
        if len(b):
            assert_no_object_lost(coder, b, lab, cls[i])
        one_loc, one_cls = coder.encode(b, lab)
        assert torch.equal(one_cls, cls[i]) and torch.equal(one_loc, loc[i])


def test_encode_equals_torchcvs_own_encode(coder):
    """The coder the notebook imports (torchcv's ``SSDBoxCoder.encode``, kept line for line in reference.py)."""
    gen = torch.Generator().manual_seed(11)
    for m in (1, 4, 12, 40):
        boxes, labels = random_scene(gen, m)
        ref_loc, ref_cls = torchcv_encode(coder.default_boxes, boxes, labels)
        loc, cls = coder.encode(boxes, labels)
        assert torch.equal(cls, ref_cls)
        assert torch.equal(loc, ref_loc)


def test_every_object_gets_a_default_box_even_when_best_boxes_collide(coder):
    boxes = torch.tensor([[10.0, 10.0, 40.0, 40.0]] * 4)
    _, cls = coder.encode(boxes, torch.tensor([0, 1, 2, 3]))
    assert set(cls[cls > 0].tolist()) == {1, 2, 3, 4}


def test_empty_image_is_all_background(coder):
    loc, cls = coder.encode(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert torch.all(cls == 0) and torch.all(loc == 0)


def test_ignored_objects_mark_default_boxes_minus_one(coder):
    boxes = torch.tensor([[10.0, 10.0, 60.0, 60.0], [150.0, 150.0, 250.0, 250.0]])
    loc, cls = coder.encode(boxes, torch.tensor([0, 1]), ignore=torch.tensor([False, True]))
    assert (cls == 1).sum() >= 1
    assert (cls == 2).sum() == 0  # the ignored object is never a positive
    assert (cls == -1).sum() > 0
    ious = ops.box_iou(change_box_order(coder.default_boxes, "xywh2xyxy"), boxes[1:])[:, 0]
    assert torch.all(ious[cls == -1] >= 0.5)


@pytest.mark.parametrize(
    "boxes, labels, match",
    [
        (torch.tensor([[5.0, 5.0, 1.0, 10.0]]), torch.tensor([0]), "inverted"),
        (torch.tensor([[float("nan"), 5.0, 10.0, 10.0]]), torch.tensor([0]), "non-finite"),
        (torch.tensor([[1, 1, 5, 5]]), torch.tensor([0]), "float"),
        (torch.tensor([1.0, 1.0, 5.0, 5.0]), torch.tensor([0]), r"shape \[M, 4\]"),
        (torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([9]), "labels"),
        (torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([0.0]), "integer"),
    ],
)
def test_encode_rejects_bad_input(coder, boxes, labels, match):
    with pytest.raises(ValueError, match=match):
        coder.encode(boxes, labels)


def test_encode_decode_round_trip(coder):
    gen = torch.Generator().manual_seed(1)
    boxes, labels = random_scene(gen, 10)
    loc, cls = coder.encode(boxes, labels)
    decoded = coder.decode_boxes(loc)
    pos = cls > 0
    # positives decode back to the box they were matched to
    ref_loc, _ = reference_encode(coder, boxes, labels)
    assert torch.allclose(decoded[pos], coder.decode_boxes(ref_loc)[pos], atol=1e-3)
    ious = ops.box_iou(decoded[pos], boxes).max(1).values
    assert torch.all(ious > 0.999)


def dense_reference_encode(coder, boxes, labels, ignore):
    """Targets from :func:`reference.dense_match`: the object index per default box and the classes (-1 marks)."""
    index, ignored = dense_match(coder.default_boxes, boxes, ignore)
    cls = labels[index.clamp(min=0)] + 1
    cls[index < 0] = 0
    cls[ignored] = -1
    return index, cls


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encode_batch_equals_a_dense_reference_on_hard_scenes(name):
    """encode_batch's targets on hard scenes (the matching itself: test_matching.py): classes and offsets equal a
    dense computation over all default boxes, for every kind of object and config, alone and batched."""
    cfg = CONFIGS[name]
    coder = SSDBoxCoder(cfg)
    gen = torch.Generator().manual_seed(5)
    scenes = [hard_scene(gen, m, cfg.input_size) for m in (1, 2, 4, 9, 30, 70)]
    loc, cls = coder.encode_batch([s[0] for s in scenes], [s[1] for s in scenes], [s[2] for s in scenes])
    anchors = change_box_order(change_box_order(coder.default_boxes, "xywh2xyxy"), "xyxy2xywh")
    for i, (boxes, labels, ignore) in enumerate(scenes):
        index, ref_cls = dense_reference_encode(coder, boxes, labels, ignore)
        assert torch.equal(cls[i], ref_cls), f"scene {i}"
        pos = ref_cls > 0
        xywh = change_box_order(boxes[index[pos]], "xyxy2xywh")
        v0, v1 = coder.variances
        ref_loc = torch.cat([(xywh[:, :2] - anchors[pos, :2]) / anchors[pos, 2:] / v0,
                             torch.log(xywh[:, 2:] / anchors[pos, 2:]) / v1], 1)
        assert torch.allclose(loc[i][pos], ref_loc, atol=1e-5), f"scene {i}"
        # alone (no padding) and in the padded batch: the same targets, bit for bit
        one_loc, one_cls = coder.encode(boxes, labels, ignore)
        assert torch.equal(one_cls, cls[i]) and torch.equal(one_loc, loc[i]), f"scene {i}"


def test_encode_batch_with_no_matchable_object_is_all_background(coder):
    """Zero-width and off-image objects overlap no default box: no candidates at all, nothing matched."""
    boxes = [torch.tensor([[10.0, 10.0, 10.0, 50.0]]), torch.tensor([[-500.0, -500.0, -400.0, -400.0]])]
    loc, cls = coder.encode_batch(boxes, [torch.tensor([1]), torch.tensor([2])])
    assert torch.equal(cls, torch.zeros_like(cls)) and torch.isfinite(loc).all()
    ref_loc, ref_cls = torchcv_encode(coder.default_boxes, boxes[1], torch.tensor([2]))
    assert torch.equal(cls[1], ref_cls) and torch.equal(loc[1], ref_loc)
