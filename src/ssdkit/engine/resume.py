"""Resuming: RNG states, the checks a checkpoint must pass to be continued, and loading the training state.

A resumed run matches an uninterrupted one bit for bit: every checkpoint holds model, optimizer, LR scheduler,
trainer state (iteration, epoch), GradScaler and the RNG states (torch, CUDA, Python, NumPy); the data order is a
function of ``(seed, epoch)`` and a partial epoch continues at the next unseen batch
(:func:`ssdkit.engine.data.set_loader_position`).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from ignite.handlers import Checkpoint
from ignite.utils import manual_seed

from ssdkit.checkpoint import check_finite, load_checkpoint
from ssdkit.config import Config, config_to_dict
from ssdkit.engine.ema import TRAIN_MODEL
from ssdkit.errors import CheckpointError, ConfigError

__all__ = ["rng_state", "set_rng_state", "seed_process", "load_training_state", "config_changes", "REFUSED"]

logger = logging.getLogger("ssdkit.train")


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
    manual_seed((cfg.train.seed + rank) % 2**32)  # numpy takes 32-bit seeds
    if checkpoint is not None:
        set_rng_state(checkpoint.get("rng", {}))


#: Config keys a resumed run refuses to change, and why.
REFUSED = {
    "train.optimizer": "the checkpoint holds that optimizer's state",
    "train.seed": "a resumed run continues the checkpoint's data order, augmentation and RNG states",
    "train.batch_size": "the position in the epoch is counted in batches",
}
#: Keys that do not apply to a resumed run (its weights come from the checkpoint; its folder is chosen apart).
NOT_APPLICABLE = ("train.output_dir", "train.init_from", "train.pretrained_vgg")


def config_changes(old: Config, new: Config) -> dict[str, tuple[Any, Any]]:
    """``{"train.lr": (old, new), ...}``: the ``train`` and ``data`` values that differ between two configs."""
    a, b = config_to_dict(old), config_to_dict(new)
    return {f"{section}.{k}": (a[section][k], b[section].get(k)) for section in ("train", "data")
            for k in a[section] if a[section][k] != b[section].get(k)}


def _optimizer_kind(state: Mapping[str, Any]) -> str | None:
    """``"sgd"`` / ``"adamw"`` from an optimizer state dict's param groups (None when it does not say)."""
    groups = state.get("param_groups") if isinstance(state, Mapping) else None
    if not groups:
        return None
    if "betas" in groups[0]:
        return "adamw"
    return "sgd" if "momentum" in groups[0] else None


def _apply_hyper_parameters(to_load: Mapping[str, Any], cfg: Config, changes: Mapping[str, tuple]) -> None:
    """Put the changed values the optimizer and scheduler state dicts restored back to this config's.

    The LR of every later iteration is ``train.lr`` times the schedule built from this config; weight decay goes
    to the decayed group (the first, :func:`ssdkit.engine.optim.param_groups`), momentum to every SGD group.
    """
    t = cfg.train
    optimizer = to_load["optimizer"]
    if "train.lr" in changes:
        for g in optimizer.param_groups:
            g["initial_lr"] = t.lr
        torch_scheduler = getattr(to_load.get("scheduler"), "lr_scheduler", None)
        if torch_scheduler is not None:
            torch_scheduler.base_lrs = [t.lr] * len(optimizer.param_groups)
    if "train.weight_decay" in changes:
        optimizer.param_groups[0]["weight_decay"] = t.weight_decay
    if "train.momentum" in changes and t.optimizer == "sgd":
        for g in optimizer.param_groups:
            g["momentum"] = t.momentum


def load_training_state(path: str | os.PathLike, to_load: Mapping[str, Any], cfg: Config, epoch_length: int,
                        total: int, class_names: tuple[str, ...] | None = None) -> dict:
    """Load the training state of checkpoint ``path`` into the objects of ``to_load`` (``model``, ``optimizer``,
    ``scheduler``, ``trainer``, maybe ``scaler``) after checking that ``cfg`` can continue it.

    The run then ends at ``total`` iterations, as this config says (e.g. a resume with a longer ``train.epochs``).
    Hyper-parameters changed since the checkpoint are applied (``lr``, ``max_iterations``, ``epochs``, schedule,
    milestones, warmup, weight decay, momentum, evaluation and checkpoint settings, ``data.augment``, ...) and
    listed in the returned ``"resume_changes"``; those of :data:`REFUSED` are refused. A GradScaler is restored
    when both runs use fp16 (a run switching to fp16 starts a fresh one). ``train.ema_momentum`` may be
    switched on (the average starts at the checkpoint's weights) or off (training goes on from the trained
    weights, not their average).

    Returns:
        The checkpoint dict (:func:`ssdkit.checkpoint.load_checkpoint`) plus ``"resume_changes"``:
        ``{key: (checkpoint's value, this config's)}`` of the applied changes.

    Raises:
        CheckpointError: unreadable, NaN/inf weights, no training state (a weights-only checkpoint: use
            ``train.init_from``), other class names, another model config, another optimizer, a refused change,
            or another epoch length (the data or the number of processes changed).
        ConfigError: ``train.max_iterations`` / ``train.epochs`` end the run before the checkpoint's iteration.
    """
    state = load_checkpoint(path)
    if TRAIN_MODEL in state and TRAIN_MODEL not in to_load:  # weight EMA switched off: go on with the trained ones
        state["model"] = state[TRAIN_MODEL]
    elif TRAIN_MODEL in to_load and TRAIN_MODEL not in state and "optimizer" in state:  # EMA switched on
        state[TRAIN_MODEL] = state["model"]  # the average starts at the weights
    missing = [k for k in to_load if k not in state and k != "scaler"]
    if missing:
        raise CheckpointError(f"{path}: cannot resume, no training state ({', '.join(missing)}); "
                              "use train.init_from to start a new run from its weights")
    if class_names is not None and tuple(state["class_names"]) != tuple(class_names):
        raise CheckpointError(f"{path}: cannot resume, its class names {state['class_names']} differ from the "
                              f"training data's {list(class_names)}")
    if state["config"].model != cfg.model:
        old, new = config_to_dict(state["config"])["model"], config_to_dict(cfg)["model"]
        diff = ", ".join(f"model.{k} ({old[k]!r} there, {new[k]!r} here)" for k in old if old[k] != new[k])
        raise CheckpointError(f"{path}: cannot resume, the model config differs: {diff}")
    kind = _optimizer_kind(state["optimizer"])
    if kind is not None and kind != cfg.train.optimizer:
        raise CheckpointError(f"{path}: cannot resume, it holds the state of an {kind} optimizer but "
                              f"train.optimizer={cfg.train.optimizer}")
    changes = {k: v for k, v in config_changes(state["config"], cfg).items() if k not in NOT_APPLICABLE}
    for key, (old, new) in changes.items():
        if key in REFUSED:
            raise CheckpointError(f"{path}: cannot resume with a changed {key} ({old!r} in the checkpoint, {new!r} "
                                  f"here): {REFUSED[key]}; start a new run with train.init_from={path}")
    ck_len = state["trainer"].get("epoch_length")
    if ck_len != epoch_length:
        raise CheckpointError(
            f"{path}: cannot resume, it was written with {ck_len} iterations per epoch but this config gives "
            f"{epoch_length} (the data or the number of processes changed)"
        )
    iteration = int(state["trainer"].get("iteration", state.get("iteration", 0)))
    if total < iteration:
        key = "train.max_iterations" if cfg.train.max_iterations else "train.epochs"
        value = cfg.train.max_iterations or cfg.train.epochs
        raise ConfigError(f"{key}: {value} gives {total} iterations, fewer than the {iteration} of checkpoint {path} "
                          "it resumes; give more or resume an earlier checkpoint")
    check_finite(state["model"], path)
    trainer_state = {k: v for k, v in state["trainer"].items() if k not in ("max_epochs", "max_iters")}
    trainer_state["max_iters"] = total
    state = dict(state, trainer=trainer_state)
    objects = {k: v for k, v in to_load.items() if k in state}
    try:
        Checkpoint.load_objects(to_load=objects, checkpoint=state)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise CheckpointError(f"{path}: cannot resume, its training state does not fit this run ({msg})") from None
    _apply_hyper_parameters(to_load, cfg, changes)
    if changes:
        logger.info("resuming %s with changed settings, applied: %s", path,
                    ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    for key in NOT_APPLICABLE[1:]:
        if getattr(cfg.train, key.split(".")[1]):
            logger.info("resuming: %s is not used (the weights come from the checkpoint)", key)
    state["resume_changes"] = changes
    return state
