"""Every shipped config in configs/ loads, validates and describes a buildable model."""

from pathlib import Path

import pytest

from ssdkit.coder import SSDBoxCoder
from ssdkit.config import apply_overrides, load_config
from ssdkit.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
EXPECTED = {"ssd300_voc0712", "ssd300_coco", "ssd512_voc0712", "ssd300_small_objects", "shapes_demo"}


def test_the_shipped_configs_are_there():
    assert EXPECTED <= {p.stem for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_validates(path):
    cfg = load_config(path)  # every section validates itself on construction
    for section in (cfg.model, cfg.data, cfg.train):
        section.validate()
    num_boxes = SSDBoxCoder(cfg.model).default_boxes.shape[0]
    assert num_boxes == {"ssd300": 8732, "ssd512": 24564}[cfg.model.arch]
    assert apply_overrides(cfg, ["train.lr=0.01"]).train.lr == 0.01


def test_paper_recipe_values():
    cfg = load_config(next(p for p in CONFIGS if p.stem == "ssd300_voc0712"))
    t = cfg.train
    assert (t.batch_size, t.lr, t.max_iterations, t.milestones) == (32, 1e-3, 120_000, (80_000, 100_000))
    assert cfg.model.num_classes == 21 and cfg.data.val_split == "test"
    small = load_config(next(p for p in CONFIGS if p.stem == "ssd300_small_objects"))
    assert small.model.box_sizes == (3, 6, 11, 16, 21, 26, 31)


def test_override_errors_name_the_key():
    path = next(p for p in CONFIGS if p.stem == "shapes_demo")
    with pytest.raises(ConfigError, match=r"train\.bacth_size"):
        load_config(path, ["train.bacth_size=4"])
    with pytest.raises(ConfigError, match=r"model\.width_mult"):
        load_config(path, ["model.width_mult=9"])
