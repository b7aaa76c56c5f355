"""Box coder speed: ssdkit vs torchvision's SSD postprocess and vs the notebook's per-image encode.

decode: ``SSDBoxCoder.decode_batch`` vs ``torchvision.models.detection.SSD.postprocess_detections`` on the same
random head outputs (21 classes, score 0.01, NMS 0.45, top-k 200 per class, 200 detections per image); a second
line gives torchvision at its default top-k 400 per class.
encode: ``SSDBoxCoder.encode_batch`` vs ``notebook_encode`` of ``tests/reference.py`` (the notebook's loop) per image.

    python benchmarks/bench_coder.py [--batch 8 32] [--objects 4] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torchvision.models.detection import ssd300_vgg16

from ssdkit import SSDBoxCoder
from ssdkit.boxes import change_box_order
from ssdkit.choices import DECODE_PRESETS
from ssdkit.config import ssd300_config
from ssdkit.runtime import describe_cpu

# the notebook's loop is test code, not part of the package: it lives in the repo's tests/ folder
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference import notebook_encode  # noqa: E402


def best_time(fn, repeat):
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(n: int, objects: int, repeat: int) -> dict:
    torch.manual_seed(0)
    c = 21
    cfg = ssd300_config(num_classes=c)
    coder = SSDBoxCoder(cfg)
    a = coder.default_boxes.shape[0]
    loc = torch.randn(n, a, 4) * 0.5
    logits = torch.randn(n, a, c)

    tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=c)
    tv.topk_candidates = DECODE_PRESETS["evaluate"]["top_k"]  # same per-class candidate count as ssdkit
    anchors_xyxy = change_box_order(coder.default_boxes, "xywh2xyxy")
    head = {"bbox_regression": loc, "cls_logits": logits}

    def run_tv():
        with torch.no_grad():
            tv.postprocess_detections(head, [anchors_xyxy] * n, [(300, 300)] * n)

    def run_ours():
        with torch.no_grad():
            coder.decode_batch(loc, logits, **DECODE_PRESETS["evaluate"])

    t_tv = best_time(run_tv, repeat) / n
    t_ours = best_time(run_ours, repeat) / n
    tv.topk_candidates = 400  # torchvision's default
    t_tv400 = best_time(run_tv, repeat) / n

    gen = torch.Generator().manual_seed(1)
    scenes = []
    for _ in range(n):
        xy = torch.rand(objects, 2, generator=gen) * 250
        wh = torch.rand(objects, 2, generator=gen) * 100 + 10
        scenes.append((torch.cat([xy, xy + wh], 1), torch.randint(0, c - 1, (objects,), generator=gen)))
    boxes = [s[0] for s in scenes]
    labels = [s[1] for s in scenes]

    def run_loop():
        for b, lab in scenes:
            notebook_encode(coder.default_boxes, b, lab)

    def run_batch():
        coder.encode_batch(boxes, labels)

    # encode is short and this box is noisy: alternate the two, several rounds, best of each
    e_loop, e_ours = float("inf"), float("inf")
    for _ in range(3):
        e_loop = min(e_loop, best_time(run_loop, repeat) / n)
        e_ours = min(e_ours, best_time(run_batch, 3 * repeat) / n)
    return {
        "batch": n,
        "decode_ms_per_image": {"ssdkit": t_ours * 1e3, "torchvision": t_tv * 1e3, "speedup": t_tv / t_ours,
                                "torchvision_topk400": t_tv400 * 1e3, "speedup_topk400": t_tv400 / t_ours},
        "encode_ms_per_image": {"ssdkit": e_ours * 1e3, "notebook_loop": e_loop * 1e3, "speedup": e_loop / e_ours,
                                "objects": objects},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--objects", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runs = [measure(n, args.objects, args.repeat) for n in args.batch]
    machine = f"{describe_cpu()}, torch {torch.__version__}"
    if args.json:
        print(json.dumps({"machine": machine, "runs": runs}, indent=2))
        return
    print(f"machine: {machine}")
    for r in runs:
        d, e = r["decode_ms_per_image"], r["encode_ms_per_image"]
        print(f"batch {r['batch']}")
        print(f"  decode  ssdkit {d['ssdkit']:8.3f} ms/img | torchvision postprocess {d['torchvision']:8.3f} ms/img "
              f"| ratio {d['speedup']:.1f}x")
        print(f"  decode  ssdkit {d['ssdkit']:8.3f} ms/img | torchvision topk 400    "
              f"{d['torchvision_topk400']:8.3f} ms/img | ratio {d['speedup_topk400']:.1f}x  "
              "(torchvision's default topk_candidates)")
        print(f"  encode  ssdkit {e['ssdkit']:8.3f} ms/img | notebook loop           {e['notebook_loop']:8.3f} ms/img "
              f"| ratio {e['speedup']:.1f}x  ({e['objects']} objects/img)")


if __name__ == "__main__":
    main()
