"""Weights only, as safetensors, with the ssdkit config and class names in its metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssdkit.config import config_from_dict
from ssdkit.errors import CheckpointError, SSDKitError
from ssdkit.export.graph import metadata, source
from ssdkit.utils import atomic_write_bytes

__all__ = ["export_safetensors", "load_safetensors"]


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
    model, cfg, names = source(model_or_checkpoint, class_names)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = metadata(cfg, names, "safetensors", None)
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
