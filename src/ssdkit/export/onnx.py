"""ONNX export (PyTorch's TorchScript-based exporter), NonMaxSuppression in the graph with postprocess."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ssdkit.errors import SSDKitError
from ssdkit.export.graph import ExportModule, decode_settings, example, info, metadata, source
from ssdkit.utils import atomic_write_bytes

__all__ = ["export_onnx"]


def export_onnx(
    model_or_checkpoint: Any,
    path: str | os.PathLike,
    with_postprocess: bool = False,
    opset: int = 17,
    dynamic_batch: bool = True,
    preset: str = "evaluate",
    class_names: Sequence[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Export to ONNX (atomically: built in memory, written to a temp file, renamed).

    Args:
        model_or_checkpoint: checkpoint path, :class:`~ssdkit.inference.Detector` or SSD model.
        path: the ``.onnx`` file to write.
        with_postprocess: put decode + NMS in the graph (padded outputs, see the module docstring).
        opset: ONNX opset (``NonMaxSuppression`` needs >= 11).
        dynamic_batch: the batch axis ``N`` is symbolic (else fixed at 1).
        preset, overrides: decode settings baked in with postprocess (``score_thresh=...``).

    Returns:
        ``{"path", "format", "with_postprocess", "input", "outputs", "size_mb"}``.
    """
    try:
        import onnx
    except ImportError:
        raise SSDKitError("onnx export needs the onnx package: pip install 'ssdkit[export]'") from None
    if opset < 11:
        raise SSDKitError(f"opset: NonMaxSuppression and the exported ops need opset >= 11, got {opset}")
    model, cfg, names = source(model_or_checkpoint, class_names)
    decode = decode_settings(with_postprocess, preset, overrides)
    module = ExportModule(model, cfg.model, decode, onnx_nms=True).eval()
    outputs = ["loc", "cls_logits"] if decode is None else ["boxes", "scores", "labels", "num_detections"]
    images = example(cfg.model, 2 if dynamic_batch else 1)
    dynamic_axes = {name: {0: "N"} for name in ["images", *outputs]} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
        torch.onnx.export(module, (images,), buf, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=outputs, dynamic_axes=dynamic_axes, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in metadata(cfg, names, "onnx", decode, dynamic_batch).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    atomic_write_bytes(path, data)
    return info(path, "onnx", decode, cfg, len(data))
