"""SIGINT / SIGTERM during training: a final checkpoint through the run's saver, a clean exit with a clear error
(exit status 128 + signal: 130 / 143), DataLoader workers unharmed by a Ctrl-C sent to the process group."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssdkit.checkpoint import load_checkpoint
from ssdkit.config import config_to_dict
from ssdkit.engine.handlers import read_history
from ssdkit.engine.interrupt import StopRequest, TrainingInterrupted

from . import tiny_config

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import sys
import ssdkit.engine.step as step
from ssdkit.config import config_from_dict
from ssdkit.engine.train import TrainingInterrupted, train

class Announcing(step.SSDLoss):
    calls = 0
    def forward(self, *args):
        Announcing.calls += 1
        print(f"STEP {Announcing.calls}", flush=True)
        return super().forward(*args)

step.SSDLoss = Announcing
try:
    train(config_from_dict(CFG), progress=False)
except TrainingInterrupted as e:
    print("INTERRUPTED", e.signal, e.exit_status, e.checkpoint, flush=True)
    print(str(e), file=sys.stderr)
    sys.exit(e.exit_status)
"""


@pytest.mark.parametrize("signum, whole_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_a_signal_saves_a_checkpoint_and_exits_cleanly(tmp_path, signum, whole_group):
    out = tmp_path / "run"
    cfg = tiny_config(out, train={"max_iterations": 200, "checkpoint_every": 0}, data={"augment": False,
                                                                                       "num_workers": 1})
    script = textwrap.dedent(_SCRIPT).replace("CFG", repr(config_to_dict(cfg)))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.strip() == "STEP 3":
                # a terminal's Ctrl-C reaches the whole process group (the DataLoader worker too); kill(1) one
                os.killpg(proc.pid, signum) if whole_group else os.kill(proc.pid, signum)
                break
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    done = [line for line in rest.splitlines() if line.startswith("INTERRUPTED")]
    assert len(done) == 1 and done[0].split()[1:3] == [name, str(128 + signum)], rest
    checkpoint = done[0].split()[3]
    state = load_checkpoint(checkpoint)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] == name and not summary["finished"]
    assert state["iteration"] == summary["iteration"] >= 3 and Path(checkpoint).parent == out
    assert {"optimizer", "scheduler", "trainer", "rng"} <= set(state)  # resumable
    assert [r["iteration"] for r in read_history(out / "history.jsonl")][-1] == summary["iteration"]
    message = err.strip().splitlines()[-1]
    assert message.startswith(f"training interrupted by {name} at iteration {summary['iteration']} of 200")
    assert f"--resume {checkpoint}" in message
    assert not list(out.glob(".*.tmp"))


def test_stop_request_records_the_first_signal_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert stop.code == 0 and stop.signal is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # another kind: recorded already, not an escalation
        assert stop.signal == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):
            stop.code = 1  # as if Ctrl-C came first: a second one stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is before
    err = TrainingInterrupted("x", "SIGTERM", "c.pt")
    assert err.exit_status == 143 and err.checkpoint == "c.pt" and isinstance(err, ValueError)
