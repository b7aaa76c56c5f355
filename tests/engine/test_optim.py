"""The optimisation recipe: LR warmup and schedules, parameter groups, optimizers."""

import pytest
import torch

from ssdkit.config import apply_overrides
from ssdkit.engine.optim import create_optimizer, lr_factor, milestones_for, param_groups
from ssdkit.models import build_model
from ssdkit.models.vgg import L2Norm

from . import tiny_config


def test_lr_schedule_warmup_and_paper_milestones(tmp_path):
    cfg = tiny_config(tmp_path, train={"warmup_iterations": 10, "warmup_factor": 0.001, "gamma": 0.1})
    f = lr_factor(cfg, 120_000)
    assert f(0) == pytest.approx(0.001) and f(5) == pytest.approx(0.001 + 0.999 * 0.5) and f(10) == 1.0
    assert f(79_999) == 1.0 and f(80_000) == pytest.approx(0.1) and f(100_000) == pytest.approx(0.01)
    cos = lr_factor(apply_overrides(cfg, ["train.schedule=cosine", "train.warmup_iterations=0"]), 100)
    assert cos(0) == 1.0 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0.0, abs=1e-12)
    const = lr_factor(apply_overrides(cfg, ["train.schedule=constant", "train.warmup_iterations=0"]), 100)
    assert const(0) == const(99) == 1.0


def test_milestones_default_to_the_papers_fractions(tmp_path):
    assert milestones_for(tiny_config(tmp_path), 120_000) == (80_000, 100_000)
    assert milestones_for(tiny_config(tmp_path, train={"milestones": [5, 9]}), 120_000) == (5, 9)


def test_weight_decay_on_convolution_weights_only(tmp_path):
    model = build_model(tiny_config(tmp_path).model)  # BatchNorm on
    decay, no_decay = param_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            is_conv_weight = isinstance(m, torch.nn.Conv2d) and name == "weight"
            assert (id(p) in decayed) == is_conv_weight, (type(m).__name__, name)
    assert any(isinstance(m, L2Norm) for m in model.modules())
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_optimizers(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    sgd = create_optimizer(tiny_config(tmp_path, train={"momentum": 0.8}), model)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    adamw = create_optimizer(tiny_config(tmp_path, train={"optimizer": "adamw", "lr": 0.003}), model)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 0.003
