"""Throughput of ssdkit's SSD training augmentation against torchvision's ``transforms.v2`` SSD preset.

Both run on the same 500x375 images (``shapes`` images, JPEG-encoded and decoded once beforehand with
``torchvision.io.decode_image``, as ssdkit's readers do, so decoding is not timed), in one process with
``torch.set_num_threads(1)``, after a warm-up, in alternating rounds (so a busy machine slows both alike):

- ssdkit: ``SSDTrainTransform(size=300)`` (photometric distortion, zoom-out, min-IoU crop, flip, resize).
- torchvision: ``RandomPhotometricDistort + RandomZoomOut(fill=mean) + RandomIoUCrop + RandomHorizontalFlip``
  (torchvision's detection reference ``ssd`` preset) ``+ Resize((300, 300)) + SanitizeBoundingBoxes``.

It also times the per-item cost of ``DetectionDataset`` + ``collate`` (batches of 32) on the same images.

    python benchmarks/bench_augment.py            # human-readable
    python benchmarks/bench_augment.py --json     # one JSON object
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
import warnings

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from ssdkit.data.loader import DetectionDataset, collate
from ssdkit.data.sample import Sample
from ssdkit.data.shapes import ShapesDataset
from ssdkit.data.transforms import SSDTrainTransform
from ssdkit.runtime import describe_cpu

FILL = (123, 117, 104)


class _InMemorySource:
    """A DetectionSource over already-decoded images (so the loader timing excludes decoding)."""

    def __init__(self, images: list[torch.Tensor], samples: list[Sample], class_names: tuple[str, ...]):
        self.images, self.samples, self.class_names = images, samples, class_names

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, index: int) -> Sample:
        return self.samples[index]

    def load_image(self, index: int) -> torch.Tensor:
        return self.images[index]


def make_images(count: int, seed: int) -> tuple[list[torch.Tensor], list[Sample], tuple[str, ...]]:
    ds = ShapesDataset(count, seed=seed, image_size=(500, 375))
    images = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(ds.load_image(i).permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=90)
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders (see ssdkit.data.image)
            warnings.simplefilter("ignore", DeprecationWarning)
            images.append(decode_image(data, mode=ImageReadMode.RGB))
    return images, [ds.sample(i) for i in range(count)], ds.class_names


def torchvision_preset() -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: FILL, "others": 0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(p=0.5),
            v2.Resize((300, 300)),
            v2.SanitizeBoundingBoxes(),
        ]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="distinct images (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed passes over the images per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    images, samples, class_names = make_images(args.images, args.seed)
    ours = SSDTrainTransform(size=300, fill=FILL)
    theirs = torchvision_preset()
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # torchvision's transforms use the global generator

    def run_ssdkit() -> None:
        for img, s in zip(images, samples):
            ours(img, s.boxes, s.labels, s.ignore, generator=gen)

    def run_torchvision() -> None:
        for img, s in zip(images, samples):
            boxes = tv_tensors.BoundingBoxes(s.boxes, format="XYXY", canvas_size=(s.height, s.width))
            theirs(tv_tensors.Image(img), {"boxes": boxes, "labels": s.labels})

    dataset = DetectionDataset(_InMemorySource(images, samples, class_names), ours)

    def run_loader() -> None:
        for start in range(0, len(dataset), 32):
            collate([dataset[i] for i in range(start, min(start + 32, len(dataset)))])

    for fn in (run_ssdkit, run_torchvision, run_loader):  # warm-up
        fn()
    times = {"ssdkit": 0.0, "torchvision": 0.0, "loader": 0.0}
    for _ in range(args.rounds):
        for name, fn in (("ssdkit", run_ssdkit), ("torchvision", run_torchvision), ("loader", run_loader)):
            t0 = time.perf_counter()
            fn()
            times[name] += time.perf_counter() - t0
    n = args.images * args.rounds
    ssdkit_ips, tv_ips = n / times["ssdkit"], n / times["torchvision"]
    result = {
        "images": args.images,
        "rounds": args.rounds,
        "image_size": [500, 375],
        "output_size": 300,
        "threads": torch.get_num_threads(),
        "ssdkit_img_per_s": round(ssdkit_ips, 1),
        "torchvision_img_per_s": round(tv_ips, 1),
        "ratio": round(ssdkit_ips / tv_ips, 2),
        "ssdkit_ms_per_img": round(1e3 * times["ssdkit"] / n, 3),
        "torchvision_ms_per_img": round(1e3 * times["torchvision"] / n, 3),
        "dataset_collate_ms_per_item": round(1e3 * times["loader"] / n, 3),
        "dataset_collate_overhead_ms_per_item": round(1e3 * (times["loader"] - times["ssdkit"]) / n, 3),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": describe_cpu(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.images} images 500x375 -> 300x300, {args.rounds} rounds, 1 thread")
        print(f"ssdkit SSDTrainTransform      {ssdkit_ips:9.1f} img/s  ({result['ssdkit_ms_per_img']:.3f} ms/img)")
        print(f"torchvision v2 SSD preset     {tv_ips:9.1f} img/s  ({result['torchvision_ms_per_img']:.3f} ms/img)")
        print(f"ratio                         {result['ratio']:9.2f} x")
        print(f"machine: {result['cpu']}")
        print(
            f"DetectionDataset + collate    {result['dataset_collate_ms_per_item']:9.3f} ms/item "
            f"({result['dataset_collate_overhead_ms_per_item']:+.3f} ms over the bare transform)"
        )
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
