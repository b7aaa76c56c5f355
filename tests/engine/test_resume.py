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
    with pytest.raises(CheckpointError, match=r"model config differs: model.l2norm_scale \(20.0 there, 10.0 here\)"):
        load_training_state(with_state, to_load, other, 2, 4)
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint not found"):
        train(cfg, resume=str(tmp_path / "missing.pt"), progress=False)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run of 4 iterations stopped after iteration 2 (checkpoint_00000002.pt), and its config."""
    out = tmp_path_factory.mktemp("stopped")
    cfg = tiny_config(out, train={"max_iterations": 4}, data={"augment": False})
    summary = train(cfg, progress=False, stop_at_iteration=2)
    return cfg, summary["last_checkpoint"]


def test_resume_refuses_what_it_cannot_continue(tmp_path, stopped_run):
    """Other class names, another optimizer, a changed seed or batch size, or an end before the checkpoint's
    iteration: one line naming what differs."""
    from ssdkit.config import apply_overrides
    from ssdkit.errors import ConfigError

    cfg, ckpt = stopped_run
    elsewhere = [f"train.output_dir={tmp_path / 'new'}"]
    cases = [
        (["data.classes=[square,circle,triangle,diamond,star,hexagon,ellipse,cross]"], CheckpointError,
         r"cannot resume, its class names \['circle', 'square', .*\] differ from the training data's \['square', "),
        (["train.optimizer=adamw"], CheckpointError,
         r"cannot resume, it holds the state of an sgd optimizer but train.optimizer=adamw"),
        (["train.seed=4"], CheckpointError,
         r"cannot resume with a changed train.seed \(3 in the checkpoint, 4 here\): a resumed run continues .*"
         r"train.init_from="),
        (["train.max_iterations=1"], ConfigError,
         r"train.max_iterations: 1 gives 1 iterations, fewer than the 2 of checkpoint .*checkpoint_00000002.pt"),
        (["model.width_mult=0.25"], CheckpointError, r"model config differs: model.width_mult \(0.125 there, 0.25"),
    ]
    for overrides, error, match in cases:
        with pytest.raises(error, match=match):
            train(apply_overrides(cfg, overrides + elsewhere), resume=ckpt, progress=False)


def test_resume_applies_changed_hyper_parameters_and_says_which(tmp_path, stopped_run, caplog):
    """lr, weight decay and max_iterations changed since the checkpoint are applied (not silently ignored for the
    ones the optimizer / scheduler state would restore) and listed in the log and the summary."""
    from ssdkit.config import apply_overrides
    from ssdkit.engine.optim import lr_factor

    cfg, ckpt = stopped_run
    new = apply_overrides(cfg, ["train.lr=0.02", "train.weight_decay=0.001", "train.max_iterations=5",
                                f"train.output_dir={tmp_path / 'more'}"])
    with caplog.at_level("INFO", logger="ssdkit.train"):
        summary = train(new, resume=ckpt, progress=False)
    assert summary["finished"] and summary["iteration"] == 5
    assert summary["resume_changes"] == {"train.max_iterations": [4, 5], "train.lr": [0.01, 0.02],
                                         "train.weight_decay": [0.0005, 0.001]}
    assert "changed settings, applied: train.max_iterations 4 -> 5, train.lr 0.01 -> 0.02" in caplog.text
    lrs = {r["iteration"]: r["lr"] for r in read_history(Path(summary["history"])) if "loss" in r}
    factor = lr_factor(new, 5)
    assert lrs == {i: pytest.approx(0.02 * factor(i - 1)) for i in (3, 4, 5)}
    state = load_checkpoint(summary["last_checkpoint"])
    assert state["optimizer"]["param_groups"][0]["weight_decay"] == 0.001
    assert state["optimizer"]["param_groups"][1]["weight_decay"] == 0.0  # biases / BN stay undecayed
    assert state["scheduler"]["lr_scheduler"]["base_lrs"] == [0.02, 0.02]


def test_resume_refuses_nan_weights_naming_the_tensor(tmp_path, stopped_run):
    cfg, ckpt = stopped_run
    state = torch.load(ckpt, weights_only=True)
    state["model"]["loc_layers.1.weight"].view(-1)[0] = float("inf")
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"bad.pt: tensor loc_layers.1.weight has 1 NaN/inf value\(s\)"):
        load_training_state(bad, {"model": build_model(cfg.model), "optimizer": None, "scheduler": None,
                                  "trainer": None}, cfg, 2, 4)
