"""TorchScript export (a traced module). Deprecated upstream: PyTorch no longer develops TorchScript and points to
``torch.export``; use ``format="pt2"`` (:mod:`ssdkit.export.pt2`) for new work. Kept for existing deployments."""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ssdkit.export.graph import example, info, metadata, prepare
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
    module, cfg, names, decode = prepare(model_or_checkpoint, class_names, with_postprocess, preset, overrides)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript deprecation notice
        traced = torch.jit.trace(module, (example(cfg.model, 2),), check_trace=False)
        buf = io.BytesIO()
        meta = json.dumps(metadata(cfg, names, "torchscript", decode))
        torch.jit.save(traced, buf, _extra_files={"ssdkit.json": meta})
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return info(path, "torchscript", decode, cfg, len(data))
