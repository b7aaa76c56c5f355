"""Process launch: one process, nproc, torchrun; the device and backend of a config (no processes spawned here:
tests/engine/test_distributed.py runs two)."""

from pathlib import Path

import pytest
import torch

from ssdkit.engine.launch import backend_for, device_for, launch, replicas_in_sync
from ssdkit.engine.train import train
from ssdkit.errors import ConfigError

from . import tiny_config


def test_one_process_runs_here(tmp_path):
    calls = []

    def training(local_rank, cfg, *args):
        calls.append((local_rank, args))
        return {"ok": True}

    assert launch(training, tiny_config(tmp_path), "a", 1, nproc=None, summary=tmp_path / "s.json") == {"ok": True}
    assert launch(training, tiny_config(tmp_path), nproc=1, summary=tmp_path / "s.json") == {"ok": True}
    assert calls == [(0, ("a", 1)), (0, ())]


def test_bad_nproc_names_the_argument(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path)
    with pytest.raises(ConfigError, match="nproc: must be >= 1, got 0"):
        train(cfg, progress=False, nproc=0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="WORLD_SIZE=2; do not also pass nproc"):
        train(cfg, progress=False, nproc=2)
    assert not Path(cfg.train.output_dir, "summary.json").exists()


def test_device_and_backend(tmp_path):
    cfg = tiny_config(tmp_path)  # device: cpu
    assert device_for(cfg) == torch.device("cpu") and backend_for(cfg) == "gloo"


def test_replicas_in_sync_in_one_process():
    assert replicas_in_sync(torch.nn.Linear(3, 2)) is True
