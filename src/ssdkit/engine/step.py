"""The training step as a function of a batch, and the ignite ``Engine`` that runs it.

One step::

    images uint8 [B, 3, S, S] ──device──▶ normalize (model mean/std/channel order; channels_last if configured)
    targets (boxes [M, 4] xyxy input px, labels [M] 0-based, ignore [M]) ──device──▶ SSDBoxCoder.encode_batch
    ──▶ (loc_targets [B, A, 4], cls_targets [B, A]) ; model(x) ──▶ SSDLoss ──▶ backward, step
    returns {"loss", "loc_loss", "cls_loss", "lr"} (floats; averaged over processes when distributed)

A batch too small to train on (fewer than 2 images with BatchNorm, whose 1x1 last feature map needs two values
per channel; none otherwise) is skipped, never a crash: the loader's batches are full (``drop_last``), so only
images that failed to load make one, and the step returns ``{"loss": 0.0, ..., "skipped": 1.0}`` without
touching the model. When distributed every process takes that decision together (one small collective before
the forward, which also carries a stop request of :mod:`ssdkit.engine.interrupt`): a process that skipped alone
would leave the others waiting in DDP's gradient all-reduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from torch import nn

from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config
from ssdkit.data.preprocess import normalize
from ssdkit.engine.launch import device_for
from ssdkit.loss import SSDLoss
from ssdkit.runtime import autocast

__all__ = ["create_train_step", "create_trainer"]


def create_train_step(
    cfg: Config,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: str | torch.device | None = None,
    scaler: torch.amp.GradScaler | None = None,
    stop: Any = None,
) -> Callable[[Any], dict[str, float]]:
    """The training step of :func:`create_trainer`, as a function of one batch (no engine needed, e.g. to time it).

    ``step(batch)`` takes ``(images Tensor[B, 3, S, S] uint8, targets list[dict])`` from the loader, updates
    ``model`` and returns ``{"loss", "loc_loss", "cls_loss", "lr"}`` (floats). Targets are encoded on the device
    here, not in the workers. A non-finite loss skips the update (the weights stay finite for the last
    checkpoint) and is returned, so ``TerminateOnNan`` stops the run. When distributed the returned losses are
    the mean over processes (so every process agrees on stopping).

    A batch too small to train on is skipped (module docstring): ``"skipped": 1.0`` is added to the output.
    ``stop`` (a :class:`~ssdkit.engine.interrupt.StopRequest`): when distributed, the largest ``stop.code`` over
    the processes is agreed before the step and returned as ``"stop"`` (only when non-zero), so that all stop
    after the same step.
    """
    device = torch.device(device) if device is not None else device_for(cfg)
    m = cfg.model
    coder = SSDBoxCoder(m)
    loss_fn = SSDLoss(m.num_classes, cfg.train.neg_pos_ratio)
    memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    grad_clip = cfg.train.grad_clip
    world = idist.get_world_size()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # BatchNorm in training mode needs more than one value per channel: 2 images for the 1x1 last feature map
    min_images = 2 if any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in model.modules()) else 1

    def step(batch) -> dict[str, float]:
        images, targets = batch
        lr = float(optimizer.param_groups[0]["lr"])
        too_few, agreed = images.shape[0] < min_images, {}
        if world > 1:  # decide together: a process skipping alone would hang the others in DDP's all-reduce
            flags = torch.tensor([float(too_few), float(getattr(stop, "code", 0))], device=device)
            too_few_any, stop_code = idist.all_reduce(flags, op="MAX").tolist()
            too_few = too_few_any > 0
            agreed = {"stop": stop_code} if stop_code else {}
        if too_few:  # images of the batch failed to load (each reported by the dataset); counted by the trainer
            return {"loss": 0.0, "loc_loss": 0.0, "cls_loss": 0.0, "lr": lr, "skipped": 1.0, **agreed}
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
        return {"loss": loss_v, "loc_loss": loc_v, "cls_loss": cls_v, "lr": lr, **agreed}

    return step


def create_trainer(*args: Any, **kwargs: Any) -> Engine:
    """The training ``Engine``: one :func:`create_train_step` step per batch (its arguments: ``cfg, model,
    optimizer, device, scaler, stop``); the engine's output is the step's dict."""
    step = create_train_step(*args, **kwargs)
    return Engine(lambda engine, batch: step(batch))
