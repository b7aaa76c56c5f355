"""Smoke test of the benchmark scripts that are cheap at toy sizes (they are not run in CI otherwise)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_coder_measures_both_sides():
    result = load("bench_coder").measure(n=2, objects=3, repeat=1)
    assert result["batch"] == 2
    for part in ("decode_ms_per_image", "encode_ms_per_image"):
        r = result[part]
        assert r["ssdkit"] > 0 and r["speedup"] > 0
    assert result["decode_ms_per_image"]["torchvision"] > 0
    assert result["encode_ms_per_image"]["notebook_loop"] > 0
