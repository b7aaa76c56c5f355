"""The trainer's handlers: ignite ``Checkpoint`` with ssdkit's saver (rotation, best.pt, atomic, rank 0), the
checkpoint / evaluation schedule, history and the progress bar."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import ignite.distributed as idist
import pytest
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint

from ssdkit.checkpoint import load_checkpoint, model_from_checkpoint
from ssdkit.config import Config, ModelConfig
from ssdkit.engine.handlers import BEST, CHECKPOINT_PATTERN, CheckpointSaver, read_history, truncate_history
from ssdkit.engine.train import train

from . import tiny_config

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("a", "b", "c")


def _checkpointer(tmp_path, **kwargs):
    """An ignite Checkpoint of a small model + optimizer + engine through CheckpointSaver, and the engine."""
    model = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    to_save = {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=0.1), "trainer": engine}
    cfg = Config(model=ModelConfig(width_mult=0.125, num_classes=4))
    saver = CheckpointSaver(tmp_path, cfg, NAMES, describe=lambda: {"iteration": engine.state.iteration})
    return Checkpoint(to_save, saver, **kwargs), engine, model


def test_rotation_keeps_the_last_n_in_ssdkit_format(tmp_path):
    ckpt, engine, model = _checkpointer(tmp_path, n_saved=2, filename_pattern=CHECKPOINT_PATTERN,
                                        global_step_transform=lambda e, _: e.state.iteration)
    for it in (3, 6, 9):
        engine.state.iteration = it
        ckpt(engine)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_00000006.pt", "checkpoint_00000009.pt"]
    assert ckpt.last_checkpoint == "checkpoint_00000009.pt"
    state = load_checkpoint(tmp_path / "checkpoint_00000009.pt")  # marker, config, class names: ssdkit's format
    assert state["iteration"] == 9 and tuple(state["class_names"]) == NAMES
    assert {"optimizer", "trainer", "version"} <= set(state) and "model" in state
    assert torch.equal(state["model"]["weight"], model.weight.detach())
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


def test_new_best_under_a_fixed_name_is_never_deleted_by_its_own_rotation(tmp_path):
    """ignite's Checkpoint with a fixed filename and n_saved=1 calls ``remove("best.pt")`` and then saves the new
    best as ``best.pt``: the saver must replace the file, not delete the new best."""
    scores = iter([0.1, 0.3, 0.2, 0.5, 0.5])
    removed = []
    ckpt, engine, model = _checkpointer(tmp_path, n_saved=1, filename_pattern=BEST, score_name="voc07_map",
                                        score_function=lambda e: current["score"])
    real_remove = ckpt.save_handler.remove
    ckpt.save_handler.remove = lambda name: (removed.append(name), real_remove(name))
    kept = []
    for it in range(1, 6):
        current = {"score": next(scores)}
        engine.state.iteration = it
        with torch.no_grad():
            model.weight.fill_(it)
        ckpt(engine)
        assert (tmp_path / BEST).is_file(), it
        kept.append(load_checkpoint(tmp_path / BEST)["iteration"])
    assert kept == [1, 2, 2, 4, 4]  # a better score replaces it; a worse or equal one leaves it
    assert removed == [BEST, BEST]  # ignite did ask to remove the old best before each new one
    assert torch.equal(load_checkpoint(tmp_path / BEST)["model"]["weight"], torch.full((2, 2), 4.0))
    assert ckpt.state_dict()["_saved"] == [(0.5, BEST)]


def test_a_rotated_out_checkpoint_is_removed_only_after_the_next_write(tmp_path, monkeypatch):
    ckpt, engine, _ = _checkpointer(tmp_path, n_saved=1, filename_pattern=CHECKPOINT_PATTERN,
                                    global_step_transform=lambda e, _: e.state.iteration)
    engine.state.iteration = 1
    ckpt(engine)
    import ssdkit.engine.handlers as handlers

    def failing_write(path, state):
        assert (tmp_path / "checkpoint_00000001.pt").is_file()  # still there while the next one is written
        raise OSError("disk full")

    monkeypatch.setattr(handlers, "write_checkpoint", failing_write)
    engine.state.iteration = 2
    with pytest.raises(OSError, match="disk full"):
        ckpt(engine)
    assert load_checkpoint(tmp_path / "checkpoint_00000001.pt")["iteration"] == 1
    monkeypatch.undo()
    engine.state.iteration = 3  # the next write that succeeds removes what is due
    ckpt(engine)
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["checkpoint_00000003.pt"]


def test_only_rank_0_writes(tmp_path, monkeypatch):
    ckpt, engine, _ = _checkpointer(tmp_path, n_saved=1, filename_pattern=CHECKPOINT_PATTERN,
                                    global_step_transform=lambda e, _: e.state.iteration)
    monkeypatch.setattr(idist, "get_rank", lambda: 1)
    engine.state.iteration = 1
    ckpt(engine)
    assert not list(tmp_path.iterdir())


def test_best_pt_when_checkpoint_every_lands_on_an_evaluation(tmp_path):
    """checkpoint_every = the epoch length: each checkpoint is written after its evaluation, with its mAP, and the
    best is kept in best.pt (before, the checkpoint came first and best.pt was never written)."""
    cfg = tiny_config(tmp_path, train={"eval_every": 1, "checkpoint_every": 2, "keep_checkpoints": 3},
                      data={"augment": False})
    summary = train(cfg, progress=False)
    assert summary["best_checkpoint"] == str(tmp_path / BEST) and (tmp_path / BEST).is_file()
    evals = [r for r in read_history(tmp_path / "history.jsonl") if "map" in r]
    assert [r["iteration"] for r in evals] == [2, 4]
    best = load_checkpoint(tmp_path / BEST)
    assert best["metrics"]["map"] == pytest.approx(max(r["map"] for r in evals))
    assert best["metrics"]["best_map"] == pytest.approx(summary["best_map"])
    assert {"optimizer", "scheduler", "trainer", "rng"} <= set(best)  # best.pt can be resumed too
    for r in evals:
        ck = load_checkpoint(tmp_path / f"checkpoint_{r['iteration']:08d}.pt")
        assert ck["metrics"]["map"] == pytest.approx(r["map"]), r["iteration"]


def test_history_truncation_drops_later_records_and_cut_lines(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps({"iteration": i, "loss": 1.0}) + "\n" for i in range(1, 5)) + '{"iter')
    assert [r["iteration"] for r in read_history(path)] == [1, 2, 3, 4]
    truncate_history(path, 2)
    assert [r["iteration"] for r in read_history(path)] == [1, 2]
    assert read_history(tmp_path / "missing.jsonl") == []


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
