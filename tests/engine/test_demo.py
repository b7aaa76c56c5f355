"""The demo recipe: the shipped YAML is the same recipe, and a CI-sized run trains to a stated mAP floor."""

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
