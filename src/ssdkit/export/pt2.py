"""``torch.export`` export: an ``ExportedProgram`` file (``.pt2``), the successor of TorchScript.

The program is the :class:`~ssdkit.export.graph.ExportModule` (normalisation + SSD, + the padded decoder with
postprocess, NMS as ``torchvision::nms`` on float64 offset boxes: exact, as eager) traced by ``torch.export.export``
with a dynamic batch axis (``torch.export.Dim("N")``), saved with ``torch.export.save``; the metadata is in the
archive's extra file ``ssdkit.json`` (one JSON object, :func:`~ssdkit.export.graph.metadata`). Load with::

    files = {"ssdkit.json": ""}
    program = torch.export.load(path, extra_files=files)
    boxes, scores, labels, count = program.module()(images)   # or loc, cls_logits

Running it needs torch (and torchvision for the graph with postprocess), not ssdkit.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from ssdkit.errors import SSDKitError
from ssdkit.export.graph import example, info, metadata, prepare
from ssdkit.utils import atomic_write_bytes

__all__ = ["export_pt2"]

#: The largest batch the exported program accepts (a bound ``torch.export`` wants for the symbolic batch).
MAX_BATCH = 4096


def export_pt2(
    model_or_checkpoint: Any,
    path: str | os.PathLike,
    with_postprocess: bool = False,
    preset: str = "evaluate",
    class_names: Sequence[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Export a ``torch.export`` program (dynamic batch ``1 <= N <= 4096``), written atomically.

    Arguments and return value as :func:`~ssdkit.export.onnx.export_onnx` (no opset, exporter or int8).
    """
    module, cfg, names, decode = prepare(model_or_checkpoint, class_names, with_postprocess, preset, overrides)
    batch = torch.export.Dim("N", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # torchvision's deprecated meta-kernel helper, export notes
            program = torch.export.export(module, (example(cfg.model, 2),), dynamic_shapes=({0: batch},))
    except Exception as e:  # noqa: BLE001 - torch.export raises many types; the first line says what failed
        raise SSDKitError(f"pt2: torch.export failed ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})")\
            from None
    buf = io.BytesIO()
    torch.export.save(program, buf, extra_files={"ssdkit.json": json.dumps(metadata(cfg, names, "pt2", decode))})
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return info(path, "pt2", decode, cfg, len(data))
