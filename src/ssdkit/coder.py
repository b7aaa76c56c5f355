"""SSDBoxCoder: one object owns a model's default boxes and variances; it encodes ground truth to training
targets and decodes predictions (through :mod:`ssdkit.postprocess`).

Symbols: ``A`` = number of default boxes (8732 for SSD300), ``C`` = ``num_classes`` including background,
``M`` = objects in an image, ``N`` = images in a batch.

Encoding: objects are matched to default boxes by :func:`ssdkit.matching.match` (bipartite, then IoU >= 0.5),
then each matched default box gets the offsets ``((cx - cx_d) / (v0 * w_d), (cy - cy_d) / (v0 * h_d),
log(w / w_d) / v1, log(h / h_d) / v1)`` and the class ``k + 1`` of its object ``k`` (0 is background); -1 marks
default boxes to ignore (they overlap an ignored object by >= 0.5 and matched nothing else).

The seed notebook's names and signatures work unchanged: ``SSDBoxCoder(model)``, ``_get_default_boxes()``,
``encode(boxes, labels)``, ``decode(loc_preds, cls_preds, score_thresh, nms_thresh)``; the batched forms
``encode_batch`` / ``decode_batch`` are what training and evaluation call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from ssdkit import postprocess
from ssdkit.anchors import default_boxes_for
from ssdkit.boxes import change_box_order, check_boxes
from ssdkit.choices import DECODE_PRESETS, EVAL_PRESET
from ssdkit.config import ModelConfig
from ssdkit.matching import MatchAnchors, level_blocks, match, match_anchors, objects_of
from ssdkit.postprocess import DecodeAnchors

_LABEL_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)
# the notebook's per-image decode defaults to what a person wants to look at; the batched one to what mAP needs
_VISUALIZE = DECODE_PRESETS["visualize"]
_EVALUATE = DECODE_PRESETS[EVAL_PRESET]


def _config_of(model_or_config) -> ModelConfig:
    if isinstance(model_or_config, ModelConfig):
        return model_or_config
    cfg = getattr(model_or_config, "config", None)
    if isinstance(cfg, ModelConfig):
        return cfg
    raise TypeError(f"SSDBoxCoder: expected an SSD model or a ModelConfig, got {type(model_or_config).__name__}")


class _Anchors(NamedTuple):
    """The default boxes on one device, in the layouts each step wants (contiguous rows and columns: strided
    views make broadcast ops take PyTorch's slow generic path, ~10x)."""

    match: MatchAnchors  # for matching (IoU table, grid)
    decode: DecodeAnchors  # for decoding (centres, sizes)
    # [4, A] centres and sizes of the xyxy -> xywh round trip (the notebook's float arithmetic), for encoding
    rt_rows: torch.Tensor
    enc_cols: tuple[torch.Tensor, torch.Tensor]  # rt_x, rt_w per (level, column, shape): the same down a column
    enc_rows: tuple[torch.Tensor, torch.Tensor]  # rt_y, rt_h per (level, row, shape): the same along a row
    levels: tuple[tuple[int, int, int, int], ...]  # per level: first default box, map size, shapes, first col/row


def _separate(rt: torch.Tensor, fm_sizes: Sequence[int], per_cell: Sequence[int]):
    """Round-trip ``(cx, cy, w, h)`` default boxes ``Tensor[A, 4]`` -> (rt_x, rt_w) per (level, column, shape),
    (rt_y, rt_h) per (level, row, shape), and the level layout; checks that the boxes really form such grids."""
    cols: list[list[torch.Tensor]] = [[], [], [], []]
    levels = []
    first = 0
    for start, f, k, block in level_blocks(rt, fm_sizes, per_cell):
        for c, line in enumerate((block[:1, :, :, 0], block[:1, :, :, 2], block[:, :1, :, 1], block[:, :1, :, 3])):
            if not torch.equal(block[..., (0, 2, 1, 3)[c]], line.expand(f, f, k)):
                raise ValueError("default boxes: not a grid of columns and rows per level and shape")
            cols[c].append(line.reshape(-1))
        levels.append((start, f, k, first))
        first += f * k
    x, w, y, h = (torch.cat(c) for c in cols)
    return (x, w), (y, h), tuple(levels)


class SSDBoxCoder:
    """Encodes ground truth to training targets and decodes predictions to boxes, for one model config.

    Args:
        model_or_config: an SSD model (anything with a ``config`` attribute) or a :class:`ModelConfig`.
        iou_threshold: IoU at which a default box is matched to an object (0.5 in the paper).

    Attributes:
        config: the :class:`ModelConfig` (feature maps, box sizes, ``num_classes``, ``input_size``).
        default_boxes: ``Tensor[A, 4]`` float32, ``(cx, cy, w, h)`` in input pixels, on the CPU.
        variances: ``(v0, v1)``, the paper's ``(0.1, 0.2)``.
        iou_threshold: as the argument.
    """

    def __init__(self, model_or_config, iou_threshold: float = 0.5) -> None:
        self.config = _config_of(model_or_config)
        self.variances = self.config.variances
        self.iou_threshold = float(iou_threshold)
        self.default_boxes = self._get_default_boxes()
        self._device_cache: dict[str, _Anchors] = {}

    def _get_default_boxes(self) -> torch.Tensor:
        """``Tensor[A, 4]`` (cx, cy, w, h) input pixels, as the notebook calls it."""
        return default_boxes_for(self.config)

    def _on(self, device: torch.device) -> _Anchors:
        key = str(device)
        if key not in self._device_cache:
            cfg = self.config
            # Matching and encoding use the xyxy round trip of the default boxes, as the notebook's coder did;
            # keeping the same float32 arithmetic keeps its printed target values exact.
            xyxy = change_box_order(self.default_boxes, "xywh2xyxy")
            rt = change_box_order(xyxy, "xyxy2xywh").to(device)
            d = self.default_boxes.to(device)
            self._device_cache[key] = _Anchors(
                match_anchors(xyxy.to(device), d, cfg.fm_sizes, cfg.num_anchors),
                DecodeAnchors(d[:, :2].contiguous(), d[:, 2:].contiguous(), self.variances, cfg.input_size),
                rt.t().contiguous(), *_separate(rt, cfg.fm_sizes, cfg.num_anchors))
        return self._device_cache[key]

    def decode_anchors(self, device: torch.device) -> DecodeAnchors:
        """The default boxes on ``device`` as :mod:`ssdkit.postprocess` reads them (cached per device)."""
        return self._on(device).decode

    # ------------------------------------------------------------------ encode
    def encode(
        self, boxes: torch.Tensor, labels: torch.Tensor, ignore: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode one image's objects.

        Args:
            boxes: ``Tensor[M, 4]`` float, xyxy input pixels (M may be 0).
            labels: ``Tensor[M]`` int64, 0-based object classes.
            ignore: optional ``Tensor[M]`` bool, objects to ignore (VOC difficult, COCO crowd).

        Returns:
            loc_targets: ``Tensor[A, 4]`` float32 offsets (meaningful where ``cls_targets > 0``; other rows carry
                object 0's encoding, as the notebook's coder did; zeros for an image with no object).
            cls_targets: ``Tensor[A]`` int64: 0 background, ``k + 1`` for class ``k``, -1 ignore.
        """
        loc, cls = self.encode_batch([boxes], [labels], None if ignore is None else [ignore])
        return loc[0], cls[0]

    def encode_batch(
        self,
        boxes: Sequence[torch.Tensor],
        labels: Sequence[torch.Tensor],
        ignore: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch on the device of the boxes, vectorized over images and objects.

        Args:
            boxes: N tensors ``[M_i, 4]`` float, xyxy input pixels.
            labels: N tensors ``[M_i]`` int64, 0-based classes.
            ignore: optional N tensors ``[M_i]`` bool.

        Returns:
            loc_targets ``Tensor[N, A, 4]`` float32, cls_targets ``Tensor[N, A]`` int64 (see :meth:`encode`).
        """
        if len(boxes) != len(labels):
            raise ValueError(f"encode_batch: got {len(boxes)} box tensors but {len(labels)} label tensors")
        if ignore is not None and len(ignore) != len(boxes):
            raise ValueError(f"encode_batch: got {len(boxes)} box tensors but {len(ignore)} ignore tensors")
        n = len(boxes)
        device = boxes[0].device if n else self.default_boxes.device
        anchors = self._on(device)
        num_anchors = anchors.rt_rows.shape[1]
        counts, cat_boxes, cat_labels = self._checked_targets(boxes, labels, device)
        m = max(counts, default=0)
        if m == 0:
            return (torch.zeros(n, num_anchors, 4, device=device),
                    torch.zeros(n, num_anchors, dtype=torch.int64, device=device))
        # pad to [N, M]: scatter the concatenated objects to their (image, slot) places (pad_sequence is ~10x
        # slower: a copy per image); padding is a zero-size box at the origin, which overlaps nothing
        if min(counts) == m:
            slot = None
            box_pad, label_pad = cat_boxes.view(n, m, 4), cat_labels
        else:
            count_t = torch.tensor(counts, device=device)
            slot = torch.repeat_interleave(torch.arange(n, device=device) * m - (count_t.cumsum(0) - count_t),
                                           count_t, output_size=len(cat_boxes)).add_(
                torch.arange(len(cat_boxes), device=device))
            box_pad = cat_boxes.new_zeros(n * m, 4).index_copy_(0, slot, cat_boxes).view(n, m, 4)
            label_pad = cat_labels.new_zeros(n * m).index_copy_(0, slot, cat_labels)
        ign = None
        if ignore is not None and any(g is not None and len(g) and bool(g.any()) for g in ignore):
            flags = torch.cat([torch.zeros(k, dtype=torch.bool, device=device) if g is None or len(g) == 0
                               else g.to(device=device, dtype=torch.bool) for k, g in zip(counts, ignore)])
            ign = flags if slot is None else torch.zeros(n * m, dtype=torch.bool, device=device).index_copy_(
                0, slot, flags)
        obj = objects_of(box_pad)
        # default box (image * A + box) and object (image * M + object) of each match
        where, who, ignored = match(anchors.match, box_pad, obj, ign, self.iou_threshold)

        # Unmatched rows carry object 0's encoding, as the notebook's coder did: write that for every row (per
        # column / row of each level, then broadcast), then overwrite the few matched rows. Both use the same
        # float arithmetic as encoding the picked boxes one by one.
        # clamp keeps zero-size objects (never matched) from putting -inf into unmatched rows
        xywh = torch.cat([obj.mid, obj.size.clamp(min=1e-6)]).view(4, n, m)
        loc_targets = self._unmatched_offsets(anchors, xywh[:, :, :1])
        flat_loc = loc_targets.view(-1, 4)
        flat_loc.index_copy_(0, where, self._offsets(anchors, xywh.view(4, -1).index_select(1, who),
                                                     where % num_anchors))
        if 0 in counts:
            loc_targets[torch.tensor([i for i, k in enumerate(counts) if k == 0], device=device)] = 0.0

        cls_targets = torch.zeros(n * num_anchors, dtype=torch.int64, device=device)
        if ignored is not None:
            cls_targets[ignored] = -1
        cls_targets.index_copy_(0, where, label_pad.view(-1).index_select(0, who).add_(1))
        return loc_targets, cls_targets.view(n, num_anchors)

    def _unmatched_offsets(self, anchors: _Anchors, first: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, A, 4]``: every default box's offsets from its image's object 0, ``first[4, N, 1]`` (cx, cy,
        w, h; w, h > 0), with :meth:`_offsets`'s arithmetic. A default box's x offsets depend only on its level,
        column and shape (y: row): computed once per column (row), then written out level by level, broadcast."""
        v0, v1 = self.variances
        n = first.shape[1]
        x, y, w, h = first  # [N, 1] each
        (col_x, col_w), (row_y, row_h) = anchors.enc_cols, anchors.enc_rows
        # (x, 0, w, 0) per column + (0, y, 0, h) per row, broadcast: an add whose innermost axes (shape, 4) are
        # contiguous everywhere runs ~5x faster than stacking four broadcast planes into the interleaved output
        px, pw = (x - col_x).div_(col_w).div_(v0), (w / col_w).log_().div_(v1)  # [N, columns]
        py, ph = (y - row_y).div_(row_h).div_(v0), (h / row_h).log_().div_(v1)  # [N, rows]
        by_col = px.new_zeros(*px.shape, 4)
        by_row = py.new_zeros(*py.shape, 4)
        by_col[..., 0], by_col[..., 2], by_row[..., 1], by_row[..., 3] = px, pw, py, ph  # (stack(-1) is 2x slower)
        out = torch.empty(n, anchors.rt_rows.shape[1], 4, device=first.device)
        for start, f, k, c in anchors.levels:
            part = slice(c, c + f * k)
            torch.add(by_col[:, part].view(n, 1, f, k, 4), by_row[:, part].view(n, f, 1, k, 4),
                      out=out[:, start:start + f * f * k].view(n, f, f, k, 4))
        return out

    def _offsets(self, anchors: _Anchors, boxes: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """Offsets ``Tensor[K, 4]`` of ``boxes[4, K]`` (cx, cy, w, h rows; w, h > 0) from the default boxes
        ``anchor[K]``: the notebook's ``((x - x_d) / w_d / v0, ..., log(w / w_d) / v1, ...)`` with its float
        arithmetic. Plane by plane, stacked at the end: ops over a last axis of 4 are ~10x slower on CPU."""
        v0, v1 = self.variances
        x, y, w, h = boxes
        rx, ry, rw, rh = anchors.rt_rows.index_select(1, anchor)
        return torch.stack([(x - rx).div_(rw).div_(v0), (y - ry).div_(rh).div_(v0),
                            (w / rw).log_().div_(v1), (h / rh).log_().div_(v1)], -1)

    def _checked_targets(self, boxes: Sequence[torch.Tensor], labels: Sequence[torch.Tensor], device: torch.device
                         ) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Validate; return the object counts and all boxes ``[sum M_i, 4]`` float32 and labels int64, on
        ``device``. Checked with a few ops over the whole batch; on a failure, image by image to name the bad one."""
        counts = []
        for b, lab in zip(boxes, labels):
            if not (isinstance(b, torch.Tensor) and isinstance(lab, torch.Tensor) and b.dim() == 2 and b.shape[1] == 4
                    and b.is_floating_point() and lab.dim() == 1 and lab.shape[0] == b.shape[0]
                    and lab.dtype in _LABEL_DTYPES):
                break
            counts.append(b.shape[0])
        else:
            cat_boxes = torch.cat(list(boxes)).to(device=device, dtype=torch.float32) if boxes else torch.zeros(0, 4)
            cat_labels = torch.cat(list(labels)).to(device=device, dtype=torch.int64) if labels else \
                torch.zeros(0, dtype=torch.int64)
            if len(cat_boxes) == 0:
                return counts, cat_boxes, cat_labels
            # widths and heights >= 0 and finite (NaN fails every comparison; an infinite coordinate makes its
            # width infinite or NaN), labels in range: one sync for the whole batch
            size_lo, size_hi = (cat_boxes[:, 2:] - cat_boxes[:, :2]).aminmax()
            label_lo, label_hi = cat_labels.aminmax()
            size_lo, size_hi, label_lo, label_hi = torch.stack(
                [size_lo, size_hi, label_lo.to(size_lo.dtype), label_hi.to(size_lo.dtype)]).tolist()
            if size_lo >= 0 and size_hi < math.inf and label_lo >= 0 and label_hi <= self.config.num_classes - 2:
                return counts, cat_boxes, cat_labels
        for i, (b, lab) in enumerate(zip(boxes, labels)):
            check_boxes(b, f"boxes[{i}]")
            if lab.dim() != 1 or len(lab) != len(b):
                raise ValueError(f"labels[{i}]: expected shape [{len(b)}], got {list(lab.shape)}")
            if lab.dtype not in _LABEL_DTYPES:
                raise ValueError(f"labels[{i}]: expected an integer tensor, got {lab.dtype}")
            if len(lab) and (int(lab.min()) < 0 or int(lab.max()) > self.config.num_classes - 2):
                raise ValueError(
                    f"labels[{i}]: object classes must be in [0, {self.config.num_classes - 2}] "
                    f"(num_classes={self.config.num_classes} counts background), got {lab.tolist()}"
                )
        raise AssertionError("encode_batch: a batch-wide check failed but no image fails on its own")

    # ------------------------------------------------------------------ decode
    def decode_boxes(self, loc_preds: torch.Tensor) -> torch.Tensor:
        """Offsets ``Tensor[..., A, 4]`` -> boxes ``Tensor[..., A, 4]`` xyxy input pixels (not clipped)."""
        anchors = self.decode_anchors(loc_preds.device)
        return postprocess.decode_offsets(loc_preds, anchors.xy, anchors.wh, anchors.variances)

    def decode(
        self,
        loc_preds: torch.Tensor,
        cls_preds: torch.Tensor,
        score_thresh: float = _VISUALIZE["score_thresh"],
        nms_thresh: float = _VISUALIZE["nms_thresh"],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode one image, as the notebook calls it (defaults: the ``visualize`` preset).

        Args:
            loc_preds: ``Tensor[A, 4]`` predicted offsets.
            cls_preds: ``Tensor[A, C]`` class scores (probabilities; column 0 is background).
            score_thresh: keep scores strictly above this.
            nms_thresh: IoU above which a lower-scored box of the same class is suppressed.

        Returns:
            boxes ``Tensor[K, 4]`` xyxy input pixels, labels ``Tensor[K]`` int64 0-based, scores ``Tensor[K]``;
            ordered by class, then by decreasing score (the notebook's order). K may be 0.
        """
        return postprocess.decode_image(loc_preds, cls_preds, self.decode_anchors(loc_preds.device),
                                        score_thresh, nms_thresh)

    def decode_batch(
        self,
        loc_preds: torch.Tensor,
        cls_logits: torch.Tensor,
        score_thresh: float = _EVALUATE["score_thresh"],
        nms_thresh: float = _EVALUATE["nms_thresh"],
        top_k: int = _EVALUATE["top_k"],
        max_detections: int = _EVALUATE["max_detections"],
        clip: bool = True,
    ) -> list[dict[str, torch.Tensor]]:
        """Decode a batch (defaults: the ``evaluate`` preset): see :func:`ssdkit.postprocess.decode_batch`.

        Args:
            loc_preds: ``Tensor[N, A, 4]`` offsets.
            cls_logits: ``Tensor[N, A, C]`` raw class logits (softmax is applied here).
            top_k: candidates kept per class and image before NMS (by score).
            clip: clip boxes to the input image ``[0, input_size]``.

        Returns:
            N dicts with ``boxes`` ``Tensor[K, 4]`` xyxy input pixels, ``labels`` ``Tensor[K]`` int64 0-based,
            ``scores`` ``Tensor[K]``; sorted by decreasing score; ``K <= max_detections``.
        """
        return postprocess.decode_batch(loc_preds, cls_logits, self.decode_anchors(loc_preds.device),
                                        score_thresh=score_thresh, nms_thresh=nms_thresh, top_k=top_k,
                                        max_detections=max_detections, clip=clip)
