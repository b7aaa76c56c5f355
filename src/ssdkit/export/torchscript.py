"""TorchScript export (a traced module; deprecated upstream in favour of ``torch.export``, kept while it lives)."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ssdkit.export.graph import ExportModule, decode_settings, example, info, metadata, source
from ssdkit.utils import atomic_write_bytes

__all__ = ["export_torchscript"]


def export_torchscript(
    model_or_checkpoint: Any,
    path: str | os.PathLike,
    with_postprocess: bool = False,
    preset: str = "evaluate",
    class_names: Sequence[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Export a traced TorchScript module (normalisation included; decode + NMS with ``with_postprocess``).

    Load with ``torch.jit.load(path)``; metadata is in ``extra_files={"ssdkit.json": ""}``. Batch size is dynamic.
    Arguments and return value as :func:`export_onnx`.
    """
    model, cfg, names = source(model_or_checkpoint, class_names)
    decode = decode_settings(with_postprocess, preset, overrides)
    module = ExportModule(model, cfg.model, decode, onnx_nms=False).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript deprecation notice
        traced = torch.jit.trace(module, (example(cfg.model, 2),), check_trace=False)
        buf = io.BytesIO()
        meta = json.dumps(metadata(cfg, names, "torchscript", decode))
        torch.jit.save(traced, buf, _extra_files={"ssdkit.json": meta})
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return info(path, "torchscript", decode, cfg, len(data))
