"""The one preprocessing: any image -> uint8 RGB -> resized to the model input -> normalised network input.

Training's eval transform, the evaluator, :class:`~ssdkit.inference.Detector`, the export parity check and tiled
inference all call these functions, so every path feeds the network the same pixels::

    path / PIL / numpy / tensor ──to_image_tensor──▶ Tensor[3, H, W] uint8 RGB
        ──resize_image (bilinear, half-pixel centres, no antialias, no letterbox)──▶ Tensor[3, S, S] uint8
        ──normalize / InputNormalizer: (x / 255 - mean) / std in the model's channel order──▶ float32 network input

Files and uint8 images stay uint8 through the resize (torch's vectorised uint8 kernel on CPU), as the training
images do: what the network sees at inference is what it was trained on. Float input (0-1) is resized in float.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssdkit.errors import SSDKitError

__all__ = ["to_image_tensor", "resize_image", "resize_batch", "SSDEvalTransform", "normalize", "InputNormalizer",
           "check_sample", "check_size"]


def to_image_tensor(image: Any) -> torch.Tensor:
    """Any supported image -> ``Tensor[3, H, W]`` RGB pixels 0-255 (on the image's device for tensors): uint8 for
    files, PIL images, uint8 arrays and tensors; float32 0-255 for float input (kept, not rounded).

    Accepted: a path (``str`` / ``Path``, decoded by :func:`ssdkit.data.image.load_image`, EXIF-rotated); a PIL
    image (any mode, converted to RGB, EXIF-rotated); a numpy ``HxWx3`` (or ``HxW`` gray) array, uint8 0-255 or
    float 0-1; a ``Tensor[3, H, W]`` (or ``[1, H, W]``) uint8 0-255 or float 0-1.

    Raises:
        DataError: an unreadable file. SSDKitError: an unsupported type, shape or value range.
    """
    if isinstance(image, (str, os.PathLike)):
        from ssdkit.data.image import load_image

        return load_image(image)
    from PIL import Image, ImageOps

    if isinstance(image, Image.Image):
        image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None].repeat(3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise SSDKitError(f"image: expected a numpy HxWx3 (or HxW) array, got shape {image.shape}")
        if not image.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
            image = image.copy()
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise SSDKitError(
            f"image: expected a path, PIL image, numpy array or Tensor[3, H, W], got {type(image).__name__}"
        )
    if image.dim() != 3 or image.shape[0] not in (1, 3) or image.shape[1] < 1 or image.shape[2] < 1:
        raise SSDKitError(f"image: expected a Tensor[3, H, W], got shape {list(image.shape)}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.dtype == torch.uint8:
        return image
    if not image.is_floating_point():
        raise SSDKitError(f"image: expected a uint8 (0-255) or float (0-1) tensor, got {image.dtype}")
    lo, hi = (float(v) for v in image.aminmax()) if image.numel() else (0.0, 0.0)
    if not (-1e-3 <= lo and hi <= 1.0 + 1e-3) or not torch.isfinite(image).all():
        raise SSDKitError(
            f"image: float images must be finite and in 0-1 (got values in [{lo:.3g}, {hi:.3g}]); pass uint8 for "
            "0-255 pixels"
        )
    return image.float() * 255.0


def resize_image(image: torch.Tensor, height: int, width: int | None = None) -> torch.Tensor:
    """Bilinear resize, half-pixel centres, no antialiasing: ``Tensor[..., 3, h, w]`` -> ``[..., 3, height, width]``
    (``width`` defaults to ``height``), same dtype. Returns ``image`` itself when the size already fits.

    uint8 on CPU runs torch's uint8 kernel; uint8 elsewhere a float resize rounded back to uint8; float stays float.
    """
    width = height if width is None else width
    if image.shape[-2:] == (height, width):
        return image
    batch = image if image.dim() == 4 else image[None]
    if image.dtype == torch.uint8 and image.device.type == "cpu" or image.is_floating_point():
        out = F.interpolate(batch, size=(height, width), mode="bilinear", align_corners=False)
    else:
        out = F.interpolate(batch.float(), size=(height, width), mode="bilinear", align_corners=False)
        out = out.round_().clamp_(0, 255).to(image.dtype)
    return out if image.dim() == 4 else out[0]


def resize_batch(images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """N ``Tensor[3, H_i, W_i]`` -> ``Tensor[N, 3, S, S]`` (``S = size``), each by :func:`resize_image`; uint8 when
    every image is uint8, else float 0-255. Images of one shape, dtype and device (a tiled image's windows) are
    resized in one call: the same values as one at a time (the kernel works per image), ~20% less time."""
    if not images:
        raise SSDKitError("images: expected at least one image")
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((tuple(im.shape), im.dtype, im.device), []).append(i)
    resized: list[torch.Tensor] = [images[0]] * len(images)
    for members in groups.values():
        if len(members) == 1:
            resized[members[0]] = resize_image(images[members[0]], size)
            continue
        batch = resize_image(torch.stack([images[i] for i in members]), size)
        for i, out in zip(members, batch):
            resized[i] = out
    if any(r.dtype != torch.uint8 for r in resized):
        resized = [r.float() for r in resized]
    return torch.stack(resized)


def check_size(size: int) -> int:
    """The output side of a transform, validated: a positive integer."""
    if int(size) != size or size < 1:
        raise ValueError(f"size: expected a positive integer, got {size!r}")
    return int(size)


def check_sample(
    image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, ignore: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The input checks of both transforms' ``__call__``: ``image`` must be ``Tensor[3, H, W]`` uint8; returns
    ``(boxes [M, 4] float32, labels [M] int64, ignore [M] bool)`` (``ignore`` all False when None)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected a Tensor[3, H, W], got {shape}")
    if image.dtype != torch.uint8:
        raise ValueError(f"image: expected dtype uint8, got {image.dtype}")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
    if ignore is None:
        ignore = torch.zeros(len(labels), dtype=torch.bool)
    ignore = torch.as_tensor(ignore, dtype=torch.bool).reshape(-1)
    if not (len(boxes) == len(labels) == len(ignore)):
        raise ValueError(f"boxes ({len(boxes)}), labels ({len(labels)}) and ignore ({len(ignore)}) differ in length")
    return boxes, labels, ignore



class SSDEvalTransform:
    """Resize only: ``(image Tensor[3, H, W] uint8, boxes [M, 4] xyxy px, labels [M], ignore [M] | None)`` ->
    ``(image Tensor[3, size, size] uint8, boxes scaled to output px, labels, ignore)``.

    Accepts (and ignores) ``generator`` so it is interchangeable with :class:`SSDTrainTransform`.
    """

    def __init__(self, size: int = 300) -> None:
        self.size = check_size(size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"

    def __call__(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        ignore: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        boxes, labels, ignore = check_sample(image, boxes, labels, ignore)
        _, height, width = image.shape
        out = resize_image(image, self.size, self.size)
        out = out.clone() if out is image else out
        scale = torch.tensor([self.size / width, self.size / height] * 2, dtype=torch.float32)
        return out, boxes * scale, labels, ignore


def _affine(mean: Sequence[float], std: Sequence[float], device: torch.device | None = None):
    """``(scale, shift)`` ``Tensor[3, 1, 1]`` with ``(x / 255 - mean) / std == x * scale - shift``."""
    m = torch.tensor(tuple(mean), dtype=torch.float32, device=device).view(3, 1, 1)
    s = torch.tensor(tuple(std), dtype=torch.float32, device=device).view(3, 1, 1)
    return 1.0 / (255.0 * s), m / s


def _check_order(channel_order: str) -> None:
    if channel_order not in ("rgb", "bgr"):
        raise ValueError(f"channel_order: expected 'rgb' or 'bgr', got {channel_order!r}")


def normalize(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    channel_order: str = "rgb",
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """Network input from RGB pixels: ``(x / 255 - mean) / std`` as float32, on ``images``' device.

    Args:
        images: ``Tensor[N, 3, H, W]`` (or ``[3, H, W]``) uint8 (or float 0-255) RGB, any device, any layout.
        mean, std: 3 values each, in ``channel_order`` order, for pixels scaled to ``[0, 1]``.
        channel_order: ``'rgb'``, or ``'bgr'`` to flip the channels first (Caffe-converted weights).
        memory_format: of the result (``torch.channels_last`` for channels-last models; 4-D input only).
    """
    _check_order(channel_order)
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"images: expected a Tensor[N, 3, H, W], got {list(images.shape)}")
    if images.dim() == 3 and memory_format != torch.contiguous_format:
        raise ValueError("memory_format: only 4-D batches can be channels_last")
    if channel_order == "bgr":
        images = images.flip(-3)
    scale, shift = _affine(mean, std, images.device)
    # One affine map, x * (1 / (255 s)) - m / s, in place on the float copy.
    return images.to(dtype=torch.float32, memory_format=memory_format, copy=True).mul_(scale).sub_(shift)


class InputNormalizer(nn.Module):
    """:func:`normalize` with a model config's ``mean``, ``std`` and ``channel_order``, as a module: the same
    arithmetic in the Detector, the trainer and inside exported graphs (whose input is float32 RGB 0-255).

    ``forward(Tensor[N, 3, H, W] RGB 0-255 (uint8 or float), memory_format=contiguous) -> float32``.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        _check_order(config.channel_order)
        self.bgr = config.channel_order == "bgr"
        scale, shift = _affine(config.mean, config.std)
        self.register_buffer("scale", scale[None], persistent=False)
        self.register_buffer("shift", shift[None], persistent=False)

    def forward(self, x: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
        if self.bgr:
            x = x.flip(1)
        return x.to(dtype=torch.float32, memory_format=memory_format).mul(self.scale).sub(self.shift)
