"""Export to ONNX / TorchScript / safetensors, and the parity check against eager PyTorch.

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

The ssdkit config, class names, decode settings and this I/O description are stored with each file: ONNX
``metadata_props``, TorchScript ``extra_files["ssdkit.json"]``, safetensors ``__metadata__``.

ONNX uses PyTorch's TorchScript-based exporter (``dynamo=False``): the ``torch.export`` one needs onnxscript,
which is not a dependency; it warns of deprecation, which is silenced here.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config, ModelConfig, config_from_dict, config_to_dict
from ssdkit.data.preprocess import InputNormalizer, resize_batch, to_image_tensor
from ssdkit.errors import CheckpointError, SSDKitError
from ssdkit.inference import Detector, resolve_preset
from ssdkit.postprocess import PaddedDecoder
from ssdkit.utils import atomic_write_bytes

__all__ = [
    "ExportModule",
    "PaddedDecoder",
    "export",
    "export_onnx",
    "export_torchscript",
    "export_safetensors",
    "load_safetensors",
    "check_parity",
]

FORMATS = ("onnx", "torchscript", "safetensors")
_INPUT_DOC = "images: float32 [N, 3, {s}, {s}] RGB 0-255, resized to {s}x{s} (bilinear, no letterbox)"


# ----------------------------------------------------------------------------------------------------------------
# graph modules


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

    def forward(self, images: torch.Tensor):  # noqa: ANN201
        loc, logits = self.model(self.normalizer(images))
        if self.decoder is None:
            return loc, logits
        return self.decoder(loc, logits)


# ----------------------------------------------------------------------------------------------------------------
# sources and metadata


def _source(model_or_checkpoint: Any, class_names: Sequence[str] | None = None):
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


def _metadata(cfg: Config, class_names: Sequence[str], fmt: str, decode: dict | None,
              dynamic_batch: bool = True) -> dict[str, str]:
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
        "input": _INPUT_DOC.format(s=s),
        "outputs": json.dumps(outputs),
    }


def _decode_settings(with_postprocess: bool, preset: str, overrides: dict) -> dict | None:
    if not with_postprocess:
        if overrides:
            raise SSDKitError(f"{next(iter(overrides))}: decode settings need with_postprocess=True")
        return None
    return resolve_preset(preset, **overrides)


def _example(cfg: ModelConfig, n: int = 2, seed: int = 0) -> torch.Tensor:
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


def _default_out(checkpoint: Any, fmt: str, with_postprocess: bool) -> Path:
    base = Path(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else Path("ssd")
    stem = base.with_suffix("")
    tag = "-nms" if with_postprocess else ""
    suffix = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}[fmt]
    return stem.parent / f"{stem.name}{tag}{suffix}"


# ----------------------------------------------------------------------------------------------------------------
# exporters


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
    model, cfg, names = _source(model_or_checkpoint, class_names)
    decode = _decode_settings(with_postprocess, preset, overrides)
    module = ExportModule(model, cfg.model, decode, onnx_nms=True).eval()
    outputs = ["loc", "cls_logits"] if decode is None else ["boxes", "scores", "labels", "num_detections"]
    example = _example(cfg.model, 2 if dynamic_batch else 1)
    dynamic_axes = {name: {0: "N"} for name in ["images", *outputs]} if dynamic_batch else None
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=outputs, dynamic_axes=dynamic_axes, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in _metadata(cfg, names, "onnx", decode, dynamic_batch).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    data = proto.SerializeToString()
    atomic_write_bytes(path, data)
    return _info(path, "onnx", decode, cfg, len(data))


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
    model, cfg, names = _source(model_or_checkpoint, class_names)
    decode = _decode_settings(with_postprocess, preset, overrides)
    module = ExportModule(model, cfg.model, decode, onnx_nms=False).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript deprecation notice
        traced = torch.jit.trace(module, (_example(cfg.model, 2),), check_trace=False)
        buf = io.BytesIO()
        meta = json.dumps(_metadata(cfg, names, "torchscript", decode))
        torch.jit.save(traced, buf, _extra_files={"ssdkit.json": meta})
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return _info(path, "torchscript", decode, cfg, len(data))


def export_safetensors(
    model_or_checkpoint: Any, path: str | os.PathLike, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Weights only, as safetensors; ``__metadata__`` holds ``config`` (JSON), ``class_names`` (JSON), version.

    Read back with :func:`load_safetensors`.
    """
    try:
        from safetensors.torch import save
    except ImportError:
        raise SSDKitError("safetensors export needs the safetensors package: pip install 'ssdkit[export]'") from None
    model, cfg, names = _source(model_or_checkpoint, class_names)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = _metadata(cfg, names, "safetensors", None)
    meta = {k: meta[k] for k in ("format", "ssdkit_version", "config", "class_names")}
    data = save(tensors, metadata=meta)
    atomic_write_bytes(path, data)
    return {"path": str(path), "format": "safetensors", "tensors": len(tensors), "size_mb": round(len(data) / 2**20, 2)}


def load_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Read a :func:`export_safetensors` file -> ``(model in eval mode, Config, class_names)``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ssdkit.models import build_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: safetensors file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0][:200]})") from None
    if meta.get("format") != "ssdkit-safetensors":
        raise CheckpointError(f"{path}: no ssdkit metadata (expected a file written by ssdkit export)")
    cfg = config_from_dict(json.loads(meta["config"]))
    names = tuple(json.loads(meta["class_names"]))
    model = build_model(cfg.model)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    return model.to(device).eval(), cfg, names


def _info(path: Any, fmt: str, decode: dict | None, cfg: Config, size: int) -> dict[str, Any]:
    meta = _metadata(cfg, [], fmt, decode)
    return {
        "path": str(path),
        "format": fmt,
        "with_postprocess": decode is not None,
        "input": meta["input"],
        "outputs": json.loads(meta["outputs"]),
        "size_mb": round(size / 2**20, 2),
    }


# ----------------------------------------------------------------------------------------------------------------
# parity


def _exported_runner(path: Path):
    """-> (run(images float32 [N, 3, S, S]) -> tuple of tensors, metadata dict)."""
    if path.suffix.lower() == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise SSDKitError("the ONNX parity check needs onnxruntime: pip install 'ssdkit[export]'") from None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = dict(sess.get_modelmeta().custom_metadata_map)
        name = sess.get_inputs()[0].name

        def run(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(torch.from_numpy(o) for o in sess.run(None, {name: x.cpu().numpy()}))

        return run, meta, "onnxruntime"
    files = {"ssdkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    meta = json.loads(files["ssdkit.json"] or "{}")

    def run_ts(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # the profiling executor's first runs (profiling, fusion) cost ~3x a plain run; a check runs only once
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return tuple(module(x.cpu()))

    return run_ts, meta, "torchscript"


def _compare(ref: Sequence[dict], got: Sequence[dict]) -> tuple[float, bool]:
    """Order-free comparison of detection sets: (max box diff over matched pairs, labels and counts agree).

    Each reference detection is paired with the same-label exported detection nearest to it (scores of
    near-tied boxes may swap order between runtimes, so positions in the lists are not compared).
    """
    worst, agree = 0.0, True
    for r, g in zip(ref, got):
        if len(r["boxes"]) != len(g["boxes"]):
            agree = False
        for rb, rl in zip(r["boxes"], r["labels"].tolist()):
            same = g["boxes"][g["labels"] == rl]
            if len(same) == 0:
                agree = False
                continue
            d = float((same - rb).abs().amax(1).min())
            if d > 1.0:  # no exported box of this class near it: a different detection
                agree = False
            worst = max(worst, d)
    return worst, agree


def check_parity(
    model_or_checkpoint: Any,
    exported: str | os.PathLike,
    images: Sequence[Any] | None = None,
    preset: str = "evaluate",
    **overrides: Any,
) -> dict[str, Any]:
    """Run eager PyTorch and the exported file (onnxruntime for ``.onnx``, else TorchScript) on the same images.

    Args:
        model_or_checkpoint: the eager reference (checkpoint path, Detector or SSD model).
        exported: a file written by :func:`export_onnx` or :func:`export_torchscript`.
        images: images in any :func:`~ssdkit.inference.to_image_tensor` form (any size; resized as the Detector
            does); default: 4 synthetic images. Run through the exported file as one batch when its batch axis is
            dynamic, else one by one.
        preset, overrides: decode settings for raw-output files (files with postprocess use their baked ones).

    Returns:
        ``{"runtime", "images", "max_box_diff" (px of the S x S input), "labels_agree", "detections" (eager count),
        "max_output_diff" (raw files only: loc and logits)}``.
    """
    model, cfg, _ = _source(model_or_checkpoint)
    path = Path(exported)
    if not path.is_file():
        raise SSDKitError(f"{path}: exported file not found")
    run, meta, runtime = _exported_runner(path)
    decode = json.loads(meta.get("decode", "null"))
    dynamic = json.loads(meta.get("dynamic_batch", "true"))
    if images is None:
        batch = _example(cfg.model, 4, seed=1)
    else:
        batch = resize_batch([to_image_tensor(im).cpu() for im in images], cfg.model.input_size).float()
    settings = decode if decode is not None else resolve_preset(preset, **overrides)
    coder = SSDBoxCoder(cfg.model)
    with torch.no_grad():
        loc, logits = model(InputNormalizer(cfg.model)(batch))
    ref = coder.decode_batch(loc, logits, **settings, clip=True)
    parts = [run(batch)] if dynamic else [run(batch[i:i + 1]) for i in range(len(batch))]
    outs = tuple(torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))
    result: dict[str, Any] = {"runtime": runtime, "images": len(batch)}
    if decode is None:
        result["max_output_diff"] = max(float((outs[0] - loc).abs().max()), float((outs[1] - logits).abs().max()))
        got = coder.decode_batch(outs[0], outs[1], **settings, clip=True)
    else:
        boxes, scores, labels, count = outs
        got = [{"boxes": boxes[i, :k], "scores": scores[i, :k], "labels": labels[i, :k]}
               for i, k in enumerate(count.tolist())]
    worst, agree = _compare(ref, got)
    result.update(max_box_diff=worst, labels_agree=agree, detections=sum(len(r["boxes"]) for r in ref))
    return result


# ----------------------------------------------------------------------------------------------------------------
# the `ssdkit export` command


def export(checkpoint: str | os.PathLike, format: str, out: str | os.PathLike | None = None,
           with_postprocess: bool = False) -> dict[str, Any]:
    """Export a checkpoint and check the result against eager PyTorch (``ssdkit export``).

    ``format``: ``onnx``, ``torchscript`` or ``safetensors``; ``out`` defaults to the checkpoint's path with
    ``.onnx`` / ``.torchscript.pt`` / ``.safetensors`` (``-nms`` added with postprocess).

    Returns:
        The exporter's info dict plus the parity result (``max_box_diff``, ``labels_agree``, ...), or for
        safetensors ``max_weight_diff`` of a reload.
    """
    if format not in FORMATS:
        raise SSDKitError(f"format: unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "safetensors" and with_postprocess:
        raise SSDKitError("--with-postprocess: applies to onnx and torchscript, not to safetensors (weights only)")
    path = Path(out) if out is not None else _default_out(checkpoint, format, with_postprocess)
    model, cfg, names = _source(checkpoint)
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
