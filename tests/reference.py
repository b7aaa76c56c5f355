"""Plain, slow reference implementations (the seed notebook's loops) and the scenes they are checked on.

Not part of the package: these are the yardsticks the vectorized code is checked (tests/) and timed
(benchmarks/bench_coder.py) against.
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


def dense_match(default_boxes: torch.Tensor, boxes: torch.Tensor, ignore: torch.Tensor,
                iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook's matching written out densely over all default boxes, with ignored objects.

    Args:
        default_boxes: ``Tensor[A, 4]`` (cx, cy, w, h).  boxes: ``Tensor[M, 4]`` xyxy.  ignore: ``Tensor[M]`` bool.
    Returns:
        index ``Tensor[A]`` int64, the object matched to each default box (-1: none); ignored ``Tensor[A]`` bool,
        the unmatched default boxes that an ignored object overlaps by >= ``iou_threshold``.
    """
    ious = ops.box_iou(change_box_order(default_boxes, "xywh2xyxy"), boxes)  # [A, M]
    match = ious.clone()
    match[:, ignore] = -1.0
    index = torch.full((len(ious),), -1, dtype=torch.long)
    work = match.clone()
    for _ in range(len(boxes)):  # greedy bipartite: the highest remaining IoU first, first maximum on ties
        flat = int(work.argmax())
        a, o = divmod(flat, len(boxes))
        if work[a, o] < 1e-6:
            break
        index[a] = o
        work[a, :] = -1.0
        work[:, o] = -1.0
    best_iou, best_obj = match.max(1)
    thresh = (index < 0) & (best_iou >= iou_threshold)
    index[thresh] = best_obj[thresh]
    ignored = torch.zeros(len(ious), dtype=torch.bool)
    if ignore.any():
        ignored = (index < 0) & (ious[:, ignore].max(1).values >= iou_threshold)
    return index, ignored


def hard_scene(gen: torch.Generator, m: int, size: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``m`` objects (boxes xyxy, labels in [0, 5), ignore flags) of every scale, some tiny, some zero-width, some
    off the image, some duplicated, some aligned with the default-box grid (exact ties)."""
    xy = torch.rand(m, 2, generator=gen) * size * 1.2 - size * 0.1
    wh = torch.rand(m, 2, generator=gen) ** 3 * size + torch.rand(m, 2, generator=gen)
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[::7, 2] = boxes[::7, 0]  # zero width
    if m >= 4:
        boxes[3] = boxes[1]  # a duplicate: the two collide on their best default box
    boxes[::5] = (boxes[::5] / 8).round() * 8  # on the step-8 grid
    labels = torch.randint(0, 5, (m,), generator=gen)
    ignore = torch.rand(m, generator=gen) < 0.15
    return boxes, labels, ignore
