"""Default box <-> object matching: the notebook's / torchcv's rules, computed on a few candidates per object.

Symbols: ``A`` = number of default boxes, ``N`` = images, ``M`` = objects per image (padded), ``Q = N * M``,
``T`` = default-box types (one per level and shape), ``F`` = the largest feature-map size, ``K`` = pairs.

Rules (after chainercv's ``MultiboxCoder``):
  1. every object gets its best default box, greedily in order of decreasing IoU (a bipartite match: when two
     objects share a best box, the lower-IoU one takes its next best, so no object is lost);
  2. every other default box with IoU >= the threshold (0.5) to some object gets its best object;
  3. default boxes that an ignored object overlaps by >= the threshold, and that matched nothing, are reported
     so that the coder can mark them -1.

How it is fast: the default boxes of one level and shape form a grid, and a box's overlap with an object is
(overlap of its column) * (overlap of its row). So the boxes that can be an object's best or reach the
threshold are found per object as a few column and row ranges (:func:`_candidates`), and exact IoUs
(torchvision's arithmetic) are computed for those tens of boxes only, not all ``A``. ``tests/test_matching.py``
checks the result against a dense computation over every default box on hard scenes in four configs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch

__all__ = ["MatchAnchors", "Objects", "best_and_count", "greedy_match", "level_blocks", "match", "match_anchors",
           "objects_of"]

# the notebook's coder stops matching at IoU < 1e-6: such an object overlaps nothing
_MIN_IOU = 1e-6


def level_blocks(boxes: torch.Tensor, fm_sizes: Sequence[int], per_cell: Sequence[int]
                 ) -> Iterator[tuple[int, int, int, torch.Tensor]]:
    """Per level: (first default box, map size ``f``, shapes per cell ``k``, the level's rows of
    ``boxes[A, 4]`` viewed ``[f, f, k, 4]`` (row, column, shape)); raises ``ValueError`` unless the levels
    account for every default box."""
    start = 0
    for f, k in zip(fm_sizes, per_cell):
        yield start, f, k, boxes[start:start + f * f * k].view(f, f, k, 4)
        start += f * f * k
    if start != len(boxes):
        raise ValueError(f"default boxes: expected {start} from the feature maps, got {len(boxes)}")


class _Grid(NamedTuple):
    """The default boxes of each (level, shape) "type" as a grid: centres per column and per row, one size.

    Centre lists of smaller levels are padded with +inf. Shapes are laid out to broadcast against the
    ``[2 (x, y), T, Q]`` tensors of :func:`_candidates` without reshaping. All float32 input pixels.
    """

    centres: torch.Tensor  # [2, T, F] column centres (x), then row centres (y), increasing
    half_extent: torch.Tensor  # [2, T, 1] half the type's width, then height
    extent_yx: torch.Tensor  # [2, T, 1] the type's height, then width
    area: torch.Tensor  # [T, 1] width * height
    last: torch.Tensor  # [T, 1] float: feature-map size - 1 (index math runs in float32: faster than int64)
    size: torch.Tensor  # [T, 1] float: feature-map size
    # if evenly spaced: centre k = first + k * step; else None (then searches in ``centres``)
    first: torch.Tensor | None  # [2, T, 1]
    step: torch.Tensor | None  # [2, T, 1]
    layout: torch.Tensor  # [3, T] int64: default box index = base + row * row_stride + col * col_stride
    shift: torch.Tensor  # [4, 1] (-1, 1, 0, 0): widens the plateau range of :func:`_candidates` by a centre


def _grid_of(cxcywh: torch.Tensor, fm_sizes: Sequence[int], per_cell: Sequence[int]) -> _Grid:
    """Default boxes ``Tensor[A, 4]`` float32 ``(cx, cy, w, h)`` input pixels -> :class:`_Grid`."""
    width = max(fm_sizes)
    xs, ys, extent, layout, map_size = [], [], [], [], []
    for start, f, k, block in level_blocks(cxcywh, fm_sizes, per_cell):
        pad = torch.full((width - f,), math.inf, dtype=cxcywh.dtype, device=cxcywh.device)
        for t in range(k):
            xs.append(torch.cat([block[0, :, t, 0], pad]))
            ys.append(torch.cat([block[:, 0, t, 1], pad]))
            extent.append(block[0, 0, t, 2:])
            layout.append((start + t, f * k, k))
            map_size.append(f)
    ext = torch.stack(extent, 1)[..., None]  # [2, T, 1]
    centres = torch.stack([torch.stack(xs), torch.stack(ys)])  # [2, T, F]
    sizes = torch.tensor(map_size, dtype=cxcywh.dtype, device=cxcywh.device)  # [T]
    first = centres[:, :, :1]
    span = centres.gather(2, (sizes.long() - 1).expand(2, -1)[..., None]) - first  # [2, T, 1]
    step = torch.where(sizes[:, None] > 1, span / (sizes - 1).clamp(min=1)[:, None], 1.0)  # any step for 1 centre
    j = torch.arange(width, dtype=cxcywh.dtype, device=cxcywh.device)
    inside = j < sizes[:, None]  # [T, F]: real (not padded) centres
    even = bool(((first + j * step - centres).abs()[:, inside] <= 1e-3).all())
    return _Grid(centres, ext / 2, ext.flip(0), ext[0] * ext[1], (sizes - 1)[:, None], sizes[:, None],
                 first if even else None, step if even else None,
                 torch.tensor(layout, dtype=torch.int64, device=cxcywh.device).t().contiguous(),
                 torch.tensor([[-1.0], [1.0], [0.0], [0.0]], dtype=cxcywh.dtype, device=cxcywh.device))


class MatchAnchors(NamedTuple):
    """The default boxes on one device, as matching reads them (built by :func:`match_anchors`)."""

    # [5, A] float32 x1, y1, x2, y2, area of the xyxy boxes (the notebook's float arithmetic); contiguous rows
    # (a strided ``[:, i]`` column makes every broadcast op over ``[N, M, A]`` take the slow generic path, ~10x),
    # so one index_select fetches all a sparse IoU needs
    iou_cols: torch.Tensor
    grid: _Grid  # the default boxes as one grid per (level, shape), for finding match candidates


def match_anchors(xyxy: torch.Tensor, cxcywh: torch.Tensor, fm_sizes: Sequence[int],
                  per_cell: Sequence[int]) -> MatchAnchors:
    """:class:`MatchAnchors` of default boxes given as ``xyxy`` (``Tensor[A, 4]`` float32, the boxes IoUs are
    computed with) and ``cxcywh`` (``Tensor[A, 4]``, the grid layout), on their device; ``fm_sizes`` and
    ``per_cell`` (shapes per feature-map cell) per level."""
    x1, y1, x2, y2 = xyxy.t()
    return MatchAnchors(torch.stack([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)]), _grid_of(cxcywh, fm_sizes, per_cell))


class Objects(NamedTuple):
    """A batch's objects (``Q = N * M``, padded), float32 input pixels, laid out object-innermost: small ops on
    strided views take PyTorch's slow generic path, several times slower."""

    lo: torch.Tensor  # [2 (x, y), 1, Q] x1, y1
    hi: torch.Tensor  # [2, 1, Q] x2, y2
    size: torch.Tensor  # [2, 1, Q] w, h
    mid: torch.Tensor  # [2, 1, Q] cx, cy (the xyxy -> xywh arithmetic of ``change_box_order``)
    iou_rows: torch.Tensor  # [5, Q] x1, y1, x2, y2, area (torchvision's box_iou arithmetic)


def objects_of(boxes: torch.Tensor) -> Objects:
    """``boxes[N, M, 4]`` float32 xyxy input pixels -> :class:`Objects`."""
    q = boxes.shape[0] * boxes.shape[1]
    rows = torch.empty(5, q, dtype=boxes.dtype, device=boxes.device)
    rows[:4].copy_(boxes.reshape(q, 4).t())
    b = rows[:4].view(2, 2, 1, q)  # [lo/hi, x/y, 1, Q]
    size = b[1] - b[0]
    torch.mul(size[0, 0], size[1, 0], out=rows[4])
    return Objects(b[0], b[1], size, (b[0] + b[1]) / 2, rows)


def _candidates(grid: _Grid, obj: Objects, iou_threshold: float,
                slack: float = 1e-2, margin: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """A small superset of the (object, default box) pairs that matching needs: two ``Tensor[K]`` int64, the
    object (``image * M + object``) and the default box; a pair may appear twice.

    Per object and default-box type, the overlap with a grid box is (x overlap of its column) * (y overlap of
    its row), each a trapezoid in the box centre, symmetric about the object's centre; the type's best IoU is at
    the column and row nearest that centre. Kept, as a column range times a row range:
      * for the types whose best IoU is within ``margin`` of the object's best: the trapezoids' plateaus plus the
        nearest centre on each side (every box whose IoU can equal the object's best, whatever the rounding);
      * for the types whose best IoU reaches ``iou_threshold``: every box with IoU >= it. That needs inter >=
        t / (1 + t) * (area_a + area_b), so an x overlap >= that / min(anchor height, object height) (likewise
        for y): a range of centres.
    Bounds are loosened by ``slack`` pixels and ``margin`` (relative); exact IoUs of the candidates come after.
    Zero-area objects (and the padding) overlap nothing and get no candidates.
    """
    lo_b, hi_b, size, mid = obj.lo, obj.hi, obj.size, obj.mid  # [2, 1, Q] each
    q_count = size.shape[2]
    area_sum = grid.area + obj.iou_rows[4]  # [T, Q]
    dev = (grid.half_extent - size / 2).abs_().add_(slack)  # [2, T, Q]: half-width of the plateau
    # least overlap on each axis for IoU >= t, less the type's half extent (and slack): [2, T, Q]
    lo = torch.div(area_sum * (iou_threshold / (1 + iou_threshold) * (1 - margin)),
                   torch.minimum(grid.extent_yx, size.flip(0))).sub_(grid.half_extent + slack)
    # per axis, as start and exclusive end: the plateau [first centre >= mid - dev, less one; first > mid + dev,
    # plus one] and the threshold range [first centre >= x1 + lo - half extent; first > x2 - lo + half extent)
    ends = _first_at_least(grid, torch.stack([mid - dev, mid + dev, lo_b + lo, hi_b - lo], 2)).add_(grid.shift)
    # starts and spans [4 (x start, y start, columns, rows), T, 2 (plateau, threshold), Q]; a plateau past the
    # grid's edge keeps the centre at that edge
    ranges = ends.new_empty(4, *ends.shape[1:2], 2, q_count)
    start, span = ranges[:2], ranges[2:]
    torch.clamp(ends[:, :, 0::2], min=0, out=start).clamp_(max=grid.last[..., None])
    torch.clamp(ends[:, :, 1::2], min=1, out=span).clamp_(max=grid.size[..., None]).sub_(start).clamp_(min=0)

    # the type's best IoU: at the centre nearest the object's centre, on each axis
    c = _nearest_centre(grid, mid)  # [2, T, Q]
    ov = (torch.minimum(c + grid.half_extent, hi_b) - torch.maximum(c - grid.half_extent, lo_b)).clamp_(min=0)
    inter = ov[0] * ov[1]
    type_best = inter / (area_sum - inter)  # [T, Q]
    best = type_best.amax(0).mul_(1 - margin).clamp_(min=1e-9)  # (objects that overlap nothing: no candidate)
    keep = torch.stack([type_best >= best, type_best >= iou_threshold * (1 - margin)], 1)  # [T, 2, Q]
    count = (span[0] * span[1]).mul_(keep)  # [T, 2, Q]: candidates per (type, kind, object)

    group = count.view(-1).nonzero().squeeze(1)  # the groups (type, kind, object) with candidates
    col0, row0, ncol, nrow = ranges.view(4, -1).index_select(1, group).long()
    per = ncol * nrow
    total = int(per.sum())
    t = torch.div(group, 2 * q_count, rounding_mode="floor")
    base, row_stride, col_stride = grid.layout.index_select(1, t)
    # per group: its first default box, columns, strides, object and first candidate; then per candidate
    info = torch.stack([base + row0 * row_stride + col0 * col_stride, ncol, row_stride, col_stride,
                        group % q_count, per.cumsum(0) - per])
    first_box, ncol, row_stride, col_stride, obj_flat, first = torch.repeat_interleave(
        info, per, dim=1, output_size=total)
    j = torch.arange(total, device=group.device).sub_(first)  # the candidate's number within its group
    anchor = first_box + torch.div(j, ncol, rounding_mode="floor") * row_stride + (j % ncol) * col_stride
    return obj_flat, anchor


def _first_at_least(grid: _Grid, queries: torch.Tensor) -> torch.Tensor:
    """Index of the first grid centre >= each query, ``queries[2, T, K, Q]`` -> float32 indices, up to rounding
    (callers loosen their bounds): arithmetic on an evenly spaced grid (searchsorted is ~5x slower here; may
    go below 0 or past the map size), else a search (0 to the map size)."""
    if grid.first is None:
        num_types = grid.area.shape[0]
        at = torch.searchsorted(grid.centres.flatten(0, 1), queries.view(2 * num_types, -1), out_int32=True)
        return at.view(queries.shape).to(queries.dtype)
    return (queries - grid.first[..., None]).div_(grid.step[..., None]).ceil_()


def _nearest_centre(grid: _Grid, mid: torch.Tensor) -> torch.Tensor:
    """The grid centre nearest ``mid[2, 1, Q]`` on each axis, per type: ``Tensor[2, T, Q]`` (on an exact tie
    either; callers compare IoUs with a margin)."""
    if grid.first is None:
        right = _first_at_least(grid, mid[:, :, None].expand(-1, grid.area.shape[0], -1, -1).contiguous())[:, :, 0]
        right = torch.minimum(right, grid.last).long()
        left = (right - 1).clamp_(min=0)
        c_right, c_left = grid.centres.gather(2, right), grid.centres.gather(2, left)
        return torch.where((c_left - mid).abs_() <= (c_right - mid).abs_(), c_left, c_right)
    k = (mid - grid.first).div_(grid.step).round_().clamp_(min=0)
    return torch.minimum(k, grid.last).mul_(grid.step).add_(grid.first)


def _batched_iou(anchors: MatchAnchors, boxes: torch.Tensor) -> torch.Tensor:
    """IoU of the default boxes with ``boxes[N, M, 4]`` float32 xyxy -> ``Tensor[N, M, A]`` float32.

    Same arithmetic as ``torchvision.ops.box_iou`` (so results match it bit for bit), batched, laid out with the
    long anchor axis innermost (measured ~10x faster on CPU than the ``[N, A, M]`` layout).
    """
    # The same operations in the same order, but in place on three buffers: each fresh [N, M, A] tensor costs
    # about as much in page faults as the arithmetic itself.
    bx1, by1, bx2, by2 = (boxes[..., i, None] for i in range(4))
    ax1, ay1, ax2, ay2, area = anchors.iou_cols
    w = torch.minimum(ax2, bx2)
    tmp = torch.maximum(ax1, bx1)
    w.sub_(tmp).clamp_(min=0)
    h = torch.minimum(ay2, by2)
    torch.maximum(ay1, by1, out=tmp)
    h.sub_(tmp).clamp_(min=0)
    inter = w.mul_(h)
    area_b = (bx2 - bx1) * (by2 - by1)
    torch.add(area, area_b, out=tmp)
    return inter.div_(tmp.sub_(inter))


def _pair_iou(anchors: MatchAnchors, obj: Objects, key: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """IoU ``Tensor[K]`` float32 of objects ``key[K]`` (``image * M + object``) with default boxes ``anchor[K]``:
    :func:`_batched_iou`'s arithmetic, per pair."""
    bx1, by1, bx2, by2, area_b = obj.iou_rows.index_select(1, key)
    ax1, ay1, ax2, ay2, area = anchors.iou_cols.index_select(1, anchor)
    w = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)
    h = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0)
    inter = w * h
    return inter / ((area + area_b) - inter)


def match(anchors: MatchAnchors, boxes: torch.Tensor, obj: Objects, ignore: torch.Tensor | None,
          iou_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Match objects to default boxes by the module's rules.

    Args:
        anchors: the default boxes (:func:`match_anchors`), on the device of ``boxes``.
        boxes: ``Tensor[N, M, 4]`` float32 xyxy input pixels, padded with zero-size boxes (they match nothing).
        obj: :func:`objects_of` of ``boxes``.
        ignore: ``Tensor[N * M]`` bool, ignored objects (they match nothing), or None.
        iou_threshold: IoU at which a default box is matched to its best object.

    Returns:
        ``where``, ``who``: ``Tensor[K]`` int64 each, the default box (``image * A + box``) and the object
        (``image * M + object``) of every match, forced bipartite matches first, then the threshold matches;
        ``ignored``: ``Tensor[J]`` int64 ``image * A + box`` of the default boxes an ignored object overlaps by
        >= ``iou_threshold`` (they may also be in ``where``), or None when ``ignore`` is None.
    Exact IoUs are computed only for the candidates of :func:`_candidates` (tens per object, not ``A``).
    """
    n, m, _ = boxes.shape
    a = anchors.iou_cols.shape[1]
    dev = boxes.device
    key, c_anchor = _candidates(anchors.grid, obj, iou_threshold)  # key: image * M + object
    c_iou = _pair_iou(anchors, obj, key, c_anchor)
    if ignore is not None:
        c_ign = ignore.index_select(0, key)
        c_iou, ign_iou = c_iou.masked_fill(c_ign, -1.0), c_iou

    # each object's best default box, the lowest index on ties (as an argmax over all default boxes gives)
    best_iou = torch.full((n * m,), -1.0, device=dev).scatter_reduce_(0, key, c_iou, "amax")
    at_best = c_iou == best_iou.index_select(0, key)
    best_anchor = torch.full((n * m,), a, dtype=torch.int64, device=dev).scatter_reduce_(
        0, key, torch.where(at_best, c_anchor, a), "amin").view(n, m)
    matchable = best_iou.view(n, m) >= _MIN_IOU
    best_anchor.masked_fill_(~matchable, -1)
    # When the objects' best default boxes are all distinct, greedy bipartite matching gives each object its
    # own best box. Only images with a collision need the greedy loop (over all their IoUs).
    same = (best_anchor[:, :, None] == best_anchor[:, None, :]) & matchable[:, :, None]  # [N, M, M]
    collide = same.sum((1, 2)) > matchable.sum(1)  # more pairs than the diagonal
    f_who = (matchable & ~collide[:, None]).view(-1).nonzero().squeeze(1)  # image * M + object
    f_img = torch.div(f_who, m, rounding_mode="floor")
    f_where = best_anchor.view(-1).index_select(0, f_who).add_(f_img * a)
    if bool(collide.any()):
        sub = collide.nonzero().squeeze(1)
        ious = _batched_iou(anchors, boxes[sub])
        if ignore is not None:
            ious.masked_fill_(ignore.view(n, m)[sub, :, None], -1.0)
        greedy = greedy_match(ious)
        g_img, g_anchor = (greedy >= 0).nonzero(as_tuple=True)
        f_where = torch.cat([f_where, sub[g_img] * a + g_anchor])
        f_who = torch.cat([f_who, sub[g_img] * m + greedy[g_img, g_anchor]])

    # threshold matches: each other default box with IoU >= the threshold to a valid object gets its best one
    # (the lowest object index on ties)
    c_key = torch.div(key, m, rounding_mode="floor").mul_(a).add_(c_anchor)  # image * A + default box
    forced = torch.zeros(n * a, dtype=torch.bool, device=dev)
    forced[f_where] = True  # (torch.isin is ~5x slower than this dense mask)
    sel = ((c_iou >= iou_threshold) & ~forced.index_select(0, c_key)).nonzero().squeeze(1)
    t_where, inverse = torch.unique(c_key.index_select(0, sel), return_inverse=True)
    t_iou, t_who = c_iou.index_select(0, sel), key.index_select(0, sel)
    best = torch.full((len(t_where),), -1.0, device=dev).scatter_reduce_(0, inverse, t_iou, "amax")
    t_who = torch.full((len(t_where),), n * m, dtype=torch.int64, device=dev).scatter_reduce_(
        0, inverse, torch.where(t_iou == best.index_select(0, inverse), t_who, n * m), "amin")
    ignored = None if ignore is None else torch.unique(c_key[(ign_iou >= iou_threshold) & c_ign])
    return torch.cat([f_where, t_where]), torch.cat([f_who, t_who]), ignored


def best_and_count(anchors: MatchAnchors, boxes: torch.Tensor, iou_threshold: float,
                   chunk: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object: the best IoU with any default box and the number of default boxes with IoU >= the threshold,
    from the candidates of :func:`_candidates` (what the anchor analysis asks of every candidate config).

    Args:
        anchors: the default boxes (:func:`match_anchors`), on the device of ``boxes``.
        boxes: ``Tensor[K, 4]`` float32 xyxy input pixels.

    Returns:
        ``best_iou`` ``Tensor[K]`` float32 (0 for an object that overlaps nothing), ``count`` ``Tensor[K]`` int64:
        equal to ``box_iou(boxes, all default boxes)``'s row max and ``(>= threshold).sum(1)``.
    """
    a = anchors.iou_cols.shape[1]
    best, count = [], []
    for i in range(0, len(boxes), chunk):
        part = boxes[i:i + chunk].float()
        obj = objects_of(part[None])
        key, anchor = _candidates(anchors.grid, obj, iou_threshold)
        iou = _pair_iou(anchors, obj, key, anchor)
        best.append(torch.zeros(len(part), device=boxes.device).scatter_reduce_(0, key, iou, "amax"))
        hit = iou >= iou_threshold
        pairs = torch.unique(key[hit] * a + anchor[hit])  # a candidate may be listed twice
        count.append(torch.bincount(torch.div(pairs, a, rounding_mode="floor"), minlength=len(part)))
    if not best:
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    return torch.cat(best), torch.cat(count)


def greedy_match(ious: torch.Tensor) -> torch.Tensor:
    """Greedy bipartite match: repeatedly pair the highest remaining (default box, object) IoU, until none is
    >= 1e-6 (the notebook's loop).

    Args:
        ious: ``Tensor[n, M, A]`` float32 (an ignored object's row set to -1).

    Returns:
        ``Tensor[n, A]`` int64: the object matched to each default box, -1 for none. Ties go to the lowest
        default box, then the lowest object (the notebook's order).
    """
    n, m, a = ious.shape
    work = ious.transpose(1, 2).contiguous()  # [n, A, M]: flat argmax order = anchor-major
    index = torch.full((n, a), -1, dtype=torch.int64, device=ious.device)
    rows = torch.arange(n, device=ious.device)
    for _ in range(m):
        val, flat = work.reshape(n, -1).max(1)
        live = val >= _MIN_IOU
        if not bool(live.any()):
            break
        r = rows[live]
        anc = flat[live] // m
        obj = flat[live] % m
        index[r, anc] = obj
        work[r, anc, :] = -1.0
        work[r, :, obj] = -1.0
    return index
