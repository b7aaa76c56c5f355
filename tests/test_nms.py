"""grouped_nms against torchvision's CPU NMS (per-group ``ops.nms``, and ``batched_nms``)."""

import pytest
import torch
from torchvision import ops

from ssdkit.nms import grouped_nms


def per_group_nms(boxes, scores, groups, thr):
    """torchvision's own per-group NMS (``batched_nms``'s path above 1000 boxes), in rank order per group."""
    kept = [torch.zeros(0, dtype=torch.long)]
    for g in torch.unique(groups):
        idx = torch.where(groups == g)[0]
        kept.append(idx[ops.nms(boxes[idx], scores[idx], thr)])
    return torch.cat(kept)


def random_case(gen, k, groups, integer=False, dup=False, tied=False):
    xy = torch.rand(k, 2, generator=gen) * 100
    wh = torch.rand(k, 2, generator=gen) ** 2 * 60
    if integer:
        xy, wh = xy.round(), wh.round()  # zero-area boxes and IoUs exactly at round thresholds
    boxes = torch.cat([xy, xy + wh], 1)
    if dup and k:
        boxes[torch.randint(0, k, (k // 3,), generator=gen)] = boxes[0].clone()
    scores = torch.rand(k, generator=gen)
    if tied:
        scores = (scores * 4).round() / 4
    g = torch.randint(0, groups, (k,), generator=gen) * 7 - 3  # any ids, negative too
    return boxes, scores, g


THRESHOLDS = [0.0, 0.1, 0.25, 1 / 3, 0.45, 0.5, 0.7, 1.0]


@pytest.mark.parametrize("seed", range(6))
def test_same_boxes_and_order_as_torchvision_nms_per_group(seed):
    gen = torch.Generator().manual_seed(seed)
    for trial in range(80):
        k = int(torch.randint(0, 300, (1,), generator=gen))
        case = random_case(gen, k, int(torch.randint(1, 6, (1,), generator=gen)),
                           integer=trial % 3 == 0, dup=trial % 5 == 0, tied=trial % 4 == 0)
        thr = THRESHOLDS[trial % 8] if trial % 2 else float(torch.rand(1, generator=gen))
        got = grouped_nms(*case, thr)
        ref = per_group_nms(*case, thr)
        # same order too: increasing group id, then torchvision's visiting order (decreasing score, ties by index)
        assert torch.equal(got, ref), (seed, trial, k, thr)


def test_same_set_as_batched_nms_on_ssd_sized_input():
    gen = torch.Generator().manual_seed(7)
    boxes, scores, g = random_case(gen, 4000, 20)
    got = grouped_nms(boxes, scores, g, 0.45)
    ref = ops.batched_nms(boxes, scores, g, 0.45)
    assert sorted(got.tolist()) == sorted(ref.tolist())


def test_empty_and_single_box():
    assert grouped_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)
    got = grouped_nms(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.3]), torch.tensor([5]), 0.5)
    assert got.tolist() == [0]


def test_identical_boxes_keep_the_best_and_ties_keep_the_lowest_index():
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0]] * 4)
    assert grouped_nms(boxes, torch.tensor([0.1, 0.9, 0.5, 0.9]), torch.zeros(4, dtype=torch.long), 0.5).tolist() == [1]
    # one per group when every group holds copies of the same box
    got = grouped_nms(boxes, torch.tensor([0.5, 0.5, 0.5, 0.5]), torch.tensor([1, 0, 1, 0]), 0.5)
    assert got.tolist() == [1, 0]


def test_zero_area_boxes_suppress_nothing():
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 0.0], [0.0, 0.0, 10.0, 10.0]])
    got = grouped_nms(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.zeros(4, dtype=torch.long), 0.0)
    assert got.tolist() == [0, 1, 2, 3] == ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.0).tolist()


@pytest.mark.parametrize("thr, suppressed", [(0.5, False), (0.4999, True)])
def test_iou_exactly_at_the_threshold_is_kept(thr, suppressed):
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]])  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8])
    got = grouped_nms(boxes, scores, torch.zeros(2, dtype=torch.long), thr).tolist()
    assert got == ops.nms(boxes, scores, thr).tolist() == ([0] if suppressed else [0, 1])


def test_threshold_compared_in_double_like_torchvision():
    # IoU = float32(10 / 100), which is above the double 0.1: torchvision suppresses, a float32 compare would not
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 1.0, 10.0]])
    scores = torch.tensor([0.9, 0.8])
    assert ops.nms(boxes, scores, 0.1).tolist() == [0]
    assert grouped_nms(boxes, scores, torch.zeros(2, dtype=torch.long), 0.1).tolist() == [0]


def test_groups_never_suppress_each_other():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    got = grouped_nms(boxes, torch.tensor([0.3, 0.2, 0.1]), torch.tensor([2, 0, 1]), 0.5)
    assert got.tolist() == [1, 2, 0]
