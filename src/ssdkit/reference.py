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


def torchcv_encode(default_boxes: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
                   variances=(0.1, 0.2), iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """torchcv's ``SSDBoxCoder.encode`` (the coder the notebook imports), line for line on current PyTorch.

    Only what no longer runs was changed: 0-dim results are indexed as scalars. Its own ``box_iou`` ([A, M, 2]
    intermediates) and its two-step ``argmax`` are kept, so this is the per-image cost the notebook paid. Same
    results as :func:`notebook_encode` except for exact IoU ties between objects (torchcv then prefers the lower
    object index, :func:`notebook_encode` the lower default box index).
    """
    def box_iou(box1, box2):
        lt = torch.max(box1[:, None, :2], box2[:, :2])  # [N, M, 2]
        rb = torch.min(box1[:, None, 2:], box2[:, 2:])  # [N, M, 2]
        wh = (rb - lt).clamp(min=0)
        inter = wh[:, :, 0] * wh[:, :, 1]
        area1 = (box1[:, 2] - box1[:, 0]) * (box1[:, 3] - box1[:, 1])
        area2 = (box2[:, 2] - box2[:, 0]) * (box2[:, 3] - box2[:, 1])
        return inter / (area1[:, None] + area2 - inter)

    def argmax(x):
        v, i = x.max(0)
        j = v.max(0)[1]
        return (i[j], j)

    if len(boxes) == 0:
        return torch.zeros(len(default_boxes), 4), torch.zeros(len(default_boxes), dtype=torch.long)
    default_boxes = change_box_order(default_boxes, "xywh2xyxy")
    ious = box_iou(default_boxes, boxes)  # [#anchors, #obj]
    index = torch.full((len(default_boxes),), -1, dtype=torch.long)
    masked_ious = ious.clone()
    while True:
        i, j = argmax(masked_ious)
        if masked_ious[i, j] < 1e-6:
            break
        index[i] = j
        masked_ious[i, :] = 0
        masked_ious[:, j] = 0
    mask = (index < 0) & (ious.max(1)[0] >= iou_threshold)
    if mask.any():
        index[mask] = ious[mask.nonzero().squeeze(1)].max(1)[1]
    boxes = boxes[index.clamp(min=0)]
    boxes = change_box_order(boxes, "xyxy2xywh")
    default_boxes = change_box_order(default_boxes, "xyxy2xywh")
    loc_xy = (boxes[:, :2] - default_boxes[:, :2]) / default_boxes[:, 2:] / variances[0]
    loc_wh = torch.log(boxes[:, 2:] / default_boxes[:, 2:]) / variances[1]
    loc_targets = torch.cat([loc_xy, loc_wh], 1)
    cls_targets = 1 + labels[index.clamp(min=0)]
    cls_targets[index < 0] = 0
    return loc_targets, cls_targets
