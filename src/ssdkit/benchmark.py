"""``ssdkit benchmark``: every runtime of one checkpoint side by side: mAP on a dataset and end-to-end speed.

Formats (:data:`FORMATS`): ``eager`` (fp32, channels_last: the Detector's default), ``eager-bf16`` (weights cast
to bfloat16), ``compile`` (``torch.compile``), ``onnx``, ``onnx-int8``, ``openvino``, ``openvino-int8``, ``pt2``.
Each exported format is written to a temp folder and run through :func:`ssdkit.backends.load_exported`, the path
``Detector.from_file`` takes. A format whose package is missing (or that fails to build or run) is listed under
``skipped`` with the one-line reason.

End to end = the image file read and decoded (JPEG; images of generated data are written as quality-90 JPEGs
first), resized to ``S x S`` (the one preprocessing), run, decoded (softmax, top-k, NMS at the ``evaluate``
preset, or the graph's own), boxes scaled to the original pixels. Passes are interleaved format by format (this
kind of shared machine drifts 10-20% within minutes, so every format sees the same mix); the best of ``repeat``
passes is kept, after one warm-up pass.

mAP: VOC07 11-point AP@0.5 (:func:`ssdkit.export.parity.evaluate_runner`) on ``eval_count`` images of the data,
spread evenly, avoiding the int8 calibration images where the data has enough.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ssdkit.choices import BENCHMARK_FORMATS
from ssdkit.errors import SSDKitError
from ssdkit.runtime import describe_cpu

__all__ = ["FORMATS", "benchmark", "format_benchmark", "e2e_runner"]

FORMATS = BENCHMARK_FORMATS


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:200] if text else type(e).__name__) if isinstance(e, SSDKitError) else \
        f"{type(e).__name__}: {text.splitlines()[0][:200] if text else ''}".rstrip(": ")


def _build(fmt: str, model: torch.nn.Module, ckpt: Any, cfg, folder: Path, calib: Any, calib_count: int):
    """The runner of ``fmt`` (exporting to ``folder`` first for file formats)."""
    from ssdkit.backends import EagerRunner, load_exported

    if fmt.startswith("eager") or fmt == "compile":
        return EagerRunner(copy.deepcopy(model), cfg.model, precision="bf16" if fmt == "eager-bf16" else "fp32",
                           compile=fmt == "compile")
    from ssdkit.export import export_onnx, export_openvino, export_pt2

    int8 = fmt.endswith("-int8")
    kwargs = {"int8": True, "calib": calib, "calib_count": calib_count} if int8 else {}
    if fmt.startswith("onnx"):
        path = folder / f"{fmt}.onnx"
        export_onnx(ckpt, path, **kwargs)
    elif fmt.startswith("openvino"):
        path = folder / f"{fmt}.xml"
        export_openvino(ckpt, path, **kwargs)
    else:
        path = folder / f"{fmt}.pt2"
        export_pt2(ckpt, path)
    return load_exported(path)[0]


def _timing_files(src, indices: Sequence[int], folder: Path) -> list[Path]:
    """Image files of ``src`` at ``indices``: the dataset's own files where it has them, else JPEGs written from
    the generated images (quality 90)."""
    from PIL import Image

    files = []
    for i in indices:
        path = getattr(src.sample(i), "image_path", None)
        if path and Path(path).is_file():
            files.append(Path(path))
            continue
        out = folder / f"img_{i:05d}.jpg"
        Image.fromarray(src.load_image(i).permute(1, 2, 0).numpy()).save(out, quality=90)
        files.append(out)
    return files


def e2e_runner(runner, cfg) -> Callable[[Sequence[Path]], list[dict]]:
    """``run(files) -> detections in original pixels``: decode, resize, run, decode, scale (module docstring)."""
    from ssdkit.backends import detections
    from ssdkit.coder import SSDBoxCoder
    from ssdkit.data.image import load_image
    from ssdkit.data.preprocess import resize_batch
    from ssdkit.inference import resolve_preset

    coder = SSDBoxCoder(cfg.model)
    settings = resolve_preset("evaluate")
    s = float(cfg.model.input_size)

    def run(files: Sequence[Path]) -> list[dict]:
        imgs = [load_image(f) for f in files]
        x = resize_batch(imgs, cfg.model.input_size).float()
        out = []
        for det, im in zip(detections(runner, runner(x), coder, settings), imgs):
            h, w = im.shape[1:]
            scale = torch.tensor([w / s, h / s, w / s, h / s])
            out.append(torch.minimum((det["boxes"] * scale).clamp(min=0), torch.tensor([w, h, w, h])))
        return out

    return run


def benchmark(
    checkpoint: str | os.PathLike,
    data: Any,
    formats: Sequence[str] | None = None,
    batches: Sequence[int] = (1, 8),
    repeat: int = 3,
    images: int = 16,
    eval_count: int = 200,
    calib_count: int = 300,
    threads: int | None = None,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark the formats of ``checkpoint`` on ``data`` (mAP and end-to-end ms/img).

    Args:
        checkpoint: an ssdkit checkpoint.
        data: data spec (``"shapes"``: its validation scenes; or a dataset path) or a source; the checkpoint's
            class names fix its label order. It also calibrates the int8 formats.
        formats: names from :data:`FORMATS` (default all).
        batches: batch sizes timed.
        repeat: timed passes per (format, batch) over the ``images`` timing images; the best is kept.
        images: images per timed pass.
        eval_count: images the mAP is computed on (``0``: no mAP).
        calib_count: int8 calibration images.
        threads: torch / runtime threads for the run (default: as set).
        say: progress lines (e.g. ``print``); default silent.

    Returns:
        ``{"checkpoint", "data", "images", "eval_images", "batches", "threads", "torch", "formats": {name:
        {"runtime", "precision", "map", "ms_per_img": {"b1": float, ...}}}, "skipped": {name: reason}}``.
    """
    from ssdkit.checkpoint import model_from_checkpoint
    from ssdkit.export.parity import evaluate_runner
    from ssdkit.export.quantize import calibration_indices, open_calibration

    formats = list(FORMATS if formats is None else formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise SSDKitError(f"formats: unknown format {unknown[0]!r}; expected some of {', '.join(FORMATS)}")
    batches = [int(b) for b in batches]
    if not batches or min(batches) < 1 or repeat < 1 or images < 1:
        raise SSDKitError("batches / repeat / images: must be >= 1")
    say = say or (lambda _line: None)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model, cfg, names = model_from_checkpoint(checkpoint, device="cpu")
        src = open_calibration(data, names if eval_count else None, cfg.data)  # labels matter only for the mAP
        calibrated = set(calibration_indices(len(src), calib_count))
        pool = [i for i in range(len(src)) if i not in calibrated] or list(range(len(src)))
        eval_idx = [pool[i] for i in calibration_indices(len(pool), eval_count)] if eval_count else []
        result: dict[str, Any] = {
            "checkpoint": str(checkpoint), "data": str(data) if isinstance(data, (str, os.PathLike)) else
            type(data).__name__, "images": min(images, len(src)), "eval_images": len(eval_idx), "batches": batches,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": describe_cpu(), "formats": {},
            "skipped": {},
        }
        with tempfile.TemporaryDirectory(prefix="ssdkit-bench-") as tmp:
            folder = Path(tmp)
            files = _timing_files(src, calibration_indices(len(src), images), folder)
            runs: dict[str, Callable] = {}
            for fmt in formats:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        runner = _build(fmt, model, checkpoint, cfg, folder, src, calib_count)
                        run = e2e_runner(runner, cfg)
                        run(files[:1])  # builds lazily compiled graphs; fails here rather than mid-timing
                        entry = {"runtime": runner.runtime, "precision": runner.precision, "map": None,
                                 "ms_per_img": {}}
                        if eval_idx:
                            entry["map"] = evaluate_runner(runner, cfg.model, names, src, eval_idx)["map"]
                except Exception as e:  # noqa: BLE001 - any failure of one format is reported, the others go on
                    result["skipped"][fmt] = _reason(e)
                    say(f"skip {fmt}: {result['skipped'][fmt]}")
                    continue
                result["formats"][fmt] = entry
                runs[fmt] = run
                say(f"{fmt}: built" + (f", mAP {entry['map']:.4f}" if entry["map"] is not None else ""))
            for b in batches:
                chunks = [files[i:i + b] for i in range(0, len(files), b)]
                for run in runs.values():  # warm-up at this batch size
                    run(chunks[0])
                best = dict.fromkeys(runs, float("inf"))
                for _ in range(repeat):
                    for fmt, run in runs.items():
                        t = time.perf_counter()
                        for c in chunks:
                            run(c)
                        best[fmt] = min(best[fmt], time.perf_counter() - t)
                for fmt, seconds in best.items():
                    result["formats"][fmt]["ms_per_img"][f"b{b}"] = round(1000 * seconds / len(files), 2)
                    say(f"{fmt} b{b}: {result['formats'][fmt]['ms_per_img'][f'b{b}']} ms/img")
        return result
    finally:
        torch.set_num_threads(old_threads)


def format_benchmark(result: dict[str, Any]) -> str:
    """The :func:`benchmark` result as a text table (mAP, its change vs eager fp32, ms/img and speed-up per batch),
    then the skipped formats with their reasons."""
    batches = [f"b{b}" for b in result["batches"]]
    base = result["formats"].get("eager")
    head = ["format", "runtime", "mAP", "dmAP"] + [f"ms/img {b}" for b in batches] + [f"x {b}" for b in batches]
    rows = [head]
    for fmt, r in result["formats"].items():
        m = r["map"]
        dm = "" if m is None or base is None or base["map"] is None else f"{100 * (m - base['map']):+.2f}"
        row = [fmt, r["runtime"], "" if m is None else f"{m:.4f}", dm]
        row += [f"{r['ms_per_img'].get(b, float('nan')):.1f}" for b in batches]
        row += ["" if base is None else f"{base['ms_per_img'][b] / r['ms_per_img'][b]:.2f}" for b in batches]
        rows.append(row)
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"({result['images']} images per pass, mAP = VOC07 mAP@0.5 on {result['eval_images']} images, "
                 f"dmAP in points vs eager; x = speed-up vs eager; {result['threads']} threads, torch "
                 f"{result['torch']})")
    if result.get("cpu"):
        lines.append(f"machine: {result['cpu']}")
    for fmt, why in result["skipped"].items():
        lines.append(f"skipped {fmt}: {why}")
    return "\n".join(lines)
