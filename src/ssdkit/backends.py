"""Exported models as first-class runners: :func:`load_exported` reads any file ``ssdkit export`` wrote (ONNX,
OpenVINO ``.xml``, ``torch.export`` ``.pt2``, TorchScript) and returns one small callable interface for all.

A runner is a ``torch.nn.Module`` (so ``.to()``, ``.eval()`` and ``Detector(model=...)`` accept it) with::

    runner(images: Tensor[N, 3, S, S] float RGB 0-255, resized to S x S) -> tuple of CPU tensors
        raw files (``runner.decode is None``): loc float32 [N, A, 4], cls_logits float32 [N, A, C]
        files with postprocess: boxes [N, D, 4] xyxy input px, scores [N, D], labels int64 [N, D], count int64 [N]
    runner.takes_pixels = True       # normalisation is inside: feed pixels 0-255, not the normalised tensor
    runner.decode                    # the decode settings baked into the file, or None (raw outputs)
    runner.runtime, runner.precision, runner.dynamic_batch, runner.path

:func:`detections` turns either kind of output into the Detector's per-image dicts, so callers need not care
which kind of file they run. Threads: torch's count; onnxruntime's pool is told not to spin between runs.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssdkit.config import Config, config_from_dict
from ssdkit.errors import CheckpointError, SSDKitError

__all__ = ["Runner", "EagerRunner", "load_exported", "detections", "padded_detections", "check_settings"]


class Runner(nn.Module):
    """Base of every runner: ``forward(images [N, 3, S, S] float 0-255) -> tuple of tensors`` (module docstring).

    Subclasses implement ``_run(x float32 [n, 3, S, S] contiguous CPU) -> tuple``; files with a fixed batch of 1
    are run image by image here.
    """

    takes_pixels = True

    def __init__(self, meta: dict[str, str], path: str | os.PathLike | None, runtime: str) -> None:
        super().__init__()
        self.path = None if path is None else Path(path)
        self.runtime = runtime
        self.decode = json.loads(meta.get("decode", "null"))
        self.dynamic_batch = bool(json.loads(meta.get("dynamic_batch", "true")))
        self.precision = meta.get("precision", "fp32")

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise SSDKitError(f"images: expected a Tensor[N, 3, S, S], got {list(images.shape)}")
        x = images.detach().to("cpu", torch.float32).contiguous()
        if self.dynamic_batch or len(x) == 1:
            return self._run(x)
        parts = [self._run(x[i:i + 1]) for i in range(len(x))]
        return tuple(torch.cat([p[k] for p in parts]) for k in range(len(parts[0])))

    def extra_repr(self) -> str:
        kind = "raw" if self.decode is None else "postprocess"
        return f"{self.runtime}, {self.precision}, {kind}, path={self.path}"


class EagerRunner(Runner):
    """The eager PyTorch model behind the same interface (the reference the exported files are compared with).

    Args:
        model: an SSD on the CPU; config: its ModelConfig.
        precision: ``"fp32"``, or ``"bf16"`` (the model's weights cast to bfloat16; outputs returned as float32).
        channels_last: run in channels_last memory format (faster on this project's CPUs).
        compile: wrap the module in ``torch.compile``.
    """

    def __init__(self, model: nn.Module, config: Any, precision: str = "fp32", channels_last: bool = True,
                 compile: bool = False) -> None:
        from ssdkit.data.preprocess import InputNormalizer

        if precision not in ("fp32", "bf16"):
            raise SSDKitError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
        super().__init__({"precision": precision}, None, "eager")
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.normalizer = InputNormalizer(config)  # float32 arithmetic, then cast: as the Detector does
        model = model.eval().to(dtype=self.dtype, memory_format=self.memory_format)
        self.model = torch.compile(model) if compile else model

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.normalizer(x, self.memory_format).to(self.dtype)
        return tuple(o.float() for o in self.model(x))


class _OnnxRunner(Runner):
    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SSDKitError(f"{path}: running ONNX files needs onnxruntime: pip install 'ssdkit[export]'") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        # the pool spin-waits after each run by default, stealing the cores from whatever runs next
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
            raise CheckpointError(f"{path}: not a readable ONNX file ({_first_line(e)})") from None
        super().__init__(dict(self.session.get_modelmeta().custom_metadata_map), path, "onnxruntime")
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(o) for o in self.session.run(None, {self.input_name: x.numpy()}))


class _OpenVinoRunner(Runner):
    def __init__(self, path: Path, threads: int | None = None, inference_precision: str = "f32") -> None:
        from ssdkit.export.openvino import need_openvino

        ov = need_openvino()
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable OpenVINO model ({_first_line(e)})") from None
        meta = {}
        if model.has_rt_info(["ssdkit", "format"]):
            for key in ("format", "config", "class_names", "decode", "dynamic_batch", "precision", "ssdkit_version"):
                if model.has_rt_info(["ssdkit", key]):
                    meta[key] = model.get_rt_info(["ssdkit", key]).astype(str)
        super().__init__(meta, path, "openvino")
        self.meta = meta
        config = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()}
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.request.infer(x.numpy())
        return tuple(torch.from_numpy(result[o].copy()) for o in self.compiled.outputs)


class _TorchRunner(Runner):
    """pt2 (``torch.export``) and TorchScript files."""

    def __init__(self, path: Path, kind: str) -> None:
        files = {"ssdkit.json": ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if kind == "pt2":
                    module = torch.export.load(str(path), extra_files=files).module()
                else:
                    module = torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad archive
            raise CheckpointError(f"{path}: not a readable {kind} file ({_first_line(e)})") from None
        try:
            meta = json.loads(files["ssdkit.json"] or "{}")
        except json.JSONDecodeError:
            meta = {}
        super().__init__(meta, path, kind)
        self.meta = meta
        # not a registered submodule: an ExportedProgram's module refuses .train() / .eval()
        self.__dict__["program"] = module

    @torch.inference_mode()
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.runtime == "torchscript":
            # the profiling executor's first runs (profiling, fusion) cost ~3x a plain run
            with torch.jit.optimized_execution(False):
                return tuple(self.program(x))
        return tuple(self.program(x))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


def _kind(path: Path) -> str:
    """``onnx`` | ``openvino`` | ``pt2`` | ``torchscript`` from the name and, for zip archives, their members."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".xml":
        return "openvino"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any("/code/" in n for n in names):
            return "torchscript"
        if any("/models/" in n or "/data/weights/" in n for n in names) or suffix == ".pt2":
            return "pt2"
        raise CheckpointError(f"{path}: a PyTorch checkpoint, not an exported model (use Detector.from_checkpoint)")
    raise CheckpointError(f"{path}: not an exported ssdkit model (expected .onnx, .xml, .pt2 or a TorchScript file)")


def load_exported(path: str | os.PathLike, threads: int | None = None,
                  openvino_precision: str = "f32") -> tuple[Runner, Config, tuple[str, ...], dict[str, Any]]:
    """Open a file written by ``ssdkit export`` -> ``(runner, Config, class_names, info)``.

    Args:
        path: ``.onnx`` (onnxruntime, CPU), ``.xml`` (OpenVINO, CPU; its ``.bin`` beside it), ``.pt2``
            (``torch.export``) or a TorchScript file (``.torchscript.pt``).
        threads: intra-op threads (default: ``torch.get_num_threads()``).
        openvino_precision: OpenVINO's ``INFERENCE_PRECISION_HINT``: ``"f32"`` (exact), or ``"bf16"`` (its default
            on CPUs with bf16 units: faster, outputs move by ~1e-1).

    Returns:
        The runner (module docstring), the file's Config, class names, and ``info``: ``{"path", "format",
        "runtime", "precision", "with_postprocess", "decode", "dynamic_batch", "ssdkit_version"}``.

    Raises:
        CheckpointError: missing or unreadable file, or one not written by ssdkit (no ssdkit metadata).
        SSDKitError: the runtime's package is not installed (the message names the extra).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: exported model not found")
    kind = _kind(path)
    if kind == "onnx":
        runner: Runner = _OnnxRunner(path, threads)
        meta = dict(runner.session.get_modelmeta().custom_metadata_map)
    elif kind == "openvino":
        runner = _OpenVinoRunner(path, threads, openvino_precision)
        meta = runner.meta
    else:
        runner = _TorchRunner(path, kind)
        meta = runner.meta
    if not str(meta.get("format", "")).startswith("ssdkit-") or "config" not in meta:
        raise CheckpointError(f"{path}: no ssdkit metadata (not written by ssdkit export)")
    try:
        cfg = config_from_dict(json.loads(meta["config"]))
        names = tuple(json.loads(meta["class_names"]))
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: broken ssdkit metadata ({_first_line(e)})") from None
    info = {"path": str(path), "format": kind, "runtime": runner.runtime, "precision": runner.precision,
            "with_postprocess": runner.decode is not None, "decode": runner.decode,
            "dynamic_batch": runner.dynamic_batch, "ssdkit_version": meta.get("ssdkit_version")}
    return runner.eval(), cfg, names, info


def check_settings(runner: Runner, settings: dict) -> None:
    """Refuse decode settings a file with baked-in postprocess cannot give (one-line SSDKitError).

    A higher ``score_thresh`` and a lower ``max_detections`` are exact on the padded outputs (NMS keeps a box
    depending only on higher-scoring ones); a different ``nms_thresh`` or ``top_k`` needs a raw-output file.
    """
    baked = runner.decode
    if baked is None:
        return
    for key in ("nms_thresh", "top_k"):
        if float(settings[key]) != float(baked[key]):
            raise SSDKitError(f"{key}: {runner.path} has decode baked in ({key}={baked[key]}); export it without "
                              "--with-postprocess to choose it at run time")
    if settings["score_thresh"] < baked["score_thresh"] or settings["max_detections"] > baked["max_detections"]:
        raise SSDKitError(f"score_thresh / max_detections: {runner.path} was exported with score > "
                          f"{baked['score_thresh']} and {baked['max_detections']} detections; only a higher "
                          "threshold or fewer detections can be applied")


def padded_detections(outputs: tuple[torch.Tensor, ...], score_thresh: float | None = None,
                      max_detections: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Padded ``(boxes [N, D, 4], scores [N, D], labels [N, D], count [N])`` -> N dicts ``boxes [K, 4]``,
    ``labels [K]`` int64, ``scores [K]`` (decreasing), optionally cut to ``score > score_thresh`` and the best
    ``max_detections``."""
    boxes, scores, labels, count = outputs
    out = []
    for i, k in enumerate(count.tolist()):
        if score_thresh is not None:  # scores are sorted: the kept ones are a prefix
            k = int((scores[i, :k] > score_thresh).sum())
        if max_detections is not None:
            k = min(k, max_detections)
        out.append({"boxes": boxes[i, :k].float(), "labels": labels[i, :k].long(), "scores": scores[i, :k].float()})
    return out


def detections(runner: Runner, outputs: tuple[torch.Tensor, ...], coder: Any, settings: dict) -> list[dict]:
    """A runner's outputs -> N detection dicts (``boxes [K, 4]`` xyxy input px clipped, ``labels``, ``scores``).

    Raw outputs are decoded by ``coder.decode_batch`` with ``settings`` (a resolved preset); padded ones are cut to
    ``settings`` (see :func:`check_settings`).
    """
    if runner.decode is None:
        return coder.decode_batch(outputs[0], outputs[1], score_thresh=settings["score_thresh"],
                                  nms_thresh=settings["nms_thresh"], top_k=settings["top_k"],
                                  max_detections=settings["max_detections"], clip=True)
    check_settings(runner, settings)
    return padded_detections(outputs, settings["score_thresh"], settings["max_detections"])
