import ignite.distributed as idist
import torch

from ssdkit.checkpoint import load_checkpoint
from ssdkit.engine.data import build_loaders
from ssdkit.engine.train import train

from . import tiny_config


def _first_epoch(cfg, rank, world, monkeypatch):
    monkeypatch.setattr(idist, "get_world_size", lambda: world)
    monkeypatch.setattr(idist, "get_rank", lambda: rank)
    loaders = build_loaders(cfg)
    train_ids = [t["index"] for _, targets in loaders.train_loader for t in targets]
    val_ids = [loaders.val_loader.dataset.source.indices[t["index"]] for _, ts in loaders.val_loader for t in ts]
    return loaders.per_process_batch_size, train_ids, val_ids


def test_ranks_read_disjoint_shards(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, data={"shapes_train_count": 8, "shapes_val_count": 5, "shapes_image_size": 32,
                                      "augment": False}, train={"batch_size": 4})
    b0, train0, val0 = _first_epoch(cfg, 0, 2, monkeypatch)
    b1, train1, val1 = _first_epoch(cfg, 1, 2, monkeypatch)
    assert b0 == b1 == 2  # the global batch is split among processes
    assert len(train0) == len(train1) == 4 and not set(train0) & set(train1)
    assert sorted(train0 + train1) == list(range(8))
    # evaluation shards are not padded: every validation image counted exactly once
    assert sorted(val0 + val1) == list(range(5))


def test_two_process_gloo_training(tmp_path):
    """``train(cfg, nproc=2)``: two CPU processes (gloo), DDP, distributed evaluation, rank 0 writes."""
    cfg = tiny_config(tmp_path, train={"batch_size": 4, "max_iterations": 2, "eval_every": 1}, data={"augment": False})
    summary = train(cfg, progress=False, nproc=2)
    assert summary["world_size"] == 2 and summary["iteration"] == 2 and summary["epoch"] == 2 and summary["finished"]
    assert summary["replicas_in_sync"] is True
    assert summary["last_map"] is not None
    state = load_checkpoint(summary["last_checkpoint"])
    assert state["iteration"] == 2
    assert all(torch.isfinite(v.float()).all() for v in state["model"].values())
    assert not any(k.startswith("module.") for k in state["model"])
