"""Where and how tensors run: device names and mixed precision, one definition for training and inference."""

from __future__ import annotations

import contextlib

import torch

from ssdkit.choices import AMP_MODES
from ssdkit.errors import SSDKitError

__all__ = ["resolve_device", "amp_dtype", "autocast"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA when available, else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given.

    Raises:
        SSDKitError: an unknown device name, or CUDA asked for where there is none.
    """
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SSDKitError(f"device: unknown device {device!r} (expected auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SSDKitError(f"device: {device!r} requested but CUDA is not available (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise SSDKitError(f"device: unsupported device {device!r} (expected auto, cpu, cuda or cuda:N)")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (``"none"`` | ``"bf16"`` | ``"fp16"``) on ``device``, or None for float32.

    Mixed precision runs on CUDA only; elsewhere this is None (float32).
    """
    if amp not in AMP_MODES:
        raise SSDKitError(f"amp: expected one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "none" or device.type != "cuda":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` on ``device`` (a no-op context for float32)."""
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
