"""Model and anchor analysis: the seed notebook's questions as functions.

* :func:`describe` — the notebook's walk through SSD300: extractor layers beside VGG16's, feature-map shapes,
  anchors per location and level, predictor widths, default-box sizes, parameters and FLOPs.
* :func:`anchor_fit` — "do small objects get default boxes?" answered for a dataset: each object's best
  default-box IoU, how many default boxes reach IoU >= 0.5, coverage per size bucket, and a recommended
  config that covers the data.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssdkit.anchors import default_boxes_for, level_of_default_boxes, wh_pairs
from ssdkit.boxes import change_box_order
from ssdkit.config import ModelConfig, feature_map_sizes
from ssdkit.errors import SSDKitError
from ssdkit.models import build_model

# ----------------------------------------------------------------------------------------------- describe


def describe(cfg: ModelConfig | str | None = None, num_classes: int | None = None) -> dict:
    """Everything the notebook printed about a model, as plain data (JSON-able) (``ssdkit describe``).

    Args:
        cfg: a :class:`ModelConfig`, or a preset name / config YAML path (default ``ssd300``).
        num_classes: overrides the config's class count (including background).

    Runs the network on the ``meta`` device: shapes and FLOPs cost no computation.
    """
    from torchvision.models.vgg import vgg16

    from ssdkit.config import model_config_from_arg, replace_model

    if not isinstance(cfg, ModelConfig):
        cfg = model_config_from_arg(cfg, num_classes)
    elif num_classes is not None:
        cfg = replace_model(cfg, num_classes=num_classes)

    with torch.device("meta"):
        model = build_model(cfg).eval()
        vgg = vgg16(num_classes=cfg.num_classes) if cfg.width_mult == 1 and not cfg.batch_norm else None
        x = torch.empty(1, 3, cfg.input_size, cfg.input_size)
        fms = model.extractor(x)
        flops = FlopCounterMode(display=False)
        with flops:
            loc, cls = model(x)
    layers = []
    ext = model.extractor
    for i, layer in enumerate(ext.features.layers):
        layers.append({"name": f"features.layers.{i}", "layer": repr(layer),
                       "vgg16": repr(vgg.features[i]) if vgg is not None else None})
    vgg_tail = {"conv5_1": 24, "conv5_2": 26, "conv5_3": 28}
    for name in ext.layer_names:
        idx = vgg_tail.get(name)
        layers.append({"name": name, "layer": repr(getattr(ext, name)),
                       "vgg16": repr(vgg.features[idx]) if (vgg is not None and idx is not None) else None})
    levels = []
    for k, (fm, f) in enumerate(zip(fms, cfg.fm_sizes)):
        pairs = wh_pairs(cfg.box_sizes[k], cfg.box_sizes[k + 1], cfg.aspect_ratios[k])
        levels.append({
            "level": k,
            "feature_map": list(fm.shape[1:]),
            "anchors_per_location": cfg.num_anchors[k],
            "default_boxes": f * f * cfg.num_anchors[k],
            "step": cfg.steps[k],
            "box_size": cfg.box_sizes[k],
            "box_wh": [[round(w, 4), round(h, 4)] for w, h in pairs],
            "loc_channels": model.loc_layers[k].out_channels,
            "cls_channels": model.cls_layers[k].out_channels,
        })
    return {
        "arch": cfg.arch,
        "input_size": cfg.input_size,
        "num_classes": cfg.num_classes,
        "width_mult": cfg.width_mult,
        "layers": layers,
        "levels": levels,
        "total_default_boxes": int(loc.shape[1]),
        "outputs": {"loc_preds": list(loc.shape), "cls_preds": list(cls.shape)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflops_per_image": flops.get_total_flops() / 1e9,  # 2 FLOPs per multiply-add
    }


def format_description(d: dict) -> str:
    """Human-readable text of :func:`describe`'s result."""
    lines = [f"{d['arch'].upper()}  input {d['input_size']}x{d['input_size']}  num_classes {d['num_classes']} "
             f"(incl. background)  width x{d['width_mult']}", "", "Extractor layers (ssdkit  vs  torchvision VGG16):"]
    for layer in d["layers"]:
        other = f"  vs  {layer['vgg16']}" if layer["vgg16"] else ""
        lines.append(f"  {layer['name']:<20} {layer['layer']}{other}")
    lines += ["", f"{'level':>5} {'feature map':>16} {'anchors/loc':>11} {'boxes':>7} {'step':>6} {'loc ch':>7} "
              f"{'cls ch':>7}  default box sizes (w x h)"]
    for lv in d["levels"]:
        fm = "x".join(str(v) for v in lv["feature_map"])
        sizes = ", ".join(f"{w:g}x{h:g}" for w, h in lv["box_wh"])
        lines.append(f"{lv['level']:>5} {fm:>16} {lv['anchors_per_location']:>11} {lv['default_boxes']:>7} "
                     f"{lv['step']:>6} {lv['loc_channels']:>7} {lv['cls_channels']:>7}  {sizes}")
    lines += [
        "",
        f"default boxes: {d['total_default_boxes']}   "
        f"(per level {' + '.join(str(lv['default_boxes']) for lv in d['levels'])})",
        f"outputs: loc_preds {d['outputs']['loc_preds']}, cls_preds {d['outputs']['cls_preds']}",
        f"parameters: {d['parameters']:,}   FLOPs per image: {d['gflops_per_image']:.2f} GFLOPs",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- anchor fit

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


def match_stats(boxes: torch.Tensor, cfg: ModelConfig, iou_threshold: float = 0.5,
                chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object: best IoU with any default box and the number of default boxes with IoU >= threshold.

    Args:
        boxes: ``Tensor[K, 4]`` xyxy in network-input pixels.
    Returns:
        best_iou ``Tensor[K]`` float, num_matches ``Tensor[K]`` int64.
    """
    from torchvision.ops import box_iou

    anchors = change_box_order(default_boxes_for(cfg), "xywh2xyxy")
    best, count = [], []
    for i in range(0, len(boxes), chunk):
        iou = box_iou(boxes[i:i + chunk], anchors)
        best.append(iou.max(1).values)
        count.append((iou >= iou_threshold).sum(1))
    if not best:
        return torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    return torch.cat(best), torch.cat(count)


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


def _with_sizes(cfg: ModelConfig, input_size: int, sizes: Sequence[float]) -> ModelConfig:
    fm = feature_map_sizes(cfg.arch, input_size)
    steps = tuple(round(input_size / f, 3) for f in fm)
    return replace(cfg, input_size=input_size, box_sizes=tuple(round(float(v), 2) for v in sizes), steps=steps)


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
    finer grid than 8 px, which only a larger input gives, so input sizes 300..800 are tried in turn: the
    cheapest (smallest input) candidate reaching ``target`` coverage wins; otherwise the best one found.

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
        levels = len(feature_map_sizes(cfg.arch, input_size))
        for box_sizes in _size_families(levels, q_lo, q_hi):
            cand = _with_sizes(cfg, input_size, box_sizes)
            best_iou, count = match_stats(boxes, cand, iou_threshold)
            score = (float((count >= 1).float().mean()), float(best_iou.mean()))
            if best is None or score > best[0]:
                best = (score, cand)
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
            "coverage": rec["coverage"],
            "snippet": (f"model:\n  arch: {rc.arch}\n  input_size: {rc.input_size}\n"
                        f"  box_sizes: {list(rc.box_sizes)}\n  steps: {list(rc.steps)}\n"),
        }
    return result


def anchors_report(
    data: str,
    model: str | ModelConfig | None = None,
    split: str | None = None,
    format: str | None = None,
    classes=None,
    iou_threshold: float = 0.5,
    plot: str | os.PathLike | None = None,
) -> dict:
    """``ssdkit anchors``: :func:`anchor_fit` of the objects of ``data`` (opened by
    :func:`ssdkit.data.sources.build_source`, annotations only) under ``model`` (a preset name, a config YAML or a
    :class:`ModelConfig`; default ``ssd300``), with an optional PNG of object sizes against the default boxes.

    Returns:
        :func:`anchor_fit`'s dict without the per-object sizes, plus ``"plot"`` (the PNG's path or None).

    Raises:
        SSDKitError: ``iou_threshold`` outside (0, 1]; DataError / ConfigError from the data or the model.
    """
    from ssdkit.config import model_config_from_arg
    from ssdkit.data.sources import build_source

    if not 0 < iou_threshold <= 1:
        raise SSDKitError(f"iou: must be in (0, 1], got {iou_threshold}")
    source = build_source(data, split=split, format=format, classes=classes)
    num_classes = max(2, len(source.class_names) + 1)
    cfg = model if isinstance(model, ModelConfig) else model_config_from_arg(model, num_classes)
    result = anchor_fit([source.sample(i) for i in range(len(source))], cfg, iou_threshold=iou_threshold)
    wh = result.pop("object_wh")
    result["plot"] = None
    if plot is not None:
        from ssdkit.viz import plot_anchor_fit

        plot_anchor_fit(wh, default_box_sizes(cfg), plot)
        result["plot"] = str(plot)
    return result


def format_anchor_fit(r: dict) -> str:
    lines = [f"objects: {r['objects']}   input {r['input_size']}   box_sizes {r['box_sizes']}"]
    if r["objects"]:
        lines.append(f"covered (>=1 default box at IoU >= {r['iou_threshold']}): {r['covered']}/{r['objects']} "
                     f"= {100 * r['coverage']:.1f}%   mean best IoU {r['mean_best_iou']:.3f}   "
                     f"median matches {r['median_matches']:g}")
        lines.append(f"{'size (sqrt area, px)':>28} {'objects':>8} {'coverage':>9} {'best IoU':>9} {'matches':>8}")
        for b in r["buckets"]:
            if b["objects"]:
                lines.append(f"{b['bucket']:>28} {b['objects']:>8} {100 * b['coverage']:>8.1f}% "
                             f"{b['mean_best_iou']:>9.3f} {b['mean_matches']:>8.1f}")
    rec = r.get("recommended")
    if rec:
        lines += ["", f"recommended config (coverage {100 * rec['coverage']:.1f}%):", rec["snippet"].rstrip()]
    if r.get("plot"):
        lines.append(f"plot: {r['plot']}")
    return "\n".join(lines)


def default_box_sizes(cfg: ModelConfig) -> list[tuple[float, float]]:
    """Distinct default box ``(w, h)`` shapes of every level (for plots)."""
    out = []
    for k in range(len(cfg.fm_sizes)):
        out += wh_pairs(cfg.box_sizes[k], cfg.box_sizes[k + 1], cfg.aspect_ratios[k])
    return out


__all__ = ["describe", "format_description", "anchor_fit", "anchors_report", "format_anchor_fit", "coverage_report",
           "match_stats", "recommend_config", "default_box_sizes", "level_of_default_boxes"]
