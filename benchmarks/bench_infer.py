"""End-to-end inference speed: ssdkit (eager, channels_last, torch.compile, onnxruntime fp32 / int8, OpenVINO fp32 /
int8) vs torchvision's SSD300.

End to end = read the JPEG from disk, decode, resize to 300x300, normalise, forward, decode + per-class NMS, boxes
back in original pixels. Equal settings everywhere: 21 classes, score > 0.01, NMS IoU 0.45, top-k 200 candidates per
class, 200 detections per image, the same 500x375 JPEGs (written to a temp dir), random weights (nothing is
downloaded). torchvision's ``ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)`` runs in eval mode on a
list of float 0-1 tensors (its own resize/normalise/postprocess), ``topk_candidates=200`` like ssdkit.

Also forward-only throughput (batch 8) against the machine's limit, per precision: FLOPs per image
(``FlopCounterMode`` on the ssdkit model) x images/s, divided by the best FLOP/s of several kernels measured in the
same run, round by round (:func:`peak_kernels`: square matmuls of 3 sizes and VGG-sized 3x3 convolutions, NCHW and
channels_last; fp32, bf16 (where the CPU has bfloat16 units) and int8 (``torch._int_mm``, onnxruntime's
``QLinearConv``)). Rows: fp32 NCHW and channels_last, bf16 channels_last (weights in bfloat16, as
``Detector(precision="bf16")``), onnxruntime int8. Beside it the theoretical peak from cores x vector width x FMA
units x clock (:func:`theoretical_peak`; the assumed numbers, FMA units per core, AMX tile throughput and clock,
are printed). A single fp32 ``torch.mm`` was the limit before: a channels_last forward beat it (175% on a Zen 5).

    python benchmarks/bench_infer.py                  # full SSD300 (width 1.0), 16 images, batch 1 and 8
    python benchmarks/bench_infer.py --quick          # 8 images, 1 repeat, width 0.25 unless --width-mult is given
    python benchmarks/bench_infer.py --width-mult 0.5 --no-compile --json

The torchvision ratio is like for like only at ``--width-mult 1`` (torchvision's model is always full width).

int8 rows (onnxruntime QDQ, OpenVINO NNCF) are calibrated on the benchmark's own JPEGs (random weights: these rows
measure speed, not accuracy; ``ssdkit.benchmark`` and the export parity check measure the mAP change). OpenVINO rows
need the ``openvino`` (and for int8 ``nncf``) package and are skipped without; they run float32 as float32
(``INFERENCE_PRECISION_HINT=f32``, not OpenVINO's bf16 default on CPUs with bf16 units).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ssdkit.config import ssd300_config
from ssdkit.data.image import load_image
from ssdkit.data.preprocess import resize_batch
from ssdkit.inference import Detector
from ssdkit.models import build_model
from ssdkit.runtime import cpu_bf16_supported, cpu_info, describe_cpu

NUM_CLASSES = 21


def write_jpegs(folder: Path, count: int, w: int = 500, h: int = 375) -> list[Path]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(count):
        img = np.stack([(x * (i + 1)) % 256, (y * 2 + i * 17) % 256, (x + y) % 256], -1).astype(np.float32)
        for _ in range(4):  # a few flat rectangles, so the content is not pure gradient
            x0, y0 = rng.integers(0, w - 60), rng.integers(0, h - 60)
            img[y0:y0 + rng.integers(20, 120), x0:x0 + rng.integers(20, 160)] = rng.integers(0, 255, 3)
        img += rng.normal(0, 8, img.shape)
        p = folder / f"{i:04d}.jpg"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(p, quality=90)
        paths.append(p)
    return paths


def time_e2e(runners: dict, paths: list[Path], batch: int, repeat: int, say) -> dict:
    """Best images/s of each ``runner(list of paths)`` over ``repeat`` passes through all images, after a warm-up.

    The passes are interleaved (every runner once, then again): this box's speed drifts by 10-20% within minutes, and
    interleaving gives every runner the same mix of fast and slow periods, so the ratios are like for like.
    A runner that fails (e.g. torch.compile without a working C++ toolchain) is reported and gets None.
    """
    chunks = [paths[i:i + batch] for i in range(0, len(paths), batch)]
    best: dict = {}
    for name, run in runners.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run(chunks[0])  # warm-up (allocator, lazy init, compiled graph)
            best[name] = float("inf")
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            say(f"skip {name} b{batch}: {type(e).__name__}: {msg}")
    for _ in range(repeat):
        for name in best:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = time.perf_counter()
                for c in chunks:
                    runners[name](c)
                best[name] = min(best[name], time.perf_counter() - t)
    return {name: (round(len(paths) / best[name], 2) if name in best else None) for name in runners}


def best_seconds(fn, device: torch.device, repeat: int, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeat`` calls, after ``warmup`` untimed calls (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def _conv_kernel(device: torch.device, dtype: torch.dtype, channels: int, side: int, batch: int, cl: bool):
    x = torch.randn(batch, channels, side, side, device=device, dtype=dtype)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
    if cl:
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode():
            torch.nn.functional.conv2d(x, w, padding=1)

    return 2 * 9 * channels * channels * side * side * batch, run


def _ort_int8_conv(channels: int, side: int, batch: int):
    """A QDQ 3x3 convolution (uint8 activations, int8 weights) that onnxruntime fuses into ``QLinearConv``, the
    kernel its int8 SSD graph runs; None without onnx / onnxruntime."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (channels, channels, 3, 3), dtype=np.int8)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.array(0.01, np.float32), "w_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w_z"),
             numpy_helper.from_array(np.array(0.05, np.float32), "x_s"),
             numpy_helper.from_array(np.array(128, np.uint8), "x_z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["y", "x_s", "x_z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "x_s", "x_z"], ["out"])]
    shape = [batch, channels, side, side]
    graph = helper.make_graph(nodes, "int8_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = _ort_options(ort)
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = rng.standard_normal(shape).astype(np.float32)
    del onnx
    return 2 * 9 * channels * channels * side * side * batch, lambda: sess.run(None, {"x": x})


def _ort_options(ort):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    # onnxruntime's pool threads spin-wait after each run by default; runners are interleaved pass by pass, so a
    # spinning pool would steal the cores from whichever runner comes next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return opts


def peak_kernels(device: torch.device, quick: bool = False, int8: bool = True) -> dict[str, dict]:
    """The kernels whose best FLOP/s is the measured limit, per precision: ``{"fp32": {name: (flops, fn)},
    "bf16": ..., "int8": ...}``. Square matmuls of several sizes and VGG-sized 3x3 convolutions (256 channels at
    75x75, 512 at 38x38, batch 8; NCHW and channels_last) in fp32 and bf16 (bf16 only on CUDA or a CPU with
    bfloat16 units); int8: ``torch._int_mm`` and onnxruntime's QDQ convolution (CPU). ``quick``: small sizes."""
    sizes = (256, 512) if quick else (1024, 2048, 4096)
    convs = ((64, 38, 2),) if quick else ((256, 75, 8), (512, 38, 8))
    dtypes = {"fp32": torch.float32}
    if device.type == "cuda" or cpu_bf16_supported():
        dtypes["bf16"] = torch.bfloat16
    out: dict[str, dict] = {}
    for prec, dtype in dtypes.items():
        kernels = {}
        for n in sizes:
            a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
            kernels[f"mm {n}"] = (2 * n**3, lambda a=a, b=b: torch.mm(a, b))
        for c, side, batch in convs:
            for cl in (False, True):
                name = f"conv3x3 {c}ch {side}x{side} b{batch} {'channels_last' if cl else 'NCHW'}"
                kernels[name] = _conv_kernel(device, dtype, c, side, batch, cl)
        out[prec] = kernels
    if int8:
        kernels = {}
        for n in sizes:
            a = torch.randint(-128, 128, (n, n), device=device, dtype=torch.int8)
            b = torch.randint(-128, 128, (n, n), device=device, dtype=torch.int8)
            try:
                torch._int_mm(a, b)
                kernels[f"torch._int_mm {n}"] = (2 * n**3, lambda a=a, b=b: torch._int_mm(a, b))
            except (RuntimeError, AttributeError):  # no int8 matmul kernel for this device / build
                pass
        if device.type == "cpu":
            for c, side, batch in convs:
                if (k := _ort_int8_conv(c, side, batch)) is not None:
                    kernels[f"onnxruntime QLinearConv {c}ch {side}x{side} b{batch}"] = k
        if kernels:
            out["int8"] = kernels
    return out


def measure_peak(kernels: dict, device: torch.device, repeat: int, warm: bool = True) -> dict[str, float]:
    """FLOP/s (ops/s for int8) of each ``name: (flops, fn)``, best of ``repeat`` (after a warm-up if ``warm``)."""
    return {name: flops / best_seconds(fn, device, repeat, int(warm)) for name, (flops, fn) in kernels.items()}


#: What :func:`theoretical_peak` assumes where ``/proc/cpuinfo`` cannot tell (per core, per cycle).
PEAK_ASSUMPTIONS = {
    "fma_units_per_core": 2,
    "amx_bf16_flops_per_cycle": 1024,  # one TMUL: a 16x32 by 32x16 bf16 tile product (16 x 16 x 32 MACs) per 16 cycles
    "amx_int8_ops_per_cycle": 2048,  # the same tile rate on int8 (16 x 16 x 64 MACs per 16 cycles)
    "clock": "the reported clock (nominal under most hypervisors; AVX-512 and AMX code may run lower, turbo higher)",
}


def theoretical_peak(info: dict) -> dict:
    """The CPU's peak from its cores, vector width, FMA units and clock (:data:`PEAK_ASSUMPTIONS` for what the flags
    do not say): ``{"fp32", "bf16", "int8"}`` in GFLOP/s (GOP/s), the ``per_cycle_per_core`` counts behind them,
    and ``assumed`` (the numbers taken on trust)."""
    flags = set(info["flags"])
    ghz = (info.get("max_mhz") or info.get("mhz") or 0) / 1000
    units = PEAK_ASSUMPTIONS["fma_units_per_core"]
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    assumed = [f"{units} FMA units per core", f"clock {ghz:.2f} GHz: {PEAK_ASSUMPTIONS['clock']}"]
    if "avx512f" in flags and info.get("vendor") == "AuthenticAMD" and info.get("family") == 25:
        lanes = 8  # Zen 4 runs AVX-512 on 256-bit FMA units (family 25 with AVX-512); Zen 5 (26) has 512-bit ones
        assumed.append("Zen 4: 512-bit vectors on 256-bit FMA units")
    fp32 = lanes * 2 * units  # FLOPs per cycle per core: lanes x (mul + add) x units
    if "amx_bf16" in flags:
        bf16, how_bf16 = PEAK_ASSUMPTIONS["amx_bf16_flops_per_cycle"], "AMX-BF16 tiles"
        assumed.append(f"AMX-BF16 {bf16} FLOP/cycle/core")
    elif "avx512_bf16" in flags:
        bf16, how_bf16 = 2 * fp32, "AVX512-BF16 dot products (2 bf16 pairs per fp32 lane)"
    else:
        bf16, how_bf16 = fp32, "no bf16 units (converted to fp32)"
    if "amx_int8" in flags:
        int8, how_int8 = PEAK_ASSUMPTIONS["amx_int8_ops_per_cycle"], "AMX-INT8 tiles"
        assumed.append(f"AMX-INT8 {int8} op/cycle/core")
    elif "avx512_vnni" in flags or "avx_vnni" in flags:
        vnni_lanes = lanes if "avx512_vnni" in flags else 8
        int8, how_int8 = vnni_lanes * 4 * 2 * units, "VNNI dot products (4 int8 MACs per 32-bit lane)"
    else:
        int8, how_int8 = 2 * fp32, "no VNNI (int8 through 16-bit multiply-adds)"
    scale = info["cores"] * ghz
    return {
        "fp32": round(fp32 * scale, 1), "bf16": round(bf16 * scale, 1), "int8": round(int8 * scale, 1),
        "per_cycle_per_core": {"fp32": fp32, "bf16": bf16, "int8": int8},
        "how": {"fp32": f"{lanes} fp32 lanes x FMA x {units} units", "bf16": how_bf16, "int8": how_int8},
        "cores": info["cores"], "ghz": round(ghz, 3), "assumed": assumed,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_flops(model: nn.Module, size: int, device: torch.device) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, size, size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width-mult", type=float, default=None, help="ssdkit width (default 1.0; 0.25 with --quick)")
    ap.add_argument("--images", type=int, default=None, help="JPEGs per pass (default 16; 8 with --quick)")
    ap.add_argument("--repeat", type=int, default=None, help="timed passes, best kept (default 2; 1 with --quick)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 runners (onnxruntime, OpenVINO)")
    ap.add_argument("--no-openvino", action="store_true", help="skip the OpenVINO runners")
    ap.add_argument("--forward-only", action="store_true", help="skip the end-to-end runs")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    width = args.width_mult if args.width_mult is not None else (0.25 if args.quick else 1.0)
    n_images = args.images or (8 if args.quick else 16)
    repeat = args.repeat or (1 if args.quick else 2)
    batches = [int(b) for b in args.batches.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    cfg = ssd300_config(num_classes=NUM_CLASSES, width_mult=width)
    names = [f"c{i}" for i in range(NUM_CLASSES - 1)]
    model = build_model(cfg).eval().to(device)
    settings = dict(preset="evaluate")  # score 0.01, NMS 0.45, top-k 200, 200 detections
    results: dict = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": describe_cpu(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "width_mult": width,
        "images": n_images,
        "image_size": "500x375 JPEG",
        "e2e_img_per_s": {},
    }

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), n_images)

        if not args.forward_only:  # the end-to-end comparison (models, ONNX export, torchvision)
            def detector_runner(m: nn.Module, channels_last: bool, precision: str = "fp32"):
                det = Detector(m, cfg, names, device=device, channels_last=channels_last, precision=precision,
                               **settings)
                return lambda chunk: det([load_image(p) for p in chunk], batch_size=len(chunk))

            # "ssdkit eager" is Detector with channels_last=False (NCHW); "ssdkit channels_last" is Detector's default
            runners: dict = {"ssdkit eager": detector_runner(model, False)}
            runners["ssdkit channels_last"] = detector_runner(build_model(cfg).eval().to(device), True)
            if device.type == "cuda" or cpu_bf16_supported():  # without bf16 units oneDNN emulates it, slower
                runners["ssdkit bf16"] = detector_runner(build_model(cfg).eval().to(device), True, "bf16")
            if not args.no_compile:
                runners["ssdkit torch.compile"] = detector_runner(torch.compile(build_model(cfg).eval().to(device)),
                                                                  False)
            runners.update(onnx_runners(model, cfg, Path(tmp), say))
            runners.update(file_runners(model, cfg, Path(tmp), paths, say, int8=not args.no_int8,
                                        openvino=not args.no_openvino))

            from torchvision.models.detection import ssd300_vgg16

            tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval().to(device)
            tv.topk_candidates = 200  # ssdkit's per-class candidate count (torchvision's default is 400)

            def run_tv(chunk):
                with torch.inference_mode():
                    return tv([load_image(p).to(device).float() / 255 for p in chunk])

            runners["torchvision ssd300_vgg16"] = run_tv

            for b in batches:
                for name, ips in time_e2e(runners, paths, b, repeat, say).items():
                    results["e2e_img_per_s"][f"{name} b{b}"] = ips
                    if ips is not None:
                        say(f"{name + f' b{b}':<34} {ips:>8.2f} img/s")

            del runners  # free the end-to-end models and sessions before the forward-only rounds
            gc.collect()

        # forward only, batch 8 of already resized and normalised images, against the measured limit
        results["forward"] = forward_vs_peak(model, cfg, device, Path(tmp), paths, max(repeat, 3), args.quick,
                                             not args.no_int8, say)

    e2e = results["e2e_img_per_s"]
    ratios = {}
    for b in batches:
        base = e2e.get(f"torchvision ssd300_vgg16 b{b}")
        for key, v in e2e.items():
            if key.endswith(f" b{b}") and not key.startswith("torchvision") and v and base:
                ratios[f"{key} / torchvision"] = round(v / base, 2)
    results["ratios_vs_torchvision"] = ratios
    if width != 1.0:
        results["note"] = f"ssdkit width_mult={width}: ratios vs torchvision (full width) are not like for like"

    if args.json:
        print(json.dumps(results, indent=1))
        return results
    print()
    for k, v in ratios.items():
        print(f"{k:<48} {v:>6.2f}x")
    print_forward(results["forward"])
    if "note" in results:
        print(f"note: {results['note']}")
    print(f"({results['device']}, {results['threads']} threads, torch {results['torch']}; cpu: {results['cpu']})")
    return results


FORWARD_BATCH = 8


def _ort_int8_forward(model: nn.Module, cfg, tmp: Path, paths: list[Path], say):
    """onnxruntime's int8 raw graph (the e2e run's ``int8.onnx``, else exported now, calibrated on ``paths``) as a
    function of a float pixel batch; None without onnxruntime or when the export fails."""
    try:
        import onnxruntime as ort

        from ssdkit.errors import SSDKitError
        from ssdkit.export import export_onnx
    except ImportError as e:
        say(f"skip forward onnxruntime int8: {e}")
        return None
    path = tmp / "int8.onnx"
    if not path.exists():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(model, path, class_names=[f"c{i}" for i in range(cfg.num_classes - 1)], int8=True,
                            calib=_JpegSource(paths), calib_count=len(paths))
        except (SSDKitError, ImportError) as e:
            say(f"skip forward onnxruntime int8: {str(e).splitlines()[0][:160]}")
            return None
    sess = ort.InferenceSession(str(path), _ort_options(ort), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def forward_vs_peak(model: nn.Module, cfg, device: torch.device, tmp: Path, paths: list[Path], rounds: int,
                    quick: bool, int8: bool, say) -> dict:
    """Forward passes (batch 8) of each precision against that precision's measured limit, round by round.

    fp32: NCHW and channels_last; bf16: the weights in bfloat16, channels_last (``Detector(precision="bf16")``);
    int8: onnxruntime's int8 graph (CPU). Each round first measures every kernel of :func:`peak_kernels` of a
    precision (the round's limit is the best of them), then that precision's forward passes: the share of the limit
    is taken per round (this box's drift cancels) and the median over rounds reported, beside the best forward
    pass, the best kernel and :func:`theoretical_peak`.
    """
    flops = model_flops(model, cfg.input_size, device)
    b, size, cl = FORWARD_BATCH, cfg.input_size, torch.channels_last
    x = torch.randn(b, 3, size, size, device=device)
    nets: dict = {"eager": ("fp32", build_model(cfg).eval().to(device), x),
                  "channels_last": ("fp32", build_model(cfg).eval().to(device, memory_format=cl),
                                    x.contiguous(memory_format=cl))}
    kernels = peak_kernels(device, quick, int8)
    if "bf16" in kernels:
        nets["bf16 channels_last"] = ("bf16", build_model(cfg).eval().to(device, torch.bfloat16, memory_format=cl),
                                      x.to(torch.bfloat16).contiguous(memory_format=cl))
    if "int8" in kernels and device.type == "cpu" and int8:
        if (run := _ort_int8_forward(model, cfg, tmp, paths, say)) is not None:
            pixels = (torch.rand(b, 3, size, size) * 255).numpy()
            nets["onnxruntime int8"] = ("int8", run, pixels)

    def fwd(name: str) -> None:
        _, net, inp = nets[name]
        if isinstance(net, nn.Module):
            with torch.inference_mode():
                net(inp)
        else:
            net(inp)
        _sync(device)

    for name in nets:
        fwd(name)
    precisions = [p for p in kernels if any(v[0] == p for v in nets.values())]
    peaks: dict = {p: [] for p in precisions}
    kernel_best: dict = {p: {} for p in precisions}
    times: dict = {name: [] for name in nets}
    for r in range(rounds):
        for prec in precisions:
            measured = measure_peak(kernels[prec], device, 1 if quick else 2, warm=r == 0)
            peaks[prec].append(max(measured.values()))
            for k, v in measured.items():
                kernel_best[prec][k] = max(kernel_best[prec].get(k, 0.0), v)
            for name, (p, _, _) in nets.items():
                if p == prec:
                    t = time.perf_counter()
                    fwd(name)
                    times[name].append(time.perf_counter() - t)
    theory = theoretical_peak(cpu_info()) if device.type == "cpu" else None
    out: dict = {"gflops_per_image": round(flops / 1e9, 2), "batch": b,
                 "matmul_gflop_s": round(max(v for k, v in kernel_best["fp32"].items() if k.startswith("mm")) / 1e9,
                                         1),
                 "peak": {}, "theoretical": theory}
    for prec in precisions:
        best = max(kernel_best[prec], key=kernel_best[prec].get)
        out["peak"][prec] = {
            "measured_gflop_s": round(kernel_best[prec][best] / 1e9, 1), "best_kernel": best,
            "kernels_gflop_s": {k: round(v / 1e9, 1) for k, v in kernel_best[prec].items()},
        }
        if theory:
            out["peak"][prec]["measured_pct_of_theoretical"] = round(100 * kernel_best[prec][best] / 1e9
                                                                     / theory[prec], 1)
    for name, (prec, _, _) in nets.items():
        shares = sorted(flops * b / t / p for t, p in zip(times[name], peaks[prec]))
        ips = b / min(times[name])
        out[name] = {
            "precision": prec,
            "img_per_s_b8": round(ips, 2),
            "achieved_gflop_s": round(flops * ips / 1e9, 1),
            "pct_of_flop_limit": round(100 * shares[len(shares) // 2], 1),
            "pct_per_round": [round(100 * s, 1) for s in shares],
        }
        if theory:
            out[name]["pct_of_theoretical"] = round(100 * flops * ips / 1e9 / theory[prec], 1)
    return out


def print_forward(f: dict) -> None:
    """The forward-only lines of :func:`forward_vs_peak`'s result."""
    t = f["theoretical"]
    for prec, p in f["peak"].items():
        line = (f"measured {prec} limit: {p['measured_gflop_s']} G{'OP' if prec == 'int8' else 'FLOP'}/s "
                f"({p['best_kernel']}, best of {len(p['kernels_gflop_s'])} kernels)")
        if t:
            line += (f"; theoretical {t[prec]} ({t['cores']} cores x {t['ghz']} GHz x "
                     f"{t['per_cycle_per_core'][prec]}/cycle: {t['how'][prec]}); measured = "
                     f"{p['measured_pct_of_theoretical']}% of it")
        print(line)
    if t:
        print(f"  assumed: {'; '.join(t['assumed'])}")
    for name, g in f.items():
        if isinstance(g, dict) and "pct_of_flop_limit" in g:
            theo = f", {g['pct_of_theoretical']}% of the theoretical" if "pct_of_theoretical" in g else ""
            print(f"forward only, batch {f['batch']}, {name:<18}: best {g['img_per_s_b8']} img/s x "
                  f"{f['gflops_per_image']} GFLOP/img = {g['achieved_gflop_s']} GFLOP/s; per round vs the "
                  f"{g['precision']} limit measured just before: median {g['pct_of_flop_limit']}% (rounds "
                  f"{g['pct_per_round']}){theo}")


def onnx_runners(model: nn.Module, cfg, tmp: Path, say) -> dict:
    """onnxruntime runners: raw graph + ssdkit decode, and the graph with decode + NMS inside."""
    try:
        import onnxruntime as ort

        from ssdkit.coder import SSDBoxCoder
        from ssdkit.export import export_onnx
    except ImportError as e:
        say(f"skip onnxruntime: {e}")
        return {}
    coder = SSDBoxCoder(cfg)
    s = cfg.input_size
    out = {}
    names = [f"c{i}" for i in range(cfg.num_classes - 1)]
    export_onnx(model, tmp / "raw.onnx", class_names=names)
    export_onnx(model, tmp / "nms.onnx", with_postprocess=True, class_names=names)
    opts = _ort_options(ort)
    raw = ort.InferenceSession(str(tmp / "raw.onnx"), opts, providers=["CPUExecutionProvider"])
    nms = ort.InferenceSession(str(tmp / "nms.onnx"), opts, providers=["CPUExecutionProvider"])

    def scale(boxes: torch.Tensor, hw) -> torch.Tensor:
        h, w = hw
        return (boxes * torch.tensor([w / s, h / s, w / s, h / s])).clamp(min=0).minimum(torch.tensor([w, h, w, h]))

    def run_raw(chunk):
        imgs = [load_image(p) for p in chunk]
        x = resize_batch([im.float() for im in imgs], s)
        loc, logits = raw.run(None, {"images": x.numpy()})
        dets = coder.decode_batch(torch.from_numpy(loc), torch.from_numpy(logits), score_thresh=0.01,
                                  nms_thresh=0.45, top_k=200, max_detections=200)
        return [scale(d["boxes"], im.shape[1:]) for d, im in zip(dets, imgs)]

    def run_nms(chunk):
        imgs = [load_image(p) for p in chunk]
        x = resize_batch([im.float() for im in imgs], s)
        boxes, scores, labels, count = nms.run(None, {"images": x.numpy()})
        return [scale(torch.from_numpy(boxes[i, :k]), im.shape[1:]) for i, (k, im) in enumerate(zip(count, imgs))]

    out["onnxruntime (ssdkit decode)"] = run_raw
    out["onnxruntime (NMS in graph)"] = run_nms
    return out


class _JpegSource:
    """The benchmark's JPEGs as a calibration source (``len``, ``load_image(i)``)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, i: int) -> torch.Tensor:
        return load_image(self.paths[i])


def file_runners(model: nn.Module, cfg, tmp: Path, paths: list[Path], say, int8: bool = True,
                 openvino: bool = True) -> dict:
    """Runners of exported files through ``ssdkit.backends.load_exported`` (what ``Detector.from_file`` runs):
    onnxruntime int8, OpenVINO fp32 and int8, each with ssdkit's decode. Missing packages: reported, skipped."""
    from ssdkit.backends import load_exported
    from ssdkit.benchmark import e2e_runner
    from ssdkit.config import Config
    from ssdkit.errors import SSDKitError
    from ssdkit.export import export_onnx, export_openvino

    names = [f"c{i}" for i in range(cfg.num_classes - 1)]
    calib = _JpegSource(paths)
    jobs = []
    if int8:
        jobs.append(("onnxruntime int8 (ssdkit decode)", export_onnx, "int8.onnx", True))
    if openvino:
        jobs.append(("openvino (ssdkit decode)", export_openvino, "ov.xml", False))
        if int8:
            jobs.append(("openvino int8 (ssdkit decode)", export_openvino, "ov-int8.xml", True))
    out = {}
    for name, exporter, file, quantize in jobs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs = {"int8": True, "calib": calib, "calib_count": len(paths)} if quantize else {}
                exporter(model, tmp / file, class_names=names, **kwargs)
                runner = load_exported(tmp / file)[0]
        except (SSDKitError, ImportError) as e:
            say(f"skip {name}: {str(e).splitlines()[0][:160]}")
            continue
        run = e2e_runner(runner, Config(model=cfg))
        out[name] = run
    return out


if __name__ == "__main__":
    main()
