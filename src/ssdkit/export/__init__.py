"""Export to ONNX (fp32 / int8) / OpenVINO (fp32 / int8) / torch.export / TorchScript / safetensors, each with a
parity check against eager PyTorch (``ssdkit export``).

One module per format (``onnx``, ``quantize`` for ONNX int8, ``openvino``, ``pt2``, ``torchscript``, ``weights``
for safetensors), ``graph`` for what they share (the exported module, metadata, the I/O contract in its
docstring) and ``parity`` for the checks. :func:`ssdkit.backends.load_exported` runs every file written here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ssdkit.choices import EXPORT_FORMATS, INT8_FORMATS
from ssdkit.errors import SSDKitError
from ssdkit.export.graph import ExportModule, default_out, source
from ssdkit.export.onnx import export_onnx
from ssdkit.export.openvino import export_openvino
from ssdkit.export.parity import check_map, check_parity
from ssdkit.export.pt2 import export_pt2
from ssdkit.export.torchscript import export_torchscript
from ssdkit.export.weights import export_safetensors, load_safetensors

__all__ = [
    "FORMATS",
    "ExportModule",
    "export",
    "export_onnx",
    "export_openvino",
    "export_pt2",
    "export_torchscript",
    "export_safetensors",
    "load_safetensors",
    "check_parity",
    "check_map",
]

#: Every format :func:`export` writes.
FORMATS = EXPORT_FORMATS


def export(checkpoint: str | os.PathLike, format: str, out: str | os.PathLike | None = None,
           with_postprocess: bool = False, int8: bool = False, calib: Any = None, calib_count: int = 300,
           eval_count: int = 200) -> dict[str, Any]:
    """Export a checkpoint and check the result against eager PyTorch (``ssdkit export``).

    Args:
        checkpoint: an ssdkit checkpoint (or a Detector / SSD model).
        format: ``onnx``, ``openvino``, ``pt2``, ``torchscript`` or ``safetensors``.
        out: output file; default the checkpoint's path with ``[-nms][-int8]`` and ``.onnx`` / ``.xml`` / ``.pt2``
            / ``.torchscript.pt`` / ``.safetensors``.
        with_postprocess: decode + NMS in the graph (padded outputs).
        int8: static int8 (onnx: onnxruntime QDQ; openvino: NNCF), calibrated on ``calib_count`` images of the
            data spec ``calib`` (``"shapes"`` or a dataset path).
        eval_count: int8 only: images of ``calib`` (not used for calibration where enough are left) on which the
            mAP of the int8 file is compared with eager fp32.

    Returns:
        The exporter's info dict plus the parity result: fp32 files ``parity_max_box_diff``,
        ``parity_labels_agree``, ...; int8 files ``parity_map_fp32``, ``parity_map_exported``,
        ``parity_map_change`` (VOC07 mAP@0.5), ``parity_held_out``; safetensors ``max_weight_diff`` of a reload.
    """
    if format not in FORMATS:
        raise SSDKitError(f"format: unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "safetensors" and with_postprocess:
        raise SSDKitError("--with-postprocess: applies to graph formats, not to safetensors (weights only)")
    if int8 and format not in INT8_FORMATS:
        raise SSDKitError(f"--int8: available for {' and '.join(INT8_FORMATS)}, not for {format}")
    if int8 and calib is None:
        raise SSDKitError("--calib: int8 export needs calibration data (--calib shapes or a dataset path)")
    path = Path(out) if out is not None else default_out(checkpoint, format, with_postprocess, int8)
    model, cfg, names = source(checkpoint)
    if format == "safetensors":
        info = export_safetensors(checkpoint, path)
        back, cfg2, names2 = load_safetensors(path)
        ref = model.state_dict()
        info["max_weight_diff"] = max(float((v - ref[k]).abs().max()) for k, v in back.state_dict().items()
                                      if v.numel() and v.is_floating_point())
        info["metadata_agrees"] = cfg2 == cfg and names2 == names
        return info
    if int8:
        exporter = export_onnx if format == "onnx" else export_openvino
        info = exporter(checkpoint, path, with_postprocess=with_postprocess, int8=True, calib=calib,
                        calib_count=calib_count)
        from ssdkit.export.quantize import calibration_indices, open_calibration

        calibrated = calibration_indices(len(open_calibration(calib, data_cfg=cfg.data)), calib_count)
        try:
            result = check_map(checkpoint, path, calib, count=eval_count, exclude=calibrated)
        except SSDKitError as e:  # e.g. the data's classes are not the model's: the export itself is fine
            info["parity"] = f"skipped ({e})"
            return info
        info.update({f"parity_{k}": v for k, v in result.items()})
        return info
    exporter = {"onnx": export_onnx, "openvino": export_openvino, "pt2": export_pt2,
                "torchscript": export_torchscript}[format]
    info = exporter(checkpoint, path, with_postprocess=with_postprocess)
    try:
        info.update({f"parity_{k}": v for k, v in check_parity(model, path).items()})
    except SSDKitError as e:  # the runtime is missing: the export itself is fine
        info["parity"] = f"skipped ({e})"
    return info
