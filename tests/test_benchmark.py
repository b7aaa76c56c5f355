"""ssdkit.benchmark at toy size: every format either measured (mAP + ms/img per batch) or skipped with a reason."""

from __future__ import annotations

import pytest
import torch

from ssdkit.benchmark import FORMATS, benchmark, format_benchmark
from ssdkit.checkpoint import save_checkpoint
from ssdkit.config import Config
from ssdkit.errors import SSDKitError
from ssdkit.models import build_model


@pytest.fixture(scope="module")
def shapes_checkpoint(tmp_path_factory, tiny_config):
    """The tiny model with shape class names, so the shapes validation scenes are its data."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bench") / "shapes.pt"
    save_checkpoint(path, build_model(tiny_config).eval(), Config(model=tiny_config), ("circle", "square", "triangle"))
    return path


def test_benchmark_toy_size(shapes_checkpoint):
    pytest.importorskip("onnxruntime")
    formats = ["eager", "eager-bf16", "onnx", "onnx-int8", "openvino", "pt2"]
    lines = []
    result = benchmark(shapes_checkpoint, "shapes", formats=formats, batches=(1, 2), repeat=1, images=2,
                       eval_count=2, calib_count=2, say=lines.append)
    assert set(result["formats"]) | set(result["skipped"]) == set(formats)
    assert {"eager", "eager-bf16", "onnx", "onnx-int8", "pt2"} <= set(result["formats"])
    for fmt, r in result["formats"].items():
        assert r["ms_per_img"]["b1"] > 0 and r["ms_per_img"]["b2"] > 0, fmt
        assert 0 <= r["map"] <= 1 or r["map"] != r["map"], fmt  # NaN only if no class has ground truth
    assert result["formats"]["onnx-int8"]["precision"] == "int8"
    for why in result["skipped"].values():
        assert why and "\n" not in why
    table = format_benchmark(result)
    assert "onnx-int8" in table and "ms/img b2" in table and lines


def test_benchmark_bad_arguments(shapes_checkpoint):
    assert "openvino-int8" in FORMATS
    with pytest.raises(SSDKitError, match="tflite"):
        benchmark(shapes_checkpoint, "shapes", formats=["tflite"])
    with pytest.raises(SSDKitError, match="repeat"):
        benchmark(shapes_checkpoint, "shapes", formats=["eager"], repeat=0)
