"""The trainer: pytorch-ignite ``Engine`` + handlers, built from small ``create_*`` functions.

One training step (``create_trainer``)::

    images uint8 [B, 3, S, S] ──device──▶ normalize (model mean/std/channel order; channels_last if configured)
    targets (boxes [M, 4] xyxy input px, labels [M] 0-based, ignore [M]) ──device──▶ SSDBoxCoder.encode_batch
    ──▶ (loc_targets [B, A, 4], cls_targets [B, A]) ; model(x) ──▶ SSDLoss ──▶ backward, step
    returns {"loss", "loc_loss", "cls_loss", "lr"} (floats; averaged over processes when distributed)

Handlers (``attach_handlers``): per-iteration LR schedule (warmup + multistep/cosine/constant, a torch
``LambdaLR`` driven by ignite's ``LRScheduler``), ``TerminateOnNan``, progress bar, ``history.jsonl``,
evaluation every ``train.eval_every`` epochs, checkpoints (each epoch, every ``train.checkpoint_every``
iterations, at the end or when stopped), ``best.pt`` by validation mAP, TensorBoard when installed, loss/mAP plot.

The same code runs in one process or under ``ignite.distributed`` (``train(cfg, nproc=N)`` spawns N processes;
``torchrun --nproc_per_node N -m ssdkit train ...`` is detected from the environment). Only rank 0 writes files.

Resuming (``train(cfg, resume=PATH)``) restores model, optimizer, LR scheduler, trainer state (iteration, epoch),
GradScaler and RNG states; the data order is a function of ``(seed, epoch)`` and a partial epoch continues at
the next unseen batch, so an interrupted and resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import LRScheduler, TerminateOnNan
from torch import nn

from ssdkit.checkpoint import _unwrap, load_checkpoint, save_checkpoint
from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config, config_to_dict, save_config
from ssdkit.data.preprocess import normalize
from ssdkit.engine.data import Loaders, build_loaders, set_loader_position
from ssdkit.engine.evaluate import create_evaluator
from ssdkit.errors import CheckpointError, ConfigError, SSDKitError
from ssdkit.loss import SSDLoss
from ssdkit.models import build_model, load_vgg16_weights
from ssdkit.models.vgg import L2Norm
from ssdkit.runtime import amp_dtype, autocast, resolve_device

__all__ = [
    "TrainingDivergedError",
    "validate_config",
    "lr_factor",
    "init_from_checkpoint",
    "create_model_and_optimizer",
    "create_optimizer",
    "create_scheduler",
    "create_train_step",
    "create_trainer",
    "create_evaluator",
    "attach_handlers",
    "train",
]

logger = logging.getLogger("ssdkit.train")

SCHEDULES = ("multistep", "cosine", "constant")
OPTIMIZERS = ("sgd", "adamw")
AMP_MODES = ("none", "bf16", "fp16")
EVAL_METRICS = ("voc07", "voc", "coco")
DEVICES = ("auto", "cpu", "cuda")
HISTORY = "history.jsonl"
SUMMARY = "summary.json"
BEST = "best.pt"
CURVES = "curves.png"


class TrainingDivergedError(SSDKitError):
    """The loss became NaN/Inf; the message says at which iteration and what to try."""


# ----------------------------------------------------------------------------------------------------- config


def validate_config(cfg: Config) -> None:
    """Check the ``train`` values the trainer interprets; errors name the key and the bad value."""
    t = cfg.train

    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"train.{key}: {msg}")

    if t.schedule not in SCHEDULES:
        raise bad("schedule", f"expected one of {', '.join(SCHEDULES)}, got {t.schedule!r}")
    if t.optimizer not in OPTIMIZERS:
        raise bad("optimizer", f"expected one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
    if t.amp not in AMP_MODES:
        raise bad("amp", f"expected one of {', '.join(AMP_MODES)}, got {t.amp!r}")
    if t.eval_metric not in EVAL_METRICS:
        raise bad("eval_metric", f"expected one of {', '.join(EVAL_METRICS)}, got {t.eval_metric!r}")
    if not (t.device in DEVICES or str(t.device).startswith("cuda:")):
        raise bad("device", f"expected auto, cpu, cuda or cuda:N, got {t.device!r}")
    if t.batch_size < 1:
        raise bad("batch_size", f"must be >= 1, got {t.batch_size}")
    if t.eval_batch_size is not None and t.eval_batch_size < 1:
        raise bad("eval_batch_size", f"must be >= 1, got {t.eval_batch_size}")
    if t.max_iterations is not None and t.max_iterations < 1:
        raise bad("max_iterations", f"must be >= 1 (or null to train for train.epochs), got {t.max_iterations}")
    if t.epochs < 1:
        raise bad("epochs", f"must be >= 1, got {t.epochs}")
    if not t.lr > 0 or not math.isfinite(t.lr):
        raise bad("lr", f"must be a positive number, got {t.lr}")
    if t.momentum < 0 or t.weight_decay < 0:
        raise bad("momentum" if t.momentum < 0 else "weight_decay", "must be >= 0")
    if list(t.milestones) != sorted(t.milestones) or any(m < 1 for m in t.milestones):
        raise bad("milestones", f"must be increasing positive iterations, got {list(t.milestones)}")
    if not 0 < t.gamma <= 1:
        raise bad("gamma", f"must be in (0, 1], got {t.gamma}")
    if t.warmup_iterations < 0:
        raise bad("warmup_iterations", f"must be >= 0, got {t.warmup_iterations}")
    if not 0 < t.warmup_factor <= 1:
        raise bad("warmup_factor", f"must be in (0, 1], got {t.warmup_factor}")
    if t.grad_clip is not None and not t.grad_clip > 0:
        raise bad("grad_clip", f"must be positive (or null), got {t.grad_clip}")
    if t.neg_pos_ratio < 0:
        raise bad("neg_pos_ratio", f"must be >= 0, got {t.neg_pos_ratio}")
    if t.keep_checkpoints < 1:
        raise bad("keep_checkpoints", f"must be >= 1, got {t.keep_checkpoints}")
    if t.checkpoint_every < 0:
        raise bad("checkpoint_every", f"must be >= 0 (0 = at epoch ends only), got {t.checkpoint_every}")
    if t.eval_every < 0:
        raise bad("eval_every", f"must be >= 0 (0 = never evaluate), got {t.eval_every}")
    if t.log_every < 1:
        raise bad("log_every", f"must be >= 1, got {t.log_every}")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers: must be >= 0, got {cfg.data.num_workers}")


def total_iterations(cfg: Config, epoch_length: int) -> int:
    """Iterations of the run: ``train.max_iterations`` if set, else ``train.epochs * epoch_length``."""
    return cfg.train.max_iterations or cfg.train.epochs * epoch_length


def milestones_for(cfg: Config, total: int) -> tuple[int, ...]:
    """``train.milestones``, or 2/3 and 5/6 of the run (the paper's 80k and 100k of 120k iterations)."""
    if cfg.train.milestones:
        return tuple(cfg.train.milestones)
    return (round(total * 2 / 3), round(total * 5 / 6))


def lr_factor(cfg: Config, total: int) -> Callable[[int], float]:
    """The LR multiplier of iteration ``i`` (0-based) as a function: linear warmup from ``train.warmup_factor``
    over ``train.warmup_iterations``, times the schedule (multistep: ``gamma`` per passed milestone; cosine:
    half cosine from 1 to 0 over the run; constant: 1)."""
    t = cfg.train
    milestones = milestones_for(cfg, total)

    def factor(i: int) -> float:
        f = 1.0
        if t.schedule == "multistep":
            f = t.gamma ** sum(i >= m for m in milestones)
        elif t.schedule == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * min(i, total) / max(1, total)))
        if i < t.warmup_iterations:
            f *= t.warmup_factor + (1.0 - t.warmup_factor) * i / t.warmup_iterations
        return f

    return factor


# ----------------------------------------------------------------------------------------------------- model


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike) -> dict[str, list[str]]:
    """Initialise ``model`` from another checkpoint, possibly of a different class list or anchor layout.

    Every tensor whose name and shape match is copied; the rest keep their fresh initialisation. The
    classification heads are re-initialised whenever any of them does not fit (new class count), and the
    localisation heads whenever any of them does not (new anchors per location), so a head is never half
    copied.

    Args:
        model: an SSD (or a DDP wrapper of one).
        path: an ssdkit checkpoint (``load_checkpoint`` validates it; nothing in it is executed).

    Returns:
        ``{"loaded": [names], "initialised": [names], "unused": [checkpoint names not in the model]}``.

    Raises:
        CheckpointError: unreadable file, or not a single tensor of it fits the model.
    """
    net = _unwrap(model)
    ckpt = load_checkpoint(path)
    state = ckpt["model"]
    own = net.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    heads = {"cls_layers.": False, "loc_layers.": False}
    for prefix in heads:
        names = [k for k in own if k.startswith(prefix)]
        heads[prefix] = bool(names) and all(k in fits for k in names)
        if not heads[prefix]:
            for k in names:
                fits.pop(k, None)
    if not fits:
        raise CheckpointError(f"{path}: no tensor of the checkpoint fits the model (different architecture?)")
    # Only the heads may change when fine-tuning: a trunk tensor left at random would silently cost accuracy.
    trunk_misfit = [k for k in own if not k.startswith(tuple(heads)) and k not in fits]
    if trunk_misfit:
        shapes = ", ".join(
            f"{k} {list(state[k].shape) if k in state else 'missing'} vs {list(own[k].shape)}" for k in trunk_misfit[:3]
        )
        raise CheckpointError(
            f"{path}: {len(trunk_misfit)} trunk tensor(s) do not fit the model ({shapes}); only the heads may "
            "differ (check model.width_mult / batch_norm / arch)"
        )
    net.load_state_dict(fits, strict=False)
    if hasattr(net, "reset_heads") and not heads["cls_layers."]:
        # the fresh heads of a new model are already initialised; re-init makes the intent explicit
        net.reset_heads(loc=not heads["loc_layers."])
    warnings_ = []
    new_cfg = getattr(net, "config", None)
    old_cfg = ckpt["config"].model
    if new_cfg is not None:
        for key in ("mean", "std", "channel_order", "box_sizes", "steps", "clip_default_boxes", "variances"):
            if getattr(old_cfg, key) != getattr(new_cfg, key):
                warnings_.append(f"model.{key} differs from the checkpoint's ({getattr(old_cfg, key)} there, "
                                 f"{getattr(new_cfg, key)} here)")
    for w in warnings_:
        logger.warning("init_from %s: %s", path, w)
    report = {
        "loaded": sorted(fits),
        "initialised": sorted(k for k in own if k not in fits),
        "unused": sorted(k for k in state if k not in fits),
        "warnings": warnings_,
    }
    return report


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on convolution weights only: biases, BatchNorm and L2Norm scales are not decayed (Caffe
    SSD's ``decay_mult: 0`` on biases; decaying the L2Norm scale of 20 or BN gains only shrinks them)."""
    decay, no_decay = [], []
    no_decay_ids = set()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, L2Norm)):
            no_decay_ids.update(id(p) for p in m.parameters(recurse=False))
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or id(p) in no_decay_ids else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def create_model_and_optimizer(
    cfg: Config, device: str | torch.device | None = None
) -> tuple[nn.Module, torch.optim.Optimizer, dict]:
    """The model (VGG ImageNet trunk or ``train.init_from`` applied, on ``device``, DDP-wrapped when distributed)
    and its optimizer (SGD momentum / AdamW, see :func:`_param_groups` for weight decay).

    Returns:
        ``(model, optimizer, init_report)``; ``init_report`` says what was loaded/initialised (empty if nothing).
    """
    t = cfg.train
    device = torch.device(device) if device is not None else _device_for(cfg)
    model = build_model(cfg.model)
    report: dict[str, Any] = {}
    if t.pretrained_vgg:
        report["pretrained_vgg"] = load_vgg16_weights(model.extractor, t.pretrained_vgg)
        logger.info("loaded ImageNet VGG16 weights from %s (%d layers)", t.pretrained_vgg,
                    len(report["pretrained_vgg"]))
    if t.init_from:
        report.update(init_from_checkpoint(model, t.init_from))
        logger.info(
            "initialised from %s: %d tensors loaded, %d freshly initialised%s", t.init_from, len(report["loaded"]),
            len(report["initialised"]),
            f" ({', '.join(_prefixes(report['initialised']))})" if report["initialised"] else "",
        )
    model.to(device)
    if t.channels_last:  # faster on CUDA; on CPU, measured, the forward gains but the backward loses about as much
        model.to(memory_format=torch.channels_last)
    if idist.get_world_size() > 1:
        # DDP (params broadcast from rank 0). In one process the model stays unwrapped: auto_model would
        # also wrap it in DataParallel when several GPUs are visible, which this trainer does not want.
        model = idist.auto_model(model)
    return model, create_optimizer(cfg, model), report


def create_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """``train.optimizer`` (SGD with momentum, or AdamW) at ``train.lr`` over ``model``'s trainable parameters,
    weight decay as :func:`_param_groups` says; ``idist.auto_optim`` makes it distributed-aware."""
    t = cfg.train
    groups = _param_groups(model, t.weight_decay)
    if t.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=t.lr)
    return idist.auto_optim(optimizer)


def _prefixes(names: list[str]) -> list[str]:
    return sorted({n.split(".")[0] for n in names})


def create_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, total: int) -> LRScheduler:
    """Per-iteration LR schedule (:func:`lr_factor`) as ignite's ``LRScheduler`` around a torch ``LambdaLR``.

    Attach it to ``Events.ITERATION_STARTED``: iteration ``i`` (1-based) then runs at ``lr * factor(i - 1)``.
    Its ``state_dict`` (part of every checkpoint) carries the torch scheduler's.
    """
    torch_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total))
    return LRScheduler(torch_scheduler)


# ----------------------------------------------------------------------------------------------------- engines


def create_train_step(
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: str | torch.device | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Callable[[Any], dict[str, float]]:
    """The training step of :func:`create_trainer`, as a function of one batch (no engine needed, e.g. to time it).

    ``step(batch)`` takes ``(images Tensor[B, 3, S, S] uint8, targets list[dict])`` from the loader, updates
    ``model`` and returns ``{"loss", "loc_loss", "cls_loss", "lr"}`` (floats). Targets are encoded on the device
    here, not in the workers. A non-finite loss skips the update (the weights stay finite for the last
    checkpoint) and is returned, so ``TerminateOnNan`` stops the run. When distributed the returned losses are
    the mean over processes (so every process agrees on stopping).
    """
    device = torch.device(device) if device is not None else _device_for(cfg)
    m = cfg.model
    coder = SSDBoxCoder(m)
    loss_fn = SSDLoss(m.num_classes, cfg.train.neg_pos_ratio)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    grad_clip = cfg.train.grad_clip
    world = idist.get_world_size()
    params = [p for g in optimizer.param_groups for p in g["params"]]

    def step(batch) -> dict[str, float]:
        images, targets = batch
        lr = float(optimizer.param_groups[0]["lr"])
        if images.shape[0] == 0:  # every image of the batch failed to load (reported by the dataset)
            return {"loss": 0.0, "loc_loss": 0.0, "cls_loss": 0.0, "lr": lr}
        model.train()
        x = normalize(images.to(device, non_blocking=True), m.mean, m.std, m.channel_order, memory_format)
        with torch.no_grad():
            loc_t, cls_t = coder.encode_batch(
                [t["boxes"].to(device, non_blocking=True) for t in targets],
                [t["labels"].to(device, non_blocking=True) for t in targets],
                [t["ignore"].to(device, non_blocking=True) for t in targets],
            )
        with autocast(cfg.train.amp, device):
            loc_p, cls_p = model(x)
        out = loss_fn(loc_p.float(), loc_t, cls_p.float(), cls_t)
        stats = torch.stack([out.loss, out.loc_loss, out.cls_loss]).detach()
        if world > 1:
            stats = idist.all_reduce(stats) / world
        loss_v, loc_v, cls_v = stats.tolist()
        if math.isfinite(loss_v):
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(out.loss).backward()
                if grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                out.loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, grad_clip)
                optimizer.step()
        return {"loss": loss_v, "loc_loss": loc_v, "cls_loss": cls_v, "lr": lr}

    return step


def create_trainer(
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: str | torch.device | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> Engine:
    """The training ``Engine``: one :func:`create_train_step` step per batch; its output is the step's dict."""
    step = create_train_step(cfg, model, optimizer, device, scaler)
    return Engine(lambda engine, batch: step(batch))


def _device_for(cfg: Config) -> torch.device:
    if idist.get_world_size() > 1:
        return idist.device()
    return resolve_device(cfg.train.device)


# ----------------------------------------------------------------------------------------------------- handlers


def _rng_state() -> dict[str, Any]:
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


def _set_rng_state(state: dict[str, Any]) -> None:
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


@dataclass
class RunState:
    """Bookkeeping shared by the handlers (and returned by :func:`attach_handlers`)."""

    output_dir: Path
    is_main: bool
    total: int
    best_map: float = float("-inf")
    last_map: float | None = None
    last_checkpoint: str | None = None
    saved_at: int = -1
    evaluated_at: int = -1
    checkpoints: list[str] = field(default_factory=list)
    diverged_at: int | None = None
    to_save: dict[str, Any] = field(default_factory=dict)
    log_window: list[dict] = field(default_factory=list)
    log_t0: float = 0.0
    step_t0: float = 0.0

    @property
    def history_path(self) -> Path:
        return self.output_dir / HISTORY


def _append_history(run: RunState, record: dict) -> None:
    if not run.is_main:
        return
    with open(run.history_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, allow_nan=True) + "\n")


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash mid-write
                continue
    return records


def _summary_metrics(result: dict) -> dict[str, Any]:
    """The JSON-able scalar part of a DetectionMAP result (drops the PR arrays)."""
    keep = {}
    for k, v in result.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            keep[k] = float(v)
        elif k == "ap" and isinstance(v, dict):
            keep[k] = {str(n): float(a) for n, a in v.items()}
    return keep


def attach_handlers(
    trainer: Engine,
    cfg: Config,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    loaders: Loaders,
    evaluator: Engine | None = None,
    scaler: torch.amp.GradScaler | None = None,
    progress: bool = True,
    stop_at_iteration: int | None = None,
) -> RunState:
    """Attach schedule, NaN guard, epoch positioning, logging, evaluation and checkpointing to ``trainer``.

    Args:
        stop_at_iteration: stop (with a checkpoint) after this iteration as if interrupted, e.g. for
            time-sliced jobs; ``train(resume=...)`` continues from there.

    Returns:
        The :class:`RunState` (``to_save`` holds what every checkpoint stores and resume restores).
    """
    t = cfg.train
    out_dir = Path(t.output_dir)
    is_main = idist.get_rank() == 0
    epoch_length = len(loaders.train_loader)
    world = idist.get_world_size()
    run = RunState(out_dir, is_main, total_iterations(cfg, epoch_length))
    run.to_save = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "trainer": trainer}
    if scaler is not None:
        run.to_save["scaler"] = scaler
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        run.checkpoints = [str(p) for p in sorted(out_dir.glob("checkpoint_*.pt"), key=lambda p: p.stat().st_mtime)]

    trainer.add_event_handler(Events.ITERATION_STARTED, scheduler)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan(lambda out: out["loss"]))

    @trainer.on(Events.EPOCH_STARTED)
    def _position_data(engine: Engine) -> None:
        # Epoch e (1-based) reads the order of (seed, e - 1); a resumed partial epoch skips its seen batches.
        epoch0 = engine.state.epoch - 1
        set_loader_position(loaders.train_loader, epoch0, engine.state.iteration - epoch0 * epoch_length)

    images_per_iteration = loaders.per_process_batch_size * world

    @trainer.on(Events.STARTED)
    def _start_clock(engine: Engine) -> None:
        run.log_t0 = run.step_t0 = time.perf_counter()
        engine.state.metrics["img/s"] = float("nan")

    @trainer.on(Events.ITERATION_COMPLETED)
    def _track(engine: Engine) -> None:
        out = engine.state.output
        if not math.isfinite(out["loss"]):
            run.diverged_at = engine.state.iteration
            return
        now = time.perf_counter()
        # progress bar: smoothed throughput of the last iterations (data loading included)
        rate = images_per_iteration / max(now - run.step_t0, 1e-9)
        prev = engine.state.metrics.get("img/s", float("nan"))
        engine.state.metrics["img/s"] = rate if not math.isfinite(prev) else 0.9 * prev + 0.1 * rate
        run.step_t0 = now
        run.log_window.append(out)
        if engine.state.iteration % t.log_every == 0:
            n = len(run.log_window)
            record = {"iteration": engine.state.iteration, "epoch": engine.state.epoch}
            for k in ("loss", "loc_loss", "cls_loss"):
                record[k] = sum(o[k] for o in run.log_window) / n
            record["lr"] = out["lr"]
            record["img_per_s"] = n * images_per_iteration / max(now - run.log_t0, 1e-9)
            _append_history(run, record)
            run.log_window = []
            run.log_t0 = now

    if progress and is_main:
        _attach_progress(trainer, run.total)

    tb = None
    if is_main and _tensorboard_available():
        from ignite.handlers.tensorboard_logger import OutputHandler, TensorboardLogger

        tb = TensorboardLogger(log_dir=str(out_dir / "tb"))
        tb.attach(trainer, OutputHandler("train", output_transform=lambda out: out),
                  event_name=Events.ITERATION_COMPLETED(every=t.log_every))

    def evaluate(engine: Engine) -> None:
        if evaluator is None or loaders.val_loader is None:
            return
        t0 = time.perf_counter()
        evaluator.run(loaders.val_loader)
        result = evaluator.state.metrics[t.eval_metric]
        run.last_map = float(result["map"])
        run.evaluated_at = engine.state.iteration
        record = {"iteration": engine.state.iteration, "epoch": engine.state.epoch, "metric": t.eval_metric}
        record.update(_summary_metrics(result))
        _append_history(run, record)
        if tb is not None:
            tb.writer.add_scalar(f"val/{t.eval_metric}_map", run.last_map, engine.state.iteration)
        logger.info("epoch %d iteration %d: %s mAP %.4f", engine.state.epoch, engine.state.iteration,
                    t.eval_metric, run.last_map)
        spent = time.perf_counter() - t0  # keep evaluation time out of the training throughput
        run.log_t0 += spent
        run.step_t0 += spent

    def checkpoint(engine: Engine, metrics: dict | None = None) -> None:
        if engine.state.iteration == run.saved_at or run.diverged_at is not None:
            return
        run.saved_at = engine.state.iteration
        is_best = run.last_map is not None and run.evaluated_at == engine.state.iteration and (
            math.isfinite(run.last_map) and run.last_map > run.best_map
        )
        if is_best:
            run.best_map = run.last_map
        if not is_main:
            return
        state = {k: v.state_dict() for k, v in run.to_save.items() if k != "model"}
        extra = {
            "iteration": engine.state.iteration,
            "epoch": engine.state.epoch,
            "rng": _rng_state(),
            "metrics": {
                "map": run.last_map if run.evaluated_at == engine.state.iteration else None,
                "best_map": run.best_map if math.isfinite(run.best_map) else None,
                "eval_metric": t.eval_metric,
                "loss": engine.state.output["loss"] if engine.state.output else None,
                **(metrics or {}),
            },
        }
        path = out_dir / f"checkpoint_{engine.state.iteration:08d}.pt"
        save_checkpoint(path, model, cfg, loaders.class_names, **state, **extra)
        run.last_checkpoint = str(path)
        if str(path) in run.checkpoints:
            run.checkpoints.remove(str(path))
        run.checkpoints.append(str(path))
        while len(run.checkpoints) > t.keep_checkpoints:
            old = run.checkpoints.pop(0)
            Path(old).unlink(missing_ok=True)
        if is_best:
            save_checkpoint(out_dir / BEST, model, cfg, loaders.class_names, **state, **extra)

    @trainer.on(Events.EPOCH_COMPLETED)
    def _end_of_epoch(engine: Engine) -> None:
        if t.eval_every and engine.state.epoch % t.eval_every == 0:
            evaluate(engine)
        checkpoint(engine)

    if t.checkpoint_every:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=t.checkpoint_every), lambda e: checkpoint(e))

    if stop_at_iteration is not None:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at_iteration), lambda e: e.terminate())

    @trainer.on(Events.COMPLETED)
    def _end_of_run(engine: Engine) -> None:
        if run.diverged_at is not None:
            return  # keep the last good checkpoint; train() raises with advice
        if engine.state.iteration >= run.total and run.evaluated_at != engine.state.iteration and t.eval_every:
            evaluate(engine)
        checkpoint(engine)
        if is_main:
            _plot(run)
        if tb is not None:
            tb.close()

    return run


def _tensorboard_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def _plot(run: RunState) -> None:
    try:
        from ssdkit.viz import plot_training_curves

        plot_training_curves(_read_history(run.history_path), run.output_dir / CURVES)
    except Exception as e:  # noqa: BLE001 - a plotting problem must not lose a finished run
        logger.warning("could not plot the training curves: %s", e)


# ----------------------------------------------------------------------------------------------------- resume


def _attach_progress(trainer: Engine, total: int) -> None:
    """A tqdm bar per epoch with loss parts, LR and img/s, rate and ETA. Unlike ignite's ``ProgressBar`` (whose
    total is always the epoch length) its total is what this epoch will really run, so a run cut short by
    ``train.max_iterations`` shows a true ETA."""
    from tqdm.auto import tqdm

    bar = {}

    def start(engine: Engine) -> None:  # at the first completed iteration of an epoch (or of a resumed one)
        it, per_epoch = engine.state.iteration - 1, engine.state.epoch_length
        this_epoch = min(per_epoch - it % per_epoch, total - it)
        bar["tqdm"] = tqdm(total=this_epoch, desc=f"train epoch {engine.state.epoch}", leave=False, unit="it")

    def step(engine: Engine) -> None:
        if "tqdm" not in bar:
            start(engine)
        out = engine.state.output if isinstance(engine.state.output, dict) else {}
        post = {k: f"{out[k]:.3g}" for k in ("loss", "loc_loss", "cls_loss", "lr") if k in out}
        if "img/s" in engine.state.metrics:
            post["img/s"] = f"{engine.state.metrics['img/s']:.1f}"
        first = bar["tqdm"].n == 0
        bar["tqdm"].set_postfix(post, refresh=first)  # shown at once, then at tqdm's refresh rate
        bar["tqdm"].update(1)

    def close(engine: Engine) -> None:
        if "tqdm" in bar:
            bar.pop("tqdm").close()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, step)
    for event in (Events.EPOCH_COMPLETED, Events.COMPLETED, Events.TERMINATE):  # not EXCEPTION_RAISED: a
        # handler there makes ignite swallow the exception
        trainer.add_event_handler(event, close)


def _resume(path: str | os.PathLike, run: RunState, cfg: Config, epoch_length: int) -> dict:
    """Load training state from checkpoint ``path`` into ``run.to_save``; returns the checkpoint dict."""
    from ignite.handlers import Checkpoint

    state = load_checkpoint(path)
    missing = [k for k in run.to_save if k not in state]
    if missing:
        raise CheckpointError(f"{path}: cannot resume, no training state ({', '.join(missing)}); "
                              "use train.init_from to start a new run from its weights")
    ck_model = state["config"].model
    if ck_model != cfg.model:
        old, new = config_to_dict(state["config"])["model"], config_to_dict(cfg)["model"]
        diff = ", ".join(f"model.{k}" for k in old if old[k] != new[k])
        raise CheckpointError(f"{path}: cannot resume, the model config differs ({diff})")
    ck_len = state["trainer"].get("epoch_length")
    if ck_len != epoch_length:
        raise CheckpointError(
            f"{path}: cannot resume, it was written with {ck_len} iterations per epoch but this config gives "
            f"{epoch_length} (train.batch_size, the data or the number of processes changed)"
        )
    to_load = dict(run.to_save)
    trainer_state = dict(state["trainer"])
    # The checkpoint says when the run ends; this config decides (e.g. resume with a longer train.epochs).
    for k in ("max_epochs", "max_iters"):
        trainer_state.pop(k, None)
    trainer_state["max_iters"] = run.total
    state = dict(state, trainer=trainer_state)
    Checkpoint.load_objects(to_load=to_load, checkpoint=state)
    metrics = state.get("metrics") or {}
    if metrics.get("best_map") is not None:
        run.best_map = float(metrics["best_map"])
    run.saved_at = int(state.get("iteration", -1))
    return state


def _truncate_history(path: Path, iteration: int) -> None:
    """Drop history records past ``iteration`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = [r for r in _read_history(path) if r.get("iteration", 0) <= iteration]
    from ssdkit.utils import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


# ----------------------------------------------------------------------------------------------------- entry


def _nan_message(cfg: Config, iteration: int, epoch: int) -> str:
    t = cfg.train
    return (
        f"training diverged: the loss became NaN/Inf at iteration {iteration} (epoch {epoch}); the run stopped "
        f"and the last good checkpoint is kept. Try a lower train.lr (now {t.lr:g}), a longer warmup "
        f"(train.warmup_iterations, now {t.warmup_iterations}), gradient clipping (train.grad_clip, now "
        f"{t.grad_clip}), and check the data with `ssdkit check-data --data {cfg.data.train}`"
    )


def _setup_logging() -> None:
    root = logging.getLogger("ssdkit")
    if not root.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def _training(local_rank: int, cfg: Config, resume: str | None, progress: bool,
              stop_at_iteration: int | None) -> dict:
    """Everything one process does (``idist.Parallel`` calls this in each process)."""
    from ignite.utils import manual_seed

    rank, world = idist.get_rank(), idist.get_world_size()
    if rank != 0:
        logging.getLogger("ssdkit").setLevel(logging.WARNING)
    device = _device_for(cfg)
    out_dir = Path(cfg.train.output_dir)
    manual_seed(cfg.train.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)

    loaders = build_loaders(cfg)
    if cfg.model.batch_norm and loaders.per_process_batch_size < 2:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} gives {loaders.per_process_batch_size} image per process; "
            "model.batch_norm needs at least 2 (BatchNorm of the 1x1 last feature map)"
        )
    if rank == 0:
        problems = loaders.train_source.scan()
        if problems:
            logger.warning("%d box(es) of the training data were clipped or dropped (first: %s); "
                           "`ssdkit check-data` lists them all", len(problems), problems[0])
    model, optimizer, init_report = create_model_and_optimizer(cfg, device)
    epoch_length = len(loaders.train_loader)
    total = total_iterations(cfg, epoch_length)
    scheduler = create_scheduler(cfg, optimizer, total)
    use_amp = amp_dtype(cfg.train.amp, device) is not None
    if cfg.train.amp != "none" and not use_amp:
        logger.warning("train.amp=%s needs CUDA; training in float32 on %s", cfg.train.amp, device)
    scaler = torch.amp.GradScaler("cuda") if use_amp and cfg.train.amp == "fp16" else None
    trainer = create_trainer(cfg, model, optimizer, device, scaler)
    evaluator = None
    if loaders.val_loader is not None and cfg.train.eval_every:
        evaluator = create_evaluator(
            model, cfg, loaders.class_names, cfg.train.eval_metric, device,
            pixel_offset=getattr(loaders.val_source, "format", "") == "voc", amp=cfg.train.amp,
            channels_last=cfg.train.channels_last,
        )
    run = attach_handlers(trainer, cfg, model=model, optimizer=optimizer, scheduler=scheduler, loaders=loaders,
                          evaluator=evaluator, scaler=scaler, progress=progress, stop_at_iteration=stop_at_iteration)
    if rank == 0:
        save_config(cfg, out_dir / "config.yaml")
    if resume:
        state = _resume(resume, run, cfg, epoch_length)
        if rank == 0:
            _truncate_history(run.history_path, trainer.state.iteration)
        logger.info("resumed from %s at iteration %d (epoch %d), lr %.3g", resume, trainer.state.iteration,
                    trainer.state.epoch, optimizer.param_groups[0]["lr"])
        manual_seed(cfg.train.seed + rank)  # then the saved states, so the resumed run continues them
        _set_rng_state(state.get("rng", {}))
    else:
        manual_seed(cfg.train.seed + rank)
    if rank == 0:
        logger.info("training %s for %d iterations (%d per epoch, batch %d on %d process(es)) on %s",
                    cfg.model.arch, total, epoch_length, cfg.train.batch_size, world, device)

    if trainer.state.iteration < total:
        trainer.run(loaders.train_loader, max_iters=total)
    state = trainer.state
    diverged = run.diverged_at is not None
    summary = {
        "iteration": state.iteration,
        "epoch": state.epoch,
        "total_iterations": total,
        "finished": state.iteration >= total and not diverged,
        "best_map": run.best_map if math.isfinite(run.best_map) else None,
        "last_map": run.last_map,
        "eval_metric": cfg.train.eval_metric,
        "last_checkpoint": run.last_checkpoint,
        "best_checkpoint": str(out_dir / BEST) if (out_dir / BEST).is_file() else None,
        "history": str(run.history_path),
        "curves": str(out_dir / CURVES) if (out_dir / CURVES).is_file() else None,
        "output_dir": str(out_dir),
        "world_size": world,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "loss": state.output["loss"] if state.output else None,
        "init": {k: len(v) for k, v in init_report.items()},
        "diverged_at": run.diverged_at,
    }
    if world > 1:
        summary["replicas_in_sync"] = _replicas_in_sync(model)
    if rank == 0:
        from ssdkit.utils import atomic_write_text

        atomic_write_text(out_dir / SUMMARY, json.dumps(summary, indent=2, allow_nan=True))
    if diverged:
        raise TrainingDivergedError(_nan_message(cfg, run.diverged_at, state.epoch))
    return summary


def _replicas_in_sync(model: nn.Module) -> bool:
    """Whether every process holds the same parameters (a cheap checksum, gathered). BatchNorm running statistics
    are left out: each process updates them from its own shard (DDP re-broadcasts rank 0's at each forward)."""
    net = _unwrap(model)
    with torch.no_grad():
        s = torch.stack([p.detach().double().sum() for p in net.parameters()])
        checksum = (s * torch.arange(1, len(s) + 1, dtype=torch.float64, device=s.device)).sum().cpu()
    gathered = idist.all_gather(checksum.view(1).to(idist.device()))
    return bool(torch.all(gathered == gathered[0]).item())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend(cfg: Config) -> str:
    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    return "nccl" if cuda else "gloo"


def train(
    cfg: Config,
    resume: str | None = None,
    progress: bool = True,
    nproc: int | None = None,
    *,
    stop_at_iteration: int | None = None,
) -> dict:
    """Train an SSD as ``cfg`` says; files go to ``cfg.train.output_dir``.

    Args:
        cfg: the run config (see ``configs/*.yaml``).
        resume: a checkpoint of this run to continue from (same iteration, LR, data position and RNG state).
        progress: show a progress bar (loss parts, lr, img/s).
        nproc: processes on this machine (``torch.distributed`` through ``ignite.distributed``: gloo on CPU,
            nccl on CUDA). Under ``torchrun`` leave it unset: the world comes from the environment.
        stop_at_iteration: stop after this iteration with a checkpoint, as if interrupted.

    Returns:
        Summary dict: ``best_map``, ``last_map``, ``last_checkpoint``, ``best_checkpoint``, ``history``
        (``history.jsonl``: one JSON object per log step and per evaluation), ``curves`` (PNG), ``iteration``,
        ``epoch``, ``lr``, ``world_size``, ``finished``, ...

    Output folder: ``config.yaml``, ``checkpoint_<iteration>.pt`` (the last ``train.keep_checkpoints``),
    ``best.pt`` (best validation mAP), ``history.jsonl``, ``curves.png``, ``summary.json``, ``tb/`` (TensorBoard,
    when installed).

    Raises:
        ConfigError: a config value is invalid or does not fit the data (the message names the key).
        TrainingDivergedError: the loss became NaN/Inf (the message says what to try).
        DataError, CheckpointError: unreadable data or checkpoint.
    """
    validate_config(cfg)
    _setup_logging()
    if nproc is not None and nproc < 1:
        raise ConfigError(f"nproc: must be >= 1, got {nproc}")
    if resume is not None and not Path(resume).is_file():
        raise CheckpointError(f"{resume}: checkpoint not found")
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    out_dir = Path(cfg.train.output_dir)
    if nproc and nproc > 1:
        if env_world > 1:
            raise ConfigError(f"nproc: launched by torchrun with WORLD_SIZE={env_world}; do not also pass nproc")
        (out_dir / SUMMARY).unlink(missing_ok=True)
        with idist.Parallel(backend=_backend(cfg), nproc_per_node=nproc, master_addr="127.0.0.1",
                            master_port=_free_port()) as parallel:
            parallel.run(_training, cfg, resume, progress, stop_at_iteration)
        return json.loads((out_dir / SUMMARY).read_text())
    if env_world > 1 and not idist.get_world_size() > 1:
        with idist.Parallel(backend=_backend(cfg)) as parallel:
            parallel.run(_training, cfg, resume, progress, stop_at_iteration)
        return json.loads((out_dir / SUMMARY).read_text()) if (out_dir / SUMMARY).is_file() else {}
    return _training(0, cfg, resume, progress, stop_at_iteration)
