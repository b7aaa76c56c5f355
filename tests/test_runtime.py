"""ssdkit.runtime: devices, which mixed precision runs where (bf16 on CPUs with bfloat16 units), the CPU report."""

import copy
import math

import pytest
import torch

from ssdkit import runtime
from ssdkit.config import Config, ModelConfig, TrainConfig
from ssdkit.errors import SSDKitError
from ssdkit.runtime import amp_dtype, amp_fallback, autocast, cpu_bf16_supported, cpu_info, describe_cpu

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
needs_bf16_cpu = pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no bfloat16 units")


@pytest.mark.parametrize("has_bf16", [True, False])
def test_amp_dtype_per_device(monkeypatch, has_bf16):
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: has_bf16)
    assert amp_dtype("none", CPU) is None and amp_dtype("none", CUDA) is None
    assert amp_dtype("bf16", CUDA) is torch.bfloat16 and amp_dtype("fp16", CUDA) is torch.float16
    assert amp_dtype("bf16", CPU) is (torch.bfloat16 if has_bf16 else None)
    assert amp_dtype("fp16", CPU) is None  # float16 autocast stays CUDA-only


def test_amp_fallback_says_why_in_one_line(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: False)
    msg = amp_fallback("bf16", CPU)
    assert "no bfloat16 units" in msg and "float32" in msg and "\n" not in msg
    assert "CUDA only" in amp_fallback("fp16", CPU)
    assert amp_fallback("none", CPU) is None and amp_fallback("bf16", CUDA) is None
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: True)
    assert amp_fallback("bf16", CPU) is None


def test_unknown_amp_names_the_value():
    with pytest.raises(SSDKitError, match=r"amp: expected one of none, bf16, fp16, got 'fp8'"):
        amp_dtype("fp8", CPU)
    with pytest.raises(SSDKitError, match="fp8"):
        autocast("fp8", CPU)


def test_autocast_is_a_no_op_for_float32(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_bf16_supported", lambda: False)
    conv = torch.nn.Conv2d(3, 4, 3)
    for amp in ("none", "bf16", "fp16"):
        with autocast(amp, CPU):
            assert conv(torch.rand(1, 3, 8, 8)).dtype == torch.float32


@needs_bf16_cpu
def test_bf16_autocast_runs_bfloat16_on_this_cpu():
    conv = torch.nn.Conv2d(3, 4, 3)
    with autocast("bf16", CPU):
        y = conv(torch.rand(1, 3, 8, 8))
    assert y.dtype == torch.bfloat16 and conv.weight.dtype == torch.float32


@needs_bf16_cpu
def test_bf16_training_step_on_cpu_is_finite_and_close_to_float32():
    """The trainer's step with train.amp=bf16 on the CPU: a finite loss near the float32 one from the same weights
    and batch, float32 weights and gradients (only the network's convolutions run in bfloat16)."""
    from ssdkit.engine.step import create_train_step
    from ssdkit.engine.train import create_model_and_optimizer

    model_cfg = ModelConfig(width_mult=0.125, num_classes=4)
    images = torch.randint(0, 256, (2, 3, 300, 300), dtype=torch.uint8)
    targets = [{"boxes": torch.tensor([[20.0, 30.0, 150.0, 200.0]]), "labels": torch.tensor([1]),
                "ignore": torch.tensor([False])}] * 2
    losses, grads = {}, {}
    torch.manual_seed(0)
    base = None
    for amp in ("none", "bf16"):
        cfg = Config(model=model_cfg, train=TrainConfig(batch_size=2, amp=amp, device="cpu", optimizer="sgd"))
        model, optimizer, _ = create_model_and_optimizer(cfg, CPU)
        if base is None:
            base = copy.deepcopy(model.state_dict())
        model.load_state_dict(base)
        out = create_train_step(cfg, model, optimizer, CPU)((images, targets))
        losses[amp] = out["loss"]
        grads[amp] = [p.grad for p in model.parameters() if p.grad is not None]
        assert all(p.dtype == torch.float32 for p in model.parameters())
    assert math.isfinite(losses["bf16"])
    assert losses["bf16"] == pytest.approx(losses["none"], rel=0.05)
    assert grads["bf16"] and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads["bf16"])


def test_cpu_info_reports_the_machine():
    info = cpu_info()
    assert info["model"] and info["cores"] >= 1 and info["threads"] == torch.get_num_threads()
    assert set(info["flags"]) <= set(runtime.CPU_FLAGS) and info["bf16"] == cpu_bf16_supported()
    line = describe_cpu()
    assert info["model"] in line and "\n" not in line
