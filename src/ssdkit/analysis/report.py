"""``ssdkit anchors``: the anchor-fit analysis of a dataset opened by name or path, as one library call."""

from __future__ import annotations

import os

from ssdkit.analysis.anchor_fit import anchor_fit, default_box_sizes
from ssdkit.config import ModelConfig
from ssdkit.errors import SSDKitError

__all__ = ["anchors_report", "format_anchor_fit", "recommend_tile"]

#: The smallest object side (px, at the network input) that SSD's stride-8 level still localises well.
MIN_INPUT_OBJECT = 12.0
#: Window sides tried, as multiples of the network input: the largest that keeps objects big enough wins.
_WINDOW_FACTORS = (4.0, 3.0, 2.0, 1.5, 1.0, 0.75, 0.5)


def recommend_tile(samples, input_size: int) -> dict:  # noqa: ANN001 - Samples
    """Should these images be tiled, and with which window? (``ssdkit anchors --tile auto``)

    Objects are measured as sqrt(area) in image pixels; resized with the whole image to ``input_size`` they
    shrink by ``input_size / image side``. When the smaller objects (10th percentile) would fall under
    :data:`MIN_INPUT_OBJECT` px and the images are clearly larger than the input, tiling is recommended with the
    largest window (from ``input_size`` x 4, 3, 2, 1.5, 1, 0.75, 0.5: a window smaller than the input is upsampled)
    that keeps them above it; else no tiling.

    Returns:
        ``{"tile": int | None, "object_px": [p10, p50, p90] image px, "image_side": median longer side,
        "at_input_untiled": p10 at the input when not tiled, "reason": str}``.
    """
    import torch

    sizes, sides = [], []
    for s in samples:
        sides.append(max(s.width, s.height))
        if len(s):
            wh = (s.boxes[:, 2:] - s.boxes[:, :2]).clamp(min=0)
            sizes.append((wh[:, 0] * wh[:, 1]).sqrt()[~s.ignore])
    if not sizes or not sum(len(v) for v in sizes):
        return {"tile": None, "object_px": None, "image_side": None, "at_input_untiled": None,
                "reason": "no objects"}
    obj = torch.cat(sizes).float()
    p10, p50, p90 = torch.quantile(obj, torch.tensor([0.1, 0.5, 0.9])).tolist()
    side = float(torch.tensor(sides, dtype=torch.float32).median())
    untiled = p10 * input_size / side
    out = {"object_px": [round(p10, 1), round(p50, 1), round(p90, 1)], "image_side": side,
           "at_input_untiled": round(untiled, 1)}
    if untiled >= MIN_INPUT_OBJECT or side <= 1.5 * input_size:
        why = "objects stay large enough when the whole image is resized" if untiled >= MIN_INPUT_OBJECT else \
            "images are not much larger than the input"
        return {**out, "tile": None, "reason": why}
    for f in _WINDOW_FACTORS:
        window = int(round(input_size * f))
        if window < side and p10 * input_size / window >= MIN_INPUT_OBJECT:
            break
    else:
        window = input_size
    return {**out, "tile": window, "reason": (
        f"objects are {p10:.0f}-{p90:.0f} px in {side:.0f} px images: {untiled:.1f} px at the {input_size} px input "
        f"untiled; windows of {window} px keep them at >= {p10 * input_size / window:.1f} px")}


def anchors_report(
    data: str,
    model: str | ModelConfig | None = None,
    split: str | None = None,
    format: str | None = None,
    classes=None,
    iou_threshold: float = 0.5,
    plot: str | os.PathLike | None = None,
    tile: int | str | None = None,
) -> dict:
    """``ssdkit anchors``: :func:`anchor_fit` of the objects of ``data`` (opened by
    :func:`ssdkit.data.sources.build_source`, annotations only) under ``model`` (a preset name, a config YAML or a
    :class:`ModelConfig`; default ``ssd300``), with an optional PNG of object sizes against the default boxes.

    ``tile``: analyse the windows of tiled training/inference instead of the whole images: a window side in
    pixels, or ``"auto"`` for :func:`recommend_tile`'s choice (which may be no tiling).

    Returns:
        :func:`anchor_fit`'s dict without the per-object sizes, plus ``"plot"`` (the PNG's path or None),
        ``"tiling"`` (:func:`recommend_tile`'s advice) and ``"window"`` (the window side analysed, None untiled).

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
    samples = [source.sample(i) for i in range(len(source))]
    advice = recommend_tile(samples, cfg.input_size)
    window = advice["tile"] if tile == "auto" else tile
    if window is not None:
        from ssdkit.data.tiles import TileSpec
        from ssdkit.data.window_source import WindowSource

        if isinstance(window, bool) or not isinstance(window, int) or window < 16:
            raise SSDKitError(f"tile: expected a window side >= 16 px or 'auto', got {tile!r}")
        windows = WindowSource(source, TileSpec(size=window))
        samples = [windows.sample(i) for i in range(len(windows))]
    result = anchor_fit(samples, cfg, iou_threshold=iou_threshold)
    result["tiling"] = advice
    result["window"] = window
    if window is not None and result.get("recommended"):
        result["recommended"]["snippet"] += f"data:\n  tile_size: {window}\n"
    wh = result.pop("object_wh")
    result["plot"] = None
    if plot is not None:
        from ssdkit.viz import plot_anchor_fit

        plot_anchor_fit(wh, default_box_sizes(cfg), plot)
        result["plot"] = str(plot)
    return result


def format_anchor_fit(r: dict) -> str:
    lines = [f"objects: {r['objects']}   input {r['input_size']}   box_sizes {r['box_sizes']}"]
    if r.get("window"):
        lines.append(f"analysed at the scale of {r['window']} px windows (tiled training and inference)")
    t = r.get("tiling") or {}
    if t.get("object_px"):
        advice = f"tile {t['tile']} (--tile {t['tile']})" if t.get("tile") else "no tiling needed"
        lines.append(f"tiling: {advice}: {t['reason']}")
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
