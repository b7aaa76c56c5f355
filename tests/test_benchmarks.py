"""Smoke test of the benchmark scripts that are cheap at toy sizes (they are not run in CI otherwise)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

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
    result = load("bench_train").main(["--batch", "2", "--width-mult", "0.125", "--steps", "1", "--rounds", "1",
                                       "--warmup", "0", "--variants", "fp32,bf16+cl", "--json"])
    (step,) = result["step"]
    assert step["batch"] == 2 and step["anchors_match"] is True  # torchvision's SSD on ssdkit's network: same boxes
    import torch

    from ssdkit.runtime import cpu_bf16_supported

    expected = {"fp32", "bf16+cl"} if cpu_bf16_supported() or torch.cuda.is_available() else {"fp32"}
    assert set(step["variants"]) == expected
    for v in step["variants"].values():
        assert v["ssdkit_img_per_s"] > 0 and v["torchvision_img_per_s"] > 0 and v["ratio"] > 0
        assert all(math.isfinite(x) for x in v["first_loss"].values())
    assert step["best"]["ratio"] > 0 and step["best"]["ratio_vs_torchvision_fp32"] > 0


def test_bench_train_map_on_a_dataset_folder(tmp_path):
    """--map-data PATH: auto config's recipe on a VOC folder vs torchvision's SSD training, same network."""
    from ssdkit.data.shapes import write_shapes

    data = write_shapes(tmp_path / "voc", count=8, image_size=96, min_size=20, max_size=60,
                        class_names=["circle", "square"], val_fraction=0.25, progress=False)
    result = load("bench_train").main(["--map-only", "--map-data", str(data), "--iterations", "2", "--map-batch", "2",
                                       "--width-mult", "0.125", "--json"])
    r = result["map"]
    assert r["data"] == str(data) and r["input_size"] == 400 and r["batch"] == 2 and r["iterations"] == 2
    assert r["val_images"] == 2 and r["train_images"] == 6 and r["classes"] == ["circle", "square"]
    assert r["anchors_match"] is True
    assert all(0.0 <= v <= 1.0 for v in r["voc07_map"].values())
    assert r["ssdkit_map_via_evaluate_model"] == pytest.approx(r["voc07_map"]["ssdkit"], abs=1e-4)


def test_bench_train_real_loader_reports_data_wait():
    result = load("bench_train").main(["--batch", "2", "--width-mult", "0.125", "--steps", "1", "--rounds", "1",
                                       "--warmup", "0", "--variants", "fp32", "--loader", "--loader-images", "4",
                                       "--json"])
    v = result["step"][0]["variants"]["fp32"]
    assert v["ssdkit_img_per_s"] > 0 and set(v["data_wait_ms_per_step"]) == {"ssdkit", "torchvision"}
    assert all(w >= 0 for w in v["data_wait_ms_per_step"].values())


def test_bench_loader_measures_both_pipelines():
    import torch

    threads = torch.get_num_threads()
    try:
        result = load("bench_loader").main(["--quick", "--images", "8", "--batch", "4", "--workers", "0,1", "--json"])
    finally:
        torch.set_num_threads(threads)
    assert [r["workers"] for r in result["by_workers"]] == [0, 1]
    for r in result["by_workers"]:
        assert r["ssdkit"]["img_per_s"] > 0 and r["torchvision"]["img_per_s"] > 0 and r["ratio"] > 0
    assert result["cpu"]["model"] and result["stages_1_thread"]["decode_ms"] > 0
    assert result["per_worker_core"]["ssdkit"] > 0
    assert "gpu_decode" not in result or "error" not in result["gpu_decode"]


def test_gpu_suite_dry_runs_on_cpu(tmp_path):
    """``gpu_suite.py --device cpu --quick``: every section runs at toy size, the JSON file holds each one."""

    out = tmp_path / "suite.json"
    # a generous budget: ~10-40 s on the 2-core development box, but other work on a shared box can triple it
    result = load("gpu_suite").main(["--device", "cpu", "--quick", "--out", str(out), "--budget", "600"])
    assert json.loads(out.read_text())["sections"].keys() == result["sections"].keys()
    s = result["sections"]
    assert set(s) == {"peak", "train", "infer", "coder", "loader", "train_run"}
    for name, sec in s.items():
        assert "error" not in sec and "timed_out" not in sec, (name, sec)
    assert s["peak"]["bf16_tflop_s"] > 0
    run = s["train"]["runs"][0]
    assert run["ssdkit"]["img_per_s"] > 0 and run["torchvision"]["img_per_s"] > 0 and run["ssdkit"]["mfu_pct"] > 0
    assert s["infer"]["img_per_s"]["ssdkit fp32 b1"] > 0 and s["infer"]["img_per_s"]["torchvision fp32 b1"] > 0
    assert s["coder"]["encode"]["equal"] and s["coder"]["decode"]["equal"]
    assert s["loader"]["runs"][0]["img_per_s"] > 0
    tr = s["train_run"]
    assert tr["loss_finite"] and tr["checkpoint_written"] and tr["resume_bit_exact"], tr
    assert result["elapsed_s"] < 600


def test_bench_infer_runs_every_runner():
    # in a process of its own, as a user runs it: OpenVINO + NNCF leave the interpreter's heap corrupted (a later
    # unrelated test segfaulted in CPython's tuple allocator when this ran in the pytest process)
    out = subprocess.run([sys.executable, str(BENCH / "bench_infer.py"), "--quick", "--no-compile", "--width-mult",
                          "0.125", "--images", "2", "--batches", "1", "--repeat", "1", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
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
    assert fwd["peak"]["fp32"]["measured_gflop_s"] > 0 and len(fwd["peak"]["fp32"]["kernels_gflop_s"]) >= 4
    assert fwd["theoretical"]["fp32"] > 0 and fwd["theoretical"]["assumed"]
    from ssdkit.runtime import cpu_bf16_supported

    if cpu_bf16_supported():
        assert e2e["ssdkit bf16 b1"] > 0
        assert fwd["bf16 channels_last"]["pct_of_flop_limit"] > 0 and fwd["peak"]["bf16"]["measured_gflop_s"] > 0
    if importlib.util.find_spec("onnxruntime"):
        assert fwd["onnxruntime int8"]["pct_of_flop_limit"] > 0 and fwd["peak"]["int8"]["measured_gflop_s"] > 0


def test_bench_tiled_compares_with_sahi_when_installed(capsys):
    from PIL import Image

    guard = Image.MAX_IMAGE_PIXELS  # importing sahi sets Pillow's decompression-bomb guard to None, process-wide
    try:
        _bench_tiled_with_sahi(capsys)
    finally:
        Image.MAX_IMAGE_PIXELS = guard


def _bench_tiled_with_sahi(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        result = load("bench_tiled").main(["--quick", "--images", "1", "--image-size", "300", "--tile", "160",
                                           "--train-steps", "1", "--repeat", "1", "--no-int8", "--json"])
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
    assert ips["sahi, batch_size 1"] > 0 and result["ratio_vs_sahi_default_batch"] > 0  # SAHI's own default
    assert result["sahi_rules_equal_sahi"] is True  # SAHI's merge rules give SAHI's detections


@pytest.mark.skipif(not (importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf")),
                    reason="openvino / nncf not installed (pip install 'ssdkit[openvino]')")
def test_bench_tiled_int8_rows():
    # in a process of its own: NNCF leaves the interpreter's heap corrupted (see test_bench_infer_runs_every_runner)
    out = subprocess.run([sys.executable, str(BENCH / "bench_tiled.py"), "--quick", "--images", "1", "--image-size",
                          "300", "--tile", "160", "--train-steps", "1", "--repeat", "1", "--no-bf16", "--json"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout)
    ips = result["img_per_s"]
    assert ips["ssdkit tiled openvino int8"] > 0 and 0.0 <= result["voc07_map50"]["ssdkit tiled openvino int8"] <= 1
    if importlib.util.find_spec("sahi"):
        assert ips["sahi, openvino int8"] > 0 and result["ratio_int8_vs_sahi_int8"] > 0


def test_bench_tiled_skips_sahi_cleanly(capsys):
    result = load("bench_tiled").main(["--quick", "--images", "1", "--image-size", "200", "--tile", "160",
                                       "--train-steps", "0", "--repeat", "1", "--no-sahi"])
    assert "sahi" not in result["img_per_s"] and "ratio_vs_sahi" not in result
    assert "SAHI side skipped" in capsys.readouterr().out
