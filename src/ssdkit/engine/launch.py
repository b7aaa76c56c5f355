"""Process launch through ``ignite.distributed``: one process, ``nproc`` spawned ones, or a ``torchrun`` world.

:func:`launch` runs a per-process function ``training(local_rank, cfg, *args)`` as the environment says: spawned
with ``idist.Parallel(nproc_per_node=nproc)`` (gloo on CPU, nccl on CUDA), inside the world ``torchrun`` made
(``WORLD_SIZE`` > 1), or in this process. Only rank 0 writes files; what the run returns is the summary rank 0
wrote.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import ignite.distributed as idist
import torch
from torch import nn

from ssdkit.checkpoint import _unwrap
from ssdkit.config import Config
from ssdkit.errors import ConfigError
from ssdkit.runtime import resolve_device

__all__ = ["device_for", "backend_for", "setup_logging", "replicas_in_sync", "launch"]


def device_for(cfg: Config) -> torch.device:
    """This process's device: ``idist.device()`` when distributed, else ``train.device`` resolved."""
    if idist.get_world_size() > 1:
        return idist.device()
    return resolve_device(cfg.train.device)


def backend_for(cfg: Config) -> str:
    """``nccl`` when training on CUDA, else ``gloo``."""
    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    return "nccl" if cuda else "gloo"


def setup_logging() -> None:
    """INFO logs of ``ssdkit.*`` to stderr, unless the application configured logging itself."""
    root = logging.getLogger("ssdkit")
    if not root.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def replicas_in_sync(model: nn.Module) -> bool:
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


def launch(training: Callable[..., dict], cfg: Config, *args, nproc: int | None, summary: Path) -> dict:
    """Run ``training(local_rank, cfg, *args)`` in this process, in ``nproc`` spawned ones, or in each process of
    a ``torchrun`` world.

    Args:
        training: the per-process function; in this process (alone, or as a rank of a ``torchrun`` world) its
            return value is returned.
        nproc: processes to spawn on this machine (``None`` or 1: none). Under ``torchrun`` leave it unset.
        summary: the JSON file rank 0 writes at the end; returned (parsed) when the work ran in spawned processes.

    Raises:
        ConfigError: ``nproc`` < 1, or ``nproc`` given inside a ``torchrun`` world.
    """
    if nproc is not None and nproc < 1:
        raise ConfigError(f"nproc: must be >= 1, got {nproc}")
    env_world = int(os.environ.get("WORLD_SIZE", "1"))
    if nproc and nproc > 1:
        if env_world > 1:
            raise ConfigError(f"nproc: launched by torchrun with WORLD_SIZE={env_world}; do not also pass nproc")
        summary.unlink(missing_ok=True)
        with idist.Parallel(backend=backend_for(cfg), nproc_per_node=nproc, master_addr="127.0.0.1",
                            master_port=_free_port()) as parallel:
            parallel.run(training, cfg, *args)
        return json.loads(summary.read_text()) if summary.is_file() else {}  # none: stopped before the end
    if env_world > 1 and not idist.get_world_size() > 1:
        result = {}

        def run_here(local_rank: int, *a) -> None:  # torchrun: this process is one rank; keep what it returns
            result.update(training(local_rank, *a))

        with idist.Parallel(backend=backend_for(cfg)) as parallel:
            parallel.run(run_here, cfg, *args)
        return result
    return training(0, cfg, *args)
