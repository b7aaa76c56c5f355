"""Merging the detections of overlapping windows (tiled inference): NMS / NMM / greedy-NMM with IoU or IoS, and
the rule for boxes cut by a window edge.

Merging (per image, class-wise; :func:`merge_boxes`). Detections are ranked as SAHI ranks them (decreasing score,
then increasing ``x1, y1, x2, y2``); two detections of one class *match* when their IoU or IoS (intersection over
the smaller box's area) is ``>= merge_threshold``:

- ``nms``: greedy suppression: a detection survives unless a surviving higher-ranked one matches it.
- ``greedy_nmm`` (SAHI's ``GreedyNMMPostprocess``): the survivors of ``nms`` are keepers; every other detection
  belongs to the first keeper that matches it; each keeper then takes in its detections in rank order, growing
  to the union box whenever the grown box still matches the next one (the others are dropped). Score: the
  keeper's (the maximum), label: the keeper's.
- ``nmm`` (SAHI's ``NMMPostprocess``): transitive: in rank order a detection that nothing has claimed becomes a
  keeper, and every detection claims for its keeper the unclaimed lower-scored detections it matches (exact
  duplicates too); the claimed ones are taken in (ordered by the rank of their claimer, then input order) as
  in ``greedy_nmm``.

These equal SAHI 0.12's numpy backend on the same boxes (``tests/test_tiling.py`` compares them), computed on
tensors: candidate pairs come from a sweep over boxes sorted by class and ``x1`` (boxes that cannot intersect are
never paired), greedy suppression is resolved on the matching pairs in a few rounds, and the sequential union
of SAHI's merge runs as one round per position in the keepers' lists, over all keepers at once.

Cut boxes (``window_aware``, the default). An object that crosses an inner window edge shows up twice: whole in
the window that holds it, cut off at the edge in its neighbour. NMS with IoU can keep both, since the partial
box is small against the whole one (IoU = partial area / whole area, below 0.5 once less than half the object is
inside) — a second, partial copy. IoS matches the pair (the partial lies inside the whole: IoS ~ 1), but NMS then
keeps whichever scores higher, which may be the partial one, and NMM grows a box with sloppy partial ones. So
before the merge:

1. a box within 2% of the window side of an inner window edge (an edge not on the image border) is *cut*;
2. a cut box gives way (is dropped) when a whole box of its class from another window agrees with it inside the
   two windows' common area: ``IoU(cut box ∩ common, whole box ∩ common) >= merge_threshold``. A partial view
   is exactly the whole object cropped to its window, so this holds for the whole copy and fails for an
   unrelated large box (a big false positive around a small cut object does not swallow it);
3. cut boxes of an object no window holds whole (larger than the overlap, or any object on an edge when the
   overlap is 0) are merged into their union, best score, when they agree the same way, through any chain of
   agreements (an object cut by a vertical and a horizontal edge is four pieces). Windows that only touch
   (overlap 0) agree on their common edge: both boxes reach it and their extents along it have IoU
   ``>= merge_threshold``;
4. the chosen merge then runs over the rest, matching only detections of different windows: the decoder's NMS
   already settled the detections of one window, and tiling should not change them. (``nmm`` here also claims
   equal-scored matches; SAHI's claims only exact duplicates among equal scores, so two equal-scored copies
   of one object stay apart.)
"""

from __future__ import annotations

import math

import torch

from ssdkit.data.tiles import CUT_TOLERANCE, TileSpec, cut_boxes

__all__ = ["box_overlap", "candidate_pairs", "merge_boxes", "merge_tiled"]

_EMPTY = torch.empty(0, dtype=torch.int64)


def rank_order(boxes: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``Tensor[K]`` int64 indices in SAHI's rank order: decreasing score, then increasing x1, y1, x2, y2, index."""
    order = torch.arange(scores.shape[0])
    for key in (boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -scores):
        order = order[torch.sort(key[order], stable=True).indices]
    return order


def box_overlap(a: torch.Tensor, b: torch.Tensor, match: str) -> torch.Tensor:
    """Row-wise overlap of ``a [P, 4]`` and ``b [P, 4]`` xyxy: ``"iou"`` or ``"ios"`` (intersection over the
    smaller area), SAHI's arithmetic in the inputs' dtype; 0 where the denominator is 0 (degenerate boxes)."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return _ratio(inter, area_a + area_b - inter if match == "iou" else torch.minimum(area_a, area_b))


def _ratio(num: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """``num / denom`` where ``denom > 0``, else 0 (numpy's ``divide(where=)``, as SAHI's ``_safe_ratio``)."""
    positive = denom > 0
    return torch.where(positive, num / torch.where(positive, denom, torch.ones_like(denom)), torch.zeros_like(num))


def candidate_pairs(boxes: torch.Tensor, labels: torch.Tensor,
                    groups: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every unordered pair of same-label boxes whose interiors intersect (of different ``groups`` when given).

    Args:
        boxes: ``Tensor[K, 4]`` float xyxy (image pixels). labels: ``Tensor[K]`` int64, >= 0.
        groups: ``Tensor[K]`` int64 (window ids) or None.

    Returns:
        ``(i, j)`` two ``Tensor[P]`` int64, ``i != j``, each pair once. Only pairs with overlapping x ranges are
        ever formed (a sweep over boxes sorted by label and ``x1``), so the cost follows the overlaps, not ``K^2``.
    """
    k = boxes.shape[0]
    if k < 2:
        return _EMPTY, _EMPTY
    x1, x2 = boxes[:, 0].double(), boxes[:, 2].double()
    lo = float(x1.min())
    span = 2.0 ** math.ceil(math.log2(float(x2.max()) - lo + 2))  # a power of two: label * span is exact
    base = labels.double() * span  # one span of keys per label, x from 0 within it
    start_key = (x1 - lo) + base
    order = torch.argsort(start_key, stable=True)
    sorted_keys = start_key[order]
    # boxes after position p (same label, x1 >= x1_p) start before p's x2: they overlap p in x
    end = torch.searchsorted(sorted_keys, ((x2 - lo) + base)[order], side="left")
    pos = torch.arange(k)
    count = (end - pos - 1).clamp_(min=0)
    total = int(count.sum())
    if total == 0:
        return _EMPTY, _EMPTY
    first = torch.repeat_interleave(pos, count, output_size=total)
    second = torch.arange(total) - (torch.cumsum(count, 0) - count)[first] + first + 1
    i, j = order[first], order[second]
    bi, bj = boxes[i], boxes[j]
    ok = (torch.minimum(bi[:, 2], bj[:, 2]) > torch.maximum(bi[:, 0], bj[:, 0])) \
        & (torch.minimum(bi[:, 3], bj[:, 3]) > torch.maximum(bi[:, 1], bj[:, 1]))
    if groups is not None:
        ok &= groups[i] != groups[j]
    return i[ok], j[ok]


def _greedy_keep(k: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Greedy suppression on match edges ``src -> dst`` (rank positions, ``src < dst``): ``Tensor[K]`` bool, True
    for the boxes no kept higher-ranked box matches. Each round keeps the sources nothing undecided points at."""
    suppressed = torch.zeros(k, dtype=torch.bool)
    has_in = torch.zeros(k, dtype=torch.bool)
    while len(src):
        has_in.zero_()
        has_in[dst] = True
        suppressed[dst[~has_in[src]]] = True
        live = ~(suppressed[src] | suppressed[dst])
        src, dst = src[live], dst[live]
    return ~suppressed


def _first_of(k: int, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Per box the lowest ``src`` among the edges into it; ``k`` where there is none."""
    return torch.full((k,), k, dtype=torch.int64).scatter_reduce_(0, dst, src, "amin")


def _absorb(boxes: torch.Tensor, keep: torch.Tensor, owner: torch.Tensor, order_key: torch.Tensor, match: str,
            threshold: float) -> torch.Tensor:
    """SAHI's ``_apply_merge``: each keeper takes in its boxes (``owner``) in ``order_key`` order, growing to the
    union when the grown box still matches (float64, ``>=``). Returns ``Tensor[K, 4]`` (keeper rows merged)."""
    members = (~keep).nonzero().squeeze(1)
    if len(members) == 0:
        return boxes
    members = members[torch.argsort(order_key[members], stable=True)]
    members = members[torch.argsort(owner[members], stable=True)]
    own = owner[members]
    counts = torch.bincount(own, minlength=boxes.shape[0])
    pos = torch.arange(len(members)) - (torch.cumsum(counts, 0) - counts)[own]
    exact = boxes.double()
    merged = exact.clone()
    by_pos = torch.argsort(pos, stable=True)
    for sel in torch.split(by_pos, torch.bincount(pos).tolist()):  # one member of every keeper per round
        m, o = members[sel], own[sel]
        ok = box_overlap(merged[o], exact[m], match) >= threshold
        m, o = m[ok], o[ok]
        merged[o] = torch.cat([torch.minimum(merged[o, :2], exact[m, :2]),
                               torch.maximum(merged[o, 2:], exact[m, 2:])], 1)
    return merged.to(boxes.dtype)  # min / max of the inputs: exact


def merge_boxes(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, method: str = "nms",
                match: str = "iou", threshold: float = 0.5, groups: torch.Tensor | None = None,
                claim_ties: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge one image's detections class-wise by ``"nms"``, ``"nmm"`` or ``"greedy_nmm"`` (module docstring).

    Args:
        boxes: ``Tensor[K, 4]`` float32 xyxy image pixels (CPU). scores: ``Tensor[K]``. labels: ``Tensor[K]`` int64.
        match: ``"iou"`` or ``"ios"``; a pair matches when the overlap is ``>= threshold``.
        groups: ``Tensor[K]`` int64 window ids: only boxes of different groups match; None: every pair.
        claim_ties: ``nmm`` only: a detection claims the matching later-ranked ones of equal score too. False is
            SAHI's rule, which among equal scores claims exact duplicates only (so equal-scored copies of an
            object from two windows stay apart).

    Returns:
        ``(index, boxes, scores, labels)``: the kept (keeper) detections in rank order (decreasing score):
        ``index`` ``Tensor[R]`` into the inputs, the (merged) boxes ``Tensor[R, 4]``, scores, labels.
    """
    k = scores.shape[0]
    if k == 0:
        return _EMPTY, boxes.reshape(0, 4), scores, labels
    order = rank_order(boxes, scores)
    b, s, lab = boxes[order], scores[order], labels[order]
    i, j = candidate_pairs(b, lab, None if groups is None else groups[order])
    src, dst = torch.minimum(i, j), torch.maximum(i, j)  # rank positions: src ranks first
    hit = box_overlap(b[src], b[dst], match) >= threshold
    src, dst = src[hit], dst[hit]
    rank = torch.arange(k)
    if method == "nmm":
        # SAHI's dominance: a box claims the lower-scored boxes it matches, and exact duplicates of itself
        if not claim_ties:
            claim = (s[src] > s[dst]) | ((s[src] == s[dst]) & (b[src] == b[dst]).all(1))
            src, dst = src[claim], dst[claim]
        first = _first_of(k, src, dst)
        keep = first == k
        owner = torch.where(keep, rank, first)
        while True:  # the first claimer's keeper: pointer jumping up the claim forest
            up = owner[owner]
            if torch.equal(up, owner):
                break
            owner = up
        order_key = first * k + order  # claimer's rank, then input order (SAHI appends in that order)
    elif method in ("nms", "greedy_nmm"):
        keep = _greedy_keep(k, src, dst)
        if method == "nms":
            sel = keep.nonzero().squeeze(1)
            return order[sel], b[sel], s[sel], lab[sel]
        by_keeper = keep[src]
        owner = torch.where(keep, rank, _first_of(k, src[by_keeper], dst[by_keeper]))
        order_key = rank
    else:
        raise ValueError(f"method: expected 'nms', 'nmm' or 'greedy_nmm', got {method!r}")
    merged = _absorb(b, keep, owner, order_key, match, threshold)
    sel = keep.nonzero().squeeze(1)
    return order[sel], merged[sel], s[sel], lab[sel]


def _interval_iou(a0: torch.Tensor, a1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """IoU of intervals ``[a0, a1)`` and ``[b0, b1)`` (empty ones give 0)."""
    la, lb = (a1 - a0).clamp(min=0), (b1 - b0).clamp(min=0)
    inter = (torch.minimum(a1, b1) - torch.maximum(a0, b0)).clamp(min=0)
    return _ratio(inter, la + lb - inter)


def _window_agreement(boxes: torch.Tensor, wins: torch.Tensor, tol: torch.Tensor, i: torch.Tensor,
                      j: torch.Tensor) -> torch.Tensor:
    """How well boxes ``i`` and ``j`` (of windows ``wins [K, 4]``) agree where their windows meet: the IoU of the
    two boxes cropped to the windows' common area; for windows that only touch (overlap 0), the IoU of the boxes'
    extents along the common edge, when both reach it (within ``tol [K]`` px). 0 elsewhere."""
    bi, bj = boxes[i], boxes[j]
    lo = torch.maximum(wins[i, :2], wins[j, :2])
    hi = torch.minimum(wins[i, 2:], wins[j, 2:])
    out = torch.zeros(len(i), dtype=boxes.dtype)
    for ax in (0, 1):  # ax: the axis along which the windows may only touch; the other one runs along the edge
        other = 1 - ax
        along = _interval_iou(torch.maximum(bi[:, other], lo[:, other]), torch.minimum(bi[:, other + 2], hi[:, other]),
                              torch.maximum(bj[:, other], lo[:, other]), torch.minimum(bj[:, other + 2], hi[:, other]))
        line = (hi[:, ax] == lo[:, ax]) & (hi[:, other] > lo[:, other])
        reach = line.clone()
        for b, t in ((bi, tol[i]), (bj, tol[j])):
            reach &= (b[:, ax] <= lo[:, ax] + t) & (b[:, ax + 2] >= lo[:, ax] - t)
        out = torch.where(reach, along, out)
    area = (hi > lo).all(1)

    def crop(b: torch.Tensor) -> torch.Tensor:
        c0 = torch.maximum(b[:, :2], lo)
        return torch.cat([c0, torch.maximum(torch.minimum(b[:, 2:], hi), c0)], 1)

    return torch.where(area, box_overlap(crop(bi), crop(bj), "iou"), out)


def merge_tiled(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, window_ids: torch.Tensor,
                windows: torch.Tensor, height: int, width: int, spec: TileSpec
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image's window detections -> its detections (module docstring: cut boxes, then ``spec.merge``).

    Args:
        boxes: ``Tensor[K, 4]`` float32 xyxy image pixels; scores ``Tensor[K]``; labels ``Tensor[K]`` int64.
        window_ids: ``Tensor[K]`` int64 index of each box's window in ``windows``.
        windows: ``Tensor[T, 4]`` ``(x0, y0, x1, y1)`` of the image's windows (the whole image for ``full_image``).
        height, width: of the image.

    Returns:
        ``(boxes [R, 4], scores [R], labels [R])`` in decreasing score order (not yet cut to ``max_detections``).
    """
    thr = spec.merge_threshold
    if not spec.window_aware:
        _, b, s, lab = merge_boxes(boxes, scores, labels, spec.merge, spec.match, thr)
        return b, s, lab
    wins = windows[window_ids].to(boxes.dtype)
    cut = cut_boxes(boxes, wins, height, width)
    if cut.any():
        k = len(scores)
        tol = (wins[:, 2:] - wins[:, :2]).max(1).values * CUT_TOLERANCE
        pad = torch.stack([-tol, -tol, tol, tol], 1)
        i, j = candidate_pairs(boxes + pad, labels, window_ids)  # padded: pieces that only touch pair up too
        pair_cut = cut[i] | cut[j]
        i, j = i[pair_cut], j[pair_cut]
        agree = _window_agreement(boxes, wins, tol, i, j) >= thr
        i, j = i[agree], j[agree]
        # 2. a cut box agreeing with a whole box of another window is that object's partial view
        dropped = torch.zeros_like(cut)
        dropped[i[cut[i] & ~cut[j]]] = True
        dropped[j[cut[j] & ~cut[i]]] = True
        # 3. agreeing cut boxes of an object no window holds (connected through any chain of agreements, as the
        # pieces of an object cut by two edges are) become one: the union box, the best member's score
        both = cut[i] & cut[j] & ~dropped[i] & ~dropped[j]
        i, j = i[both], j[both]
        if len(i):
            rank = torch.empty(k, dtype=torch.int64)
            by_rank = rank_order(boxes, scores)
            rank[by_rank] = torch.arange(k)
            comp = rank.clone()
            while True:  # each piece takes the best rank reachable: the component's best member
                new = comp.scatter_reduce(0, i, comp[j], "amin").scatter_reduce_(0, j, comp[i], "amin")
                if torch.equal(new, comp):
                    break
                comp = new
            into = by_rank[comp]
            taken = (into != torch.arange(k)).nonzero().squeeze(1)
            grown = boxes.clone()
            for c, how in enumerate(("amin", "amin", "amax", "amax")):
                grown[:, c].scatter_reduce_(0, into[taken], boxes[taken, c], how)
            boxes = grown
            dropped[taken] = True
        rest = (~dropped).nonzero().squeeze(1)
        boxes, scores, labels, window_ids = boxes[rest], scores[rest], labels[rest], window_ids[rest]
    _, b, s, lab = merge_boxes(boxes, scores, labels, spec.merge, spec.match, thr, groups=window_ids,
                               claim_ties=True)
    return b, s, lab
