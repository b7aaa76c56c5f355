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


def test_bench_augment_measures_both_sides():
    import torch

    threads = torch.get_num_threads()
    try:
        result = load("bench_augment").main(["--images", "2", "--rounds", "1", "--json"])
    finally:
        torch.set_num_threads(threads)  # the benchmark pins one thread
    assert result["ssdkit_img_per_s"] > 0 and result["torchvision_img_per_s"] > 0 and result["ratio"] > 0


def test_bench_train_measures_both_sides():
    result = load("bench_train").main(["--batch", "1", "--width-mult", "0.125", "--steps", "1", "--rounds", "1",
                                       "--warmup", "0", "--json"])
    step = result["step"]
    assert step["ssdkit_img_per_s"] > 0 and step["torchvision_img_per_s"] > 0 and step["ratio"] > 0
    assert step["anchors_match"] is True  # torchvision's SSD built on ssdkit's network has the same default boxes


def test_bench_infer_runs_every_runner():
    result = load("bench_infer").main(["--quick", "--no-compile", "--width-mult", "0.125", "--images", "2",
                                       "--batches", "1", "--repeat", "1", "--json"])
    e2e = result["e2e_img_per_s"]
    assert {"ssdkit eager b1", "ssdkit channels_last b1", "torchvision ssd300_vgg16 b1"} <= set(e2e)
    assert all(v is None or v > 0 for v in e2e.values())
    assert "ssdkit channels_last b1 / torchvision" in result["ratios_vs_torchvision"]
    if importlib.util.find_spec("onnxruntime"):
        assert e2e["onnxruntime int8 (ssdkit decode) b1"] > 0
    if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf"):
        assert e2e["openvino (ssdkit decode) b1"] > 0 and e2e["openvino int8 (ssdkit decode) b1"] > 0
    fwd = result["forward"]
    assert fwd["gflops_per_image"] > 0 and fwd["channels_last"]["pct_of_flop_limit"] > 0


def test_bench_tiled_compares_with_sahi_when_installed(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        result = load("bench_tiled").main(["--quick", "--images", "1", "--image-size", "300", "--tile", "160",
                                           "--train-steps", "1", "--repeat", "1", "--json"])
    finally:
        torch.set_num_threads(threads)
    ips, maps = result["img_per_s"], result["voc07_map50"]
    assert ips["ssdkit tiled"] > 0 and ips["ssdkit untiled"] > 0
    assert all(0.0 <= v <= 1.0 for v in maps.values())
    assert result["windows_per_image"] == 9  # 300 px in 160 px windows every 128 px: 3 x 3
    try:
        import sahi  # noqa: F401
    except ImportError:
        assert "sahi" not in ips and any("SAHI side skipped" in n for n in result["notes"])
        return
    assert ips["sahi"] > 0 and result["ratio_vs_sahi"] > 0
    assert result["sahi_rules_equal_sahi"] is True  # SAHI's merge rules give SAHI's detections


def test_bench_tiled_skips_sahi_cleanly(capsys):
    result = load("bench_tiled").main(["--quick", "--images", "1", "--image-size", "200", "--tile", "160",
                                       "--train-steps", "0", "--repeat", "1", "--no-sahi"])
    assert "sahi" not in result["img_per_s"] and "ratio_vs_sahi" not in result
    assert "SAHI side skipped" in capsys.readouterr().out
