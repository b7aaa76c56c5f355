"""End-to-end inference speed: ssdkit (eager, channels_last, torch.compile, onnxruntime fp32 / int8, OpenVINO fp32 /
int8) vs torchvision's SSD300.

End to end = read the JPEG from disk, decode, resize to 300x300, normalise, forward, decode + per-class NMS, boxes
back in original pixels. Equal settings everywhere: 21 classes, score > 0.01, NMS IoU 0.45, top-k 200 candidates per
class, 200 detections per image, the same 500x375 JPEGs (written to a temp dir), random weights (nothing is
downloaded). torchvision's ``ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)`` runs in eval mode on a
list of float 0-1 tensors (its own resize/normalise/postprocess), ``topk_candidates=200`` like ssdkit.

Also forward-only throughput against the machine's limit: FLOPs per image (``FlopCounterMode`` on the ssdkit model)
x images/s, divided by the fp32 matmul FLOP/s measured with a large ``torch.mm``.

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
import platform
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


def matmul_flops(device: torch.device, n: int = 2048, repeat: int = 5) -> float:
    """Measured fp32 FLOP/s of a large square ``torch.mm``: the practical compute limit of this machine."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


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
        "cpu": platform.processor() or platform.machine(),
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
            def detector_runner(m: nn.Module, channels_last: bool):
                det = Detector(m, cfg, names, device=device, channels_last=channels_last, **settings)
                return lambda chunk: det([load_image(p) for p in chunk], batch_size=len(chunk))

            # "ssdkit eager" is Detector with channels_last=False (NCHW); "ssdkit channels_last" is Detector's default
            runners: dict = {"ssdkit eager": detector_runner(model, False)}
            runners["ssdkit channels_last"] = detector_runner(build_model(cfg).eval().to(device), True)
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

        # forward only, batch 8 of already resized and normalised images
        flops = model_flops(model, cfg.input_size, device)
        nets = {"eager": build_model(cfg).eval().to(device),
                "channels_last": build_model(cfg).eval().to(device).to(memory_format=torch.channels_last)}
        inputs = {"eager": torch.randn(8, 3, cfg.input_size, cfg.input_size, device=device)}
        inputs["channels_last"] = inputs["eager"].contiguous(memory_format=torch.channels_last)

        def fwd(fmt_name):
            with torch.inference_mode():
                nets[fmt_name](inputs[fmt_name])
            _sync(device)

        # The limit and the forward passes interleaved, round by round: the share of the limit is taken per round
        # (a forward pass against the matmul measured just before it), so this box's drift cancels; the median
        # over rounds is reported, with the best forward pass and the best matmul.
        for k in nets:
            fwd(k)
        peaks, times = [], {k: [] for k in nets}
        for _ in range(max(repeat, 3)):
            peaks.append(matmul_flops(device))
            for k in nets:
                t = time.perf_counter()
                fwd(k)
                times[k].append(time.perf_counter() - t)
        results["forward"] = {"gflops_per_image": round(flops / 1e9, 2),
                              "matmul_gflop_s": round(max(peaks) / 1e9, 1)}
        for fmt_name in nets:
            shares = sorted(flops * 8 / t / p for t, p in zip(times[fmt_name], peaks))
            fwd_ips = 8 / min(times[fmt_name])
            results["forward"][fmt_name] = {
                "img_per_s_b8": round(fwd_ips, 2),
                "achieved_gflop_s": round(flops * fwd_ips / 1e9, 1),
                "pct_of_flop_limit": round(100 * shares[len(shares) // 2], 1),
                "pct_per_round": [round(100 * s, 1) for s in shares],
            }

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
    f = results["forward"]
    for fmt_name in ("eager", "channels_last"):
        g = f[fmt_name]
        print(f"forward only, batch 8, {fmt_name:<13}: best {g['img_per_s_b8']} img/s x {f['gflops_per_image']} "
              f"GFLOP/img = {g['achieved_gflop_s']} GFLOP/s (best fp32 matmul {f['matmul_gflop_s']} GFLOP/s); "
              f"per round vs the matmul just before: median {g['pct_of_flop_limit']}% of the FLOP limit "
              f"(rounds {g['pct_per_round']})")
    if "note" in results:
        print(f"note: {results['note']}")
    print(f"({results['device']}, {results['threads']} threads, torch {results['torch']})")
    return results


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
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    # onnxruntime's pool threads spin-wait after each run by default; runners are interleaved pass by pass, so a
    # spinning pool would steal the cores from whichever runner comes next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
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
