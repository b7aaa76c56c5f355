"""Throughput of the whole training input pipeline (img/s per worker and with N workers): ssdkit's vs torchvision's.

Both read the same 500x375 JPEGs (``shapes`` scenes with their VOC XML, written to a temp dir by
:func:`ssdkit.data.shapes.write_shapes`) and hand over 300x300 uint8 batches, as a ``DataLoader`` the trainer
iterates:

- ssdkit: the loader of a training run, ``ssdkit.engine.data.build_loaders`` (VOC reader, the training box
  policy, JPEG decode with ``ssdkit.data.image.load_image``, ``SSDTrainTransform``, ``collate`` into one
  ``[B, 3, 300, 300]`` tensor, pinned memory with CUDA, workers with one torch thread each).
- torchvision: a ``Dataset`` over the same files and boxes: ``torchvision.io.decode_image``, its detection
  reference's SSD preset in ``transforms.v2`` (``RandomPhotometricDistort``, ``RandomZoomOut(fill=mean)``,
  ``RandomIoUCrop``, ``RandomHorizontalFlip``) + ``Resize((300, 300))`` + ``SanitizeBoundingBoxes`` (as
  ``bench_augment.py``), its reference's list collate, the same ``DataLoader`` settings (workers set to one torch
  thread, pinned with CUDA).

With CUDA each batch is also copied to the GPU (``non_blocking`` from pinned memory), as the training step does.
For each worker count (``--workers``, default ``0,1,<cores>``; 0 = the main process, with one torch thread) a
warm-up pass starts the (persistent) workers, then ``--passes`` timed passes over the images alternate between the
two sides. Per worker = img/s / workers (the main process counts as one). Target: >= 250 img/s per worker core.

Also, single-threaded in this process, the cost of each stage per image (decode, augmentation, collate), so the
bound is visible; and with CUDA (and ``--gpu-decode``, on by default there), ``torchvision.io.decode_jpeg(...,
device="cuda")`` on batches of file bytes against the CPU decoder.

    python benchmarks/bench_loader.py                 # 256 images, batch 32, workers 0,1,<cores>
    python benchmarks/bench_loader.py --quick --json  # 16 images, batch 4, workers 0,1, one pass
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2

from ssdkit.config import Config, DataConfig, TrainConfig, ssd300_config
from ssdkit.data.image import load_image
from ssdkit.data.loader import collate
from ssdkit.data.shapes import ShapesDataset, write_shapes
from ssdkit.data.transforms import SSDTrainTransform
from ssdkit.engine.data import build_loaders, train_fill
from ssdkit.runtime import cpu_info, describe_cpu

TARGET_PER_WORKER = 250.0  # img/s per worker core
SIZE = 300


def write_dataset(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` 500x375 shapes JPEGs (quality 90) with VOC XML under ``folder``, all in the train split."""
    return write_shapes(folder, "voc", count=count, seed=seed, val_fraction=0.0, image_size=(500, 375),
                        progress=False)


def ssdkit_config(folder: Path, batch: int, workers: int, seed: int = 0) -> Config:
    """A training run's config over ``folder`` (the shapes' 8 classes, augmentation on)."""
    classes = len(ShapesDataset(1).class_names)
    return Config(model=ssd300_config(classes + 1),
                  data=DataConfig(train=str(folder), format="voc", val=None, augment=True, num_workers=workers),
                  train=TrainConfig(batch_size=batch, seed=seed, device="cpu"))


def _decode(path: str) -> torch.Tensor:
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (see ssdkit.data.image)
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_image(read_file(path), mode=ImageReadMode.RGB)


def torchvision_preset(fill: tuple[int, int, int]) -> v2.Compose:
    """torchvision's detection reference SSD augmentation, to 300x300 (``bench_augment.py``'s)."""
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill={tv_tensors.Image: fill, "others": 0}, side_range=(1.0, 4.0), p=0.5),
        v2.RandomIoUCrop(),
        v2.RandomHorizontalFlip(p=0.5),
        v2.Resize((SIZE, SIZE)),
        v2.SanitizeBoundingBoxes(),
    ])


class TorchvisionDataset(Dataset):
    """The same files and boxes as ssdkit's training source, through torchvision's decoder and v2 SSD preset:
    ``(image Tensor[3, 300, 300] uint8, {"boxes", "labels"})``."""

    def __init__(self, source, fill: tuple[int, int, int]) -> None:
        self.samples = [source.sample(i) for i in range(len(source))]
        self.transform = torchvision_preset(fill)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        s = self.samples[index]
        image = tv_tensors.Image(_decode(s.image_path))
        boxes = tv_tensors.BoundingBoxes(s.boxes.float(), format="XYXY", canvas_size=(s.height, s.width))
        image, target = self.transform(image, {"boxes": boxes, "labels": s.labels.long() + 1})  # 0 is background
        return image.as_subclass(torch.Tensor), {k: v.as_subclass(torch.Tensor) for k, v in target.items()}


def _as_lists(batch: list) -> tuple:
    """torchvision's detection collate: a tuple of images and a tuple of targets."""
    return tuple(zip(*batch))


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


def loaders(folder: Path, batch: int, workers: int, seed: int = 0) -> dict[str, DataLoader]:
    """Both sides' training loaders over ``folder`` with ``workers`` workers."""
    cfg = ssdkit_config(folder, batch, workers, seed)
    ours = build_loaders(cfg, with_val=False)
    cuda = torch.cuda.is_available()
    theirs = DataLoader(TorchvisionDataset(ours.train_source, train_fill(cfg)), batch_size=batch, shuffle=True,
                        drop_last=True, num_workers=workers, collate_fn=_as_lists, pin_memory=workers > 0 and cuda,
                        persistent_workers=workers > 0, worker_init_fn=_one_thread if workers else None,
                        generator=torch.Generator().manual_seed(seed))
    return {"ssdkit": ours.train_loader, "torchvision": theirs}


def _to_device(images, device: torch.device | None) -> None:
    if device is None:
        return
    if isinstance(images, torch.Tensor):
        images.to(device, non_blocking=True)
    else:
        for im in images:
            im.to(device, non_blocking=True)


def _pass(loader: DataLoader, device: torch.device | None) -> tuple[int, float]:
    """Images delivered by one pass over ``loader`` (copied to ``device`` if given) and its seconds."""
    n = 0
    t0 = time.perf_counter()
    for images, _targets in loader:
        _to_device(images, device)
        n += len(images)
    if device is not None:
        torch.cuda.synchronize(device)
    return n, time.perf_counter() - t0


def measure_workers(folder: Path, batch: int, workers: int, passes: int, device: torch.device | None,
                    seed: int = 0, sides: tuple[str, ...] = ("ssdkit", "torchvision")) -> dict:
    """img/s of the loaders of ``sides`` with ``workers`` workers: a warm-up pass each, then ``passes`` alternating
    passes; ``ratio`` (ssdkit / torchvision) when both run."""
    threads = torch.get_num_threads()
    if workers == 0:
        torch.set_num_threads(1)  # the main process is the one worker: one core, as a worker gets
    try:
        pair = {k: v for k, v in loaders(folder, batch, workers, seed).items() if k in sides}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for loader in pair.values():
                _pass(loader, device)  # starts the persistent workers, warms the caches
            images, seconds = dict.fromkeys(pair, 0), dict.fromkeys(pair, 0.0)
            names = list(pair)
            for p in range(passes):
                for name in names if p % 2 == 0 else names[::-1]:
                    n, s = _pass(pair[name], device)
                    images[name] += n
                    seconds[name] += s
        del pair  # stops the workers
    finally:
        torch.set_num_threads(threads)
    out: dict = {"workers": workers}
    for name in images:
        ips = images[name] / seconds[name]
        out[name] = {"img_per_s": round(ips, 1), "img_per_s_per_worker": round(ips / max(1, workers), 1)}
    if "ssdkit" in out and "torchvision" in out:
        out["ratio"] = round(out["ssdkit"]["img_per_s"] / out["torchvision"]["img_per_s"], 2)
    return out


def stage_costs(folder: Path, batch: int, count: int, seed: int = 0) -> dict:
    """ms per image of ssdkit's stages, one thread, in this process: decode, augmentation, collate."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = ssdkit_config(folder, batch, 0, seed)
        source = build_loaders(cfg, with_val=False).train_source
        n = min(count, len(source))
        transform = SSDTrainTransform(SIZE, fill=train_fill(cfg))
        paths = [source.sample(i).image_path for i in range(n)]
        samples = [source.sample(i) for i in range(n)]
        t0 = time.perf_counter()
        images = [load_image(p) for p in paths]
        t1 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed)
        items = []
        for im, s in zip(images, samples):
            out, boxes, labels, ignore = transform(im, s.boxes, s.labels, s.ignore, generator=gen)
            items.append((out, {"boxes": boxes, "labels": labels, "ignore": ignore}))
        t2 = time.perf_counter()
        for i in range(0, n, batch):
            collate(items[i:i + batch])
        t3 = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    ms = lambda t: round(1e3 * t / n, 3)  # noqa: E731
    total = (t3 - t0) / n
    return {"decode_ms": ms(t1 - t0), "augment_ms": ms(t2 - t1), "collate_ms": ms(t3 - t2),
            "sum_ms": round(1e3 * total, 3), "img_per_s_bound": round(1 / total, 1)}


def gpu_decode(folder: Path, batch: int, count: int, device: torch.device, repeat: int = 3) -> dict:
    """``decode_jpeg(device="cuda")`` on batches of file bytes vs the CPU decoder (one thread), img/s."""
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))[:count]
    data = [read_file(p) for p in paths]
    chunks = [data[i:i + batch] for i in range(0, len(data), batch)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        decode_jpeg(chunks[0], device=device)  # warm-up (nvjpeg handles)
        torch.cuda.synchronize(device)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for c in chunks:
                decode_jpeg(c, device=device, mode=ImageReadMode.RGB)
            torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            for d in data:
                decode_jpeg(d, mode=ImageReadMode.RGB)
            cpu = time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)
    return {"images": len(data), "batch": batch, "gpu_img_per_s": round(len(data) / best, 1),
            "cpu_1_thread_img_per_s": round(len(data) / cpu, 1), "ratio": round(cpu / best, 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="JPEGs written (default 256; 16 with --quick)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default 32; 4 with --quick)")
    ap.add_argument("--workers", default=None, help="worker counts, comma-separated (default 0,1,<cores>; "
                                                    "0,1 with --quick)")
    ap.add_argument("--passes", type=int, default=None, help="timed passes per side (default 2; 1 with --quick)")
    ap.add_argument("--gpu-decode", action=argparse.BooleanOptionalAction, default=True,
                    help="also time decode_jpeg on the GPU (only when CUDA is there)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    args = ap.parse_args(argv)
    cores = cpu_info()["cores"]
    n_images = args.images or (16 if args.quick else 256)
    batch = args.batch or (4 if args.quick else 32)
    passes = args.passes or (1 if args.quick else 2)
    workers = [int(w) for w in (args.workers or ("0,1" if args.quick else f"0,1,{cores}")).split(",")]
    workers = list(dict.fromkeys(workers))  # 0,1,1 on a one-core machine
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    cuda = torch.device("cuda") if torch.cuda.is_available() else None
    result: dict = {
        "cpu": cpu_info(),
        "device": torch.cuda.get_device_name(cuda) if cuda else "cpu",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "images": n_images,
        "image_size": "500x375 JPEG (quality 90) -> 300x300",
        "batch": batch,
        "passes": passes,
        "copied_to_gpu": cuda is not None,
        "target_img_per_s_per_worker": TARGET_PER_WORKER,
        "by_workers": [],
    }
    say(f"cpu: {describe_cpu()}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_dataset(Path(tmp) / "shapes", n_images, args.seed)
        result["stages_1_thread"] = stage_costs(folder, batch, min(n_images, 64), args.seed)
        st = result["stages_1_thread"]
        say(f"stages, 1 thread: decode {st['decode_ms']} ms + augment {st['augment_ms']} ms + collate "
            f"{st['collate_ms']} ms = {st['sum_ms']} ms/img ({st['img_per_s_bound']} img/s)")
        for w in workers:
            r = measure_workers(folder, batch, w, passes, cuda, args.seed)
            result["by_workers"].append(r)
            say(f"{w} workers: ssdkit {r['ssdkit']['img_per_s']:.1f} img/s ({r['ssdkit']['img_per_s_per_worker']:.1f}"
                f" per worker), torchvision {r['torchvision']['img_per_s']:.1f} img/s "
                f"({r['torchvision']['img_per_s_per_worker']:.1f} per worker), ratio {r['ratio']:.2f}x")
        if cuda is not None and args.gpu_decode:
            try:
                result["gpu_decode"] = gpu_decode(folder, batch, n_images, cuda)
            except Exception as e:  # noqa: BLE001 - an nvjpeg problem must not lose the CPU numbers
                result["gpu_decode"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    one = next((r for r in result["by_workers"] if r["workers"] in (0, 1)), None)
    if one is not None:
        per = one["ssdkit"]["img_per_s_per_worker"]
        result["per_worker_core"] = {"ssdkit": per, "torchvision": one["torchvision"]["img_per_s_per_worker"],
                                     "meets_target": per >= TARGET_PER_WORKER}
    if args.json:
        print(json.dumps(result, indent=1))
        return result
    print(f"\ntraining input pipeline, {n_images} {result['image_size']}, batch {batch}, {passes} timed passes"
          f"{', copied to the GPU' if cuda else ''}")
    print(f"  {'workers':>7} {'ssdkit img/s':>13} {'per worker':>11} {'torchvision':>12} {'per worker':>11} "
          f"{'ratio':>7}")
    for r in result["by_workers"]:
        print(f"  {r['workers']:>7} {r['ssdkit']['img_per_s']:>13.1f} {r['ssdkit']['img_per_s_per_worker']:>11.1f} "
              f"{r['torchvision']['img_per_s']:>12.1f} {r['torchvision']['img_per_s_per_worker']:>11.1f} "
              f"{r['ratio']:>6.2f}x")
    if "per_worker_core" in result:
        p = result["per_worker_core"]
        print(f"  per worker core: ssdkit {p['ssdkit']} img/s (target >= {TARGET_PER_WORKER:.0f}: "
              f"{'met' if p['meets_target'] else 'not met'})")
    if "gpu_decode" in result:
        g = result["gpu_decode"]
        print(f"  GPU decode: {g}" if "error" in g else
              f"  GPU decode_jpeg, batch {g['batch']}: {g['gpu_img_per_s']} img/s vs CPU 1 thread "
              f"{g['cpu_1_thread_img_per_s']} img/s ({g['ratio']}x)")
    print(f"  ({result['device']}; cpu: {describe_cpu()})")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
