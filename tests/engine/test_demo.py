"""The demo recipe: the shipped YAML is the same recipe, and a CI-sized run trains to a stated mAP floor."""

import csv
import json
from dataclasses import replace
from pathlib import Path

from ssdkit.config import load_config
from ssdkit.engine.demo import QUICK_MAP_FLOOR, demo_config, run_demo

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "shapes_demo.yaml"


def test_shipped_yaml_is_the_demo_recipe():
    shipped = load_config(CONFIG)
    recipe = demo_config()
    # the file writes to runs/, the command to the directory it is given
    assert shipped == replace(recipe, train=replace(recipe.train, output_dir=shipped.train.output_dir))


def test_quick_demo_trains_to_the_stated_floor(tmp_path, capsys):
    result = run_demo(tmp_path / "demo", quick=True, progress=False, num_drawn=2)
    assert result["map_voc07"] >= QUICK_MAP_FLOOR
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert summary["map_voc07"] == result["map_voc07"]
    assert Path(result["checkpoint"]).is_file()
    assert len(list(Path(result["predictions"]).glob("*.png"))) == 2
    assert Path(result["curves"]).is_file()
    # the run folder of issue 15's item 2, as the demo leaves it for its user
    out = tmp_path / "demo"
    for name in ("results.csv", "labels.png", "train_batch0.jpg", "val_predictions.jpg", "curves.png",
                 "report/report.md", "report/confusion_matrix.png", "report/pr_f1.png", "report/tide.json"):
        assert (out / name).is_file(), name
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r["map"] for r in rows) and any(r["loss"] for r in rows)
    maps = [float(r["map"]) for r in rows if r["map"]]
    assert all(0.0 <= m <= 1.0 for m in maps) and max(maps) >= QUICK_MAP_FLOOR
