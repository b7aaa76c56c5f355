"""Export to ONNX / TorchScript / safetensors with a parity check against eager PyTorch (``ssdkit export``).

One module per format (``onnx``, ``torchscript``, ``weights`` for safetensors), ``graph`` for what they share (the
exported module, metadata, the I/O contract in its docstring) and ``parity`` for the check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ssdkit.choices import EXPORT_FORMATS
from ssdkit.errors import SSDKitError
from ssdkit.export.graph import ExportModule, default_out, source
from ssdkit.export.onnx import export_onnx
from ssdkit.export.parity import check_parity
from ssdkit.export.torchscript import export_torchscript
from ssdkit.export.weights import export_safetensors, load_safetensors

__all__ = [
    "ExportModule",
    "export",
    "export_onnx",
    "export_torchscript",
    "export_safetensors",
    "load_safetensors",
    "check_parity",
]




def export(checkpoint: str | os.PathLike, format: str, out: str | os.PathLike | None = None,
           with_postprocess: bool = False) -> dict[str, Any]:
    """Export a checkpoint and check the result against eager PyTorch (``ssdkit export``).

    ``format``: ``onnx``, ``torchscript`` or ``safetensors``; ``out`` defaults to the checkpoint's path with
    ``.onnx`` / ``.torchscript.pt`` / ``.safetensors`` (``-nms`` added with postprocess).

    Returns:
        The exporter's info dict plus the parity result (``max_box_diff``, ``labels_agree``, ...), or for
        safetensors ``max_weight_diff`` of a reload.
    """
    if format not in EXPORT_FORMATS:
        raise SSDKitError(f"format: unknown export format {format!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    if format == "safetensors" and with_postprocess:
        raise SSDKitError("--with-postprocess: applies to onnx and torchscript, not to safetensors (weights only)")
    path = Path(out) if out is not None else default_out(checkpoint, format, with_postprocess)
    model, cfg, names = source(checkpoint)
    if format == "safetensors":
        info = export_safetensors(checkpoint, path)
        back, cfg2, names2 = load_safetensors(path)
        ref = model.state_dict()
        info["max_weight_diff"] = max(float((v - ref[k]).abs().max()) for k, v in back.state_dict().items()
                                      if v.numel() and v.is_floating_point())
        info["metadata_agrees"] = cfg2 == cfg and names2 == names
        return info
    exporter = export_onnx if format == "onnx" else export_torchscript
    info = exporter(checkpoint, path, with_postprocess=with_postprocess)
    try:
        info.update({f"parity_{k}": v for k, v in check_parity(model, path).items()})
    except SSDKitError as e:  # onnxruntime missing: the export itself is fine
        info["parity"] = f"skipped ({e})"
    return info
