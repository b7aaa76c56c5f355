"""Resume: an interrupted and resumed run is the uninterrupted one, bit for bit; checkpoints that cannot be
continued are refused with the reason."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ssdkit.checkpoint import load_checkpoint, save_checkpoint
from ssdkit.engine.handlers import read_history
from ssdkit.engine.resume import load_training_state, rng_state, set_rng_state
from ssdkit.engine.train import train
from ssdkit.errors import CheckpointError
from ssdkit.models import build_model

from . import tiny_config


def _weights(path):
    return load_checkpoint(path)["model"]


def _losses(out_dir):
    return [(r["iteration"], r["loss"], r["loc_loss"], r["cls_loss"], r["lr"])
            for r in read_history(Path(out_dir) / "history.jsonl") if "loss" in r]


def test_train_resume_matches_uninterrupted_run(tmp_path):
    """Resuming from a mid-epoch checkpoint (iteration 3 of 2 epochs x 2) ends at the same iteration, LR and
    weights as the uninterrupted run: data order, augmentation, LR schedule and optimizer state all continue.

    Also the end-to-end smoke test: evaluation, history, curves, best.pt, config.yaml, summary, keep-last-k."""
    common = {"eval_every": 1, "checkpoint_every": 3, "keep_checkpoints": 3}
    full = train(tiny_config(tmp_path / "full", train=common), progress=False)
    assert full["iteration"] == 4 and full["epoch"] == 2 and full["finished"]
    out = Path(full["output_dir"])
    for name in ("config.yaml", "history.jsonl", "curves.png", "best.pt", "summary.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert [r["epoch"] for r in records if "map" in r] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["lr"] > 0 and r["img_per_s"] > 0 for r in records if "loss" in r)
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == [
        "checkpoint_00000002.pt", "checkpoint_00000003.pt", "checkpoint_00000004.pt"]
    ck = load_checkpoint(full["last_checkpoint"])
    assert ck["iteration"] == 4 and len(ck["class_names"]) == 8
    assert {"optimizer", "scheduler", "trainer", "rng", "metrics", "version"} <= set(ck)
    assert ck["metrics"]["best_map"] == pytest.approx(full["best_map"])

    resumed = train(tiny_config(tmp_path / "resumed", train=common), resume=str(out / "checkpoint_00000003.pt"),
                    progress=False)
    assert resumed["iteration"] == 4 and resumed["epoch"] == 2 and resumed["finished"]
    assert resumed["lr"] == full["lr"] and resumed["lr"] < 0.01 * 0.1  # past the milestones
    a, b = _weights(full["last_checkpoint"]), _weights(resumed["last_checkpoint"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6), k
        assert torch.equal(a[k], b[k]), k  # bit for bit
    ca, cb = load_checkpoint(full["last_checkpoint"]), load_checkpoint(resumed["last_checkpoint"])
    assert ca["optimizer"]["param_groups"][0]["lr"] == cb["optimizer"]["param_groups"][0]["lr"]
    assert ca["trainer"] == cb["trainer"]
    assert _losses(tmp_path / "resumed") == _losses(out)[3:]  # iteration 4, the same losses and LR
    assert cb["metrics"]["best_map"] == pytest.approx(max(full["best_map"], resumed["last_map"]))


def test_stop_and_resume_in_the_same_folder(tmp_path):
    """Interrupted with stop_at_iteration and resumed in its own folder: the same losses, LR, mAP and weights as the
    uninterrupted run, history without duplicates, and keep_checkpoints counts the checkpoints of before the stop."""
    common = {"eval_every": 1, "checkpoint_every": 1, "keep_checkpoints": 2}
    full = train(tiny_config(tmp_path / "full", train=common), progress=False)
    cfg = tiny_config(tmp_path / "cut", train=common)
    first = train(cfg, progress=False, stop_at_iteration=3)
    assert first["iteration"] == 3 and not first["finished"]
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint_*.pt")) == [
        "checkpoint_00000002.pt", "checkpoint_00000003.pt"]
    second = train(cfg, progress=False, resume=first["last_checkpoint"])
    assert second["finished"] and second["iteration"] == 4
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint_*.pt")) == [
        "checkpoint_00000003.pt", "checkpoint_00000004.pt"]
    full_h, cut_h = read_history(tmp_path / "full" / "history.jsonl"), read_history(tmp_path / "cut" / "history.jsonl")
    assert [{k: v for k, v in r.items() if k != "img_per_s"} for r in cut_h] == [
        {k: v for k, v in r.items() if k != "img_per_s"} for r in full_h]
    a, b = _weights(full["last_checkpoint"]), _weights(second["last_checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second["best_map"] == full["best_map"]


def test_rng_state_round_trip():
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    saved = rng_state()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(2), random.seed(2), np.random.seed(2)
    set_rng_state(saved)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


def test_checkpoints_that_cannot_be_resumed_say_why(tmp_path):
    cfg = tiny_config(tmp_path)
    model = build_model(cfg.model)
    names = [f"c{i}" for i in range(cfg.model.num_classes - 1)]
    to_load = {"model": model, "optimizer": object(), "scheduler": object(), "trainer": object()}
    weights_only = tmp_path / "weights.pt"
    save_checkpoint(weights_only, model, cfg, names)
    with pytest.raises(CheckpointError, match=r"no training state \(optimizer, scheduler, trainer\).*init_from"):
        load_training_state(weights_only, to_load, cfg, 2, 4)
    with_state = tmp_path / "state.pt"
    save_checkpoint(with_state, model, cfg, names, optimizer={}, scheduler={}, trainer={"epoch_length": 2})
    with pytest.raises(CheckpointError, match="iterations per epoch but this config gives 3"):
        load_training_state(with_state, to_load, cfg, 3, 4)
    other = tiny_config(tmp_path, model={"l2norm_scale": 10.0})
    with pytest.raises(CheckpointError, match=r"model config differs \(model.l2norm_scale\)"):
        load_training_state(with_state, to_load, other, 2, 4)
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        train(cfg, resume=str(tmp_path / "missing.pt"), progress=False)
