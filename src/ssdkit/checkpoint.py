"""Checkpoints: one self-describing file per run state, written atomically, read with ``weights_only=True``.

A checkpoint is a dict of plain types and tensors only (so ``torch.load(weights_only=True)`` reads it)::

    {"format": "ssdkit-checkpoint", "version": "0.1.0",
     "config": {...Config as plain dicts...}, "class_names": [...],
     "model": state_dict, "metrics": {...},
     # training state, when saved by the trainer:
     "optimizer": ..., "scheduler": ..., "trainer": ..., "rng": {...}}

Every ``torch.load`` of ssdkit goes through :func:`torch_load` (checkpoints, imported weights, VGG16 weights): no
code from a file is ever run, and any failure is one :class:`CheckpointError` line naming the file.
:func:`init_from_checkpoint` transfers the weights of a checkpoint into a model of a different class list or
anchor layout (fine-tuning).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ssdkit.config import Config, ModelConfig, config_from_dict, config_to_dict
from ssdkit.errors import CheckpointError
from ssdkit.utils import atomic_write_bytes

__all__ = [
    "FORMAT",
    "torch_load",
    "checkpoint_state",
    "save_checkpoint",
    "write_checkpoint",
    "load_checkpoint",
    "load_model_state",
    "model_from_checkpoint",
    "init_from_checkpoint",
    "check_finite",
]

FORMAT = "ssdkit-checkpoint"

logger = logging.getLogger("ssdkit.checkpoint")

# The preprocessing and default-box settings a fine-tuned model should share with the checkpoint it starts from.
_TRANSFER_WARN_KEYS = ("mean", "std", "channel_order", "box_sizes", "steps", "clip_default_boxes", "variances")
_HEADS = ("cls_layers.", "loc_layers.")


def torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain types only, pickled code refused.

    Args:
        path: the file.
        what: what the file should be, for the messages (``"checkpoint"``, ``"weights file"``, ...).

    Raises:
        CheckpointError: ``{path}: {what} not found`` or ``{path}: not a readable {what} (reason)``: truncated,
            not a torch file, or a pickle that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not a torch file, or unsafe pickle: all the user's file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable {what} ({msg[:200]})") from None


def checkpoint_state(model_state: Mapping[str, torch.Tensor], config: Config, class_names, **extra: Any) -> dict:
    """The checkpoint dict of a model state dict (copied to the CPU), its config and class names, plus ``extra``
    entries (``metrics``, training state)."""
    from ssdkit import __version__

    state = {
        "format": FORMAT,
        "version": __version__,
        "config": config_to_dict(config),
        "class_names": list(class_names),
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
    }
    state.update(extra)
    return state


def write_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write a :func:`checkpoint_state` dict atomically (temp file + rename: a crash mid-write leaves the previous
    file intact); the file gets the permissions a plain write would (the umask's)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, config: Config, class_names, **extra: Any) -> None:
    """Write ``model``'s checkpoint atomically (see :func:`checkpoint_state` and :func:`write_checkpoint`)."""
    write_checkpoint(path, checkpoint_state(_unwrap(model).state_dict(), config, class_names, **extra))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint (``weights_only=True``: no code from the file is ever run).

    Returns the checkpoint dict with ``config`` as a :class:`Config`. Raises :class:`CheckpointError` for a missing
    or unreadable file, a file without the ssdkit marker or an entry, an invalid config, or a class-name count that
    does not fit ``model.num_classes``.
    """
    path = Path(path)
    state = torch_load(path, "checkpoint")
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


def check_finite(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse weights with NaN / infinite values: ``CheckpointError("{path}: tensor {name} has N NaN/inf values
    ...")`` naming the first such tensor (what a diverged or corrupted run leaves; it would only predict garbage).
    """
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: tensor {name} has {bad} NaN/inf value(s) of {t.numel()}; these weights "
                                  "cannot be used (a diverged or corrupted run?)")


def _misfit_hint(own: Mapping[str, torch.Tensor], state: Mapping[str, Any], net: torch.nn.Module) -> str:
    """What a shape mismatch most likely means, in config terms (``model.num_classes``, ``model.width_mult``)."""
    for k, v in own.items():
        if k not in state or tuple(state[k].shape) == tuple(v.shape):
            continue
        if k.startswith("cls_layers.") and hasattr(net, "num_anchors"):
            per = net.num_anchors[int(k.split(".")[1])]
            theirs, ours = state[k].shape[0] / per, v.shape[0] / per
            if float(theirs).is_integer():
                return f"the weights are for model.num_classes={int(theirs)}, the model has {int(ours)}; "
        if k.startswith("loc_layers."):
            return "the weights have another number of default boxes per location (model.aspect_ratios); "
        return "the weights are for another width or layer layout (model.width_mult / batch_norm / arch); "
    return ""


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load ``state`` (read from ``path``) into ``model``: every tensor of both, of the same shapes, all finite.

    Raises:
        CheckpointError: one line, the model left untouched: ``{path}: weights do not fit the model (...)`` with
            what the mismatch means (``model.num_classes=21 ... 4``, another width), the missing / unexpected
            names and the first tensors of another shape; or NaN/inf values (:func:`check_finite`).
    """
    net = _unwrap(model)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(v.shape)}" for k, v in own.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        other = f", other shapes: {'; '.join(shapes[:3])}" if shapes else ""
        raise CheckpointError(
            f"{path}: weights do not fit the model ({_misfit_hint(own, state, net)}missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}{other})"
        )
    check_finite(state, path)
    net.load_state_dict(state)


def model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Build the model a checkpoint describes and load its weights. Returns ``(model, config, class_names)``."""
    from ssdkit.models import build_model

    state = load_checkpoint(path)
    cfg: Config = state["config"]
    model = build_model(cfg.model)
    load_model_state(model, state["model"], path)
    model.to(device).eval()
    return model, cfg, tuple(state["class_names"])


def init_from_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Initialise ``model`` from another checkpoint, possibly of a different class list or anchor layout.

    Every tensor whose name and shape match is copied; the rest keep their fresh initialisation. The
    classification heads are re-initialised whenever any of them does not fit (new class count), and the
    localisation heads whenever any of them does not (new anchors per location), so a head is never half
    copied.

    Args:
        model: an SSD (or a DDP wrapper of one).
        path: an ssdkit checkpoint (``load_checkpoint`` validates it; nothing in it is executed).

    Returns:
        ``{"loaded": [names], "initialised": [names], "unused": [checkpoint names not in the model],
        "warnings": [preprocessing / default-box settings that differ from the checkpoint's]}``.

    Raises:
        CheckpointError: unreadable file, NaN/inf weights, not a single tensor of it fits the model, or a trunk
            tensor does not.
    """
    net = _unwrap(model)
    ckpt = load_checkpoint(path)
    state = ckpt["model"]
    check_finite(state, path)
    own = net.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    head_fits = {}
    for prefix in _HEADS:
        names = [k for k in own if k.startswith(prefix)]
        head_fits[prefix] = bool(names) and all(k in fits for k in names)
        if not head_fits[prefix]:
            for k in names:
                fits.pop(k, None)
    if not fits:
        raise CheckpointError(f"{path}: no tensor of the checkpoint fits the model (different architecture?)")
    # Only the heads may change when fine-tuning: a trunk tensor left at random would silently cost accuracy.
    trunk_misfit = [k for k in own if not k.startswith(_HEADS) and k not in fits]
    if trunk_misfit:
        shapes = ", ".join(
            f"{k} {list(state[k].shape) if k in state else 'missing'} vs {list(own[k].shape)}" for k in trunk_misfit[:3]
        )
        raise CheckpointError(
            f"{path}: {len(trunk_misfit)} trunk tensor(s) do not fit the model ({shapes}); only the heads may "
            "differ (check model.width_mult / batch_norm / arch)"
        )
    net.load_state_dict(fits, strict=False)
    if hasattr(net, "reset_heads") and not head_fits["cls_layers."]:
        # the fresh heads of a new model are already initialised; re-init makes the intent explicit
        net.reset_heads(loc=not head_fits["loc_layers."])
    warnings_ = []
    new_cfg = getattr(net, "config", None)
    old_cfg = ckpt["config"].model
    if new_cfg is not None:
        for key in _TRANSFER_WARN_KEYS:
            if getattr(old_cfg, key) != getattr(new_cfg, key):
                warnings_.append(f"model.{key} differs from the checkpoint's ({getattr(old_cfg, key)} there, "
                                 f"{getattr(new_cfg, key)} here)")
    for w in warnings_:
        logger.warning("init_from %s: %s", path, w)
    return {
        "loaded": sorted(fits),
        "initialised": sorted(k for k in own if k not in fits),
        "unused": sorted(k for k in state if k not in fits),
        "warnings": warnings_,
    }


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    # DistributedDataParallel / torch.compile wrappers keep the real module inside
    for attr in ("module", "_orig_mod"):
        if hasattr(model, attr) and isinstance(getattr(model, attr), torch.nn.Module):
            return _unwrap(getattr(model, attr))
    return model
