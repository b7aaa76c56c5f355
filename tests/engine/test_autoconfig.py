"""``ssdkit train --data``: classes, splits, default boxes and tiling come from the data; the run is reproducible."""

import json

from ssdkit.cli import main
from ssdkit.config import load_config
from ssdkit.data.shapes import write_shapes
from ssdkit.engine.autoconfig import RECIPE, auto_config

NAMES = ("circle", "square", "triangle")


def test_train_data_end_to_end_writes_a_reloadable_config(tmp_path, capsys):
    data = write_shapes(tmp_path / "voc", count=8, image_size=96, min_size=20, max_size=60, class_names=NAMES,
                        val_fraction=0.25, progress=False)
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--epochs", "1", "--batch", "2", "model.width_mult=0.125",
                 f"train.output_dir={out}", "--no-progress", "--json"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    cfg = load_config(out / "config.yaml")  # the resolved config: `ssdkit train runs/x/config.yaml` repeats it
    assert cfg.data.classes == NAMES and cfg.model.num_classes == 4
    assert (cfg.data.train_split, cfg.data.val, cfg.data.val_split) == ("train", str(data), "val")
    assert cfg.train.max_iterations == 3 and cfg.train.optimizer == RECIPE["train"]["optimizer"]
    assert summary["iteration"] == 3 and summary["last_map"] is not None


def test_without_splits_a_seeded_holdout_validates(tmp_path):
    data = write_shapes(tmp_path / "list", format="listfile", count=10, image_size=96, min_size=20, max_size=60,
                        class_names=NAMES, val_fraction=0.0, progress=False)
    cfg, notes = auto_config(data / "train.txt", epochs=2, batch=3, tile=None)
    assert cfg.data.val is None and cfg.data.holdout_fraction == 0.1
    assert cfg.train.max_iterations == 2 * (9 // 3)  # 9 training images after the hold-out of 1
    assert any("hold-out" in n for n in notes)


def test_small_objects_in_large_images_get_tiles_and_fitted_boxes(tmp_path):
    data = write_shapes(tmp_path / "big", count=4, image_size=1000, min_size=8, max_size=20, max_objects=20,
                        class_names=NAMES, val_fraction=0.25, progress=False)
    cfg, notes = auto_config(data, epochs=1)
    assert cfg.data.tile_size is not None and cfg.data.tile_size < 1000
    assert any(n.startswith("tiling:") for n in notes)
    untiled, _ = auto_config(data, epochs=1, tile=None)
    assert untiled.data.tile_size is None
    assert untiled.model.box_sizes[0] < 30  # the 20 px objects shrink to 6 px: the analysis picks small boxes


def test_the_recipe_input_size_keeps_the_layers_and_the_smallest_box():
    import math

    from ssdkit.anchors import default_boxes_for
    from ssdkit.arch import feature_map_sizes
    from ssdkit.config import ModelConfig
    from ssdkit.engine.autoconfig import at_input_size

    base = ModelConfig(num_classes=4)
    cfg = at_input_size(base, 400)
    fm = feature_map_sizes("ssd300", 400)
    assert fm[0] == 50 and len(cfg.steps) == len(fm)
    assert all(math.isclose(s * f, 400, rel_tol=1e-4) for s, f in zip(cfg.steps, fm))
    assert cfg.box_sizes[0] == base.box_sizes[0]
    assert all(math.isclose(b, a * 4 / 3, rel_tol=1e-3) for a, b in zip(base.box_sizes[1:], cfg.box_sizes[1:]))
    per_cell = [2 + 2 * len(r) for r in cfg.aspect_ratios]
    assert len(default_boxes_for(cfg)) == sum(f * f * k for f, k in zip(fm, per_cell))
    assert at_input_size(base, 300) is base
