"""Detector: a trained SSD as a callable on images; the batched step that evaluation, tiling and export parity run.

Inference path (DESIGN.md)::

    image (path / PIL / numpy / tensor) ──preprocess.to_image_tensor──▶ Tensor[3, H, W] uint8 RGB
        ──preprocess.resize_image──▶ Tensor[N, 3, S, S] uint8          (Detector.preprocess)
        ──InputNormalizer ──▶ SSD ──▶ (loc, cls_logits) ──decode_batch──▶ boxes xyxy input px   (Detector.step)
        ──x W/S, y H/S, clip──▶ boxes xyxy original px                 (Detector.to_original)

With ``tile=TileSpec(...)`` (:mod:`ssdkit.tiling`) each image is cut into windows at native resolution; every
window goes through the same resize and :meth:`Detector.step` (windows of all images in full batches), its boxes
are mapped back to image pixels and the windows' detections are merged.

The evaluator feeds :meth:`Detector.step` the eval loader's batches, which went through the same
:func:`~ssdkit.data.preprocess.resize_image`, so ``evaluate`` and ``predict`` see the same pixels and give the
same detections.

Thresholds come from named presets (:data:`ssdkit.choices.DECODE_PRESETS`), never from literals at call sites:
``visualize`` (score > 0.6, the seed notebook's) and ``evaluate`` (score > 0.01, what mAP needs).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ssdkit.choices import DECODE_PRESETS, PREDICT_PRESET
from ssdkit.coder import SSDBoxCoder
from ssdkit.config import ModelConfig
from ssdkit.data.preprocess import InputNormalizer, resize_batch, to_image_tensor
from ssdkit.data.tiles import TileSpec, resolve_tile
from ssdkit.errors import SSDKitError
from ssdkit.runtime import autocast, cpu_bf16_supported, resolve_device
from ssdkit.tiling import detect_tiled

__all__ = ["PRESETS", "Detector", "resolve_preset"]

PRESETS = DECODE_PRESETS


def resolve_preset(preset: str, **overrides: Any) -> dict[str, float | int]:
    """The decode settings of a named preset with keyword overrides (``score_thresh=0.3``) applied.

    Raises:
        SSDKitError: unknown preset name or override key, or a value out of range.
    """
    if preset not in PRESETS:
        raise SSDKitError(f"preset: unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    settings = dict(PRESETS[preset])
    for key, value in overrides.items():
        if key not in settings:
            raise SSDKitError(f"{key}: unknown decode setting; expected one of {', '.join(settings)}")
        if value is not None:
            settings[key] = type(settings[key])(value)
    if not 0 <= settings["score_thresh"] < 1:
        raise SSDKitError(f"score_thresh: must be in [0, 1), got {settings['score_thresh']}")
    if not 0 < settings["nms_thresh"] <= 1:
        raise SSDKitError(f"nms_thresh: must be in (0, 1], got {settings['nms_thresh']}")
    if settings["top_k"] < 1 or settings["max_detections"] < 1:
        raise SSDKitError(f"top_k / max_detections: must be >= 1, got {settings['top_k']} / "
                          f"{settings['max_detections']}")
    return settings


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """What a model file holds: ``(model, Config, class_names)``. An ssdkit checkpoint gives the SSD on
    ``device``; a file ``ssdkit export`` wrote gives its runner (:func:`ssdkit.backends.load_exported`).

    Raises:
        CheckpointError: a missing or unreadable file, or one ssdkit did not write.
    """
    from ssdkit.checkpoint import model_from_checkpoint

    suffix = os.fspath(path).lower()
    if suffix.endswith((".onnx", ".xml", ".pt2", ".torchscript.pt")):
        from ssdkit.backends import load_exported

        runner, cfg, names, _ = load_exported(path)
        return runner, cfg, tuple(names)
    return model_from_checkpoint(path, device=resolve_device(device))


def _check_precision(precision: str, device: torch.device, exported: bool) -> str:
    if precision not in ("fp32", "bf16"):
        raise SSDKitError(f"precision: expected 'fp32' or 'bf16', got {precision!r}")
    if precision == "bf16" and exported:
        raise SSDKitError("precision: an exported file runs at the precision it was exported with")
    if precision == "bf16" and device.type == "cpu" and not cpu_bf16_supported():
        warnings.warn("precision: this CPU has no bfloat16 support; running in float32", stacklevel=3)
        return "fp32"
    return precision


class Detector:
    """A trained SSD as a callable: images in, detections in original image pixels out.

    Args:
        model: an SSD (``forward(Tensor[N, 3, S, S] normalised) -> (loc [N, A, 4], logits [N, A, C])``).
        config: the model's :class:`ModelConfig` (input size, preprocessing, default boxes).
        class_names: ``C - 1`` names, indexed by 0-based label.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` or a ``torch.device``.
        preset: ``"visualize"`` or ``"evaluate"`` (see :data:`PRESETS`).
        batch_size: images per forward pass.
        channels_last: run the network in channels_last memory format (the model is converted in place).
            Measured faster for SSD300 end to end on this project's CPUs and the usual choice on CUDA;
            ``False`` for NCHW.
        amp: ``"none"``, ``"bf16"`` (CUDA, or CPUs with bf16 units) or ``"fp16"`` (CUDA) autocast; float32
            elsewhere.
        precision: ``"fp32"``, or ``"bf16"``: the model's weights cast to bfloat16 (measured 4.6x faster end to end
            at batch 8 on an AMX-BF16 Xeon, detections within ~1 px, mAP unchanged); where the CPU has no bf16
            units a one-line warning says so and float32 runs.
        model: may also be a runner of an exported file (:func:`ssdkit.backends.load_exported`: ONNX, OpenVINO,
            pt2, TorchScript), which normalises inside and may have decode baked in.
        tile: a :class:`~ssdkit.data.tiles.TileSpec` for tiled (sliced) inference on large images; ``batch_size``
            then counts windows per forward pass. None: each image resized whole.
        **overrides: ``score_thresh``, ``nms_thresh``, ``top_k``, ``max_detections`` over the preset's values.

    Calling it (see :meth:`__call__`) accepts one image or a list of images.
    """

    def __init__(
        self,
        model: nn.Module,
        config: ModelConfig,
        class_names: Sequence[str],
        device: str | torch.device = "cpu",
        preset: str = PREDICT_PRESET,
        batch_size: int = 8,
        channels_last: bool = True,
        amp: str = "none",
        tile: TileSpec | None = None,
        precision: str = "fp32",
        **overrides: Any,
    ) -> None:
        if len(class_names) != config.num_classes - 1:
            raise SSDKitError(
                f"class_names: expected {config.num_classes - 1} names (num_classes - 1), got {len(class_names)}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SSDKitError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
        if tile is not None and not isinstance(tile, TileSpec):
            raise SSDKitError(f"tile: expected a TileSpec or None, got {type(tile).__name__}")
        self.tile = tile
        self.device = resolve_device(device)
        self.config = config
        self.class_names = tuple(class_names)
        self.preset = preset
        self.settings = resolve_preset(preset, **overrides)
        self.batch_size = batch_size
        self.amp = amp
        autocast(amp, self.device)  # validates the name now, not at the first batch
        self.exported = bool(getattr(model, "takes_pixels", False))
        self.precision = _check_precision(precision, self.device, self.exported)
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self.memory_format = torch.channels_last if channels_last and not self.exported else torch.contiguous_format
        if self.exported:
            from ssdkit.backends import check_settings

            check_settings(model, self.settings)  # a file with decode baked in cannot give every setting
            self.model = model.eval()
        else:
            self.model = model.to(self.device, dtype=self.dtype, memory_format=self.memory_format).eval()
        self.normalizer = InputNormalizer(config).to(self.device)
        self.coder = SSDBoxCoder(config)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "auto", preset: str = PREDICT_PRESET,
        **kwargs: Any,
    ) -> Detector:
        """Build from an ssdkit checkpoint or any file ``ssdkit export`` wrote (:func:`load_model`).

        ``tile`` (default ``"auto"``): a model trained on windows (``data.tile_size``) predicts tiled on the same
        windows; ``tile=None`` runs whole images, a :class:`~ssdkit.data.tiles.TileSpec` the windows it gives.

        Raises:
            CheckpointError: a missing or unreadable file, or one ssdkit did not write.
        """
        dev = resolve_device(device)
        model, cfg, class_names = load_model(path, dev)
        if getattr(model, "takes_pixels", False):
            dev = torch.device("cpu")  # exported runners take and give CPU tensors
        tile = resolve_tile(kwargs.pop("tile", "auto"), cfg)
        return cls(model, cfg.model, class_names, device=dev, preset=preset, tile=tile, **kwargs)

    from_file = from_checkpoint

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def preprocess(self, images: Sequence[Any]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Images -> (``Tensor[N, 3, S, S]`` RGB 0-255 on the device (uint8 unless an input is float), original
        ``(H, W)`` of each).

        The one preprocessing (:mod:`ssdkit.data.preprocess`): decode/convert to uint8, resize to ``S x S``.
        """
        tensors = [to_image_tensor(im) for im in images]
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
        return resize_batch(tensors, self.input_size).to(self.device, non_blocking=True), sizes

    @torch.inference_mode()
    def step(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """The batched step: ``Tensor[N, 3, S, S]`` RGB 0-255 (uint8, or float) -> N dicts ``boxes``
        ``Tensor[K, 4]`` xyxy input px, ``labels`` ``Tensor[K]`` int64 0-based, ``scores`` ``Tensor[K]``
        (decreasing), on the device, decoded with the detector's settings."""
        s = self.settings
        if self.exported:
            from ssdkit.backends import detections

            return detections(self.model, self.model(batch.float()), self.coder, s)
        x = self.normalizer(batch.to(self.device, non_blocking=True), self.memory_format).to(self.dtype)
        with autocast(self.amp, self.device):
            loc, logits = self.model(x)
        return self.coder.decode_batch(
            loc.float(), logits.float(), score_thresh=s["score_thresh"], nms_thresh=s["nms_thresh"],
            top_k=s["top_k"], max_detections=s["max_detections"], clip=True,
        )  # fmt: skip

    def to_original(self, det: dict[str, torch.Tensor], height: int, width: int) -> dict[str, Any]:
        """One :meth:`step` result in the pixels of a ``width x height`` original image (scaled by ``W/S``,
        ``H/S``, clipped to the image), on the CPU, with ``names``."""
        s = float(self.input_size)
        boxes = det["boxes"]
        scale = torch.tensor([width / s, height / s, width / s, height / s], device=boxes.device)
        limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        boxes = torch.minimum((boxes * scale).clamp_(min=0), limit)
        labels = det["labels"].cpu()
        return {
            "boxes": boxes.cpu(),
            "labels": labels,
            "scores": det["scores"].cpu(),
            "names": [self.class_names[c] for c in labels.tolist()],
        }

    def __call__(self, images: Any, batch_size: int | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """Detect objects.

        Args:
            images: one image or a list of images; each a path, PIL image, numpy ``HxWx3`` uint8 array, or
                ``Tensor[3, H, W]`` uint8 (0-255) / float (0-1) RGB (see
                :func:`~ssdkit.data.preprocess.to_image_tensor`).
            batch_size: images (windows, when tiled) per forward pass (default: the detector's).

        Returns:
            For each image a dict: ``boxes`` ``Tensor[K, 4]`` float32 xyxy in that image's original pixels,
            ``labels`` ``Tensor[K]`` int64 0-based, ``scores`` ``Tensor[K]`` float32 (decreasing),
            ``names`` ``list[str]`` (K). One dict for a single image, a list for a list. Tensors are on the CPU.
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        bs = batch_size or self.batch_size
        if self.tile is not None:
            results = detect_tiled(self, items, self.tile, bs)
            return results[0] if single else results
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), bs):
            batch, sizes = self.preprocess(items[start:start + bs])
            for det, (h, w) in zip(self.step(batch), sizes):
                results.append(self.to_original(det, h, w))
        return results[0] if single else results
