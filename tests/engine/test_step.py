"""The training step: learns, equals the trainer's, skips the update of a non-finite loss."""

import math
import time

import pytest
import torch
from ignite.engine import Events

from ssdkit.engine.data import build_loaders
from ssdkit.engine.train import create_model_and_optimizer, create_scheduler, create_train_step, create_trainer
from ssdkit.loss import SSDLoss

from . import tiny_config


def test_loss_decreases_on_a_fixed_batch(tmp_path):
    """The step overfits a fixed batch: the pieces (model, optimizer, schedule, step) learn."""
    cfg = tiny_config(tmp_path, train={"lr": 0.01, "warmup_iterations": 0, "schedule": "constant"},
                      data={"augment": False})
    torch.manual_seed(0)
    batch = next(iter(build_loaders(cfg, with_val=False).train_loader))
    model, optimizer, _ = create_model_and_optimizer(cfg, "cpu")
    trainer = create_trainer(cfg, model, optimizer, "cpu")
    trainer.add_event_handler(Events.ITERATION_STARTED, create_scheduler(cfg, optimizer, 3))
    losses = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output))
    t0 = time.perf_counter()
    trainer.run([batch] * 3, max_epochs=1)
    print(f"step time {(time.perf_counter() - t0) / 3:.2f} s (batch 2, width 1/8, CPU)")
    assert set(losses[0]) == {"loss", "loc_loss", "cls_loss", "lr"}
    assert all(isinstance(v, float) for v in losses[0].values())
    assert losses[0]["loss"] == pytest.approx(losses[0]["loc_loss"] + losses[0]["cls_loss"], rel=1e-5)
    assert losses[-1]["loss"] < 0.7 * losses[0]["loss"], [o["loss"] for o in losses]


def test_train_step_without_an_engine_matches_the_trainer(tmp_path):
    """``create_train_step`` is the trainer's step: same outputs and weights from the same start."""
    cfg = tiny_config(tmp_path, data={"augment": False})
    batch = next(iter(build_loaders(cfg, with_val=False).train_loader))
    torch.manual_seed(0)
    model, optimizer, _ = create_model_and_optimizer(cfg, "cpu")
    step = create_train_step(cfg, model, optimizer, "cpu")
    ours, ours_w = [step(batch), step(batch)], model.state_dict()

    torch.manual_seed(0)
    model, optimizer, _ = create_model_and_optimizer(cfg, "cpu")
    trainer = create_trainer(cfg, model, optimizer, "cpu")
    engine = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: engine.append(e.state.output))
    trainer.run([batch] * 2, max_epochs=1)
    engine_w = model.state_dict()
    assert ours == engine
    assert all(torch.equal(ours_w[k], engine_w[k]) for k in ours_w)


def test_a_non_finite_loss_is_returned_without_an_update(tmp_path, monkeypatch):
    class NaNLoss(SSDLoss):
        def forward(self, *args):
            out = super().forward(*args)
            return out._replace(loss=out.loss * float("nan"))

    monkeypatch.setattr("ssdkit.engine.step.SSDLoss", NaNLoss)
    cfg = tiny_config(tmp_path, data={"augment": False})
    batch = next(iter(build_loaders(cfg, with_val=False).train_loader))
    model, optimizer, _ = create_model_and_optimizer(cfg, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    out = create_train_step(cfg, model, optimizer, "cpu")(batch)
    assert math.isnan(out["loss"])
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "running" not in k)  # BN statistics do move


def test_a_batch_too_small_for_batchnorm_is_skipped_not_a_crash(tmp_path):
    """0 images (all failed to load) or 1 image with BatchNorm ("Expected more than 1 value per channel" at the 1x1
    map): the step is skipped, the model untouched, and the output says so; without BatchNorm 1 image trains."""
    cfg = tiny_config(tmp_path, data={"augment": False})
    images, targets = next(iter(build_loaders(cfg, with_val=False).train_loader))
    model, optimizer, _ = create_model_and_optimizer(cfg, "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step = create_train_step(cfg, model, optimizer, "cpu")
    assert step((torch.zeros(0, 3, 300, 300, dtype=torch.uint8), [])) == {
        "loss": 0.0, "loc_loss": 0.0, "cls_loss": 0.0, "lr": 0.01, "skipped": 1.0}
    assert step((images[:1], targets[:1]))["skipped"] == 1.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics too
    assert "skipped" not in step((images, targets))

    plain = tiny_config(tmp_path, model={"batch_norm": False}, data={"augment": False})
    model, optimizer, _ = create_model_and_optimizer(plain, "cpu")
    out = create_train_step(plain, model, optimizer, "cpu")((images[:1], targets[:1]))
    assert "skipped" not in out and math.isfinite(out["loss"]) and out["loss"] > 0
