"""OpenVINO export (the optional ``openvino`` extra): ``.xml`` graph + ``.bin`` weights, fp32 or NNCF int8.

Path: the ONNX graph of :func:`~ssdkit.export.onnx.onnx_bytes` (legacy exporter) -> ``openvino.convert_model`` ->
``openvino.save_model(..., compress_to_fp16=False)`` (its default stores fp16 weights: 0.03 off on raw outputs).
Converting the PyTorch module directly works for the raw graph but not with postprocess (OpenVINO 2026.4: no
conversion rule for ``aten::index_put``, and ``torchvision::nms`` on float64 boxes is refused), so both go
through ONNX, where NMS is the standard operator OpenVINO converts natively.

``int8=True``: NNCF post-training quantization (``nncf.quantize``, performance preset) calibrated on ``calib``
through the one preprocessing, as :mod:`ssdkit.export.quantize`; the same layers stay float32 as there (L2Norm,
the normalisation and the decoder: ``nncf.IgnoredScope``), for the reasons measured in that module.

Metadata: ``rt_info["ssdkit"][key]`` of the ``.xml`` (:func:`~ssdkit.export.graph.metadata`), read back by
:func:`ssdkit.backends.load_exported`.

Note for running the files: OpenVINO's CPU plugin runs float32 models in bfloat16 by default on CPUs with
AVX512-BF16 / AMX (``INFERENCE_PRECISION_HINT``); ssdkit's runner asks for ``f32`` unless told otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ssdkit.errors import SSDKitError
from ssdkit.export.graph import info, metadata

__all__ = ["export_openvino", "need_openvino", "IGNORED_PATTERNS"]

#: Node-name patterns NNCF leaves in float32 (see :mod:`ssdkit.export.quantize` for why).
IGNORED_PATTERNS = (r"/model/extractor/norm4/.*", r"/normalizer/.*", r"/decoder/.*")


def need_openvino():
    """The ``openvino`` module, or a one-line SSDKitError naming the extra."""
    try:
        import openvino
    except ImportError:
        raise SSDKitError("openvino export and runtime need the openvino package: pip install 'ssdkit[openvino]'")\
            from None
    return openvino


def export_openvino(
    model_or_checkpoint: Any,
    path: str | os.PathLike,
    with_postprocess: bool = False,
    preset: str = "evaluate",
    class_names: Sequence[str] | None = None,
    int8: bool = False,
    calib: Any = None,
    calib_count: int = 300,
    **overrides: Any,
) -> dict[str, Any]:
    """Export to OpenVINO IR: ``path`` (``.xml``) and its ``.bin`` beside it, both replaced atomically (bin first).

    Arguments as :func:`~ssdkit.export.onnx.export_onnx`; ``int8`` quantizes with NNCF (needs the ``nncf``
    package) on ``calib_count`` images of ``calib``.

    Returns:
        ``{"path", "format", "precision", "with_postprocess", "input", "outputs", "size_mb"}`` (``size_mb`` of the
        ``.bin``; int8: also ``"calibration_images"``).
    """
    ov = need_openvino()
    from ssdkit.export.onnx import build_onnx

    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise SSDKitError(f"{path}: an OpenVINO model is written as NAME.xml (+ NAME.bin)")
    if int8 and calib is None:
        raise SSDKitError("calib: int8 export needs calibration data (calib='shapes' or a dataset path)")
    data, cfg, names, decode = build_onnx(model_or_checkpoint, with_postprocess, class_names, preset, overrides)
    extra: dict[str, Any] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".ssdkit-ov-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        onnx_path.write_bytes(data)
        ov_model = ov.convert_model(str(onnx_path))
        if int8:
            ov_model, extra = _nncf_quantize(ov_model, calib, cfg, calib_count)
        meta = metadata(cfg, names, "openvino", decode, precision="int8" if int8 else "fp32")
        for key, value in {**meta, **{k: str(v) for k, v in extra.items()}}.items():
            ov_model.set_rt_info(value, ["ssdkit", key])
        staged = Path(tmp) / path.name
        ov.save_model(ov_model, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    size = path.with_suffix(".bin").stat().st_size
    return {**info(path, "openvino", decode, cfg, size, "int8" if int8 else "fp32"), **extra}


def _nncf_quantize(ov_model, calib: Any, cfg, calib_count: int):
    try:
        import nncf
    except ImportError:
        raise SSDKitError("openvino int8 export needs the nncf package: pip install 'ssdkit[openvino]'") from None
    from ssdkit.export.quantize import calibration_batches, calibration_indices, open_calibration

    src = open_calibration(calib, data_cfg=cfg.data)
    indices = calibration_indices(len(src), calib_count)
    size = cfg.model.input_size

    class Batches:  # re-iterable (NNCF reads the data more than once), one image in memory at a time
        def __len__(self) -> int:
            return len(indices)

        def __iter__(self):
            return (x.numpy() for x in calibration_batches(src, indices, size))

    batches = Batches()
    scope = nncf.IgnoredScope(patterns=list(IGNORED_PATTERNS), validate=False)
    nncf.set_log_level(logging.WARNING)  # its INFO lines name every node it leaves alone
    # its progress bar goes to stderr with the rest of the progress: stdout stays the command's --json output
    with contextlib.redirect_stdout(sys.stderr):
        quantized = nncf.quantize(ov_model, nncf.Dataset(batches), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(batches), ignored_scope=scope)
    return quantized, {"calibration_images": len(batches)}
