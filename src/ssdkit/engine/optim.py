"""The optimisation recipe: parameter groups, the optimizer and the per-iteration LR schedule.

``train.optimizer`` (SGD with momentum, or AdamW) over :func:`param_groups` (weight decay on convolution weights
only); the LR of iteration ``i`` is ``train.lr * lr_factor(cfg, total)(i)``: linear warmup times multistep /
cosine / constant, driven per iteration by ignite's ``LRScheduler`` around a torch ``LambdaLR``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import ignite.distributed as idist
import torch
from ignite.handlers import LRScheduler
from torch import nn

from ssdkit.config import Config
from ssdkit.models.vgg import L2Norm

__all__ = ["total_iterations", "milestones_for", "lr_factor", "param_groups", "create_optimizer", "create_scheduler"]


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


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on convolution weights only: biases, BatchNorm and L2Norm scales are not decayed (Caffe
    SSD's ``decay_mult: 0`` on biases; decaying the L2Norm scale of 20 or BN gains only shrinks them).

    Returns ``[{"params": decayed, "weight_decay": weight_decay}, {"params": the rest, "weight_decay": 0.0}]``
    (the second group only when there is a rest); frozen parameters are left out.
    """
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


def create_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """``train.optimizer`` (SGD with momentum, or AdamW) at ``train.lr`` over ``model``'s trainable parameters,
    weight decay as :func:`param_groups` says; ``idist.auto_optim`` makes it distributed-aware."""
    t = cfg.train
    groups = param_groups(model, t.weight_decay)
    if t.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=t.lr)
    return idist.auto_optim(optimizer)


def create_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, total: int) -> LRScheduler:
    """Per-iteration LR schedule (:func:`lr_factor`) as ignite's ``LRScheduler`` around a torch ``LambdaLR``.

    Attach it to ``Events.ITERATION_STARTED``: iteration ``i`` (1-based) then runs at ``lr * factor(i - 1)``.
    Its ``state_dict`` (part of every checkpoint) carries the torch scheduler's.
    """
    torch_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total))
    return LRScheduler(torch_scheduler)
