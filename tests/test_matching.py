"""ssdkit.matching: the candidate search, the IoU kernels and matching, against dense computations."""

import pytest
import torch
from make_pinned import CONFIGS  # ssd300, ssd300 with clipped boxes (an uneven grid), small, ssd512
from reference import dense_match, hard_scene
from torchvision import ops

from ssdkit.anchors import default_boxes_for
from ssdkit.boxes import change_box_order
from ssdkit.matching import (
    _batched_iou,
    _candidates,
    _pair_iou,
    greedy_match,
    level_blocks,
    match,
    match_anchors,
    objects_of,
)


def anchors_of(cfg):
    d = default_boxes_for(cfg)
    return d, match_anchors(change_box_order(d, "xywh2xyxy"), d, cfg.fm_sizes, cfg.num_anchors)


def padded(scenes):
    """``[N, M, 4]`` boxes padded with zero-size boxes at the origin, and ``[N * M]`` ignore flags."""
    m = max(len(s[0]) for s in scenes)
    boxes = torch.zeros(len(scenes), m, 4)
    ignore = torch.zeros(len(scenes), m, dtype=torch.bool)
    for i, (b, _, g) in enumerate(scenes):
        boxes[i, :len(b)], ignore[i, :len(b)] = b, g
    return boxes, ignore.view(-1)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_match_equals_a_dense_reference_on_hard_scenes(name):
    """match computes IoUs only for a candidate set of default boxes per object: it must pick exactly the matches
    a dense computation over all default boxes picks, for every kind of object and config."""
    cfg = CONFIGS[name]
    d, anchors = anchors_of(cfg)
    gen = torch.Generator().manual_seed(5)
    scenes = [hard_scene(gen, m, cfg.input_size) for m in (1, 2, 4, 9, 30, 70)]
    boxes, ignore = padded(scenes)
    n, m, a = boxes.shape[0], boxes.shape[1], len(d)
    where, who, ignored = match(anchors, boxes, objects_of(boxes), ignore, 0.5)
    assert len(torch.unique(where)) == len(where)  # a default box is matched at most once
    index = torch.full((n * a,), -1, dtype=torch.long)
    index[where] = who % m
    marked = torch.zeros(n * a, dtype=torch.bool)
    marked[ignored] = True
    marked[where] = False  # a match wins over an ignore mark
    assert torch.equal(torch.div(who, m, rounding_mode="floor"), torch.div(where, a, rounding_mode="floor"))
    for i, (b, _, g) in enumerate(scenes):
        ref_index, ref_ignored = dense_match(d, b, g)
        assert torch.equal(index.view(n, a)[i], ref_index), f"scene {i}"
        assert torch.equal(marked.view(n, a)[i], ref_ignored), f"scene {i}"


@pytest.mark.parametrize("name", ["ssd300", "ssd300-clipped"])  # an evenly spaced grid and a searched one
def test_candidates_hold_every_pair_matching_needs(name):
    """Every (object, default box) pair whose IoU reaches the threshold or equals the object's best is a
    candidate, and the candidates' IoUs are the dense IoUs."""
    cfg = CONFIGS[name]
    d, anchors = anchors_of(cfg)
    gen = torch.Generator().manual_seed(3)
    scenes = [hard_scene(gen, 40, cfg.input_size) for _ in range(2)]
    boxes, _ = padded(scenes)
    obj = objects_of(boxes)
    key, anchor = _candidates(anchors.grid, obj, 0.5)
    ious = torch.stack([ops.box_iou(b, change_box_order(d, "xywh2xyxy")) for b in boxes]).view(-1, len(d))  # [Q, A]
    best = ious.max(1, keepdim=True).values
    needed = ((ious >= 0.5) | ((ious == best) & (best >= 1e-6))).nonzero()
    found = torch.zeros_like(ious, dtype=torch.bool)
    found[key, anchor] = True
    assert bool(found[needed[:, 0], needed[:, 1]].all())
    assert len(key) < 0.05 * ious.numel()  # a small subset, not every default box
    assert torch.equal(_pair_iou(anchors, obj, key, anchor), ious[key, anchor])


def test_batched_iou_equals_torchvision_box_iou():
    cfg = CONFIGS["ssd300"]
    d, anchors = anchors_of(cfg)
    gen = torch.Generator().manual_seed(4)
    boxes, _ = padded([hard_scene(gen, m, 300) for m in (3, 11)])
    got = _batched_iou(anchors, boxes)
    assert got.shape == (2, 11, len(d))
    for i in range(2):
        assert torch.equal(got[i], ops.box_iou(boxes[i], change_box_order(d, "xywh2xyxy")))


def notebook_greedy(ious):
    """The notebook's loop on one image's ``[M, A]`` IoUs: the first maximum of the ``[A, M]`` matrix each time."""
    work = ious.t().clone()
    index = torch.full((work.shape[0],), -1, dtype=torch.long)
    while True:
        a, o = divmod(int(work.argmax()), work.shape[1])
        if work[a, o] < 1e-6:
            return index
        index[a] = o
        work[a, :] = -1.0
        work[:, o] = -1.0


def test_greedy_match_equals_the_notebook_loop_with_ties():
    gen = torch.Generator().manual_seed(6)
    ious = (torch.rand(4, 5, 30, generator=gen) * 4).round() / 4  # many exact ties
    ious[1, 2] = -1.0  # an ignored object
    ious[2] = 0.0  # an image where nothing overlaps
    got = greedy_match(ious)
    assert got.shape == (4, 30)
    for i in range(4):
        assert torch.equal(got[i], notebook_greedy(ious[i])), f"image {i}"
    assert torch.all(got[2] == -1)


def test_objects_that_overlap_nothing_are_not_matched():
    _, anchors = anchors_of(CONFIGS["ssd300"])
    boxes = torch.tensor([[[10.0, 10.0, 10.0, 50.0], [-500.0, -500.0, -400.0, -400.0]]])  # zero width, off-image
    where, who, ignored = match(anchors, boxes, objects_of(boxes), None, 0.5)
    assert len(where) == len(who) == 0 and ignored is None


def test_level_blocks_views_each_level_and_checks_the_count():
    boxes = torch.arange(14 * 4, dtype=torch.float32).view(14, 4)
    blocks = list(level_blocks(boxes[:13], (2, 1), (3, 1)))  # 2 * 2 * 3 + 1 * 1 * 1 default boxes
    assert [(start, f, k, tuple(b.shape)) for start, f, k, b in blocks] == [(0, 2, 3, (2, 2, 3, 4)),
                                                                           (12, 1, 1, (1, 1, 1, 4))]
    assert torch.equal(blocks[0][3][1, 0, 2], boxes[(1 * 2 + 0) * 3 + 2])  # (row, column, shape)
    with pytest.raises(ValueError, match="expected 13 from the feature maps, got 14"):
        list(level_blocks(boxes, (2, 1), (3, 1)))
