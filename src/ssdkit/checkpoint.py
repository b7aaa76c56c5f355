"""Checkpoints: one self-describing file per run state, written atomically, read with ``weights_only=True``.

A checkpoint is a dict of plain types and tensors only (so ``torch.load(weights_only=True)`` reads it)::

    {"format": "ssdkit-checkpoint", "version": "0.1.0",
     "config": {...Config as plain dicts...}, "class_names": [...],
     "model": state_dict, "metrics": {...},
     # training state, when saved by the trainer:
     "optimizer": ..., "scheduler": ..., "trainer": ..., "rng": {...}}
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from ssdkit.config import Config, ModelConfig, config_from_dict, config_to_dict
from ssdkit.errors import CheckpointError
from ssdkit.utils import atomic_write_bytes

FORMAT = "ssdkit-checkpoint"


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: Config, class_names, **extra: Any) -> None:
    """Write a checkpoint atomically (temp file + rename: a crash mid-write leaves the previous file intact)."""
    from ssdkit import __version__

    state = {
        "format": FORMAT,
        "version": __version__,
        "config": config_to_dict(config),
        "class_names": list(class_names),
        "model": {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()},
    }
    state.update(extra)
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint (``weights_only=True``: no code from the file is ever run)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, or unsafe pickle
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({msg[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ssdkit checkpoint (no '{FORMAT}' marker)")
    for key in ("config", "class_names", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint has no '{key}' entry")
    try:
        state["config"] = config_from_dict(state["config"])
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid config in checkpoint ({e})") from None
    cfg: ModelConfig = state["config"].model
    if len(state["class_names"]) != cfg.num_classes - 1:
        raise CheckpointError(
            f"{path}: {len(state['class_names'])} class names but model.num_classes={cfg.num_classes} "
            "(expected num_classes - 1 names)"
        )
    return state


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Build the model a checkpoint describes and load its weights. Returns ``(model, config, class_names)``."""
    from ssdkit.models import build_model

    state = load_checkpoint(path)
    cfg: Config = state["config"]
    model = build_model(cfg.model)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.to(device).eval()
    return model, cfg, tuple(state["class_names"])


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DistributedDataParallel / torch.compile wrappers keep the real module inside
    for attr in ("module", "_orig_mod"):
        if hasattr(model, attr) and isinstance(getattr(model, attr), torch.nn.Module):
            return _unwrap(getattr(model, attr))
    return model
