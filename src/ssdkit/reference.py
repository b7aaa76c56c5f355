"""Plain, slow reference implementations (the seed notebook's loops), kept for tests and benchmarks.

Not used by the library itself: these are the yardsticks the vectorized code is checked and timed against.
"""

from __future__ import annotations

import torch
from torchvision import ops

from ssdkit.boxes import change_box_order


def notebook_encode(default_boxes: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                    variances=(0.1, 0.2), iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook coder's ``encode`` for one image, as a Python loop (greedy bipartite, then IoU threshold).

    Args:
        default_boxes: ``Tensor[A, 4]`` (cx, cy, w, h).  boxes: ``Tensor[M, 4]`` xyxy.  labels: ``Tensor[M]``.
    Returns:
        loc_targets ``Tensor[A, 4]``, cls_targets ``Tensor[A]`` (0 background, label + 1).
    """
    num_anchors = len(default_boxes)
    if len(boxes) == 0:
        return torch.zeros(num_anchors, 4), torch.zeros(num_anchors, dtype=torch.long)
    anchors_xyxy = change_box_order(default_boxes, "xywh2xyxy")
    ious = ops.box_iou(anchors_xyxy, boxes)
    index = torch.full((num_anchors,), -1, dtype=torch.long)
    masked = ious.clone()
    while True:
        flat = int(masked.argmax())
        i, j = divmod(flat, masked.shape[1])
        if masked[i, j] < 1e-6:
            break
        index[i] = j
        masked[i, :] = 0
        masked[:, j] = 0
    best_iou, best_obj = ious.max(1)
    mask = (index < 0) & (best_iou >= iou_threshold)
    index[mask] = best_obj[mask]
    matched = change_box_order(boxes[index.clamp(min=0)], "xyxy2xywh")
    d = change_box_order(anchors_xyxy, "xyxy2xywh")
    loc_xy = (matched[:, :2] - d[:, :2]) / d[:, 2:] / variances[0]
    loc_wh = torch.log(matched[:, 2:] / d[:, 2:]) / variances[1]
    cls = 1 + labels[index.clamp(min=0)]
    cls[index < 0] = 0
    return torch.cat([loc_xy, loc_wh], 1), cls
