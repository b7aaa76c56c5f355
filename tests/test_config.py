import dataclasses

import pytest

from ssdkit.config import (
    DataConfig,
    ModelConfig,
    TrainConfig,
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


@pytest.mark.parametrize(
    "train, match",
    [
        ({"schedule": "linear"}, r"train\.schedule: expected one of multistep, cosine, constant, got 'linear'"),
        ({"optimizer": "adam"}, r"train\.optimizer: expected one of sgd, adamw"),
        ({"amp": "fp8"}, r"train\.amp: expected one of none, bf16, fp16"),
        ({"eval_metric": "map"}, r"train\.eval_metric: expected one of voc07, voc, coco"),
        ({"device": "tpu"}, r"train\.device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        ({"batch_size": 0}, r"train\.batch_size: must be >= 1, got 0"),
        ({"eval_batch_size": 0}, r"train\.eval_batch_size"),
        ({"max_iterations": 0}, r"train\.max_iterations: must be >= 1 \(or null"),
        ({"epochs": 0}, r"train\.epochs"),
        ({"lr": 0}, r"train\.lr: must be a positive number"),
        ({"lr": float("inf")}, r"train\.lr"),
        ({"momentum": -0.1}, r"train\.momentum: must be >= 0"),
        ({"weight_decay": -1}, r"train\.weight_decay: must be >= 0"),
        ({"milestones": [10, 5]}, r"train\.milestones: must be increasing positive iterations, got \[10, 5\]"),
        ({"milestones": [0]}, r"train\.milestones"),
        ({"gamma": 0}, r"train\.gamma: must be in \(0, 1\]"),
        ({"warmup_iterations": -1}, r"train\.warmup_iterations"),
        ({"warmup_factor": 1.5}, r"train\.warmup_factor"),
        ({"grad_clip": 0}, r"train\.grad_clip: must be positive \(or null\)"),
        ({"neg_pos_ratio": -1}, r"train\.neg_pos_ratio"),
        ({"keep_checkpoints": 0}, r"train\.keep_checkpoints: must be >= 1"),
        ({"checkpoint_every": -1}, r"train\.checkpoint_every: must be >= 0 \(0 = at epoch ends only\)"),
        ({"eval_every": -1}, r"train\.eval_every"),
        ({"log_every": 0}, r"train\.log_every"),
        ({"seed": -1}, r"train\.seed: must be an integer in \[0, 4294967295\] \(what numpy accepts\), got -1"),
        ({"seed": 2**32}, r"train\.seed: .*got 4294967296"),
        ({"output_dir": " "}, r"train\.output_dir: must be a folder path"),
    ],
)
def test_train_config_validates_itself(train, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"train": train})
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**train)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"num_workers": -1}, r"data\.num_workers: must be >= 0, got -1"),
        ({"format": "pascal"}, r"data\.format: expected one of voc, coco, yolo, listfile, vedai, list"),
        ({"shapes_train_count": -1}, r"data\.shapes_train_count"),
        ({"shapes_image_size": 8}, r"data\.shapes_image_size: must be >= 16"),
        ({"shapes_min_size": 0}, r"data\.shapes_min_size"),
        ({"shapes_min_size": 30, "shapes_max_size": 20}, r"data\.shapes_max_size: must be >= data\.shapes_min_size"),
        ({"shapes_min_objects": 3, "shapes_max_objects": 2}, r"data\.shapes_min_objects"),
    ],
)
def test_data_config_validates_itself(data, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict({"data": data})
    with pytest.raises(ConfigError, match=match):
        DataConfig(**data)


def test_valid_train_and_data_values_pass_and_normalise():
    t = TrainConfig(milestones=[5, 9], device="cuda:1", max_iterations=None, grad_clip=None)
    assert t.milestones == (5, 9) and hash(t)
    d = DataConfig(format="list", classes=["a", "b"])
    assert d.classes == ("a", "b") and hash(d)
    assert dataclasses.replace(t, lr=0.5).lr == 0.5
    with pytest.raises(ConfigError, match=r"train\.lr"):
        dataclasses.replace(t, lr=-1.0)


def test_file_functions_are_reexported_from_config():
    import ssdkit.config as config
    import ssdkit.configfile as configfile

    for name in ("load_config", "save_config", "apply_overrides", "config_from_dict", "config_to_dict",
                 "model_config_from_arg"):
        assert getattr(config, name) is getattr(configfile, name), name
