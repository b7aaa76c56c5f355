"""ssdkit.boxes: box formats and IoU against torchvision.ops, and the messages of check_boxes."""

import pytest
import torch
from torchvision import ops

from ssdkit.boxes import box_iou, change_box_order, check_boxes


def random_xyxy(gen, m, size=300.0):
    xy = torch.rand(m, 2, generator=gen) * size
    return torch.cat([xy, xy + torch.rand(m, 2, generator=gen) * size / 2], 1)


def test_change_box_order_round_trip_and_centre_form():
    gen = torch.Generator().manual_seed(0)
    xyxy = random_xyxy(gen, 50)
    xywh = change_box_order(xyxy, "xyxy2xywh")
    # centre form (cx, cy, w, h), as the notebook uses it: not COCO's top-left xywh
    assert torch.allclose(xywh, ops.box_convert(xyxy, "xyxy", "cxcywh"), atol=1e-5)
    assert torch.allclose(change_box_order(xywh, "xywh2xyxy"), xyxy, atol=1e-4)
    # any leading shape
    batched = change_box_order(xyxy.view(5, 10, 4), "xyxy2xywh")
    assert torch.equal(batched.view(50, 4), xywh)


def test_change_box_order_rejects_unknown_orders():
    with pytest.raises(ValueError, match="xyxy2xywh"):
        change_box_order(torch.zeros(1, 4), "xyxy2cxcywh")


def test_box_iou_equals_torchvision():
    gen = torch.Generator().manual_seed(1)
    a, b = random_xyxy(gen, 30), random_xyxy(gen, 40)
    b[:3] = a[:3]  # identical pairs: IoU 1
    b[3, 2] = b[3, 0]  # zero width: IoU 0
    got = box_iou(a, b)
    assert got.shape == (30, 40)
    assert torch.equal(got, ops.box_iou(a, b))
    assert torch.all(got[torch.arange(3), torch.arange(3)] == 1)


def test_check_boxes_accepts_good_and_empty_boxes():
    check_boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 5.0, 9.0]]))  # zero width is allowed
    check_boxes(torch.zeros(0, 4))


@pytest.mark.parametrize(
    "boxes, message",
    [
        ([[1.0, 1.0, 5.0, 5.0]], r"b: expected a Tensor\[M, 4\], got list"),
        (torch.tensor([1.0, 1.0, 5.0, 5.0]), r"b: expected shape \[M, 4\], got \[4\]"),
        (torch.tensor([[1, 1, 5, 5]]), "b: expected a float tensor, got torch.int64"),
        (torch.tensor([[0.0, 0.0, 1.0, 1.0], [float("inf"), 5.0, 10.0, 10.0]]),
         r"b: box 1 has a non-finite coordinate \[inf, 5.0, 10.0, 10.0\]"),
        (torch.tensor([[5.0, 5.0, 1.0, 10.0]]),
         r"b: box 0 is inverted \(x2 < x1 or y2 < y1\): \[5.0, 5.0, 1.0, 10.0\]"),
    ],
)
def test_check_boxes_names_the_argument_and_the_bad_box(boxes, message):
    with pytest.raises(ValueError, match=message):
        check_boxes(boxes, "b")
