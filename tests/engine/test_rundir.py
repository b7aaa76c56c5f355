"""The run folder: never another run's files (numbered folders, ultralytics' rule), exist_ok, resume in place,
bad output_dir values named before any work, stale temp files of a kill -9 removed."""

import os

import pytest

from ssdkit.checkpoint import load_checkpoint
from ssdkit.engine.handlers import read_history
from ssdkit.engine.rundir import prepare_output_dir, remove_stale_temp_files
from ssdkit.engine.train import train
from ssdkit.errors import ConfigError

from . import tiny_config

FAST = {"train": {"max_iterations": 2}, "data": {"augment": False}}


def test_the_first_free_numbered_folder(tmp_path):
    base = tmp_path / "x"
    assert prepare_output_dir(base) == base and base.is_dir()  # missing: created and used
    assert prepare_output_dir(base) == base  # empty: used
    (base / "best.pt").write_bytes(b"previous run")
    assert prepare_output_dir(base) == tmp_path / "x2"
    (tmp_path / "x2" / "a").write_text("")
    (tmp_path / "x3").mkdir()  # empty: the first free one
    assert prepare_output_dir(base) == tmp_path / "x3"
    assert prepare_output_dir(base, exist_ok=True) == base
    assert prepare_output_dir(base, resume=base / "checkpoint_00000002.pt") == base  # continue in its folder
    assert prepare_output_dir(base, resume=tmp_path / "elsewhere" / "c.pt") == tmp_path / "x3"
    assert (base / "best.pt").read_bytes() == b"previous run"


def test_a_second_run_never_touches_the_first(tmp_path):
    out = tmp_path / "run"
    first = train(tiny_config(out, **FAST), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    second = train(tiny_config(out, **FAST), progress=False)
    assert first["output_dir"] == str(out) and second["output_dir"] == str(tmp_path / "run2")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert load_checkpoint(second["last_checkpoint"])["config"].train.output_dir == str(tmp_path / "run2")

    # exist_ok: into the folder; the old checkpoints of other iterations stay, the logs are the new run's
    old = out / "checkpoint_00000099.pt"
    old.write_bytes((out / "checkpoint_00000002.pt").read_bytes())
    third = train(tiny_config(out, train={"max_iterations": 3}, data={"augment": False}), progress=False,
                  exist_ok=True)
    assert third["output_dir"] == str(out) and old.is_file() and (out / "checkpoint_00000002.pt").is_file()
    assert [r["iteration"] for r in read_history(out / "history.jsonl") if "loss" in r] == [1, 2, 3]


def test_bad_output_dirs_are_named_before_any_work(tmp_path, monkeypatch):
    file = tmp_path / "file.txt"
    file.write_text("user data")
    calls = []
    monkeypatch.setattr("ssdkit.engine.train.build_loaders", lambda *a, **k: calls.append(1))
    with pytest.raises(ConfigError, match=rf"train.output_dir: {file} is a file; give a folder"):
        train(tiny_config(file), progress=False)
    with pytest.raises(ConfigError, match=rf"train.output_dir: {file / 'run'} is under {file}, which is a file"):
        train(tiny_config(file / "run"), progress=False)
    with pytest.raises(ConfigError, match=r"train.output_dir: /proc/1/ssdkit-run is not writable \("):
        train(tiny_config("/proc/1/ssdkit-run"), progress=False)
    assert not calls and file.read_text() == "user data"


def test_stale_temp_files_of_a_kill_are_removed_at_start(tmp_path, caplog):
    out = tmp_path / "run"
    first = train(tiny_config(out, **FAST), progress=False)
    stale = [out / ".checkpoint_00000003.pt.a1b2c3d4.tmp", out / ".history.jsonl.zz99yy88.tmp",
             out / "report" / ".summary.json.q1w2e3r4.tmp"]
    (out / "report").mkdir(exist_ok=True)
    for p in stale:
        p.write_bytes(b"half")
    keep = out / ".my-notes.tmp"  # not ours: a temp name of atomic_write_bytes has 8 random characters
    keep.write_text("")
    assert sorted(remove_stale_temp_files(tmp_path / "missing")) == []
    with caplog.at_level("INFO", logger="ssdkit.train"):
        train(tiny_config(out, train={"max_iterations": 3}, data={"augment": False}), progress=False,
              resume=first["last_checkpoint"])
    assert not any(p.exists() for p in stale) and keep.exists()
    assert "removed 3 temp file(s)" in caplog.text


def test_demo_follows_the_same_rule(tmp_path, monkeypatch):
    """run_demo into a folder holding files goes to the next free numbered one (train is stubbed: the rule is
    what is tested, the demo's training has its own test)."""
    from ssdkit.engine import demo

    seen = {}

    def fake_train(cfg, progress=True, exist_ok=False):
        seen.update(out=cfg.train.output_dir, exist_ok=exist_ok)
        raise KeyboardInterrupt  # stop before the drawing

    monkeypatch.setattr("ssdkit.engine.train.train", fake_train)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "best.pt").write_bytes(b"x")
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "demo", quick=True, progress=False)
    assert seen == {"out": str(tmp_path / "demo2"), "exist_ok": True}
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(tmp_path / "demo", quick=True, progress=False, exist_ok=True)
    assert seen["out"] == str(tmp_path / "demo")
    assert os.listdir(tmp_path / "demo") == ["best.pt"]
