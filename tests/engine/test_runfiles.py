"""The run folder users open: results.csv, labels.png, train_batch<k>.jpg, val_predictions.jpg, report/,
curves.png, next to the checkpoints, from a tiny training."""

import csv
import json
from pathlib import Path

from PIL import Image

from ssdkit.engine.handlers import read_history
from ssdkit.engine.runfiles import RESULT_COLUMNS, RunLog
from ssdkit.engine.train import train

from . import tiny_config


def test_a_tiny_training_writes_every_run_file(tmp_path):
    cfg = tiny_config(tmp_path / "run", data={"shapes_train_count": 6, "shapes_val_count": 3},
                      train={"epochs": 2, "eval_every": 1, "batch_size": 2})
    summary = train(cfg, progress=False)
    out = Path(summary["output_dir"])
    assert summary["finished"] and summary["iteration"] == 6

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == RESULT_COLUMNS
    logged = [r for r in rows if r["loss"]]
    evals = [r for r in rows if r["map"]]
    assert [int(r["iteration"]) for r in logged] == [1, 2, 3, 4, 5, 6]
    assert [(int(r["iteration"]), r["metric"]) for r in evals] == [(3, "voc07"), (6, "voc07")]
    assert all(r["map"] == "" and r["metric"] == "" for r in logged) and all(r["loss"] == "" for r in evals)
    history = [r for r in read_history(out / "history.jsonl") if "loss" in r]
    assert [float(r["loss"]) for r in logged] == [r["loss"] for r in history]  # the same numbers, full precision

    for name, fmt, min_size in (("labels.png", "PNG", (800, 600)), ("curves.png", "PNG", (600, 300)),
                                ("train_batch0.jpg", "JPEG", (300, 150)), ("train_batch1.jpg", "JPEG", (300, 150)),
                                ("train_batch2.jpg", "JPEG", (300, 150)), ("val_predictions.jpg", "JPEG", (400, 200)),
                                ("report/confusion_matrix.png", "PNG", (300, 200))):
        with Image.open(out / name) as im:
            assert im.format == fmt and im.size[0] >= min_size[0] and im.size[1] >= min_size[1], name
            im.load()
    report = json.loads((out / "report" / "summary.json").read_text())
    assert report["num_images"] == 3 and report["metric"] == "voc07"
    assert report["map"] == summary["best_map"]  # the report is of the best evaluation (best.pt)
    assert (out / "report" / "report.md").is_file()
    assert summary["report"] == str(out / "report" / "report.md")
    assert summary["val_predictions"] == str(out / "val_predictions.jpg") and len(summary["train_batches"]) == 3
    assert not list(out.rglob(".*.tmp"))


def test_results_csv_parses_at_any_time_and_follows_a_resume(tmp_path):
    log = RunLog(tmp_path, "coco")
    log.append({"iteration": 1, "epoch": 1, "loss": 2.5, "lr": 0.1})
    log.append({"iteration": 2, "epoch": 1, "metric": "coco", "map": 0.25, "AP50": 0.5, "ap": {"a": 0.1}})
    log.append({"iteration": 3, "epoch": 1, "loss": 2.0, "lr": 0.1})
    with open(tmp_path / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[1]["AP50"] == "0.5" and rows[1]["loss"] == "" and "ap" not in rows[1] and len(rows) == 3
    log.restart(2)  # resumed at iteration 2: the later records go from both files
    with open(tmp_path / "results.csv", newline="") as f:
        assert [r["iteration"] for r in csv.DictReader(f)] == ["1", "2"]
    assert [r["iteration"] for r in read_history(tmp_path / "history.jsonl")] == [1, 2]
