import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from ssdkit.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from ssdkit.config import apply_overrides
from ssdkit.engine.data import build_loaders
from ssdkit.engine.train import (
    TrainingDivergedError,
    create_model_and_optimizer,
    create_scheduler,
    create_train_step,
    create_trainer,
    init_from_checkpoint,
    lr_factor,
    train,
    validate_config,
)
from ssdkit.errors import ConfigError
from ssdkit.loss import SSDLoss
from ssdkit.models import build_model

from . import tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _weights(path):
    return load_checkpoint(path)["model"]


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    """The step overfits a fixed batch: the pieces (model, optimizer, schedule, step) learn."""
    cfg = tiny_config(tmp_path, train={"lr": 0.01, "warmup_iterations": 0, "schedule": "constant"},
                      data={"augment": False})
    torch.manual_seed(0)
    batch = next(iter(build_loaders(cfg, with_val=False).train_loader))
    model, optimizer, _ = create_model_and_optimizer(cfg, "cpu")
    trainer = create_trainer(cfg, model, optimizer, "cpu")
    trainer.add_event_handler(Events.ITERATION_STARTED, create_scheduler(cfg, optimizer, 3))
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output))
    t0 = time.perf_counter()
    trainer.run([batch] * 3, max_epochs=1)
    print(f"step time {(time.perf_counter() - t0) / 3:.2f} s (batch 2, width 1/8, CPU)")
    assert set(losses[0]) == {"loss", "loc_loss", "cls_loss", "lr"}
    assert all(isinstance(v, float) for v in losses[0].values())
    assert losses[0]["loss"] == pytest.approx(losses[0]["loc_loss"] + losses[0]["cls_loss"], rel=1e-5)
    assert losses[-1]["loss"] < 0.7 * losses[0]["loss"], [o["loss"] for o in losses]


def test_train_step_without_an_engine_matches_the_trainer(tmp_path):
    """``create_train_step`` is the trainer's step: same outputs and weights from the same start."""
    cfg = tiny_config(tmp_path, data={"augment": False})
    batch = next(iter(build_loaders(cfg, with_val=False).train_loader))
    torch.manual_seed(0)
    model, optimizer, _ = create_model_and_optimizer(cfg, "cpu")
    step = create_train_step(cfg, model, optimizer, "cpu")
    ours, ours_w = [step(batch), step(batch)], model.state_dict()

    torch.manual_seed(0)
    model, optimizer, _ = create_model_and_optimizer(cfg, "cpu")
    trainer = create_trainer(cfg, model, optimizer, "cpu")
    engine = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: engine.append(e.state.output))
    trainer.run([batch] * 2, max_epochs=1)
    engine_w = model.state_dict()
    assert ours == engine
    assert all(torch.equal(ours_w[k], engine_w[k]) for k in ours_w)


def test_lr_schedule_warmup_and_paper_milestones(tmp_path):
    cfg = tiny_config(tmp_path, train={"warmup_iterations": 10, "warmup_factor": 0.001, "gamma": 0.1})
    f = lr_factor(cfg, 120_000)
    assert f(0) == pytest.approx(0.001) and f(5) == pytest.approx(0.001 + 0.999 * 0.5) and f(10) == 1.0
    assert f(79_999) == 1.0 and f(80_000) == pytest.approx(0.1) and f(100_000) == pytest.approx(0.01)
    cos = lr_factor(apply_overrides(cfg, ["train.schedule=cosine", "train.warmup_iterations=0"]), 100)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0, abs=1e-12)


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
    ca, cb = load_checkpoint(full["last_checkpoint"]), load_checkpoint(resumed["last_checkpoint"])
    assert ca["optimizer"]["param_groups"][0]["lr"] == cb["optimizer"]["param_groups"][0]["lr"]
    assert ca["trainer"] == cb["trainer"]


_KILL_SCRIPT = """
import os, sys, time
import ssdkit.utils
from ssdkit.config import config_from_dict

real_fsync = os.fsync

def hanging_fsync(fd):
    # the trainer's second checkpoint: announce and hang with its temp file half-way (written, not renamed)
    if "checkpoint_00000002" in os.readlink(f"/proc/self/fd/{fd}"):
        print("WRITING", flush=True)
        time.sleep(600)
    real_fsync(fd)

ssdkit.utils.os = type(os)("os_proxy")
ssdkit.utils.os.__dict__.update(os.__dict__)
ssdkit.utils.os.fsync = hanging_fsync
from ssdkit.engine.train import train
cfg = config_from_dict(CFG)
train(cfg, progress=False)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to spot the checkpoint write")
def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    from ssdkit.config import config_to_dict

    cfg = tiny_config(tmp_path / "run", train={"checkpoint_every": 1, "keep_checkpoints": 1, "max_iterations": 3},
                      data={"augment": False})
    script = _KILL_SCRIPT.replace("CFG", repr(config_to_dict(cfg)))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "WRITING", proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = tmp_path / "run"
    assert not (out / "checkpoint_00000002.pt").exists()
    state = load_checkpoint(out / "checkpoint_00000001.pt")  # the previous one: intact and loadable
    assert state["iteration"] == 1
    model, _, names = model_from_checkpoint(out / "checkpoint_00000001.pt")
    assert len(names) == 8 and all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_loss_stops_with_advice_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}

    class NaNAtSecondCall(SSDLoss):
        def forward(self, *args):
            out = super().forward(*args)
            calls["n"] += 1
            if calls["n"] == 2:
                nan = torch.tensor(float("nan"))
                return out._replace(loss=out.loss * nan, cls_loss=out.cls_loss * nan)
            return out

    monkeypatch.setattr("ssdkit.engine.train.SSDLoss", NaNAtSecondCall)
    cfg = tiny_config(tmp_path, train={"max_iterations": 4, "checkpoint_every": 1}, data={"augment": False})
    with pytest.raises(TrainingDivergedError) as err:
        train(cfg, progress=False)
    msg = str(err.value)
    assert "iteration 2" in msg and "train.lr" in msg and "warmup" in msg and "ssdkit check-data" in msg
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_00000001.pt"]
    weights = _weights(tmp_path / "checkpoint_00000001.pt")
    assert all(torch.isfinite(v.float()).all() for v in weights.values())


def test_bad_config_values_name_the_key(tmp_path):
    cfg = tiny_config(tmp_path)
    with pytest.raises(ConfigError, match=r"train\.schedule: .*'linear'"):
        validate_config(apply_overrides(cfg, ["train.schedule=linear"]))
    with pytest.raises(ConfigError, match=r"train\.amp"):
        validate_config(apply_overrides(cfg, ["amp=fp8"]))
    with pytest.raises(ConfigError, match=r"train\.lr_typo"):
        apply_overrides(cfg, ["train.lr_typo=1"])
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number"):
        apply_overrides(cfg, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"train\.milestones"):
        train(apply_overrides(cfg, ["train.milestones=[10, 5]"]), progress=False)
    with pytest.raises(ConfigError, match=r"model\.num_classes: 21 .* 8 classes.*num_classes=9"):
        train(apply_overrides(cfg, ["model.num_classes=21"]), progress=False)
    with pytest.raises(ConfigError, match=r"train\.batch_size: 8 .* 4 training images"):
        train(apply_overrides(cfg, ["train.batch_size=8"]), progress=False)


def test_init_from_checkpoint_with_a_different_class_list(tmp_path):
    """21-class checkpoint -> 3 object classes: trunk and loc heads copied, cls heads new; training runs."""
    voc_cfg = tiny_config(tmp_path, model={"num_classes": 21})
    voc_model = build_model(voc_cfg.model)
    voc_path = tmp_path / "voc.pt"
    save_checkpoint(voc_path, voc_model, voc_cfg, [f"c{i}" for i in range(20)])

    cfg = tiny_config(tmp_path / "ft", model={"num_classes": 4},
                      data={"classes": ["circle", "square", "triangle"], "augment": False},
                      train={"init_from": str(voc_path), "max_iterations": 3})
    model = build_model(cfg.model)
    report = init_from_checkpoint(model, voc_path)
    src, dst = voc_model.state_dict(), model.state_dict()
    for k, v in dst.items():
        if k.startswith("cls_layers."):
            assert k in report["initialised"]
            assert v.shape[0] == src[k].shape[0] // 21 * 4
        else:
            assert k in report["loaded"] and torch.equal(v, src[k]), k
    assert any(k.startswith("extractor.") for k in report["loaded"])

    summary = train(cfg, progress=False, stop_at_iteration=1)  # stopped as if interrupted: a checkpoint is kept
    assert summary["iteration"] == 1 and not summary["finished"] and math.isfinite(summary["loss"])
    assert summary["init"]["loaded"] == len(report["loaded"])
    ck = load_checkpoint(summary["last_checkpoint"])
    assert ck["class_names"] == ["circle", "square", "triangle"]
    assert ck["model"]["cls_layers.0.weight"].shape[0] == model.num_anchors[0] * 4


def test_init_from_refuses_a_trunk_that_does_not_fit_and_warns_on_preprocessing(tmp_path):
    from dataclasses import replace

    from ssdkit.errors import CheckpointError

    cfg = tiny_config(tmp_path)
    path = tmp_path / "src.pt"
    save_checkpoint(path, build_model(cfg.model), cfg, cfg_names(cfg))
    wider = build_model(replace(cfg.model, width_mult=cfg.model.width_mult * 2))
    with pytest.raises(CheckpointError, match="trunk tensor"):
        init_from_checkpoint(wider, path)
    other_norm = build_model(replace(cfg.model, mean=(0.5, 0.5, 0.5)))
    report = init_from_checkpoint(other_norm, path)
    assert any("model.mean" in w for w in report["warnings"])


def cfg_names(cfg):
    return [f"c{i}" for i in range(cfg.model.num_classes - 1)]


def test_progress_bar_total_is_what_the_epoch_really_runs(tmp_path, capsys):
    """A run cut short by max_iterations (3 of the 8 iterations per epoch here) shows 3 as its total, so the ETA is
    true, with the loss parts and LR in the bar."""
    cfg = tiny_config(tmp_path, data={"shapes_train_count": 16, "augment": False},
                      train={"max_iterations": 3, "checkpoint_every": 0})
    train(cfg, progress=True)
    err = capsys.readouterr().err
    assert "train epoch 1" in err
    assert "/3 [" in err and "/8 [" not in err
    assert "loss=" in err and "lr=" in err
