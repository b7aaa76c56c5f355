"""CUDA correctness (skipped without a GPU, see conftest): the coder on CUDA equals the CPU, and a CUDA training run
with AMP is finite, writes its checkpoint and resumes bit for bit. ``benchmarks/gpu_suite.py`` measures the same
points (and their speed) in one run."""

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_cuda_encode_decode_equal_cpu(suite, batch):
    r = suite.coder_parity(torch.device("cuda"), batch=batch, repeat=1)
    enc, dec = r["encode"], r["decode"]
    assert enc["labels_equal"], enc
    assert enc["max_offset_diff"] <= 1e-4 and enc["max_box_diff_px"] <= 1e-4, enc
    assert dec["labels_equal"] and dec["max_box_diff_px"] <= 1e-4, dec
    assert dec["detections"] > 0


def test_cuda_encode_of_images_without_objects_is_background():
    from ssdkit.coder import SSDBoxCoder
    from ssdkit.config import ssd300_config

    coder = SSDBoxCoder(ssd300_config(21))
    empty = [torch.zeros(0, 4, device="cuda")] * 2
    loc, cls = coder.encode_batch(empty, [torch.zeros(0, dtype=torch.int64, device="cuda")] * 2)
    assert loc.is_cuda and not cls.any() and not loc.any()


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_amp_training_run_is_finite_and_resumes_bit_exact(suite, amp):
    """``train`` on CUDA with autocast (fp16 with its GradScaler), checkpoints at the half, resumed from there in
    a child process with deterministic algorithms (CUBLAS_WORKSPACE_CONFIG set before cuBLAS starts)."""
    r = suite.run_train_check("cuda", quick=True, amp=amp, timeout=600)
    assert "error" not in r, r
    assert r["autocast"] == str({"bf16": torch.bfloat16, "fp16": torch.float16}[amp])
    assert r["loss_finite"] and r["checkpoint_written"], r
    assert r["resume_bit_exact"], r
