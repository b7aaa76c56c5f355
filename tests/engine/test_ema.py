"""Weight EMA (train.ema_momentum): the average ignite's EMAHandler keeps with ssdkit's ramp, evaluated and saved as
the checkpoints' model, the trained weights beside it, and resume bit for bit (also switching EMA on or off)."""

import math

import pytest
import torch
from ignite.engine import Engine
from torch import nn

from ssdkit.checkpoint import load_checkpoint
from ssdkit.engine.ema import TRAIN_MODEL, attach_ema, ema_momentum
from ssdkit.engine.train import train
from ssdkit.errors import ConfigError

from . import tiny_config


def test_the_ramp_starts_near_one_and_settles_at_the_momentum():
    m = 0.01
    values = [ema_momentum(t, m) for t in range(1, 2001)]
    assert values[0] == pytest.approx(1 - 0.99 * (1 - math.exp(-0.05)))  # ~0.95: follows the early weights
    assert all(a > b for a, b in zip(values[:500], values[1:500])) and all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(m, abs=1e-6)


def test_attached_ema_is_the_recurrence_with_the_ramp():
    """An engine whose step sets known weights: the EMA model is the hand-computed average, buffers included."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    steps = [torch.randn(2, 3) for _ in range(6)]

    def step(engine, _batch):
        with torch.no_grad():
            model[0].weight.copy_(steps[engine.state.iteration - 1])
            model[1].running_mean.fill_(float(engine.state.iteration))

    engine = Engine(step)
    ema = attach_ema(engine, model, 0.3)
    expected_w = model[0].weight.detach().clone()
    expected_mean = model[1].running_mean.clone()
    engine.run([0] * 6, max_epochs=1)
    for t, w in enumerate(steps, 1):
        m = ema_momentum(t, 0.3)
        expected_w = (1 - m) * expected_w + m * w
        expected_mean = (1 - m) * expected_mean + m * float(t)
    torch.testing.assert_close(ema.ema_model[0].weight, expected_w)
    torch.testing.assert_close(ema.ema_model[1].running_mean, expected_mean)
    assert not ema.ema_model.training


def _weights(path, key="model"):
    return load_checkpoint(path)[key]


def test_ema_run_saves_the_average_evaluates_it_and_resumes_bit_for_bit(tmp_path):
    common = {"eval_every": 1, "checkpoint_every": 1, "keep_checkpoints": 4, "ema_momentum": 0.2}
    full = train(tiny_config(tmp_path / "full", train=common), progress=False)
    ck = load_checkpoint(full["last_checkpoint"])
    assert TRAIN_MODEL in ck and ck["model"].keys() == ck[TRAIN_MODEL].keys()
    differ = [k for k in ck["model"] if ck["model"][k].is_floating_point()
              and not torch.equal(ck["model"][k], ck[TRAIN_MODEL][k])]
    assert differ  # the saved model is the average, not the trained weights
    best = load_checkpoint(f"{full['output_dir']}/best.pt")
    assert best["metrics"]["best_map"] == pytest.approx(full["best_map"])

    cut = tiny_config(tmp_path / "cut", train=common)
    first = train(cut, progress=False, stop_at_iteration=3)
    second = train(cut, progress=False, resume=first["last_checkpoint"])
    for key in ("model", TRAIN_MODEL):
        a, b = _weights(full["last_checkpoint"], key), _weights(second["last_checkpoint"], key)
        assert all(torch.equal(a[k], b[k]) for k in a), key
    assert second["last_map"] == full["last_map"]


def test_resume_may_switch_ema_on_and_off(tmp_path):
    plain = tiny_config(tmp_path / "plain", train={"checkpoint_every": 1})
    first = train(plain, progress=False, stop_at_iteration=2)
    trained = _weights(first["last_checkpoint"])
    on = train(tiny_config(tmp_path / "on", train={"ema_momentum": 0.5}), progress=False,
               resume=first["last_checkpoint"])
    ck = load_checkpoint(on["last_checkpoint"])
    assert on["finished"] and TRAIN_MODEL in ck
    assert any(not torch.equal(ck["model"][k], trained[k]) for k in trained if trained[k].is_floating_point())

    with_ema = tiny_config(tmp_path / "ema", train={"checkpoint_every": 1, "ema_momentum": 0.5})
    stopped = train(with_ema, progress=False, stop_at_iteration=2)
    resumed_off = train(tiny_config(tmp_path / "off2"), progress=False, resume=stopped["last_checkpoint"])
    ref = train(tiny_config(tmp_path / "ref", train={"checkpoint_every": 1, "ema_momentum": 0.5}), progress=False)
    a = _weights(resumed_off["last_checkpoint"])
    b = _weights(ref["last_checkpoint"], TRAIN_MODEL)  # off: training went on from the trained weights
    assert TRAIN_MODEL not in load_checkpoint(resumed_off["last_checkpoint"])
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 2, "x"])
def test_ema_momentum_is_checked(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"train\.ema_momentum: (must be in \[0, 1\)|expected a number)"):
        tiny_config(tmp_path, train={"ema_momentum": bad})
