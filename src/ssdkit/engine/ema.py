"""Weight EMA (``train.ema_momentum``): an exponential moving average of the weights, evaluated and saved.

ignite's :class:`~ignite.handlers.EMAHandler` keeps the average (``ema = (1 - m) * ema + m * weights`` after
every step; BatchNorm statistics averaged alike, ``handle_buffers="update"``). ssdkit sets ``m`` per iteration
with a ramp, ``m_t = 1 - (1 - m) * (1 - exp(-t * m / 0.2))`` (YOLOv5's, written as a momentum): near 1 at the start,
so the average follows the fast-changing early weights, ``m`` after about ``1 / m`` iterations. A function of the
iteration only, so a resumed run continues the same average bit for bit.

With EMA on, validation, ``best.pt`` and the checkpoints' ``model`` entry are the averaged weights (what predict,
evaluate and export load); the weights being trained are saved beside them as ``train_model`` for resume.
"""

from __future__ import annotations

import math

from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from torch import nn

__all__ = ["RAMP", "ema_momentum", "attach_ema", "TRAIN_MODEL"]

#: The ramp's time constant, in units of ``1 / m`` iterations.
RAMP = 0.2
#: The checkpoint entry of the weights being trained when the ``model`` entry is their average.
TRAIN_MODEL = "train_model"


def ema_momentum(iteration: int, momentum: float) -> float:
    """The EMA momentum after step ``iteration`` (1-based) for the configured ``momentum``."""
    return 1.0 - (1.0 - momentum) * (1.0 - math.exp(-iteration * momentum / RAMP))


def attach_ema(trainer: Engine, model: nn.Module, momentum: float) -> EMAHandler:
    """Keep an EMA of ``model`` (DDP-wrapped or not) updated after every step of ``trainer``; its
    ``ema_model`` (in eval mode) is what to evaluate and save."""
    ema = EMAHandler(model, momentum=momentum, handle_buffers="update")

    @trainer.on(Events.ITERATION_COMPLETED)  # registered first: runs before the update below
    def _ramp(engine: Engine) -> None:
        engine.state.ema_momentum = ema_momentum(engine.state.iteration, momentum)

    ema.attach(trainer, name="ema_momentum", warn_if_exists=False)
    return ema
