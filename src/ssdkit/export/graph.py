"""What every exported file shares: the exported graph (normalisation + SSD + optional padded decode), where the
model comes from, the metadata stored with the file, example inputs.

Exported graphs need no ssdkit to run. Their input is always::

    images: float32 Tensor[N, 3, S, S], RGB, pixel values 0-255, already resized to S x S (S = model.input_size)
            with a plain bilinear resize (no letterbox; ``align_corners=False``, no antialias, as the Detector does)

Normalisation (``(x / 255 - mean) / std``, channel order) is inside the graph. Outputs:

- without postprocess: ``loc`` float32 ``[N, A, 4]`` (encoded offsets) and ``cls_logits`` float32 ``[N, A, C]``
  (raw logits, column 0 background), exactly ``SSD.forward``;
- with postprocess (softmax, box decode, per-class top-k, score threshold, per-class NMS, best ``D`` per image,
  thresholds baked from a preset, default ``evaluate``): fixed-size padded outputs, so batches stay rectangular:
  ``boxes`` float32 ``[N, D, 4]`` xyxy pixels of the S x S input, ``scores`` float32 ``[N, D]`` (decreasing),
  ``labels`` int64 ``[N, D]`` (0-based), ``num_detections`` int64 ``[N]``. Rows past ``num_detections[i]`` are
  padding: score 0, label -1, box 0. ``D = max_detections`` (200). Scale boxes by ``(W/S, H/S)`` to get original
  pixels. In ONNX, NMS is the standard ``NonMaxSuppression`` operator (batched over images and classes natively).

The ssdkit config, class names, decode settings, precision (``fp32`` / ``int8``) and this I/O description are
stored with each file (:func:`metadata`, every value a string): ONNX ``metadata_props``, TorchScript and pt2
``extra_files["ssdkit.json"]`` (one JSON object), OpenVINO ``rt_info["ssdkit"][key]`` of the ``.xml``,
safetensors ``__metadata__``. :func:`ssdkit.backends.load_exported` reads them back and refuses files without them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config, ModelConfig, config_to_dict
from ssdkit.data.preprocess import InputNormalizer
from ssdkit.errors import SSDKitError
from ssdkit.inference import Detector, resolve_preset
from ssdkit.postprocess import PaddedDecoder

__all__ = ["ExportModule", "INPUT_DOC", "SUFFIXES", "source", "prepare", "output_names", "metadata", "decode_settings",
           "example", "default_out", "info"]

INPUT_DOC = "images: float32 [N, 3, {s}, {s}] RGB 0-255, resized to {s}x{s} (bilinear, no letterbox)"


class ExportModule(nn.Module):
    """Normalisation + SSD (+ optional :class:`PaddedDecoder`): the graph that is exported.

    Input ``Tensor[N, 3, S, S]`` float32 RGB 0-255; outputs as described in the module docstring.
    """

    def __init__(self, model: nn.Module, config: ModelConfig, decode: dict | None = None,
                 onnx_nms: bool = False) -> None:
        super().__init__()
        self.normalizer = InputNormalizer(config)
        self.model = model
        self.decoder = None if decode is None else PaddedDecoder(SSDBoxCoder(config), **decode, onnx_nms=onnx_nms)
        if self.decoder is not None:
            # build the default boxes now: built inside a torch.export trace, their grid checks are data-dependent
            # guards that torch.export cannot trace
            self.decoder.coder.decode_anchors(torch.device("cpu"))

    def forward(self, images: torch.Tensor):  # noqa: ANN201
        loc, logits = self.model(self.normalizer(images))
        if self.decoder is None:
            return loc, logits
        return self.decoder(loc, logits)


def source(model_or_checkpoint: Any, class_names: Sequence[str] | None = None):
    """-> (model on CPU in eval mode, Config, class names). Accepts a checkpoint path, a Detector or an SSD."""
    if isinstance(model_or_checkpoint, (str, os.PathLike)):
        from ssdkit.checkpoint import model_from_checkpoint

        model, cfg, names = model_from_checkpoint(model_or_checkpoint, device="cpu")
        return model, cfg, tuple(class_names or names)
    if isinstance(model_or_checkpoint, Detector):
        det = model_or_checkpoint
        return det.model.cpu().eval(), Config(model=det.config), tuple(class_names or det.class_names)
    if isinstance(model_or_checkpoint, nn.Module) and isinstance(getattr(model_or_checkpoint, "config", None),
                                                                 ModelConfig):
        cfg = model_or_checkpoint.config
        names = tuple(class_names or (f"class_{i}" for i in range(cfg.num_classes - 1)))
        if len(names) != cfg.num_classes - 1:
            raise SSDKitError(f"class_names: expected {cfg.num_classes - 1} names, got {len(names)}")
        return model_or_checkpoint.cpu().eval(), Config(model=cfg), names
    raise SSDKitError(
        f"model_or_checkpoint: expected a checkpoint path, a Detector or an SSD model, "
        f"got {type(model_or_checkpoint).__name__}"
    )


def metadata(cfg: Config, class_names: Sequence[str], fmt: str, decode: dict | None,
              dynamic_batch: bool = True, precision: str = "fp32") -> dict[str, str]:
    """The metadata every exported file carries, as ``{key: str}`` (JSON strings for structured values):
    ``format`` (``ssdkit-<fmt>``), ``ssdkit_version``, ``config``, ``class_names``, ``decode`` (null = raw
    outputs), ``dynamic_batch``, ``precision``, ``input``, ``outputs``."""
    from ssdkit import __version__

    s = cfg.model.input_size
    if decode is None:
        outputs = ["loc: float32 [N, A, 4] encoded offsets", "cls_logits: float32 [N, A, C] logits, 0 = background"]
    else:
        d = decode["max_detections"]
        outputs = [
            f"boxes: float32 [N, {d}, 4] xyxy pixels of the {s}x{s} input",
            f"scores: float32 [N, {d}] decreasing, 0 = padding",
            f"labels: int64 [N, {d}] 0-based, -1 = padding",
            "num_detections: int64 [N]",
        ]
    return {
        "format": f"ssdkit-{fmt}",
        "ssdkit_version": __version__,
        "config": json.dumps(config_to_dict(cfg)),
        "class_names": json.dumps(list(class_names)),
        "decode": json.dumps(decode),
        "dynamic_batch": json.dumps(dynamic_batch),
        "precision": precision,
        "input": INPUT_DOC.format(s=s),
        "outputs": json.dumps(outputs),
    }


def prepare(model_or_checkpoint: Any, class_names: Sequence[str] | None, with_postprocess: bool, preset: str,
            overrides: dict, onnx_nms: bool = False) -> tuple[ExportModule, Config, tuple[str, ...], dict | None]:
    """What every graph exporter starts from: ``(ExportModule in eval mode, Config, class names, decode settings or
    None)``; ``onnx_nms`` picks the NMS that exports to ONNX's ``NonMaxSuppression``."""
    model, cfg, names = source(model_or_checkpoint, class_names)
    decode = decode_settings(with_postprocess, preset, overrides)
    return ExportModule(model, cfg.model, decode, onnx_nms=onnx_nms).eval(), cfg, names, decode


def output_names(decode: dict | None) -> list[str]:
    """The graph's output names: raw ``loc, cls_logits``, or the four padded postprocess outputs."""
    return ["loc", "cls_logits"] if decode is None else ["boxes", "scores", "labels", "num_detections"]


def decode_settings(with_postprocess: bool, preset: str, overrides: dict) -> dict | None:
    if not with_postprocess:
        if overrides:
            raise SSDKitError(f"{next(iter(overrides))}: decode settings need with_postprocess=True")
        return None
    return resolve_preset(preset, **overrides)


def example(cfg: ModelConfig, n: int = 2, seed: int = 0) -> torch.Tensor:
    """``n`` smooth synthetic images ``[n, 3, S, S]`` float 0-255 (gradients plus blobs), deterministic."""
    g = torch.Generator().manual_seed(seed)
    s = cfg.input_size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
    out = []
    for _ in range(n):
        a = torch.rand(3, 3, generator=g)
        img = a[:, 0, None, None] * xx + a[:, 1, None, None] * yy + a[:, 2, None, None] * (xx * yy)
        cx, cy, r = torch.rand(3, generator=g)
        blob = (((xx - cx) ** 2 + (yy - cy) ** 2) < (0.05 + 0.2 * r) ** 2).float()
        img = (img / img.amax().clamp(min=1e-6)) * (1 - blob) + blob * torch.rand(3, 1, 1, generator=g)
        out.append(img * 255)
    return torch.stack(out)


#: File name endings of each format (OpenVINO writes ``.bin`` weights beside the ``.xml``).
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors", "pt2": ".pt2",
            "openvino": ".xml"}


def default_out(checkpoint: Any, fmt: str, with_postprocess: bool, int8: bool = False) -> Path:
    """``<checkpoint stem>[-nms][-int8]<suffix>`` beside the checkpoint (``ssd...`` for in-memory models)."""
    base = Path(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else Path("ssd")
    stem = base.with_suffix("")
    tag = ("-nms" if with_postprocess else "") + ("-int8" if int8 else "")
    return stem.parent / f"{stem.name}{tag}{SUFFIXES[fmt]}"


def info(path: Any, fmt: str, decode: dict | None, cfg: Config, size: int, precision: str = "fp32") -> dict[str, Any]:
    """The exporters' return value: ``{"path", "format", "precision", "with_postprocess", "input", "outputs",
    "size_mb"}``."""
    meta = metadata(cfg, [], fmt, decode)
    return {
        "path": str(path),
        "format": fmt,
        "precision": precision,
        "with_postprocess": decode is not None,
        "input": meta["input"],
        "outputs": json.loads(meta["outputs"]),
        "size_mb": round(size / 2**20, 2),
    }
