"""Box formats and IoU: a thin layer over ``torchvision.ops``.

Formats: ``xyxy`` = ``(x_min, y_min, x_max, y_max)``; ``xywh`` = ``(cx, cy, w, h)`` (centre form, as the
seed notebook's ``change_box_order`` uses it; this is NOT COCO's top-left ``xywh``).
"""

from __future__ import annotations

import torch
from torchvision import ops

__all__ = ["box_iou", "change_box_order", "check_boxes"]


def change_box_order(boxes: torch.Tensor, order: str) -> torch.Tensor:
    """Convert ``Tensor[..., 4]`` between ``xyxy`` and centre-form ``xywh``.

    Args:
        boxes: ``Tensor[..., 4]`` float.
        order: ``'xyxy2xywh'`` or ``'xywh2xyxy'``.
    """
    if order not in ("xyxy2xywh", "xywh2xyxy"):
        raise ValueError(f"order: expected 'xyxy2xywh' or 'xywh2xyxy', got {order!r}")
    a, b = boxes[..., :2], boxes[..., 2:]
    if order == "xyxy2xywh":
        return torch.cat([(a + b) / 2, b - a], -1)
    return torch.cat([a - b / 2, a + b / 2], -1)


def box_iou(box1: torch.Tensor, box2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair: ``Tensor[N, 4]`` x ``Tensor[M, 4]`` (xyxy) -> ``Tensor[N, M]``."""
    return ops.box_iou(box1, box2)


def check_boxes(boxes: torch.Tensor, name: str = "boxes") -> None:
    """Raise ``ValueError`` naming ``name`` unless ``boxes`` is a finite float ``Tensor[M, 4]``, x2 >= x1, y2 >= y1."""
    if not isinstance(boxes, torch.Tensor):
        raise ValueError(f"{name}: expected a Tensor[M, 4], got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}: expected shape [M, 4], got {list(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor, got {boxes.dtype}")
    if boxes.numel() == 0:
        return
    finite = torch.isfinite(boxes).all(1)
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        raise ValueError(f"{name}: box {i} has a non-finite coordinate {boxes[i].tolist()}")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        b = boxes[i].tolist()
        raise ValueError(f"{name}: box {i} is inverted (x2 < x1 or y2 < y1): {b}")
