"""Decoding: offsets -> boxes, per-class top-k, score threshold, per-class NMS; the export graph's decoder.

Symbols: ``A`` = number of default boxes, ``C`` = classes including background (column 0), ``N`` = images,
``K`` = detections of an image, ``D`` = ``max_detections``, ``S`` = the network's input size.

Every decode in ssdkit runs through here: :func:`decode_batch` (evaluation, prediction, the Detector, export
parity), :func:`decode_image` (the seed notebook's per-image ``decode``) and :class:`PaddedDecoder` (the graph
exported with postprocess). All three turn offsets into boxes with :func:`decode_offsets`. Thresholds are
arguments: their defaults live in :data:`ssdkit.choices.DECODE_PRESETS`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn
from torchvision import ops

from ssdkit.nms import grouped_nms

if TYPE_CHECKING:
    from ssdkit.coder import SSDBoxCoder

__all__ = ["DecodeAnchors", "PaddedDecoder", "class_probs", "decode_batch", "decode_image", "decode_offsets"]

# Largest log-scale offset decoded (torchvision's bbox_xform_clip): stops exp() overflowing on wild predictions.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


class DecodeAnchors(NamedTuple):
    """The default boxes on one device, as decoding reads them (``SSDBoxCoder.decode_anchors`` builds them)."""

    xy: torch.Tensor  # [A, 2] float32 centres (cx, cy), input pixels, contiguous
    wh: torch.Tensor  # [A, 2] float32 sizes (w, h), input pixels, contiguous
    variances: tuple[float, float]  # (v0, v1): the paper's (0.1, 0.2)
    input_size: int  # S: clipped boxes lie in [0, S]


#: Below this many classes the CPU softmax runs on the ``[N, C, A]`` layout (:func:`class_probs`).
SHORT_CLASS_DIM = 16


def class_probs(cls_logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the classes of ``Tensor[N, A, C]`` logits, float32 ``[N, A, C]``.

    On the CPU with fewer than :data:`SHORT_CLASS_DIM` classes it is computed on the ``[N, C, A]`` layout (the
    result is a transposed view): torch's CPU softmax over a last dimension shorter than a vector register is
    slow. Measured on the Xeon box, ms per image of a ``decode_batch`` at batch 8 / 32: 7 classes 1.10 / 1.07
    -> 0.71 / 0.52; at 21 classes the plain softmax is the faster (0.59 / 0.64 vs 0.87 / 0.86) and is kept.
    Values agree with ``softmax(dim=-1)`` to 1 ulp."""
    x = cls_logits.float()
    if x.device.type == "cpu" and x.shape[-1] < SHORT_CLASS_DIM:
        return x.transpose(1, 2).contiguous().softmax(1).transpose(1, 2)
    return x.softmax(-1)


def decode_offsets(loc: torch.Tensor, d_xy: torch.Tensor, d_wh: torch.Tensor,
                   variances: tuple[float, float]) -> torch.Tensor:
    """Offsets -> boxes: the one implementation (the inverse of the coder's encoding).

    Args:
        loc: ``Tensor[..., 4]`` float offsets ``(dx, dy, dw, dh)``.
        d_xy, d_wh: default-box centres and sizes ``Tensor[..., 2]`` input pixels, broadcastable against ``loc``.
        variances: ``(v0, v1)``.

    Returns:
        ``Tensor[..., 4]`` xyxy input pixels, dtype of ``loc``: ``cx = dx * v0 * w_d + cx_d``,
        ``w = exp(min(dw * v1, log(1000 / 16))) * w_d`` (likewise y, h).
    """
    d_xy, d_wh = d_xy.to(loc.dtype), d_wh.to(loc.dtype)
    v0, v1 = variances
    xy = (loc[..., :2] * v0).mul_(d_wh).add_(d_xy)
    half = torch.exp((loc[..., 2:] * v1).clamp_(max=_MAX_LOG_SCALE)).mul_(d_wh).div_(2)
    return torch.cat([xy - half, xy + half], -1)


def decode_image(loc_preds: torch.Tensor, probs: torch.Tensor, anchors: DecodeAnchors, score_thresh: float,
                 nms_thresh: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode one image, as the seed notebook's coder did (no top-k, no clipping, no cap on the count).

    Args:
        loc_preds: ``Tensor[A, 4]`` predicted offsets.
        probs: ``Tensor[A, C]`` class probabilities (column 0 is background).
        anchors: the default boxes, on the device of ``loc_preds``.
        score_thresh: keep scores strictly above this.
        nms_thresh: IoU above which a lower-scored box of the same class is suppressed.

    Returns:
        boxes ``Tensor[K, 4]`` xyxy input pixels, labels ``Tensor[K]`` int64 0-based, scores ``Tensor[K]``;
        ordered by class, then by decreasing score (the notebook's order). K may be 0.
    """
    a = anchors.xy.shape[0]
    if loc_preds.dim() != 2 or loc_preds.shape != (a, 4):
        raise ValueError(f"loc_preds: expected shape [{a}, 4], got {list(loc_preds.shape)}")
    if probs.dim() != 2 or probs.shape[0] != a or probs.shape[1] < 2:
        raise ValueError(f"cls_preds: expected shape [{a}, C] with C >= 2, got {list(probs.shape)}")
    boxes = decode_offsets(loc_preds, anchors.xy, anchors.wh, anchors.variances)
    scores = probs[:, 1:]
    anchor, cls = (scores > score_thresh).nonzero(as_tuple=True)
    cand_boxes, cand_scores = boxes[anchor], scores[anchor, cls]
    keep = ops.batched_nms(cand_boxes, cand_scores, cls, nms_thresh)
    # batched_nms returns decreasing score; a stable sort by class gives the notebook's per-class order
    keep = keep[torch.sort(cls[keep], stable=True).indices]
    return cand_boxes[keep], cls[keep], cand_scores[keep]


def decode_batch(loc_preds: torch.Tensor, cls_logits: torch.Tensor, anchors: DecodeAnchors, *, score_thresh: float,
                 nms_thresh: float, top_k: int, max_detections: int, clip: bool) -> list[dict[str, torch.Tensor]]:
    """Decode a batch: softmax, per-class top-k, score threshold, per-class NMS, best ``max_detections``.

    Args:
        loc_preds: ``Tensor[N, A, 4]`` offsets.
        cls_logits: ``Tensor[N, A, C]`` raw class logits (softmax is applied here), ``C >= 2``.
        anchors: the default boxes, on the device of ``loc_preds``.
        score_thresh: keep scores strictly above this.
        nms_thresh: IoU above which a lower-scored box of the same class is suppressed.
        top_k: candidates kept per class and image before NMS (by score).
        max_detections: ``D``, detections kept per image.
        clip: clip boxes to the input image ``[0, S]``.

    Returns:
        N dicts with ``boxes`` ``Tensor[K, 4]`` float32 xyxy input pixels, ``labels`` ``Tensor[K]`` int64 0-based,
        ``scores`` ``Tensor[K]`` float32; sorted by decreasing score; ``K <= D``.
    """
    num_anchors = anchors.xy.shape[0]
    if loc_preds.dim() != 3 or loc_preds.shape[1:] != (num_anchors, 4):
        raise ValueError(f"loc_preds: expected shape [N, {num_anchors}, 4], got {list(loc_preds.shape)}")
    n, a = loc_preds.shape[:2]
    if cls_logits.dim() != 3 or cls_logits.shape[:2] != (n, a) or cls_logits.shape[2] < 2:
        raise ValueError(f"cls_logits: expected shape [{n}, {a}, C], got {list(cls_logits.shape)}")
    probs = class_probs(cls_logits)[..., 1:]  # [N, A, C-1], a view
    loc_preds = loc_preds.float()
    out: list[dict[str, torch.Tensor] | None] = [None] * n
    todo = torch.arange(n, device=loc_preds.device)
    prefix = max(2 * max_detections, 64)
    while len(todo):
        sub = slice(None) if len(todo) == n else todo  # indexing copies: skip it on the first pass
        done, again = _decode_prefix(loc_preds[sub], probs[sub], anchors, prefix, score_thresh, nms_thresh,
                                     top_k, max_detections, clip)
        for i, det in zip(todo.tolist(), done):
            if det is not None:
                out[i] = det
        todo = todo[again]
        prefix *= 4
    return out


def _decode_prefix(loc_preds: torch.Tensor, probs: torch.Tensor, anchors: DecodeAnchors, prefix: int,
                   score_thresh: float, nms_thresh: float, top_k: int, max_detections: int, clip: bool
                   ) -> tuple[list[dict[str, torch.Tensor] | None], torch.Tensor]:
    """One pass of :func:`decode_batch` over the ``prefix`` highest-scoring default boxes of each image.

    ``loc_preds[N, A, 4]`` float32, ``probs[N, A, C-1]`` float32 (background column dropped).

    Greedy per-class NMS keeps or drops a candidate looking only at the higher-scoring candidates of its
    class, and the output is the ``max_detections`` best kept ones. So it is enough to run it on a set S of
    the highest-scoring candidates of each image (S = every (box, class) score >= tau, tau = the ``prefix``-th
    largest per-box maximum score): S holds, per class, that class's best candidates, so the per-class top-k
    and the NMS decisions inside S are those of the full set, and when S yields ``max_detections`` kept
    boxes (or holds every candidate above ``score_thresh``) they are the answer. Images where it does not
    are returned in ``again`` and redone with a larger prefix (x4, at most a few rounds).

    Returns:
        N per-image dicts (as :func:`decode_batch`), None for the images to redo; ``again`` ``Tensor[N]`` bool.
    """
    n, a, c = probs.shape
    # S lies in the rows (default boxes) whose best score reaches tau: select those first, then the scores
    if prefix < a:
        best = probs.amax(2)  # [N, A]
        tau = best.topk(prefix, dim=1, sorted=False).values.amin(1)  # [N]
        img, anchor = (best >= tau[:, None]).nonzero(as_tuple=True)
    else:
        tau = torch.full((n,), -1.0, device=probs.device)
        img, anchor = torch.ones(n, a, dtype=torch.bool, device=probs.device).nonzero(as_tuple=True)
    complete = tau <= score_thresh  # S holds every candidate of the image
    rows = probs[img, anchor]  # [R, C-1]
    row, cls = ((rows > score_thresh) & (rows >= tau[img, None])).nonzero(as_tuple=True)
    img, anchor, scores = img[row], anchor[row], rows[row, cls]
    # group by (image, class), decreasing score within each group; keep the top_k of each group
    group = img * c + cls
    order = torch.argsort(group.double() * 2.0 - scores, stable=True)  # scores in [0, 1]
    img, anchor, cls, scores, group = img[order], anchor[order], cls[order], scores[order], group[order]
    counts = torch.bincount(group, minlength=n * c)
    start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(group), device=group.device) - start[group]
    sel = rank < top_k
    img, anchor, cls, scores, group = img[sel], anchor[sel], cls[sel], scores[sel], group[sel]
    boxes = decode_offsets(loc_preds[img, anchor], anchors.xy[anchor], anchors.wh[anchor], anchors.variances)
    if clip:
        boxes = boxes.clamp(0, anchors.input_size)
    keep = _grouped_nms(boxes, scores, group, n * c, nms_thresh)
    # group by image, decreasing score within each, then cut each image at max_detections
    keep = keep[torch.argsort(img[keep] * 2.0 - scores[keep], stable=True)]
    per_image = torch.bincount(img[keep], minlength=n)
    again = (per_image < max_detections) & ~complete
    out: list[dict[str, torch.Tensor] | None] = []
    for chunk, redo in zip(torch.split(keep, per_image.tolist()), again.tolist()):
        if redo:
            out.append(None)
            continue
        chunk = chunk[:max_detections]
        out.append({"boxes": boxes[chunk], "labels": cls[chunk], "scores": scores[chunk]})
    return out, again


def _grouped_nms(boxes: torch.Tensor, scores: torch.Tensor, group: torch.Tensor, num_groups: int,
                 iou_threshold: float) -> torch.Tensor:
    """Per-group NMS (same result as ``torchvision.ops.batched_nms``): ``boxes[K, 4]`` xyxy, ``scores[K]``,
    ``group[K]`` int64 in ``[0, num_groups)`` -> ``Tensor[R]`` int64 indices of the kept boxes.

    ``group`` must be non-decreasing (candidates come grouped by (image, class) from ``nonzero``). On CUDA this
    is ``batched_nms``. On CPU, ``batched_nms`` scans every candidate once per group (``torch.where``) or, below
    1000 boxes, runs one quadratic NMS over all groups; calling ``ops.nms`` on each contiguous group slice
    avoids both (measured ~3x faster on SSD300 / 21 classes / top-200 candidates). With small groups the per-call
    overhead dominates and :func:`ssdkit.nms.grouped_nms` (all groups in one vectorized pass, same kept set) is
    faster: measured 4-8x at <= 50 boxes per group, break-even near 110, 2x slower at 200.
    """
    if boxes.device.type != "cpu" or len(boxes) == 0:
        return ops.batched_nms(boxes, scores, group, iou_threshold)
    counts = torch.bincount(group, minlength=num_groups)
    if len(boxes) <= 64 * int((counts > 0).sum()):  # groups average <= 64 boxes
        return grouped_nms(boxes, scores, group, iou_threshold)
    kept = []
    start = 0
    for count in counts.tolist():
        if count:
            kept.append(ops.nms(boxes[start:start + count], scores[start:start + count], iou_threshold) + start)
        start += count
    return torch.cat(kept)


# ----------------------------------------------------------------------------------------------------------------
# the export graph's decoder: the same rules as decode_batch, as fixed-shape tensor ops that trace


class _OnnxBatchedNMS(torch.autograd.Function):
    """Per-image, per-class NMS -> ``selected [S, 3]`` int64 ``(image, class, anchor)``; the ONNX
    ``NonMaxSuppression`` operator when exported (it batches over images and classes natively, no offsets)."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class: int, iou: float, score_thresh: float, span: float):  # noqa: ANN001
        return _offset_nms(boxes, scores, iou, score_thresh, span)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou: float, score_thresh: float, span: float):  # noqa: ANN001
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_thresh], dtype=torch.float32)),
            center_point_box_i=0,
        )


def _offset_nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float, score_thresh: float,
                span: float) -> torch.Tensor:
    """``boxes [N, A, 4]`` xyxy in ``[0, span)``, ``scores [N, G, A]`` -> ``selected [S, 3]`` int64
    ``(image, group, anchor)``, one NMS per (image, group).

    Boxes of different (image, group) pairs are shifted apart by ``span`` (the coordinate trick of ``batched_nms``)
    in float64, so the shift costs no precision: float32 at offsets of ~10^5 px would round IoUs near the threshold.
    ``span`` is a constant (not ``boxes.max()``) so a traced graph also runs with zero candidates.
    """
    n, g, a = (scores > score_thresh).nonzero(as_tuple=True)
    cand = boxes[n, a].double()
    group = n * scores.shape[1] + g
    keep = ops.nms(cand + (group.double() * span)[:, None], scores[n, g, a].double(), iou)
    return torch.stack([n[keep], g[keep], a[keep]], 1)


class PaddedDecoder(nn.Module):
    """``(loc [N, A, 4], logits [N, A, C])`` -> padded detections (the same rules as :func:`decode_batch`).

    Args:
        coder: the :class:`~ssdkit.coder.SSDBoxCoder` whose default boxes decode the offsets.
        score_thresh, nms_thresh, top_k, max_detections: as :func:`decode_batch` (``D = max_detections``).
        onnx_nms: the NMS used when traced: the ONNX ``NonMaxSuppression`` operator (for ONNX export), or
            ``torchvision.ops.nms`` with float64 offsets (eager / TorchScript). Both give ``decode_batch``'s boxes.

    Returns:
        boxes ``[N, D, 4]`` float32 xyxy input pixels (clipped to ``[0, S]``), scores ``[N, D]`` float32
        decreasing, labels ``[N, D]`` int64 0-based, num_detections ``[N]`` int64; rows past ``num_detections``
        hold score 0, label -1, box 0.
    """

    def __init__(self, coder: SSDBoxCoder, score_thresh: float, nms_thresh: float, top_k: int,
                 max_detections: int, onnx_nms: bool = False) -> None:
        super().__init__()
        self.coder = coder
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.top_k = int(top_k)
        self.max_detections = int(max_detections)
        self.onnx_nms = onnx_nms

    def forward(self, loc: torch.Tensor, logits: torch.Tensor):  # noqa: ANN201
        num_anchors = loc.shape[1]
        anchors = self.coder.decode_anchors(loc.device)
        span = float(anchors.input_size + 1)  # boxes are clipped to [0, S]
        boxes = decode_offsets(loc.float(), anchors.xy, anchors.wh, anchors.variances)
        boxes = boxes.clamp(0, anchors.input_size)  # [N, A, 4]
        scores = class_probs(logits)[..., 1:].transpose(1, 2)  # [N, C-1, A]
        top_scores, top_idx = scores.topk(min(self.top_k, num_anchors), dim=2)
        # per-class top-k as a dense mask: candidates outside a class's top k score 0, below any threshold
        masked = torch.zeros_like(scores).scatter(2, top_idx, top_scores)
        if self.onnx_nms:
            sel = _OnnxBatchedNMS.apply(boxes, masked, self.top_k, self.nms_thresh, self.score_thresh, span)
        else:
            sel = _offset_nms(boxes, masked, self.nms_thresh, self.score_thresh, span)
        n, c, a = sel[:, 0], sel[:, 1], sel[:, 2]
        kept = torch.zeros_like(masked).index_put((n, c, a), masked[n, c, a])  # [N, C-1, A], 0 = not kept
        flat = kept.reshape(kept.shape[0], -1)
        d = min(self.max_detections, flat.shape[1])
        out_scores, pos = flat.topk(d, dim=1)  # [N, D]
        valid = out_scores > 0
        labels = torch.where(valid, torch.div(pos, num_anchors, rounding_mode="floor"), torch.full_like(pos, -1))
        anchor = torch.remainder(pos, num_anchors)
        out_boxes = torch.gather(boxes, 1, anchor.unsqueeze(2).expand(-1, -1, 4))
        out_boxes = out_boxes * valid.unsqueeze(2).to(out_boxes.dtype)
        return out_boxes, out_scores, labels, valid.sum(1)
