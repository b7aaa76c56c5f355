"""The parity check: an exported file against eager PyTorch on the same images, through the one preprocessing."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssdkit.coder import SSDBoxCoder
from ssdkit.data.preprocess import InputNormalizer, resize_batch, to_image_tensor
from ssdkit.errors import SSDKitError
from ssdkit.export.graph import example, source
from ssdkit.inference import resolve_preset

__all__ = ["check_parity"]




def _exported_runner(path: Path):
    """-> (run(images float32 [N, 3, S, S]) -> tuple of tensors, metadata dict)."""
    if path.suffix.lower() == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise SSDKitError("the ONNX parity check needs onnxruntime: pip install 'ssdkit[export]'") from None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = dict(sess.get_modelmeta().custom_metadata_map)
        name = sess.get_inputs()[0].name

        def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(torch.from_numpy(o) for o in sess.run(None, {name: x.cpu().numpy()}))

        return run, meta, "onnxruntime"
    files = {"ssdkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    meta = json.loads(files["ssdkit.json"] or "{}")

    def run_ts(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # the profiling executor's first runs (profiling, fusion) cost ~3x a plain run; a check runs only once
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return tuple(module(x.cpu()))

    return run_ts, meta, "torchscript"


def _compare(ref: Sequence[dict], got: Sequence[dict]) -> tuple[float, bool]:
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
    """Run eager PyTorch and the exported file (onnxruntime for ``.onnx``, else TorchScript) on the same images.

    Args:
        model_or_checkpoint: the eager reference (checkpoint path, Detector or SSD model).
        exported: a file written by :func:`export_onnx` or :func:`export_torchscript`.
        images: images in any :func:`~ssdkit.inference.to_image_tensor` form (any size; resized as the Detector
            does); default: 4 synthetic images. Run through the exported file as one batch when its batch axis is
            dynamic, else one by one.
        preset, overrides: decode settings for raw-output files (files with postprocess use their baked ones).

    Returns:
        ``{"runtime", "images", "max_box_diff" (px of the S x S input), "labels_agree", "detections" (eager count),
        "max_output_diff" (raw files only: loc and logits)}``.
    """
    model, cfg, _ = source(model_or_checkpoint)
    path = Path(exported)
    if not path.is_file():
        raise SSDKitError(f"{path}: exported file not found")
    run, meta, runtime = _exported_runner(path)
    decode = json.loads(meta.get("decode", "null"))
    dynamic = json.loads(meta.get("dynamic_batch", "true"))
    if images is None:
        batch = example(cfg.model, 4, seed=1)
    else:
        batch = resize_batch([to_image_tensor(im).cpu() for im in images], cfg.model.input_size).float()
    settings = decode if decode is not None else resolve_preset(preset, **overrides)
    coder = SSDBoxCoder(cfg.model)
    with torch.no_grad():
        loc, logits = model(InputNormalizer(cfg.model)(batch))
    ref = coder.decode_batch(loc, logits, **settings, clip=True)
    parts = [run(batch)] if dynamic else [run(batch[i:i + 1]) for i in range(len(batch))]
    outs = tuple(torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))
    result: dict[str, Any] = {"runtime": runtime, "images": len(batch)}
    if decode is None:
        result["max_output_diff"] = max(float((outs[0] - loc).abs().max()), float((outs[1] - logits).abs().max()))
        got = coder.decode_batch(outs[0], outs[1], **settings, clip=True)
    else:
        boxes, scores, labels, count = outs
        got = [{"boxes": boxes[i, :k], "scores": scores[i, :k], "labels": labels[i, :k]}
               for i, k in enumerate(count.tolist())]
    worst, agree = _compare(ref, got)
    result.update(max_box_diff=worst, labels_agree=agree, detections=sum(len(r["boxes"]) for r in ref))
    return result
