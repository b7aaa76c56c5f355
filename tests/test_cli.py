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
        (["evaluate", "--gt", "x.json"], "--gt goes with --detections"),
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


def test_end_to_end_pipeline_through_the_cli(tmp_path, capsys):
    """make-shapes -> check-data -> anchors -> train -> evaluate -> predict -> export, each as a user runs it."""
    data = tmp_path / "voc"
    assert main(["make-shapes", "--out", str(data), "--format", "voc", "--count", "12", "--size", "300"]) == 0
    assert "wrote 12" in capsys.readouterr().out
    assert main(["check-data", "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_images"] == 12 and report["num_objects"] > 0
    assert main(["anchors", "--data", str(data), "--json", "--plot", str(tmp_path / "fit.png")]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["objects"] > 0 and 0 <= fit["coverage"] <= 1 and (tmp_path / "fit.png").stat().st_size > 0
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "model: {preset: ssd300, num_classes: 9, width_mult: 0.125, batch_norm: true}\n"
        f"data: {{train: '{data}', val: '{data}', train_split: train, val_split: val, num_workers: 0}}\n"
        f"train: {{batch_size: 2, max_iterations: 2, eval_every: 1, output_dir: '{tmp_path / 'run'}'}}\n"
    )
    assert main(["train", str(cfg), "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    ckpt = summary["last_checkpoint"]
    assert main(["evaluate", "--checkpoint", ckpt, "--data", str(data), "--split", "val", "--json"]) == 0
    assert "map" in json.loads(capsys.readouterr().out)
    images = str(data / "JPEGImages")
    assert main(["predict", "--checkpoint", ckpt, images, "--out", str(tmp_path / "pred"), "--score", "0.0",
                 "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["images"] == 12 and (tmp_path / "pred" / "detections.json").exists()
    assert main(["export", "--checkpoint", ckpt, "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                 "--json"]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_bad_device_is_one_line_exit_2(tiny_checkpoint, tmp_path, capsys, command):
    extra = [str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out")] if command == "predict" else ["--data", "shapes"]
    assert main([command, "--checkpoint", str(tiny_checkpoint), "--device", "gpu7", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ssdkit: error: device") and "gpu7" in err and len(err.strip().splitlines()) == 1
