import pytest

from ssdkit.config import (
    ModelConfig,
    apply_overrides,
    config_from_dict,
    feature_map_sizes,
    load_config,
    save_config,
    ssd512_config,
)
from ssdkit.errors import ConfigError


def test_feature_map_sizes():
    assert feature_map_sizes("ssd300", 300) == (38, 19, 10, 5, 3, 1)
    assert feature_map_sizes("ssd512", 512) == (64, 32, 16, 8, 4, 2, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(box_sizes=(30, 60, 111, 162, 213, 264)), "model.box_sizes: expected 7"),
        (dict(steps=(8, 16)), "model.steps"),
        (dict(num_classes=1), "num_classes"),
        (dict(aspect_ratios=((2,),)), "aspect_ratios"),
        (dict(arch="resnet"), "arch"),
        (dict(channel_order="rbg"), "channel_order"),
        (dict(input_size=40), "too small"),
    ],
)
def test_inconsistent_model_config_names_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)


def test_config_errors_are_value_errors():
    assert issubclass(ConfigError, ValueError)


def test_yaml_roundtrip_and_overrides(tmp_path):
    cfg = config_from_dict({"model": {"preset": "ssd512", "num_classes": 4}, "train": {"lr": 0.01}})
    assert cfg.model == ssd512_config(4)
    path = tmp_path / "c.yaml"
    save_config(cfg, path)
    assert load_config(path) == cfg
    cfg2 = apply_overrides(cfg, ["train.lr=0.5", "batch_size=4", "model.width_mult=0.5"])
    assert cfg2.train.lr == 0.5 and cfg2.train.batch_size == 4 and cfg2.model.width_mult == 0.5


@pytest.mark.parametrize(
    "data, match",
    [
        ({"model": {"nope": 1}}, "model.nope: unknown key"),
        ({"train": {"lr": "fast"}}, "train.lr: expected a number"),
        ({"train": {"batch_size": 2.5}}, "train.batch_size: expected an integer"),
        ({"extra": {}}, "extra: unknown section"),
        ({"model": {"box_sizes": [1, 2]}}, "model.box_sizes"),
    ],
)
def test_bad_config_values(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(data)


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_unknown_override():
    cfg = config_from_dict({})
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(cfg, ["nope=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(cfg, ["nope"])
