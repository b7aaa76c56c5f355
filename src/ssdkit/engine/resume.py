"""Resuming: RNG states, the checks a checkpoint must pass to be continued, and loading the training state.

A resumed run matches an uninterrupted one bit for bit: every checkpoint holds model, optimizer, LR scheduler,
trainer state (iteration, epoch), GradScaler and the RNG states (torch, CUDA, Python, NumPy); the data order is a
function of ``(seed, epoch)`` and a partial epoch continues at the next unseen batch
(:func:`ssdkit.engine.data.set_loader_position`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ignite.handlers import Checkpoint
from ignite.utils import manual_seed

from ssdkit.checkpoint import load_checkpoint
from ssdkit.config import Config, config_to_dict
from ssdkit.errors import CheckpointError

__all__ = ["rng_state", "set_rng_state", "seed_process", "load_training_state"]


def rng_state() -> dict[str, Any]:
    """RNG states as tensors/lists/ints only, so ``torch.load(weights_only=True)`` reads them."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt), gauss],
        "numpy": [np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss),
                  float(np_gauss)],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (missing entries are left alone; CUDA only on as many devices)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, mt, gauss = state["python"]
        random.setstate((version, tuple(mt), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_process(cfg: Config, rank: int, checkpoint: Mapping[str, Any] | None = None) -> None:
    """Seed this process for training (``train.seed + rank``), then, when resuming, continue the RNG states
    ``checkpoint`` saved."""
    manual_seed(cfg.train.seed + rank)
    if checkpoint is not None:
        set_rng_state(checkpoint.get("rng", {}))


def load_training_state(path: str | os.PathLike, to_load: Mapping[str, Any], cfg: Config, epoch_length: int,
                        total: int) -> dict:
    """Load the training state of checkpoint ``path`` into the objects of ``to_load`` (``model``, ``optimizer``,
    ``scheduler``, ``trainer``, maybe ``scaler``); the run then ends at ``total`` iterations, as this config says
    (e.g. a resume with a longer ``train.epochs``), not as the checkpoint's did.

    Returns:
        The checkpoint dict (:func:`ssdkit.checkpoint.load_checkpoint`).

    Raises:
        CheckpointError: unreadable, no training state (a weights-only checkpoint: use ``train.init_from``), another
            model config, or another epoch length (batch size, data or number of processes changed).
    """
    state = load_checkpoint(path)
    missing = [k for k in to_load if k not in state]
    if missing:
        raise CheckpointError(f"{path}: cannot resume, no training state ({', '.join(missing)}); "
                              "use train.init_from to start a new run from its weights")
    if state["config"].model != cfg.model:
        old, new = config_to_dict(state["config"])["model"], config_to_dict(cfg)["model"]
        diff = ", ".join(f"model.{k}" for k in old if old[k] != new[k])
        raise CheckpointError(f"{path}: cannot resume, the model config differs ({diff})")
    ck_len = state["trainer"].get("epoch_length")
    if ck_len != epoch_length:
        raise CheckpointError(
            f"{path}: cannot resume, it was written with {ck_len} iterations per epoch but this config gives "
            f"{epoch_length} (train.batch_size, the data or the number of processes changed)"
        )
    trainer_state = {k: v for k, v in state["trainer"].items() if k not in ("max_epochs", "max_iters")}
    trainer_state["max_iters"] = total
    state = dict(state, trainer=trainer_state)
    Checkpoint.load_objects(to_load=dict(to_load), checkpoint=state)
    return state
