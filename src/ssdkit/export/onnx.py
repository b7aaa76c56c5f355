"""ONNX export, NonMaxSuppression in the graph with postprocess; int8 through :mod:`ssdkit.export.quantize`.

Two PyTorch exporters:

- ``legacy`` (default): the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), opset 17. It
  exports both graphs; with postprocess, NMS is the standard ``NonMaxSuppression`` operator through the symbolic
  of :class:`ssdkit.postprocess.PaddedDecoder`'s ``onnx_nms``. It warns of deprecation, silenced here.
- ``dynamo``: the ``torch.export``-based exporter (``dynamo=True``, opset 18, needs the ``onnxscript`` package).
  Measured with torch 2.14.1 / onnxscript 0.7.2: the raw graph exports and matches eager (1e-5); the graph with
  postprocess does not. ``torch.export`` traces through the autograd ``Function`` whose ``symbolic`` the legacy
  exporter uses, so NMS becomes ``torchvision::nms`` on the float64 offset boxes of ``_offset_nms`` and onnxruntime
  refuses the file (``INVALID_GRAPH: Type 'tensor(double)' of input parameter ... of operator
  (NonMaxSuppression) ... is invalid``). Registering that NMS as a ``torch.library`` custom op with an ONNX
  translation (``custom_translation_table``) makes it export and match the legacy file (6e-5 px), but that op
  belongs in :mod:`ssdkit.postprocess`; until it is there, ``dynamo`` is for raw graphs only and ``legacy`` stays
  the default. Export is also slower (11 s vs 2 s for a width-0.125 model).
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
from ssdkit.export.graph import ExportModule, example, info, metadata, output_names, prepare
from ssdkit.utils import atomic_write_bytes

__all__ = ["export_onnx", "build_onnx", "onnx_bytes", "add_metadata"]

EXPORTERS = ("legacy", "dynamo")


def _need_onnx():
    try:
        import onnx
    except ImportError:
        raise SSDKitError("onnx export needs the onnx package: pip install 'ssdkit[export]'") from None
    return onnx


def onnx_bytes(module: ExportModule, images: torch.Tensor, outputs: Sequence[str], dynamic_batch: bool = True,
               opset: int = 17, exporter: str = "legacy") -> bytes:
    """The serialized ONNX graph of ``module`` (no ssdkit metadata yet), traced on ``images [n, 3, S, S]``."""
    if exporter not in EXPORTERS:
        raise SSDKitError(f"exporter: expected one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if exporter == "dynamo":
        if module.decoder is not None:
            raise SSDKitError("exporter: 'dynamo' cannot export the graph with postprocess yet (its NMS becomes a "
                              "float64 NonMaxSuppression); use exporter='legacy'")
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise SSDKitError("exporter: 'dynamo' needs the onnxscript package: pip install onnxscript") from None
        dims = ({0: torch.export.Dim("N", min=1, max=4096)},) if dynamic_batch else None
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (images,), dynamo=True, opset_version=max(opset, 18),
                                        input_names=["images"], output_names=list(outputs), dynamic_shapes=dims,
                                        verbose=False)
        return program.model_proto.SerializeToString()
    buf = io.BytesIO()
    dynamic_axes = {name: {0: "N"} for name in ["images", *outputs]} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
        torch.onnx.export(module, (images,), buf, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=list(outputs), dynamic_axes=dynamic_axes, do_constant_folding=True)
    return buf.getvalue()


def build_onnx(model_or_checkpoint: Any, with_postprocess: bool, class_names: Sequence[str] | None, preset: str,
               overrides: dict, dynamic_batch: bool = True, opset: int = 17, exporter: str = "legacy"):
    """The fp32 ONNX graph of a model -> ``(bytes without ssdkit metadata, Config, class names, decode or None)``
    (shared by the ONNX and OpenVINO exporters)."""
    module, cfg, names, decode = prepare(model_or_checkpoint, class_names, with_postprocess, preset, overrides,
                                         onnx_nms=True)
    images = example(cfg.model, 2 if dynamic_batch else 1)
    return onnx_bytes(module, images, output_names(decode), dynamic_batch, opset, exporter), cfg, names, decode


def add_metadata(data: bytes, meta: dict[str, str]) -> bytes:
    """``data`` (a serialized ONNX model) with ``meta`` set in its ``metadata_props`` (existing keys replaced)."""
    onnx = _need_onnx()
    proto = onnx.load_from_string(data)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    for key, value in [*kept, *meta.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto.SerializeToString()


def export_onnx(
    model_or_checkpoint: Any,
    path: str | os.PathLike,
    with_postprocess: bool = False,
    opset: int = 17,
    dynamic_batch: bool = True,
    preset: str = "evaluate",
    class_names: Sequence[str] | None = None,
    exporter: str = "legacy",
    int8: bool = False,
    calib: Any = None,
    calib_count: int = 300,
    **overrides: Any,
) -> dict[str, Any]:
    """Export to ONNX (atomically: built in memory, written to a temp file, renamed).

    Args:
        model_or_checkpoint: checkpoint path, :class:`~ssdkit.inference.Detector` or SSD model.
        path: the ``.onnx`` file to write.
        with_postprocess: put decode + NMS in the graph (padded outputs, see :mod:`ssdkit.export.graph`).
        opset: ONNX opset (``NonMaxSuppression`` needs >= 11; the dynamo exporter uses >= 18).
        dynamic_batch: the batch axis ``N`` is symbolic (else fixed at 1).
        preset, overrides: decode settings baked in with postprocess (``score_thresh=...``).
        exporter: ``"legacy"`` or ``"dynamo"`` (raw graphs only; see the module docstring).
        int8: quantize statically (:func:`ssdkit.export.quantize.quantize_onnx`) with ``calib_count`` images of
            the data spec ``calib`` (``"shapes"`` or a dataset path).

    Returns:
        ``{"path", "format", "precision", "with_postprocess", "input", "outputs", "size_mb"}`` (int8: also
        ``"calibration_images"``, ``"fp32_nodes"``).
    """
    _need_onnx()
    if opset < 11:
        raise SSDKitError(f"opset: NonMaxSuppression and the exported ops need opset >= 11, got {opset}")
    if int8 and calib is None:
        raise SSDKitError("calib: int8 export needs calibration data (calib='shapes' or a dataset path)")
    data, cfg, names, decode = build_onnx(model_or_checkpoint, with_postprocess, class_names, preset, overrides,
                                          dynamic_batch, opset, exporter)
    extra: dict[str, Any] = {}
    if int8:
        from ssdkit.export.quantize import quantize_onnx

        data, extra = quantize_onnx(data, calib, cfg, calib_count=calib_count)
    meta = metadata(cfg, names, "onnx", decode, dynamic_batch, precision="int8" if int8 else "fp32")
    data = add_metadata(data, {**meta, **{k: json.dumps(v) for k, v in extra.items()}})
    atomic_write_bytes(path, data)
    return {**info(path, "onnx", decode, cfg, len(data), "int8" if int8 else "fp32"), **extra}
