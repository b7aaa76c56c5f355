"""The command line: each command delegates, prints one line on user errors and exits 2."""

import json
import subprocess
import sys

import pytest

from ssdkit.cli import main


def test_describe_json(capsys):
    assert main(["describe", "--num-classes", "10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total_default_boxes"] == 8732
    assert [lv["default_boxes"] for lv in d["levels"]] == [5776, 2166, 600, 150, 36, 4]


def test_describe_text(capsys):
    assert main(["describe"]) == 0
    out = capsys.readouterr().out
    assert "default boxes: 8732" in out and "GFLOPs" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["describe", "--num-classes", "1"], "model.num_classes"),
        (["describe", "--model", "missing.yaml"], "missing.yaml: config file not found"),
        (["evaluate", "--gt", "x.json"], "--gt and --detections go together"),
        (["predict", "--checkpoint", "nope.pt", "a.jpg"], "nope.pt"),
    ],
)
def test_user_errors_are_one_line_exit_2(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssdkit: error: ") and fragment in err
    assert len(err.strip().splitlines()) == 1


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "ssdkit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("ssdkit ")
