"""Do the objects get default boxes? Each object's best default-box IoU, how many default boxes reach the match
threshold, coverage per size bucket, and a search for a config that covers the data (the notebook's question,
answered for a dataset)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch

from ssdkit.anchors import default_boxes_for, wh_pairs
from ssdkit.boxes import change_box_order
from ssdkit.config import ModelConfig, feature_map_sizes
from ssdkit.matching import best_and_count, match_anchors

__all__ = ["SIZE_BUCKETS", "object_boxes_at_input", "match_stats", "coverage_report", "recommend_config",
           "anchor_fit", "default_box_sizes", "with_box_sizes"]


SIZE_BUCKETS = ((0, 16), (16, 32), (32, 64), (64, 128), (128, math.inf))


def _bucket_name(lo: float, hi: float) -> str:
    return f">={lo:g}px" if math.isinf(hi) else f"{lo:g}-{hi:g}px"


def object_boxes_at_input(samples: Sequence, input_size: int) -> torch.Tensor:
    """All non-ignored ground-truth boxes resized as the eval transform resizes images: ``Tensor[K, 4]`` xyxy."""
    out = []
    for s in samples:
        if len(s) == 0:
            continue
        keep = ~s.ignore
        b = s.boxes[keep].clone()
        b[:, 0::2] *= input_size / s.width
        b[:, 1::2] *= input_size / s.height
        out.append(b)
    return torch.cat(out) if out else torch.zeros(0, 4)


def match_stats(boxes: torch.Tensor, cfg: ModelConfig, iou_threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object: best IoU with any default box and the number of default boxes with IoU >= threshold.

    Computed on the matcher's candidates (:func:`ssdkit.matching.best_and_count`: the few default boxes per object
    that can be its best or reach the threshold), equal to a dense ``box_iou`` against every default box
    (``tests/test_analysis.py``) and ~10x faster on the anchor search's 74 candidate configs.

    Args:
        boxes: ``Tensor[K, 4]`` xyxy in network-input pixels.
    Returns:
        best_iou ``Tensor[K]`` float, num_matches ``Tensor[K]`` int64.
    """
    d = default_boxes_for(cfg)
    anchors = match_anchors(change_box_order(d, "xywh2xyxy"), d, cfg.fm_sizes, cfg.num_anchors)
    return best_and_count(anchors, boxes, iou_threshold)


def coverage_report(boxes: torch.Tensor, cfg: ModelConfig, iou_threshold: float = 0.5) -> dict:
    """Coverage of ``boxes`` (input pixels) by ``cfg``'s default boxes, overall and per size bucket."""
    best, count = match_stats(boxes, cfg, iou_threshold)
    wh = boxes[:, 2:] - boxes[:, :2]
    size = (wh[:, 0] * wh[:, 1]).clamp(min=0).sqrt()
    covered = count >= 1
    buckets = []
    for lo, hi in SIZE_BUCKETS:
        m = (size >= lo) & (size < hi)
        n = int(m.sum())
        buckets.append({
            "bucket": _bucket_name(lo, hi),
            "objects": n,
            "covered": int(covered[m].sum()),
            "coverage": float(covered[m].float().mean()) if n else None,
            "mean_best_iou": float(best[m].mean()) if n else None,
            "mean_matches": float(count[m].float().mean()) if n else None,
        })
    n = len(boxes)
    return {
        "objects": n,
        "covered": int(covered.sum()),
        "coverage": float(covered.float().mean()) if n else None,
        "mean_best_iou": float(best.mean()) if n else None,
        "median_matches": float(count.float().median()) if n else None,
        "buckets": buckets,
        "best_iou": best,
        "num_matches": count,
    }


def with_box_sizes(cfg: ModelConfig, input_size: int, sizes: Sequence[float], extra: bool) -> ModelConfig:
    """``cfg`` at ``input_size`` with default-box ``sizes`` (px), steps from that input's feature-map grid, and
    the stride-4 level on or off (``extra``; it gets aspect ratios (2,)): what the anchor search builds for each
    candidate, and what auto-config uses to move a recipe to another input size."""
    fm = feature_map_sizes(cfg.arch, input_size, extra)
    steps = tuple(round(input_size / f, 3) for f in fm)
    ratios = cfg.aspect_ratios[1:] if cfg.extra_low_level else cfg.aspect_ratios
    return replace(cfg, input_size=input_size, box_sizes=tuple(round(float(v), 2) for v in sizes), steps=steps,
                   extra_low_level=extra, aspect_ratios=((2,), *ratios) if extra else ratios)


def _size_families(levels: int, lo: float, hi: float):
    """Candidate ``box_sizes`` sequences (levels + 1 values) for objects of sqrt-area ``lo``..``hi`` px."""
    for f_lo in (0.8, 1.0, 1.2):
        for f_hi in (0.9, 1.2, 1.6):
            a, b = max(1.0, lo * f_lo), max(hi * f_hi, lo * f_lo * 1.5)
            # geometric over all levels (the paper's spread)
            r = (b / a) ** (1 / levels)
            yield [a * r**k for k in range(levels + 1)]
            # dense at the finest level: level 0's pair (s0, sqrt(s0*s1)) spans the data; the coarser levels
            # keep growing by the paper's ratio (the notebook project's small-object layout)
            r2 = max(1.3, (b / a) ** 0.5)
            yield [a] + [b * r2 ** (k - 1) for k in range(1, levels + 1)]


def recommend_config(boxes_per_image: Sequence[tuple[torch.Tensor, int, int]], cfg: ModelConfig,
                     target: float = 0.95, iou_threshold: float = 0.5, max_objects: int = 1000) -> dict:
    """Search box sizes (and, when they are not enough, a larger input size) that cover the objects.

    Candidates keep the architecture. Box sizes come from two families built on the 2nd..98th percentile of
    object size: a geometric sequence over all levels (the paper's) and one dense at the finest level (for
    small objects); steps follow the feature-map grid (``input_size / fm_size``). Small objects also need a
    finer grid than 8 px: the stride-4 conv3_3 level (``extra_low_level``, ~1.3x the FLOPs of SSD300) or a larger
    input gives one, so (input 300, without then with the extra level), (400, ...), ... up to 800 are tried in
    turn: the cheapest candidate reaching ``target`` coverage wins; otherwise the best one found.

    Args:
        boxes_per_image: ``(boxes [M, 4] xyxy image pixels, width, height)`` per image.
    """
    gen = torch.Generator().manual_seed(0)
    sizes = [cfg.input_size] + [s for s in (400, 512, 600, 800) if s > cfg.input_size]
    best = None
    for input_size in sizes:
        scaled = []
        for b, w, h in boxes_per_image:
            if len(b):
                b = b.clone()
                b[:, 0::2] *= input_size / w
                b[:, 1::2] *= input_size / h
                scaled.append(b)
        if not scaled:
            return {"config": cfg, "coverage": None}
        boxes = torch.cat(scaled)
        if len(boxes) > max_objects:  # a fixed random subset keeps the search fast on large datasets
            boxes = boxes[torch.randperm(len(boxes), generator=gen)[:max_objects]]
        wh = boxes[:, 2:] - boxes[:, :2]
        s = (wh[:, 0] * wh[:, 1]).clamp(min=1e-6).sqrt()
        q_lo, q_hi = torch.quantile(s, torch.tensor([0.02, 0.98])).tolist()
        for extra in (False, True):
            levels = len(feature_map_sizes(cfg.arch, input_size, extra))
            for box_sizes in _size_families(levels, q_lo, q_hi):
                cand = with_box_sizes(cfg, input_size, box_sizes, extra)
                best_iou, count = match_stats(boxes, cand, iou_threshold)
                score = (float((count >= 1).float().mean()), float(best_iou.mean()))
                if best is None or score > best[0]:
                    best = (score, cand)
            if best[0][0] >= target:
                break
        if best[0][0] >= target:
            break
    return {"config": best[1], "coverage": best[0][0]}


def anchor_fit(samples: Sequence, cfg: ModelConfig, iou_threshold: float = 0.5, recommend: bool = True) -> dict:
    """The notebook's question for a dataset: does every object get default boxes under ``cfg``?

    Args:
        samples: :class:`ssdkit.data.sample.Sample` objects (annotations only; images are not read).
    Returns:
        JSON-able dict: overall and per-bucket coverage (objects with >= 1 default box at IoU >= threshold,
        not counting the coder's forced match), mean best IoU, and a recommended config with its coverage.
    """
    boxes = object_boxes_at_input(samples, cfg.input_size)
    report = coverage_report(boxes, cfg, iou_threshold)
    result = {k: v for k, v in report.items() if k not in ("best_iou", "num_matches")}
    result["input_size"] = cfg.input_size
    result["box_sizes"] = list(cfg.box_sizes)
    result["steps"] = list(cfg.steps)
    result["iou_threshold"] = iou_threshold
    wh = boxes[:, 2:] - boxes[:, :2]
    result["object_wh"] = wh.tolist()
    if recommend and len(boxes):
        rec = recommend_config([(s.boxes[~s.ignore], s.width, s.height) for s in samples], cfg, 0.95, iou_threshold)
        rc: ModelConfig = rec["config"]
        # report the coverage on all the data, not only on the search subset
        rec["coverage"] = coverage_report(object_boxes_at_input(samples, rc.input_size), rc, iou_threshold)["coverage"]
        result["recommended"] = {
            "input_size": rc.input_size,
            "box_sizes": list(rc.box_sizes),
            "steps": list(rc.steps),
            "extra_low_level": rc.extra_low_level,
            "aspect_ratios": [list(a) for a in rc.aspect_ratios],
            "coverage": rec["coverage"],
            "snippet": (f"model:\n  arch: {rc.arch}\n  input_size: {rc.input_size}\n"
                        f"  box_sizes: {list(rc.box_sizes)}\n  steps: {list(rc.steps)}\n"
                        + (f"  extra_low_level: true\n  aspect_ratios: {[list(a) for a in rc.aspect_ratios]}\n"
                           if rc.extra_low_level else "")),
        }
    return result


def default_box_sizes(cfg: ModelConfig) -> list[tuple[float, float]]:
    """Distinct default box ``(w, h)`` shapes of every level (for plots)."""
    out = []
    for k in range(len(cfg.fm_sizes)):
        out += wh_pairs(cfg.box_sizes[k], cfg.box_sizes[k + 1], cfg.aspect_ratios[k])
    return out
