"""The GPU suite: one command, under 8 minutes on one GPU, one JSON file and a table.

Sections (each with a time cap, ``SECTIONS``; a section past its cap is stopped and the rest of it skipped with a
note; one that fails is recorded with its error and the others go on; the JSON file is rewritten after every
measurement, so a timeout or a crash still leaves the numbers so far):

- ``peak`` (15 s): the GPU's compute limit, a large bf16 matmul (also fp16, tf32 and fp32, for reference).
- ``train`` (150 s): training img/s, ssdkit (``create_train_step``: the trainer's step) vs torchvision
  ``ssd300_vgg16`` (its ``references/detection`` step) on the same batch, batch 32 and 64, fp32 / bf16 autocast /
  bf16 + channels_last / fp32 + channels_last, then ``torch.compile`` (ssdkit: the model; torchvision: its
  backbone and head, the per-image matching stays Python) at batch 64 bf16 + channels_last. Model FLOP
  utilisation = training FLOPs per image (``FlopCounterMode`` over forward + loss + backward) x img/s / the
  ``peak`` bf16 matmul.
- ``infer`` (75 s): end to end from JPEG bytes (``torchvision.io.decode_jpeg(device="cuda")``, resize, network,
  decode + NMS, boxes in original pixels), batch 1 and 64, ssdkit ``Detector`` vs torchvision, fp32 / bf16 / fp16
  autocast; ONNX (onnxruntime's CUDA execution provider, raw graph + ssdkit's decode) when installed.
- ``coder`` (25 s): ``SSDBoxCoder.encode_batch`` / ``decode_batch`` on CUDA equal to the CPU (labels equal, boxes
  within 1e-4 px) and their speed on both.
- ``loader`` (50 s): ssdkit's training loader (JPEG decode, ``SSDTrainTransform``, collate, pinned copy to the
  GPU) at 8 and 16 workers, against the training step's img/s from ``train``.
- ``train_run`` (80 s): ``ssdkit.engine.train.train`` for 50 iterations on CUDA with AMP (bf16), checkpoints at
  25 and 50, then a second run resumed from 25: loss finite, checkpoint written, resumed weights equal bit for
  bit. It runs in a child process with deterministic algorithms (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which must
  be set before cuBLAS starts).

``--device cpu --quick`` is the dry run (every section at toy size: width 0.125, tiny batches; torchvision's
``SSD`` class on ssdkit's extractor instead of the full-width ``ssd300_vgg16``; no ``torch.compile`` unless
``--compile``) in under a minute; ``tests/test_benchmarks.py`` runs it.

    python benchmarks/gpu_suite.py                              # on the GPU: gpu_suite.json + a table
    python benchmarks/gpu_suite.py --out /tmp/r.json --only train,infer
    python benchmarks/gpu_suite.py --device cpu --quick         # dry run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from pathlib import Path

import torch
import torchvision

HERE = Path(__file__).resolve().parent
NUM_CLASSES = 21

#: name -> (time cap in seconds, what it measures). The dry run (--quick) has the same caps and a third of the budget.
SECTIONS = {
    "peak": (15, "bf16 / fp16 / tf32 / fp32 matmul FLOP/s"),
    "train": (150, "training img/s and MFU, ssdkit vs torchvision"),
    "infer": (75, "end-to-end inference img/s, ssdkit vs torchvision, ONNX CUDA EP"),
    "coder": (25, "CUDA encode/decode equal to the CPU, and their speed"),
    "loader": (50, "the training loader at 8/16 workers vs the training step"),
    "train_run": (80, "50-iteration AMP training run: finite, checkpoint, resume bit-exact"),
}
TOTAL_BUDGET_S = 450  # the sections' caps; with start-up the suite stays under 8 minutes

#: Dense bf16 tensor-core TFLOP/s from the vendors' spec sheets (no sparsity), beside the measured peak.
SPEC_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.0}


def _sibling(name: str):
    """Another script of benchmarks/ as a module (``bench_train``, ``bench_infer``, ``bench_loader``)."""
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return __import__(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _error(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


class SectionTimeout(Exception):
    """Raised in the main thread when a section runs past its cap."""


class Suite:
    """The results and the clock: ``results[section]`` filled as measurements come, saved after each one."""

    def __init__(self, out: Path, device: torch.device, quick: bool, budget: float) -> None:
        self.out, self.device, self.quick = out, device, quick
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + budget
        self.section_deadline = self.deadline
        self.results: dict = {"machine": machine(device), "args": {}, "sections": {}}
        self.lock = threading.Lock()

    def left(self) -> float:
        """Seconds left in the current section (its cap or the whole budget, whichever ends first)."""
        return min(self.section_deadline, self.deadline) - time.perf_counter()

    def save(self) -> None:
        with self.lock:
            self.results["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(json.dumps(self.results, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, self.out)

    def run(self, name: str, fn, cap: float) -> None:
        """Run section ``fn(self, out)`` for at most ``cap`` s (SIGALRM where there is one); errors recorded."""
        out: dict = {"cap_s": round(cap, 1)}
        self.results["sections"][name] = out
        cap = min(cap, self.deadline - time.perf_counter())
        if cap < 3:
            out["skipped"] = "the suite's time budget is spent"
            self.save()
            return
        self.section_deadline = time.perf_counter() + cap
        alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()

        def on_alarm(signum, frame):
            raise SectionTimeout(f"stopped at its cap of {cap:.0f} s")

        old = signal.signal(signal.SIGALRM, on_alarm) if alarm else None
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, cap + 2)  # cooperative checks first; the alarm is the backstop
        t = time.perf_counter()
        try:
            fn(self, out)
        except SectionTimeout as e:
            out["timed_out"] = str(e)
        except Exception as e:  # noqa: BLE001 - one section failing must not stop the others
            out["error"] = _error(e)
            out["traceback"] = traceback.format_exc(limit=6).splitlines()[-8:]
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
            out["seconds"] = round(time.perf_counter() - t, 1)
            self.section_deadline = self.deadline
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.save()


def machine(device: torch.device) -> dict:
    from ssdkit.runtime import describe_cpu

    m = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
         "torchvision": torchvision.__version__, "cpu": describe_cpu(), "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        m.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sm_count=p.multi_processor_count,
                 capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda,
                 cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                 tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return m


def _best(fn, device: torch.device, repeat: int, warmup: int = 1) -> float:
    return _sibling("bench_infer").best_seconds(fn, device, repeat, warmup)


# ----------------------------------------------------------------------------------------------- peak


def section_peak(suite: Suite, out: dict) -> None:
    dev = suite.device
    n = 1024 if suite.quick else 8192
    dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
    if dev.type == "cuda":
        dtypes.update(fp16=torch.float16, tf32=torch.float32)
    out["matmul_n"] = n
    for name, dtype in dtypes.items():
        a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
        try:
            out[f"{name}_tflop_s"] = round(2 * n**3 / _best(lambda a=a, b=b: a @ b, dev, 5, 2) / 1e12, 2)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
        suite.save()
    if dev.type == "cuda":
        gpu = torch.cuda.get_device_name(dev)
        spec = next((v for k, v in SPEC_BF16_TFLOPS.items() if k in gpu), None)
        if spec:
            out["spec_sheet_bf16_tflop_s"] = spec
            out["measured_pct_of_spec"] = round(100 * out["bf16_tflop_s"] / spec, 1)


def _peak_flops(suite: Suite) -> float | None:
    p = suite.results["sections"].get("peak", {})
    return p["bf16_tflop_s"] * 1e12 if p.get("bf16_tflop_s") else None


# ----------------------------------------------------------------------------------------------- train


def _train_flops_per_image(step, batch, images: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step(*batch)
    return counter.get_total_flops() / images


def _compile_tv(tv) -> None:
    # torchvision's SSD matches and encodes per image in Python (the number of boxes changes every image): compiling
    # the whole model would recompile per box count; its backbone and head are the network
    tv.backbone = torch.compile(tv.backbone)
    tv.head = torch.compile(tv.head)


def _train_side(suite: Suite, side: str, batch: int, variant: str, compiled: bool, width: float, steps: int,
                warmup: int, flops: dict) -> dict:
    """One side's training img/s at ``batch`` in ``variant`` (``flops``: training FLOPs per image, filled once per
    side from an eager 2-image step)."""
    from torchvision.models.detection import ssd300_vgg16

    from ssdkit.config import Config, TrainConfig, ssd300_config
    from ssdkit.engine.train import create_model_and_optimizer, create_optimizer, create_train_step
    from ssdkit.runtime import amp_dtype

    bt = _sibling("bench_train")
    dev = suite.device
    amp, channels_last = bt.VARIANTS[variant]
    cfg = Config(model=ssd300_config(NUM_CLASSES, width_mult=width),
                 train=TrainConfig(batch_size=batch, optimizer="sgd", lr=1e-3, amp=amp, channels_last=channels_last,
                                   device=str(dev)))
    images, tv_images, tv_targets, _ = bt._shapes_batch(batch, 0)
    small = bt._shapes_batch(2, 1)
    torch.manual_seed(0)
    if side == "ssdkit" or width != 1:  # torchvision below full width: its SSD class on ssdkit's network
        model, optimizer, _ = create_model_and_optimizer(cfg, dev)
    if side == "ssdkit":
        fn = create_train_step(cfg, torch.compile(model) if compiled else model, optimizer, dev)
        step = lambda *b: fn(b[0])["loss"]  # noqa: E731
        args, flop_args = ((images.pin_memory() if dev.type == "cuda" else images),), (small[0],)
    else:
        tv = (ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).to(dev)
              if width == 1 else bt.torchvision_ssd_on(model))
        if channels_last:
            tv.to(memory_format=torch.channels_last)
        if compiled:
            _compile_tv(tv)
        step = bt.torchvision_step(tv, create_optimizer(cfg, tv), dev, amp_dtype(amp, dev))
        args, flop_args = (tv_images, tv_targets), (small[1], small[2])
    if side not in flops and not compiled:
        flops[side] = _train_flops_per_image(step, flop_args, 2)
    t = time.perf_counter()
    losses = [step(*args) for _ in range(warmup)]
    _sync(dev)
    warm_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        if suite.left() < 1:
            break
        losses.append(step(*args))
    _sync(dev)
    done = len(losses) - warmup
    seconds = (time.perf_counter() - t) / max(1, done)
    ips = batch / seconds
    r = {"img_per_s": round(ips, 1), "ms_per_step": round(1e3 * seconds, 2), "steps": done,
         "warmup_s": round(warm_s, 1), "loss_finite": all(math.isfinite(v) for v in losses),
         "last_loss": round(losses[-1], 4)}
    if side in flops:
        r["train_gflop_per_img"] = round(flops[side] / 1e9, 1)
        if peak := _peak_flops(suite):
            r["mfu_pct"] = round(100 * flops[side] * ips / peak, 2)
    return r


def section_train(suite: Suite, out: dict) -> None:
    from ssdkit.runtime import amp_dtype

    bt = _sibling("bench_train")
    dev, quick = suite.device, suite.quick
    width = 0.125 if quick else 1.0
    batches = (2,) if quick else (32, 64)
    # the dry run skips NCHW float32, the slowest on CPUs (and the least telling there)
    variants = ("fp32+cl", "bf16+cl") if quick else ("fp32", "bf16", "bf16+cl", "fp32+cl")
    steps, warmup = (1, 1) if quick else (8, 3)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    plan = [(b, v, False) for b in batches for v in variants]
    if suite.results["args"].get("compile", not quick):
        plan += [(batches[-1], "bf16+cl", True)]
    else:
        out["note"] = "torch.compile skipped (--quick without --compile)"
    out.update(width_mult=width, steps_timed=steps, warmup=warmup,
               torchvision_net="ssd300_vgg16" if width == 1 else "SSD(ssdkit extractor)", runs=[])
    flops: dict = {}
    for batch, variant, compiled in plan:
        label = f"batch {batch} {variant}{' compile' if compiled else ''}"
        amp = bt.VARIANTS[variant][0]
        if amp != "none" and amp_dtype(amp, dev) is None:
            out.setdefault("skipped", []).append(f"{label}: no {amp} autocast on {dev}")
            continue
        row: dict = {"batch": batch, "variant": variant, "compile": compiled}
        out["runs"].append(row)
        for side in ("ssdkit", "torchvision"):
            if suite.left() < 5:
                row[side] = {"skipped": "section time cap reached"}
                out.setdefault("skipped", []).append(f"{label} {side}: section time cap reached")
                continue
            try:
                row[side] = _train_side(suite, side, batch, variant, compiled, width, steps, warmup, flops)
            except SectionTimeout:
                raise
            except Exception as e:  # noqa: BLE001 - record, go on with the next configuration
                row[side] = {"error": _error(e)}
            finally:
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
            suite.save()
        if "img_per_s" in row.get("ssdkit", {}) and "img_per_s" in row.get("torchvision", {}):
            row["ratio"] = round(row["ssdkit"]["img_per_s"] / row["torchvision"]["img_per_s"], 3)
        suite.save()


def _best_train_ips(suite: Suite, batch: int | None = None) -> float | None:
    runs = suite.results["sections"].get("train", {}).get("runs", [])
    vals = [r["ssdkit"]["img_per_s"] for r in runs if "img_per_s" in r.get("ssdkit", {})
            and (batch is None or r["batch"] == batch)]
    return max(vals) if vals else None


# ----------------------------------------------------------------------------------------------- infer


def _jpeg_bytes(count: int) -> list[torch.Tensor]:
    from torchvision.io import read_file

    bi = _sibling("bench_infer")
    folder = Path(tempfile.mkdtemp(prefix="gpu_suite_jpegs_"))
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its image I/O (see ssdkit.data.image)
        warnings.simplefilter("ignore", DeprecationWarning)
        return [read_file(str(p)) for p in bi.write_jpegs(folder, count)]


def _decoder(device: torch.device):
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(chunk: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if device.type == "cuda":
                return decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device)
            return [decode_jpeg(c, mode=ImageReadMode.RGB) for c in chunk]

    return decode


def section_infer(suite: Suite, out: dict) -> None:
    from torchvision.models.detection import ssd300_vgg16

    from ssdkit.config import ssd300_config
    from ssdkit.inference import Detector
    from ssdkit.models import build_model
    from ssdkit.runtime import amp_dtype

    dev, quick = suite.device, suite.quick
    width = 0.125 if quick else 1.0
    count = 4 if quick else 64
    batches = (1, 4) if quick else (1, 64)
    repeat = 1 if quick else 3
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cfg = ssd300_config(num_classes=NUM_CLASSES, width_mult=width)
    names = [f"c{i}" for i in range(NUM_CLASSES - 1)]
    data = _jpeg_bytes(count)
    decode = _decoder(dev)
    out.update(images=count, image_size="500x375 JPEG", decode="GPU (nvjpeg)" if dev.type == "cuda" else "CPU",
               width_mult=width, img_per_s={})
    torch.manual_seed(0)
    base = build_model(cfg).eval()
    runners: dict = {}
    for amp in ("none", "bf16", "fp16"):
        if amp != "none" and amp_dtype(amp, dev) is None:
            continue
        label = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}[amp]
        det = Detector(copy.deepcopy(base), cfg, names, device=dev, preset="evaluate", channels_last=True, amp=amp)
        runners[f"ssdkit {label}"] = lambda chunk, det=det: det(decode(chunk), batch_size=len(chunk))
        if width == 1:
            tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval().to(dev)
        else:
            tv = _sibling("bench_train").torchvision_ssd_on(copy.deepcopy(base)).eval()
        tv.topk_candidates = 200  # ssdkit's per-class candidate count (torchvision's default is 400)
        dtype = amp_dtype(amp, dev)

        def run_tv(chunk, tv=tv, dtype=dtype):
            with torch.inference_mode(), torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
                return [{k: v.cpu() for k, v in d.items()} for d in tv([im.float() / 255 for im in decode(chunk)])]

        runners[f"torchvision {label}"] = run_tv
    try:
        runners.update(_onnx_cuda_runner(base, cfg, names, dev, decode, out))
    except Exception as e:  # noqa: BLE001
        out["onnx"] = _error(e)
    for b in batches:
        chunks = [data[i:i + b] for i in range(0, len(data), b)]
        for name, run in runners.items():
            key = f"{name} b{b}"
            if suite.left() < 3:
                out.setdefault("skipped", []).append(f"{key}: section time cap reached")
                continue
            try:
                seconds = _best(lambda run=run, chunks=chunks: [run(c) for c in chunks], dev, repeat)
                out["img_per_s"][key] = round(len(data) / seconds, 1)
            except SectionTimeout:
                raise
            except Exception as e:  # noqa: BLE001
                out["img_per_s"][key] = None
                out.setdefault("errors", {})[key] = _error(e)
            suite.save()
    ips = out["img_per_s"]
    out["ratios"] = {k: round(v / ips[t], 2) for k, v in ips.items() if k.startswith("ssdkit") and v
                     and ips.get(t := k.replace("ssdkit", "torchvision"))}


def _onnx_cuda_runner(model, cfg, names, dev, decode, out: dict) -> dict:
    """ONNX through onnxruntime's CUDA execution provider: the raw graph, ssdkit's decode on the GPU."""
    if dev.type != "cuda":
        out["onnx"] = "skipped: not on CUDA"
        return {}
    try:
        import onnxruntime as ort
    except ImportError:
        out["onnx"] = "skipped: onnxruntime not installed"
        return {}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        out["onnx"] = f"skipped: no CUDAExecutionProvider (providers: {', '.join(ort.get_available_providers())})"
        return {}
    from ssdkit.coder import SSDBoxCoder
    from ssdkit.data.preprocess import resize_batch
    from ssdkit.export import export_onnx
    from ssdkit.inference import Detector

    path = Path(tempfile.mkdtemp(prefix="gpu_suite_onnx_")) / "raw.onnx"
    export_onnx(copy.deepcopy(model), path, class_names=names)
    sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    out["onnx"] = f"onnxruntime {ort.__version__}, providers {sess.get_providers()} (input/output via the host)"
    coder = SSDBoxCoder(cfg)
    scaler = Detector(copy.deepcopy(model), cfg, names, device="cpu")  # for to_original only
    name = sess.get_inputs()[0].name

    def run(chunk):
        imgs = decode(chunk)
        x = resize_batch(imgs, cfg.input_size).float()
        loc, logits = sess.run(None, {name: x.cpu().numpy()})
        dets = coder.decode_batch(torch.from_numpy(loc).to(dev), torch.from_numpy(logits).to(dev))
        return [scaler.to_original(d, int(im.shape[1]), int(im.shape[2])) for d, im in zip(dets, imgs)]

    return {"onnxruntime CUDA EP fp32": run}


# ----------------------------------------------------------------------------------------------- coder


def random_targets(n: int, seed: int = 0, size: int = 300) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``n`` images of 1-8 random boxes (xyxy px inside ``size``) with labels 0..19."""
    g = torch.Generator().manual_seed(seed)
    boxes, labels = [], []
    for _ in range(n):
        m = int(torch.randint(1, 9, (1,), generator=g))
        xy = torch.rand(m, 2, generator=g) * (size - 40)
        wh = 8 + torch.rand(m, 2, generator=g) * (size - 8)
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=size)], 1))
        labels.append(torch.randint(0, NUM_CLASSES - 1, (m,), generator=g))
    return boxes, labels


def _match_detections(a: dict, b: dict, tol: float) -> tuple[bool, bool, float]:
    """(labels equal in order, equal as a set of (label, box) pairs within ``tol`` px, max box difference px)."""
    if len(a["labels"]) != len(b["labels"]):
        return False, False, float("inf")
    if len(a["labels"]) == 0:
        return True, True, 0.0
    same_order = bool(torch.equal(a["labels"], b["labels"]))
    if same_order:
        diff = float((a["boxes"] - b["boxes"]).abs().max())
        return True, diff <= tol, diff
    # near-equal scores may swap places between devices: pair each detection with its nearest of the same label
    d = (a["boxes"][:, None] - b["boxes"][None]).abs().amax(-1)
    d[a["labels"][:, None] != b["labels"][None]] = float("inf")
    best = d.min(1).values
    return False, bool((best <= tol).all()), float(best.max())


def coder_parity(device: torch.device, batch: int = 32, seed: int = 0, repeat: int = 5) -> dict:
    """``SSDBoxCoder.encode_batch`` / ``decode_batch`` on ``device`` against the CPU on the same inputs: encode's
    labels equal and offsets within 1e-4 (and the boxes they decode to within 1e-4 px); decode's labels equal and
    boxes within 1e-4 px; plus ms per batch on both."""
    from ssdkit.coder import SSDBoxCoder
    from ssdkit.config import ssd300_config

    cpu = torch.device("cpu")
    coder = SSDBoxCoder(ssd300_config(NUM_CLASSES))
    boxes, labels = random_targets(batch, seed)
    on = lambda ts: [t.to(device) for t in ts]  # noqa: E731
    loc_c, cls_c = coder.encode_batch(boxes, labels)
    loc_d, cls_d = coder.encode_batch(on(boxes), on(labels))
    pos = cls_c > 0
    box_c, box_d = coder.decode_boxes(loc_c), coder.decode_boxes(loc_d.cpu().to(loc_c.dtype))
    enc = {
        "labels_equal": bool(torch.equal(cls_c, cls_d.cpu())),
        "max_offset_diff": float((loc_c - loc_d.cpu()).abs().max()),
        "max_box_diff_px": float((box_c[pos] - box_d[pos]).abs().max()) if pos.any() else 0.0,
        "positives": int(pos.sum()),
    }
    enc["equal"] = enc["labels_equal"] and enc["max_offset_diff"] <= 1e-4 and enc["max_box_diff_px"] <= 1e-4
    g = torch.Generator().manual_seed(seed + 1)
    anchors = coder.default_boxes.shape[0]
    loc = torch.randn(batch, anchors, 4, generator=g) * 0.5
    logits = torch.randn(batch, anchors, NUM_CLASSES, generator=g) * 3
    dets_c = coder.decode_batch(loc, logits)
    dets_d = coder.decode_batch(loc.to(device), logits.to(device))
    checks = [_match_detections(a, {k: v.cpu() for k, v in b.items()}, 1e-4) for a, b in zip(dets_c, dets_d)]
    dec = {
        "labels_equal": all(c[0] for c in checks),
        "equal_up_to_tied_order": all(c[1] for c in checks),
        "max_box_diff_px": max(c[2] for c in checks),
        "detections": sum(len(d["labels"]) for d in dets_c),
    }
    dec["equal"] = dec["labels_equal"] and dec["max_box_diff_px"] <= 1e-4
    speed = {}
    devices = {"cpu": cpu} if device == cpu else {"cpu": cpu, device.type: device}
    for name, dv in devices.items():
        bx, lb, lo, lg = [t.to(dv) for t in boxes], [t.to(dv) for t in labels], loc.to(dv), logits.to(dv)
        enc_fn = lambda bx=bx, lb=lb: coder.encode_batch(bx, lb)  # noqa: E731
        dec_fn = lambda lo=lo, lg=lg: coder.decode_batch(lo, lg)  # noqa: E731
        speed[f"encode_ms_{name}"] = round(1e3 * _best(enc_fn, dv, repeat), 3)
        speed[f"decode_ms_{name}"] = round(1e3 * _best(dec_fn, dv, repeat), 3)
    return {"batch": batch, "device": str(device), "encode": enc, "decode": dec, "ms_per_batch": speed}


def section_coder(suite: Suite, out: dict) -> None:
    out.update(coder_parity(suite.device, batch=4 if suite.quick else 32, repeat=1 if suite.quick else 5))
    if suite.device.type != "cuda":
        out["note"] = "dry run: the device is the CPU, so this compares the CPU with itself"


# ----------------------------------------------------------------------------------------------- loader


def section_loader(suite: Suite, out: dict) -> None:
    bl = _sibling("bench_loader")
    dev, quick = suite.device, suite.quick
    count, batch = (16, 4) if quick else (512, 32)
    workers = (0, 1) if quick else (8, 16)
    out.update(images=count, batch=batch, runs=[])
    with tempfile.TemporaryDirectory() as tmp:
        folder = bl.write_dataset(Path(tmp) / "shapes", count)
        for w in workers:
            if suite.left() < 5:
                out.setdefault("skipped", []).append(f"{w} workers: section time cap reached")
                continue
            r = bl.measure_workers(folder, batch, w, 1 if quick else 2, dev if dev.type == "cuda" else None,
                                   sides=("ssdkit",))
            out["runs"].append({"workers": w, **r["ssdkit"]})
            suite.save()
    step = _best_train_ips(suite)
    if step:
        out["train_step_img_per_s"] = step
        for r in out["runs"]:
            r["keeps_up_with_step"] = r["img_per_s"] >= step
            r["loader_over_step"] = round(r["img_per_s"] / step, 2)


# ----------------------------------------------------------------------------------------------- train_run


def train_resume_check(folder: Path, device: str, quick: bool, amp: str = "bf16") -> dict:
    """``train`` for ``iterations`` (50; 4 with ``quick``) with checkpoints at the half and the end, then a run
    resumed from the half: finite losses, the checkpoint written, the resumed run's weights, losses and LR equal
    to the uninterrupted run's bit for bit."""
    from ssdkit.checkpoint import load_checkpoint
    from ssdkit.config import config_from_dict
    from ssdkit.engine.train import train
    from ssdkit.runtime import amp_dtype

    iterations = 4 if quick else 50
    half = iterations // 2

    def config(out_dir: Path):
        return config_from_dict({
            "model": {"num_classes": 9, "width_mult": 0.125 if quick else 1.0, "batch_norm": quick},
            "data": {"shapes_train_count": 16 if quick else 800, "shapes_val_count": 0,
                     "shapes_image_size": 64 if quick else 300, "augment": True, "num_workers": 0 if quick else 4,
                     "val": None},
            "train": {"batch_size": 2 if quick else 16, "max_iterations": iterations, "lr": 1e-3,
                      "warmup_iterations": 2, "log_every": 1, "eval_every": 0, "checkpoint_every": half,
                      "keep_checkpoints": 2, "amp": amp, "device": device, "seed": 3, "output_dir": str(out_dir)},
        })

    def losses(out_dir: Path) -> list:
        lines = (out_dir / "history.jsonl").read_text(encoding="utf-8").splitlines()
        recs = [json.loads(x) for x in lines if x.strip()]
        return [(r["iteration"], r["loss"], r["lr"]) for r in recs if "loss" in r]

    t = time.perf_counter()
    full = train(config(folder / "full"), progress=False)
    full_s = time.perf_counter() - t
    full_dir = Path(full["output_dir"])
    ckpts = sorted(full_dir.glob("checkpoint_*.pt"))
    mid = next((p for p in ckpts if p.stem.endswith(f"{half:08d}")), None)
    result = {"iterations": iterations, "amp": amp, "autocast": str(amp_dtype(amp, torch.device(device))),
              "device": device, "train_s": round(full_s, 1), "it_per_s": round(iterations / full_s, 2),
              "loss_finite": all(math.isfinite(v[1]) for v in losses(full_dir)),
              "last_loss": losses(full_dir)[-1][1] if losses(full_dir) else None,
              "checkpoint_written": bool(full.get("last_checkpoint")) and Path(full["last_checkpoint"]).is_file(),
              "checkpoints": [p.name for p in ckpts]}
    if mid is None:
        result["resume_bit_exact"] = False
        result["resume_note"] = f"no checkpoint of iteration {half} in {full_dir}"
        return result
    resumed = train(config(folder / "resumed"), resume=str(mid), progress=False)
    a = load_checkpoint(full["last_checkpoint"])["model"]
    b = load_checkpoint(resumed["last_checkpoint"])["model"]
    diffs = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()}
    result.update(
        resumed_iteration=resumed["iteration"],
        weights_bit_exact=all(torch.equal(a[k], b[k]) for k in a),
        max_weight_diff=max(diffs.values(), default=0.0),
        losses_equal=losses(Path(resumed["output_dir"])) == losses(full_dir)[half:],
    )
    result["resume_bit_exact"] = result["weights_bit_exact"] and result["losses_equal"]
    return result


def _train_run_child(out_json: str, device: str, quick: bool, amp: str) -> None:
    """The child process of ``train_run``: deterministic algorithms, the check, its JSON."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tempfile.TemporaryDirectory() as tmp:
            r = train_resume_check(Path(tmp), device, quick, amp)
    nondet = sorted({str(w.message).splitlines()[0][:200] for w in caught if "deterministic" in str(w.message)})
    r["nondeterministic_ops"] = nondet
    Path(out_json).write_text(json.dumps(r, indent=1), encoding="utf-8")


def run_train_check(device: str, quick: bool, amp: str = "bf16", timeout: float = 300) -> dict:
    """:func:`train_resume_check` in a child process (``CUBLAS_WORKSPACE_CONFIG`` set before cuBLAS starts,
    deterministic algorithms), killed after ``timeout`` s."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "train_run.json"
        env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8", PYTHONUNBUFFERED="1")
        src = str(HERE.parent / "src")
        env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
        cmd = [sys.executable, str(Path(__file__).resolve()), "--train-run-child", str(out), "--device", device,
               "--train-amp", amp] + (["--quick"] if quick else [])
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if p.returncode != 0 or not out.is_file():
            tail = (p.stderr or p.stdout).strip().splitlines()[-6:]
            return {"error": f"child exited {p.returncode}", "stderr_tail": tail}
        return json.loads(out.read_text(encoding="utf-8"))


def section_train_run(suite: Suite, out: dict) -> None:
    out.update(run_train_check(str(suite.device), suite.quick, suite.results["args"].get("train_amp", "bf16"),
                               timeout=max(5.0, suite.left())))


# ----------------------------------------------------------------------------------------------- report


def table(results: dict) -> str:
    """The suite's numbers as a plain-text table."""
    s = results["sections"]
    lines = [f"machine: {results['machine'].get('gpu', results['machine']['device'])}; "
             f"torch {results['machine']['torch']}; cpu: {results['machine']['cpu']}"]
    for name, sec in s.items():
        status = ("timed out" if "timed_out" in sec else "error: " + sec["error"] if "error" in sec
                  else sec.get("skipped") if isinstance(sec.get("skipped"), str) else "ok")
        lines.append(f"[{name}] {status} ({sec.get('seconds', 0)} s of {sec.get('cap_s')} s)")
        if name == "peak":
            vals = ", ".join(f"{k[:-8]} {v}" for k, v in sec.items() if k.endswith("_tflop_s"))
            lines.append(f"  matmul {sec.get('matmul_n')}: {vals} TFLOP/s")
        elif name == "train":
            lines.append(f"  {'batch':>5} {'variant':<8} {'compile':<7} {'ssdkit img/s':>12} {'tv img/s':>9} "
                         f"{'ratio':>6} {'MFU ssdkit':>10} {'MFU tv':>7}")
            for r in sec.get("runs", []):
                o, t = r.get("ssdkit", {}), r.get("torchvision", {})
                lines.append(f"  {r['batch']:>5} {r['variant']:<8} {str(r['compile']):<7} "
                             f"{o.get('img_per_s', o.get('error', '-'))!s:>12.12} "
                             f"{t.get('img_per_s', t.get('error', '-'))!s:>9.9} {r.get('ratio', '-')!s:>6} "
                             f"{o.get('mfu_pct', '-')!s:>9}% {t.get('mfu_pct', '-')!s:>6}%")
        elif name == "infer":
            for k, v in sec.get("img_per_s", {}).items():
                ratio = sec.get("ratios", {}).get(k)
                lines.append(f"  {k:<34} {v!s:>9} img/s" + (f"  {ratio}x torchvision" if ratio else ""))
            if "onnx" in sec:
                lines.append(f"  onnx: {sec['onnx']}")
        elif name == "coder" and "encode" in sec:
            e, d = sec["encode"], sec["decode"]
            lines.append(f"  encode equal {e['equal']} (offsets {e['max_offset_diff']:.2e}, boxes "
                         f"{e['max_box_diff_px']:.2e} px); decode equal {d['equal']} (boxes {d['max_box_diff_px']:.2e} "
                         f"px); ms/batch {sec['ms_per_batch']}")
        elif name == "loader":
            for r in sec.get("runs", []):
                lines.append(f"  {r['workers']:>2} workers: {r['img_per_s']} img/s ({r['img_per_s_per_worker']} per "
                             f"worker)" + (f", {r['loader_over_step']}x the step's {sec['train_step_img_per_s']} img/s"
                                           if "loader_over_step" in r else ""))
        elif name == "train_run":
            keys = ("iterations", "autocast", "it_per_s", "loss_finite", "checkpoint_written", "resume_bit_exact",
                    "max_weight_diff")
            lines.append("  " + ", ".join(f"{k} {sec[k]}" for k in keys if k in sec))
        for note in ([sec["note"]] if "note" in sec else []) + (sec["skipped"] if isinstance(sec.get("skipped"),
                                                                                            list) else []):
            lines.append(f"  note: {note}")
    lines.append(f"total {results.get('elapsed_s')} s")
    return "\n".join(lines)


RUNNERS = {"peak": section_peak, "train": section_train, "infer": section_infer, "coder": section_coder,
           "loader": section_loader, "train_run": section_train_run}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (cpu: a dry run, with --quick)")
    ap.add_argument("--quick", action="store_true", help="toy sizes (the CPU dry run)")
    ap.add_argument("--out", default="gpu_suite.json", help="JSON file, rewritten after every measurement")
    ap.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    ap.add_argument("--budget", type=float, default=None, help=f"seconds for all sections (default {TOTAL_BUDGET_S}"
                                                               "; a third with --quick)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile rows in train (default: on, off with --quick)")
    ap.add_argument("--train-amp", default="bf16", choices=["bf16", "fp16"], help="train_run's autocast")
    ap.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    ap.add_argument("--train-run-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.train_run_child:
        _train_run_child(args.train_run_child, args.device, args.quick, args.train_amp)
        return {}
    from ssdkit.runtime import resolve_device

    device = resolve_device(args.device)
    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    if unknown := [s for s in only if s not in SECTIONS]:
        raise SystemExit(f"--only: unknown section(s) {', '.join(unknown)} (expected {', '.join(SECTIONS)})")
    scale = 1 / 3 if args.quick else 1.0
    suite = Suite(Path(args.out), device, args.quick, args.budget or TOTAL_BUDGET_S * scale)
    suite.results["args"] = {"quick": args.quick, "device": str(device), "sections": only,
                             "compile": args.compile if args.compile is not None else not args.quick,
                             "train_amp": args.train_amp}
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    for name in only:
        cap = SECTIONS[name][0]  # the dry run's sections take seconds; on a busy box the caps are a backstop
        say(f"[{name}] {SECTIONS[name][1]} (cap {cap:.0f} s)")
        suite.run(name, RUNNERS[name], cap)
        sec = suite.results["sections"][name]
        if "error" in sec or "timed_out" in sec:
            say(f"  {sec.get('error') or sec.get('timed_out')}")
    suite.save()
    if args.json:
        print(json.dumps(suite.results, indent=1, default=str))
    else:
        print(table(suite.results))
        print(f"(results in {suite.out})")
    return suite.results


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
