"""``train``: config errors named, divergence, fine-tuning from another checkpoint, the public names."""

import math

import pytest
import torch

from ssdkit.checkpoint import load_checkpoint, save_checkpoint
from ssdkit.config import apply_overrides
from ssdkit.engine.train import TrainingDivergedError, init_from_checkpoint, train
from ssdkit.errors import ConfigError
from ssdkit.loss import SSDLoss
from ssdkit.models import build_model

from . import tiny_config


def _weights(path):
    return load_checkpoint(path)["model"]


def test_nan_loss_stops_with_advice_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}

    class NaNAtSecondCall(SSDLoss):
        def forward(self, *args):
            out = super().forward(*args)
            calls["n"] += 1
            if calls["n"] == 2:
                nan = torch.tensor(float("nan"))
                return out._replace(loss=out.loss * nan, cls_loss=out.cls_loss * nan)
            return out

    monkeypatch.setattr("ssdkit.engine.step.SSDLoss", NaNAtSecondCall)
    cfg = tiny_config(tmp_path, train={"max_iterations": 4, "checkpoint_every": 1}, data={"augment": False})
    with pytest.raises(TrainingDivergedError) as err:
        train(cfg, progress=False)
    msg = str(err.value)
    assert "iteration 2" in msg and "train.lr" in msg and "warmup" in msg and "ssdkit check-data" in msg
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_00000001.pt"]
    weights = _weights(tmp_path / "checkpoint_00000001.pt")
    assert all(torch.isfinite(v.float()).all() for v in weights.values())


def test_bad_config_values_name_the_key(tmp_path):
    """Bad values are refused when the config is built (``TrainConfig`` validates itself); values that only the
    data can judge are refused by ``train``."""
    cfg = tiny_config(tmp_path)
    with pytest.raises(ConfigError, match=r"train\.schedule: .*'linear'"):
        apply_overrides(cfg, ["train.schedule=linear"])
    with pytest.raises(ConfigError, match=r"train\.amp"):
        apply_overrides(cfg, ["amp=fp8"])
    with pytest.raises(ConfigError, match=r"train\.lr_typo"):
        apply_overrides(cfg, ["train.lr_typo=1"])
    with pytest.raises(ConfigError, match=r"train\.lr: expected a number"):
        apply_overrides(cfg, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"train\.milestones"):
        apply_overrides(cfg, ["train.milestones=[10, 5]"])
    with pytest.raises(ConfigError, match=r"model\.num_classes: 21 .* 8 classes.*num_classes=9"):
        train(apply_overrides(cfg, ["model.num_classes=21"]), progress=False)
    with pytest.raises(ConfigError, match=r"train\.batch_size: 8 .* 4 training images"):
        train(apply_overrides(cfg, ["train.batch_size=8"]), progress=False)


def test_init_from_checkpoint_with_a_different_class_list(tmp_path):
    """21-class checkpoint -> 3 object classes: trunk and loc heads copied, cls heads new; training runs."""
    voc_cfg = tiny_config(tmp_path, model={"num_classes": 21})
    voc_model = build_model(voc_cfg.model)
    voc_path = tmp_path / "voc.pt"
    save_checkpoint(voc_path, voc_model, voc_cfg, [f"c{i}" for i in range(20)])

    cfg = tiny_config(tmp_path / "ft", model={"num_classes": 4},
                      data={"classes": ["circle", "square", "triangle"], "augment": False},
                      train={"init_from": str(voc_path), "max_iterations": 3})
    model = build_model(cfg.model)
    report = init_from_checkpoint(model, voc_path)
    src, dst = voc_model.state_dict(), model.state_dict()
    for k, v in dst.items():
        if k.startswith("cls_layers."):
            assert k in report["initialised"]
            assert v.shape[0] == src[k].shape[0] // 21 * 4
        else:
            assert k in report["loaded"] and torch.equal(v, src[k]), k
    assert any(k.startswith("extractor.") for k in report["loaded"])

    summary = train(cfg, progress=False, stop_at_iteration=1)  # stopped as if interrupted: a checkpoint is kept
    assert summary["iteration"] == 1 and not summary["finished"] and math.isfinite(summary["loss"])
    assert summary["init"]["loaded"] == len(report["loaded"])
    ck = load_checkpoint(summary["last_checkpoint"])
    assert ck["class_names"] == ["circle", "square", "triangle"]
    assert ck["model"]["cls_layers.0.weight"].shape[0] == model.num_anchors[0] * 4


def test_the_public_names_stay_importable_from_train():
    """Tests, benchmarks, the demo and the CLI import these from ``ssdkit.engine.train``."""
    import ssdkit.engine.train as t
    from ssdkit import checkpoint
    from ssdkit.engine import evaluate, handlers, optim, step

    assert t.init_from_checkpoint is checkpoint.init_from_checkpoint
    assert t.create_optimizer is optim.create_optimizer and t.lr_factor is optim.lr_factor
    assert t.create_scheduler is optim.create_scheduler
    assert t.create_train_step is step.create_train_step and t.create_trainer is step.create_trainer
    assert t.create_evaluator is evaluate.create_evaluator and t.attach_handlers is handlers.attach_handlers
    assert all(hasattr(t, name) for name in t.__all__)


def test_tiled_training_runs_end_to_end_and_validates_on_whole_images(tmp_path, caplog):
    """``data.tile_size`` through ``train``: windows train, whole images validate tiled, window cuts reported."""
    cfg = tiny_config(tmp_path, model={"num_classes": 4}, data={
        "classes": ["circle", "square", "star"], "shapes_train_count": 2, "shapes_val_count": 1,
        "shapes_image_size": 320, "shapes_min_size": 10, "shapes_max_size": 40, "shapes_max_objects": 12,
        "augment": False, "tile_size": 160, "tile_min_visible": 0.9},
        train={"max_iterations": 2, "eval_every": 1, "epochs": 1})
    with caplog.at_level("INFO", logger="ssdkit"):
        summary = train(cfg, progress=False)
    assert summary["iteration"] == 2 and summary["finished"] and (tmp_path / "best.pt").exists()
    assert summary["data"]["train_images"] > 2  # windows, not the 2 images
    assert summary["last_map"] is not None  # the whole validation image was evaluated tiled
    assert "clipped or dropped" in caplog.text  # objects cut by window edges below 90% visible were reported
    assert summary["data"]["windows_cutting_objects"] == 8  # the warning's 8, counted in the summary
