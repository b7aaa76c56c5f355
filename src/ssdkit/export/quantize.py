"""Static int8 quantization of an exported ONNX graph (onnxruntime ``quantize_static``), calibrated on the user's
images through ssdkit's own preprocessing.

Calibration: ``calib_count`` images spread evenly over the data spec (:func:`ssdkit.data.sources.build_source`:
``"shapes"`` or a dataset path), each decoded to uint8 RGB and resized to ``S x S`` by
:func:`~ssdkit.data.preprocess.resize_image` (the one preprocessing), fed as ``float32 [1, 3, S, S]`` 0-255: the
graph's input, normalisation inside. MinMax ranges, QDQ format, per-channel symmetric int8 weights, asymmetric
uint8 activations (U8S8: the fast form on x86 with VNNI; no saturation problem there).

What is quantized: ``Conv`` (with its ``Relu``, which the quantizer folds into the output range) and ``MaxPool``:
the VGG trunk, the extras and the ``loc`` / ``cls`` heads. What stays float32, and why (measured with
``keep_fp32`` variants, VOC07 mAP@0.5 change int8 - fp32 on 48 shapes scenes, width 0.125 / 0.25 models whose
heads were fitted to those scenes; MinMax calibration on the same scenes):

- L2Norm on conv4_3 (``Pow``, ``ReduceSum``, ``Clip``, ``Sqrt``, ``Div``, ``Mul``): a per-pixel division by the
  channel norm; quantized, the norms of weakly activated pixels round to a few levels and every conv4_3 source
  feature is rescaled wrongly: **-6.1 / -1.4 points** with these ops int8, against -0.2 / -0.2 without.
  Kept float32 (``keep_fp32=("l2norm",)``; its ops are also outside the quantized op types).
- the input normalisation and, in graphs with postprocess, the whole decoder (softmax, box decode, top-k,
  ``NonMaxSuppression``): scores near the 0.01 threshold and box corners need float precision; none is a Conv.
- the ``Reshape``/``Transpose``/``Concat`` that flatten the head outputs: left unquantized, so the heads' int8
  results are dequantized once and no Q/DQ pair sits between layout ops (badly placed QDQ nodes are what makes
  int8 slower than fp32, onnxruntime issue #6732).

The heads were tried float32 too (``keep_fp32=("heads", "l2norm")``): -0.17 / -0.15 points, no better than int8
heads (+0.07 / -0.03: within noise), and slower (63 vs 38 ms/img at width 0.25, batch 8: float32 convs with 16-126
output channels after a dequantize of the whole feature map), so they are int8 by default.

Speed (full SSD300, 21 classes, JPEG to detections, batch 8, 2 threads of a shared Sapphire Rapids VM with VNNI and
AMX, onnxruntime 1.32): fp32 202 ms/img, int8 60 ms/img (3.4x); batch 1: 206 vs 74. With this placement int8 is
not the slower one; quantizing ``Relu`` with its Conv matters (left out, the Q/DQ pairs around each Relu cost 40%).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssdkit.config import Config
from ssdkit.data.preprocess import resize_batch, to_image_tensor
from ssdkit.errors import SSDKitError

__all__ = ["KEEP_FP32", "calibration_indices", "calibration_batches", "fp32_nodes", "quantize_onnx"]

#: Node-name prefixes (of ssdkit's exported graphs) of the layers kept in float32 by default.
KEEP_FP32: dict[str, tuple[str, ...]] = {
    "heads": ("/model/loc_layers.", "/model/cls_layers."),
    "l2norm": ("/model/extractor/norm4/",),
}
#: Operator types that are quantized (all others stay float32).
QUANTIZED_OPS = ("Conv", "Relu", "MaxPool")


def calibration_indices(size: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(size)`` (all of them when ``count >= size``)."""
    if count < 1:
        raise SSDKitError(f"calib_count: must be >= 1, got {count}")
    if size < 1:
        raise SSDKitError("calib: the calibration data has no images")
    if count >= size:
        return list(range(size))
    return sorted({int(round(v)) for v in np.linspace(0, size - 1, count)})


def open_calibration(calib: Any, class_names: Sequence[str] | None = None, data_cfg=None):  # noqa: ANN001
    """The source of a data spec: ``"shapes"`` (its validation scenes, generated with ``data_cfg``'s shapes
    settings: pass the checkpoint's, so they are the scenes it was validated on; ``class_names`` picks those
    shapes), a dataset path (``class_names`` fixes the label order), or a ready source (returned as is)."""
    if hasattr(calib, "load_image") and hasattr(calib, "__len__"):
        return calib
    from ssdkit.data.sources import build_source

    classes = None if class_names is None else list(class_names)
    if isinstance(calib, str) and calib == "shapes":
        return build_source(calib, data_cfg, split="val", classes=classes)
    return build_source(str(calib), classes=classes)


def calibration_batches(source, indices: Sequence[int], size: int, batch: int = 1):
    """Yield ``float32 [b, 3, S, S]`` RGB 0-255 batches of ``source``'s images at ``indices`` (the one
    preprocessing: decode to uint8, :func:`resize_batch` to ``S x S``, then float)."""
    for start in range(0, len(indices), batch):
        imgs = [to_image_tensor(source.load_image(i)) for i in indices[start:start + batch]]
        yield resize_batch(imgs, size).float()


def fp32_nodes(model, keep: Sequence[str] = ("l2norm",)) -> list[str]:
    """Names of the nodes of ``model`` (an ``onnx.ModelProto``) that ``keep`` (keys of :data:`KEEP_FP32`) keeps
    in float32."""
    unknown = [k for k in keep if k not in KEEP_FP32]
    if unknown:
        raise SSDKitError(f"keep_fp32: unknown layer group {unknown[0]!r}; expected some of {', '.join(KEEP_FP32)}")
    prefixes = tuple(p for k in keep for p in KEEP_FP32[k])
    return [n.name for n in model.graph.node if n.name.startswith(prefixes)]


def quantize_onnx(
    data: bytes,
    calib: Any,
    cfg: Config,
    calib_count: int = 300,
    keep_fp32: Sequence[str] = ("l2norm",),
    per_channel: bool = True,
) -> tuple[bytes, dict[str, Any]]:
    """Quantize a serialized fp32 ssdkit ONNX graph to int8 (QDQ) -> ``(int8 model bytes, info)``.

    Args:
        data: the fp32 graph (input ``images float32 [N, 3, S, S]`` RGB 0-255).
        calib: data spec (``"shapes"``: its validation scenes; or a dataset path) or a source with
            ``load_image(i)`` and ``len()``.
        cfg: the model's config (input size ``S``).
        calib_count: calibration images (spread evenly over the data).
        keep_fp32: layer groups (keys of :data:`KEEP_FP32`) left in float32; see the module docstring.
        per_channel: per-output-channel weight scales.

    Returns:
        The int8 model and ``{"calibration_images": int, "fp32_nodes": [node names], "quantized_ops": [...]}``.
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise SSDKitError("int8 export needs onnxruntime and onnx: pip install 'ssdkit[export]'") from None
    source = open_calibration(calib, data_cfg=cfg.data)
    indices = calibration_indices(len(source), calib_count)
    size = cfg.model.input_size

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = calibration_batches(source, indices, size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.batches, None)
            return None if x is None else {"images": x.numpy()}

    with tempfile.TemporaryDirectory() as tmp:
        src, pre, out = (Path(tmp) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(data)
        # shape inference + onnxruntime's basic graph optimisations first, as onnxruntime recommends
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        excluded = fp32_nodes(onnx.load(str(pre)), keep_fp32)
        try:
            quantize_static(
                str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
        except Exception as e:  # noqa: BLE001 - a bad calibration image surfaces from inside onnxruntime
            if isinstance(e, SSDKitError):
                raise
            msg = str(e).splitlines()[0][:200] if str(e) else ""
            raise SSDKitError(f"calib: int8 calibration failed ({type(e).__name__}: {msg})") from None
        result = out.read_bytes()
    return result, {"calibration_images": len(indices), "fp32_nodes": excluded, "quantized_ops": list(QUANTIZED_OPS)}
