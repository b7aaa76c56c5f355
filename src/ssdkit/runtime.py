"""Where and how tensors run: device names and mixed precision, one definition for training and inference.

Mixed precision (``amp``): ``"none"`` is float32; ``"bf16"`` autocasts to bfloat16 on CUDA and on CPUs with
bfloat16 units (oneDNN's check: AVX512-BF16 or AMX-BF16; float32 elsewhere, :func:`amp_fallback` says why);
``"fp16"`` autocasts to float16 on CUDA only. Measured on a 2-core AMX-BF16 Xeon (Sapphire Rapids class, torch
2.14, a box shared with other work): a full SSD300 training step (forward, ``SSDLoss``, backward, SGD) at batch 4
ran at 0.30-0.33 img/s in float32 NCHW, 0.42-0.54 with bf16 autocast, 1.1-1.3 in float32 channels_last and 4.9-5.0
with bf16 autocast + channels_last, the first loss within 0.15% of float32's (``benchmarks/bench_train.py``
measures it against torchvision's step). Under autocast the weights, the gradients
and the optimizer state stay float32; the training step computes the loss on ``.float()`` outputs and encodes the
targets outside autocast, so only the network's matmuls and convolutions run in bfloat16.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import subprocess

import torch

from ssdkit.choices import AMP_MODES
from ssdkit.errors import SSDKitError

__all__ = ["resolve_device", "amp_dtype", "amp_fallback", "autocast", "cpu_bf16_supported", "cpu_info", "describe_cpu"]


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


@functools.cache
def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 matmuls and convolutions natively (oneDNN: AVX512-BF16 or AMX-BF16).

    Without those units oneDNN emulates bfloat16, slower than float32, so bf16 autocast is not used there.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or a torch without the private check
        return False


def _check_amp(amp: str) -> None:
    if amp not in AMP_MODES:
        raise SSDKitError(f"amp: expected one of {', '.join(AMP_MODES)}, got {amp!r}")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (``"none"`` | ``"bf16"`` | ``"fp16"``) on ``device``, or None for float32.

    CUDA: bf16 -> ``torch.bfloat16``, fp16 -> ``torch.float16``. CPU: bf16 -> ``torch.bfloat16`` where the CPU
    has bfloat16 units (:func:`cpu_bf16_supported`), else None; fp16 -> None. :func:`amp_fallback` gives the
    one-line reason for a None that was not asked for.

    Raises:
        SSDKitError: an unknown ``amp`` name.
    """
    _check_amp(amp)
    if amp == "none":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu" and amp == "bf16" and cpu_bf16_supported():
        return torch.bfloat16
    return None


def amp_fallback(amp: str, device: torch.device) -> str | None:
    """Why ``amp`` runs in float32 on ``device`` (one line, for a warning), or None when it runs as asked."""
    if amp_dtype(amp, device) is not None or amp == "none":
        return None
    if device.type == "cpu" and amp == "bf16":
        return (f"amp={amp}: this CPU has no bfloat16 units (AVX512-BF16 / AMX-BF16); running in float32 on "
                f"{device}")
    if device.type == "cpu":
        return (f"amp={amp}: float16 autocast runs on CUDA only (bf16 runs on CPUs with bfloat16 units); "
                f"running in float32 on {device}")
    return f"amp={amp}: no mixed precision on {device}; running in float32"


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` on ``device`` (a no-op context for float32)."""
    dtype = amp_dtype(amp, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


#: CPU flags that decide which kernels run (vector width, FMA, bfloat16 / int8 dot products, AMX tiles).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
             "amx_bf16", "amx_int8")


def cpu_info() -> dict:
    """What this CPU is, for benchmark reports: ``model`` (``/proc/cpuinfo`` model name, else the platform's),
    ``vendor`` and ``family`` (``GenuineIntel`` / ``AuthenticAMD`` and the CPU family number; None off Linux),
    ``cores`` (usable logical CPUs), ``threads`` (torch's), ``mhz`` (the reported clock: nominal under most
    hypervisors; ``max_mhz`` too where ``lscpu`` has it), ``flags`` (those of :data:`CPU_FLAGS` present), ``bf16``
    (:func:`cpu_bf16_supported`), ``capability`` (``torch.backends.cpu.get_cpu_capability()``).
    """
    return {**_cpu_static(), "threads": torch.get_num_threads()}


@functools.cache
def _cpu_static() -> dict:
    model, flags, mhz = platform.processor() or platform.machine(), set(), None
    vendor = family = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = m.group(1).strip()
        if m := re.search(r"^vendor_id\s*:\s*(\S+)", text, re.M):
            vendor = m.group(1)
        if m := re.search(r"^cpu family\s*:\s*(\d+)", text, re.M):
            family = int(m.group(1))
        if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            flags = set(m.group(1).split())
        if m := re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M):
            mhz = float(m.group(1))
    except OSError:  # not Linux
        pass
    max_mhz = None
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        if m := re.search(r"^CPU max MHz:\s*([\d.]+)", out, re.M):
            max_mhz = float(m.group(1))
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        capability = None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"model": model, "vendor": vendor, "family": family, "cores": cores, "mhz": mhz, "max_mhz": max_mhz,
            "flags": [f for f in CPU_FLAGS if f in flags], "bf16": cpu_bf16_supported(), "capability": capability}


def describe_cpu() -> str:
    """:func:`cpu_info` as one line: ``Intel(R) Xeon(R) ..., 2 cores, 2600 MHz, avx512f avx512_bf16 amx_bf16 ...``."""
    c = cpu_info()
    clock = f", {c['mhz']:.0f} MHz" if c["mhz"] else ""
    return (f"{c['model']}, {c['cores']} cores{clock}, torch {c['threads']} threads, "
            f"{' '.join(c['flags']) or 'no AVX2/AVX-512 flags'} (torch kernels: {c['capability']})")
