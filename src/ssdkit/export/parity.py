"""Parity checks of exported files against eager PyTorch, through the one preprocessing and the one decode.

- :func:`check_parity` (fp32 files): the same images through both, detections compared box by box.
- :func:`check_map` (int8 files, where bits differ by design): VOC07 mAP@0.5 of eager fp32 and of the file on the
  same images of a dataset, and the change.
- :func:`evaluate_runner`: the mAP of any :mod:`ssdkit.backends` runner on a source (shared with
  :mod:`ssdkit.benchmark`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssdkit.backends import EagerRunner, Runner, detections, load_exported
from ssdkit.choices import EVAL_PRESET
from ssdkit.coder import SSDBoxCoder
from ssdkit.data.preprocess import resize_batch, to_image_tensor
from ssdkit.errors import SSDKitError
from ssdkit.export.graph import example, source
from ssdkit.inference import resolve_preset

__all__ = ["check_parity", "check_map", "compare_detections", "evaluate_runner", "source_detections"]


def compare_detections(ref: Sequence[dict], got: Sequence[dict]) -> tuple[float, bool]:
    """Order-free comparison of detection sets: (max box diff over matched pairs, labels and counts agree).

    Each reference detection is paired with the same-label exported detection nearest to it (scores of
    near-tied boxes may swap order between runtimes, so positions in the lists are not compared).
    """
    worst, agree = 0.0, True
    for r, g in zip(ref, got):
        if len(r["boxes"]) != len(g["boxes"]):
            agree = False
        for rb, rl in zip(r["boxes"], r["labels"].tolist()):
            same = g["boxes"][g["labels"] == rl]
            if len(same) == 0:
                agree = False
                continue
            d = float((same - rb).abs().amax(1).min())
            if d > 1.0:  # no exported box of this class near it: a different detection
                agree = False
            worst = max(worst, d)
    return worst, agree


def check_parity(
    model_or_checkpoint: Any,
    exported: str | os.PathLike,
    images: Sequence[Any] | None = None,
    preset: str = "evaluate",
    **overrides: Any,
) -> dict[str, Any]:
    """Run eager PyTorch and the exported file (any :func:`~ssdkit.backends.load_exported` format) on the same
    images.

    Args:
        model_or_checkpoint: the eager reference (checkpoint path, Detector or SSD model).
        exported: a file written by ``ssdkit export``.
        images: images in any :func:`~ssdkit.inference.to_image_tensor` form (any size; resized as the Detector
            does); default: 4 synthetic images. Run as one batch (image by image for fixed-batch files).
        preset, overrides: decode settings for raw-output files (files with postprocess use their baked ones).

    Returns:
        ``{"runtime", "images", "max_box_diff" (px of the S x S input), "labels_agree", "detections" (eager count),
        "max_output_diff" (raw files only: loc and logits)}``.
    """
    model, cfg, _ = source(model_or_checkpoint)
    runner, _, _, _ = load_exported(exported)
    if images is None:
        batch = example(cfg.model, 4, seed=1)
    else:
        batch = resize_batch([to_image_tensor(im).cpu() for im in images], cfg.model.input_size).float()
    settings = runner.decode if runner.decode is not None else resolve_preset(preset, **overrides)
    coder = SSDBoxCoder(cfg.model)
    loc, logits = EagerRunner(model, cfg.model, channels_last=False)(batch)
    ref = coder.decode_batch(loc, logits, **settings, clip=True)
    outs = runner(batch)
    result: dict[str, Any] = {"runtime": runner.runtime, "images": len(batch)}
    if runner.decode is None:
        result["max_output_diff"] = max(float((outs[0] - loc).abs().max()), float((outs[1] - logits).abs().max()))
    worst, agree = compare_detections(ref, detections(runner, outs, coder, settings))
    result.update(max_box_diff=worst, labels_agree=agree, detections=sum(len(r["boxes"]) for r in ref))
    return result


def source_detections(runner: Runner, config: Any, src, indices: Sequence[int], batch: int = 8,
                      preset: str = EVAL_PRESET) -> tuple[list[dict], list[dict]]:
    """Run ``runner`` over ``src``'s images at ``indices`` -> (detections in original image pixels, ground truths).

    Each image: decoded to uint8 RGB, resized to ``S x S`` (:func:`resize_batch`), batched as float 0-255, run,
    decoded (:func:`ssdkit.backends.detections`, preset ``evaluate``), boxes scaled by ``(W/S, H/S)`` and clipped:
    what ``ssdkit evaluate`` does. Ground truths are the source's samples as annotated.
    """
    coder = SSDBoxCoder(config)
    settings = resolve_preset(preset)
    s = float(config.input_size)
    dets: list[dict] = []
    gts: list[dict] = []
    for start in range(0, len(indices), batch):
        chunk = list(indices[start:start + batch])
        imgs = [to_image_tensor(src.load_image(i)) for i in chunk]
        x = resize_batch(imgs, config.input_size).float()
        for i, im, det in zip(chunk, imgs, detections(runner, runner(x), coder, settings)):
            h, w = im.shape[1:]
            scale = torch.tensor([w / s, h / s, w / s, h / s])
            limit = torch.tensor([w, h, w, h], dtype=torch.float32)
            dets.append({**det, "boxes": torch.minimum((det["boxes"] * scale).clamp(min=0), limit)})
            sample = src.sample(i)
            gts.append({"boxes": sample.boxes, "labels": sample.labels, "ignore": sample.ignore})
    return dets, gts


def evaluate_runner(runner: Runner, config: Any, class_names: Sequence[str], src, indices: Sequence[int] | None = None,
                    batch: int = 8) -> dict[str, Any]:
    """VOC07 11-point mAP@0.5 of ``runner`` on ``src`` (all images, or ``indices``): the
    :func:`ssdkit.metrics.evaluate_voc` result dict (``map``, ``ap`` per class, ...)."""
    from ssdkit.metrics import evaluate_voc

    indices = list(range(len(src))) if indices is None else list(indices)
    if not indices:
        raise SSDKitError("data: no images to evaluate on")
    dets, gts = source_detections(runner, config, src, indices, batch)
    return evaluate_voc(dets, gts, len(class_names), class_names=list(class_names),
                        pixel_offset=getattr(src, "format", "") == "voc")


def check_map(
    model_or_checkpoint: Any,
    exported: str | os.PathLike | Runner,
    data: Any,
    count: int = 200,
    exclude: Sequence[int] = (),
    batch: int = 8,
) -> dict[str, Any]:
    """The accuracy check of int8 files: VOC07 mAP@0.5 of eager fp32 and of ``exported`` on the same images.

    Args:
        model_or_checkpoint: the fp32 reference.
        exported: the file (or an already loaded runner).
        data: data spec (``"shapes"``: its validation scenes; a dataset path) or a source.
        count: images evaluated, spread evenly over those not in ``exclude``.
        exclude: indices not to evaluate on (the calibration images); all images are used when that leaves
            none (``held_out`` is True only when ``exclude`` was given and images were left).

    Returns:
        ``{"runtime", "images", "held_out", "map_fp32", "map_exported", "map_change"}`` (``map_change`` =
        exported - fp32, in mAP units 0-1).
    """
    from ssdkit.export.quantize import calibration_indices, open_calibration

    model, cfg, names = source(model_or_checkpoint)
    runner = exported if isinstance(exported, Runner) else load_exported(Path(exported))[0]
    src = open_calibration(data, names, cfg.data)
    skip = set(exclude)
    pool = [i for i in range(len(src)) if i not in skip]
    held_out = bool(skip) and bool(pool)
    pool = pool or list(range(len(src)))
    indices = [pool[i] for i in calibration_indices(len(pool), count)]
    ref = evaluate_runner(EagerRunner(model, cfg.model, channels_last=False), cfg.model, names, src, indices, batch)
    got = evaluate_runner(runner, cfg.model, names, src, indices, batch)
    return {"runtime": runner.runtime, "images": len(indices), "held_out": held_out, "map_fp32": ref["map"],
            "map_exported": got["map"], "map_change": got["map"] - ref["map"]}
