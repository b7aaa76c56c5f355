"""Training: ssdkit's training step vs torchvision's SSD training step (img/s), and mAP at an equal budget on shapes.

Step speed (always): one batch of ``--batch`` 300x300 shapes images with their boxes, on one device, in one run.

- ssdkit: ``SSD300(num_classes=21, width_mult)`` from ``create_model_and_optimizer`` and the step function of the
  ignite trainer from ``create_train_step`` (uint8 batch -> device -> normalise, ``SSDBoxCoder.encode_batch`` for the
  whole batch on the device, ``SSDLoss`` with hard negative mining, SGD step).
- torchvision: ``ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21)`` in train mode on a list of float
  0-1 images (its own resize to 300x300, a no-op size here, and normalisation) and 1-based labels; ``model(images,
  targets)`` returns its loss dict, which is summed and stepped with the same SGD (lr, momentum, weight decay, and
  ssdkit's rule of no decay on biases/norm scales). Its matching and target encoding run per image in a Python loop.
- At ``--width-mult`` != 1 (or ``--tv-net ssdkit``) torchvision's ``SSD`` class gets ssdkit's extractor as its
  backbone (a module returning an OrderedDict of the 6 feature maps), ``DefaultBoxGenerator`` with ssdkit's box
  sizes / 300, steps and aspect ratios, and ``SSDHead``; both sides then start from the same weights, so only the
  training machinery differs.

Each side's step starts from what its loader hands over, on the host (ssdkit: a uint8 batch; torchvision: a list of
float tensors, as its reference pipeline's ``ToDtype`` produces) and reads its losses back as Python floats before
the backward pass (ssdkit's step and torchvision's ``references/detection`` loop both do). After ``--warmup`` steps
each, ``--rounds`` rounds of ``--steps`` steps alternate the two (the first one swaps each round), so a busy
machine slows both alike.

Accuracy (``--map``): the same narrow model (``--width-mult``, default 0.125, with BatchNorm: ssdkit's extractor on
both sides as above, same initial weights), ``--iterations`` (default 850), batch ``--map-batch`` (default 4) and
optimizer/schedule (the ``ssdkit demo`` recipe: AdamW lr 3e-3, cosine warm-up), the same training images in the
same order (the ``ssdkit demo`` shapes set: objects 24-200 px, at most 4 per image, 6 classes):

- ssdkit's recipe: ``build_loaders`` (the demo's data settings: no augmentation, resize only), the
  ``create_trainer`` engine with ``create_scheduler``;
- torchvision's SSD training: the same images through ``transforms.v2`` (``Resize(300)``, ``ToDtype``,
  ``SanitizeBoundingBoxes``; with the recipe's ``augment: true`` its SSD preset ``RandomPhotometricDistort``,
  ``RandomZoomOut``, ``RandomIoUCrop``, ``RandomHorizontalFlip`` first) and its own matcher and loss
  (``model(images, targets)``).

Both are then scored by ``ssdkit.metrics.evaluate_voc`` (VOC07 11-point mAP@0.5) on the same held-out shapes
images, both decoding with score > 0.01, NMS 0.45, top-k 200 per class, 200 detections per image.

    python benchmarks/bench_train.py                                 # step speed, full SSD300, batch 8
    python benchmarks/bench_train.py --width-mult 0.25 --batch 16 --device cuda --json
    python benchmarks/bench_train.py --map --map-only                # mAP at equal budget (width 0.125)
    python benchmarks/bench_train.py --batch 2 --steps 2 --width-mult 0.125          # smoke test
    python benchmarks/bench_train.py --map --map-only --iterations 5 --map-batch 4 --val-images 8
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from collections import OrderedDict
from dataclasses import replace

import torch
import torchvision
from torch import nn
from torchvision import tv_tensors
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD, SSDHead
from torchvision.transforms import v2

from ssdkit.boxes import change_box_order
from ssdkit.choices import DECODE_PRESETS as PRESETS
from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config, ModelConfig, TrainConfig, ssd300_config
from ssdkit.data.loader import DetectionDataset, collate, make_loader
from ssdkit.data.preprocess import SSDEvalTransform, normalize
from ssdkit.data.shapes import ShapesDataset
from ssdkit.data.sources import build_source
from ssdkit.engine.data import build_loaders, train_fill
from ssdkit.engine.demo import demo_config
from ssdkit.engine.evaluate import evaluate_model
from ssdkit.engine.train import (
    create_model_and_optimizer,
    create_optimizer,
    create_scheduler,
    create_train_step,
    create_trainer,
    lr_factor,
)
from ssdkit.metrics import evaluate_voc
from ssdkit.runtime import resolve_device

NUM_CLASSES = 21
EVAL = PRESETS["evaluate"]  # score 0.01, NMS 0.45, top-k 200, 200 detections


# ----------------------------------------------------------------------------------------------- torchvision side


class FeatureMaps(nn.Module):
    """ssdkit's extractor as a torchvision SSD backbone: ``Tensor[N, 3, S, S]`` -> OrderedDict of the feature maps."""

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor
        self.out_channels = list(extractor.out_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), fm) for i, fm in enumerate(self.extractor(x)))


def torchvision_ssd_on(model: nn.Module) -> SSD:
    """torchvision's ``SSD`` with a copy of ssdkit ``model``'s extractor and heads (same weights, same anchors)."""
    m: ModelConfig = model.config
    if m.channel_order != "rgb":
        raise SystemExit("torchvision's SSD normalises RGB input only")
    backbone = FeatureMaps(copy.deepcopy(model.extractor))
    anchors = DefaultBoxGenerator(
        [list(a) for a in m.aspect_ratios],
        scales=[s / m.input_size for s in m.box_sizes],
        steps=list(m.steps),
        clip=m.clip_default_boxes,
    )
    head = SSDHead(backbone.out_channels, anchors.num_anchors_per_location(), m.num_classes)
    # Same initial head weights as ssdkit's (the channel layout anchor*K + k is the same on both sides).
    for theirs, ours in ((head.classification_head.module_list, model.cls_layers),
                         (head.regression_head.module_list, model.loc_layers)):
        theirs.load_state_dict(ours.state_dict())
    tv = SSD(backbone, anchors, (m.input_size, m.input_size), m.num_classes, image_mean=list(m.mean),
             image_std=list(m.std), head=head, score_thresh=EVAL["score_thresh"], nms_thresh=EVAL["nms_thresh"],
             detections_per_img=EVAL["max_detections"], topk_candidates=EVAL["top_k"])
    return tv.to(next(model.parameters()).device)


def anchors_match(tv: SSD, m: ModelConfig) -> bool:
    """True when torchvision's default boxes are ssdkit's (as a set: the order per location differs)."""
    fms = [torch.zeros(1, 1, f, f) for f in m.fm_sizes]
    images = ImageList(torch.zeros(1, 3, m.input_size, m.input_size), [(m.input_size, m.input_size)])
    theirs = tv.anchor_generator(images, fms)[0].cpu()
    ours = change_box_order(SSDBoxCoder(m).default_boxes, "xywh2xyxy")
    if theirs.shape != ours.shape:
        return False
    key = lambda b: b[torch.argsort(b[:, 0] * 1e9 + b[:, 1] * 1e6 + b[:, 2] * 1e3 + b[:, 3])]  # noqa: E731
    return bool(torch.allclose(key(theirs.double()), key(ours.double()), atol=1e-3))


def torchvision_step(tv: SSD, optimizer: torch.optim.Optimizer, device: torch.device):
    """One training step as torchvision's ``references/detection`` loop does it."""

    def step(images: list[torch.Tensor], targets: list[dict]) -> float:
        tv.train()
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        losses = tv(images, targets)
        loss = sum(losses.values())
        value = float(loss.detach())
        if math.isfinite(value):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return value

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------- step speed


def bench_speed(args, device: torch.device, width: float, say) -> dict:
    cfg = Config(
        model=ssd300_config(NUM_CLASSES, width_mult=width),
        train=TrainConfig(batch_size=args.batch, lr=1e-3, momentum=0.9, weight_decay=5e-4, optimizer="sgd",
                          device=str(device)),
    )
    torch.manual_seed(args.seed)
    model, optimizer, _ = create_model_and_optimizer(cfg, device)
    ours_step = create_train_step(cfg, model, optimizer, device)  # the trainer's step, without the event loop

    tv_net = args.tv_net if args.tv_net != "auto" else ("stock" if width == 1 else "ssdkit")
    if tv_net == "stock":
        if width != 1:
            raise SystemExit("--tv-net stock needs --width-mult 1 (torchvision's ssd300_vgg16 is full width)")
        tv = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).to(device)
    else:
        tv = torchvision_ssd_on(model)
    tv_opt = create_optimizer(cfg, tv)
    theirs_step = torchvision_step(tv, tv_opt, device)

    # One batch of shapes scenes (8 shape kinds as labels 0..7 of the 21 classes, 1-4 objects of 24-200 px).
    data = ShapesDataset(args.batch, seed=args.seed + 7, image_size=300, min_size=24, max_size=200, max_objects=4)
    items = []
    for i in range(args.batch):
        s = data.sample(i)
        items.append((data.load_image(i), {"boxes": s.boxes.float(), "labels": s.labels.long(), "ignore": s.ignore}))
    batch = collate(items)
    tv_images = [im.contiguous().float().div_(255) for im, _ in items]
    tv_targets = [{"boxes": t["boxes"].clone(), "labels": t["labels"] + 1} for _, t in items]  # 0 is background
    objects = sum(len(t["labels"]) for _, t in items)

    # A non-finite loss skips the backward pass on both sides, which would flatter the timing: count them.
    nonfinite = {"ssdkit": 0, "torchvision": 0}

    def run_ours() -> None:
        nonfinite["ssdkit"] += not math.isfinite(ours_step(batch)["loss"])

    def run_theirs() -> None:
        nonfinite["torchvision"] += not math.isfinite(theirs_step(tv_images, tv_targets))

    runs = {"ssdkit": run_ours, "torchvision": run_theirs}
    say(f"step speed: batch {args.batch}, width {width}, torchvision net: {tv_net}; "
        f"warm-up {args.warmup}, {args.rounds} rounds x {args.steps} steps each")
    for _ in range(args.warmup):
        for fn in runs.values():
            fn()
    _sync(device)
    seconds = dict.fromkeys(runs, 0.0)
    order = list(runs)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                runs[name]()
            _sync(device)
            seconds[name] += time.perf_counter() - t0
    n = args.batch * args.steps * args.rounds
    if any(nonfinite.values()):
        say(f"warning: non-finite losses {nonfinite}: those steps skipped their backward pass; timings are off")
    ours_ips, tv_ips = n / seconds["ssdkit"], n / seconds["torchvision"]
    return {
        "batch": args.batch,
        "width_mult": width,
        "objects_per_batch": objects,
        "torchvision_net": "ssd300_vgg16" if tv_net == "stock" else "SSD(ssdkit extractor)",
        "params": {"ssdkit": _params(model), "torchvision": _params(tv)},
        "anchors_match": anchors_match(tv, model.config) if tv_net != "stock" else None,
        "steps_timed": args.steps * args.rounds,
        "ssdkit_img_per_s": round(ours_ips, 2),
        "torchvision_img_per_s": round(tv_ips, 2),
        "ssdkit_ms_per_step": round(1e3 * seconds["ssdkit"] / (args.steps * args.rounds), 2),
        "torchvision_ms_per_step": round(1e3 * seconds["torchvision"] / (args.steps * args.rounds), 2),
        "ratio": round(ours_ips / tv_ips, 3),
        "nonfinite_losses": nonfinite,
    }


# ----------------------------------------------------------------------------------------------- accuracy


class _TorchvisionShapes(torch.utils.data.Dataset):
    """The ssdkit training source through torchvision's v2 SSD preset: ``(float image [3, 300, 300], target)``."""

    def __init__(self, source, size: int, fill: tuple[int, int, int], augment: bool = True) -> None:
        self.source = source
        # augment=False mirrors a recipe without augmentation (the demo's): resize only, like SSDEvalTransform
        self.transform = v2.Compose(([
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: fill, "others": 0}, side_range=(1.0, 4.0), p=0.5),
            v2.RandomIoUCrop(),
            v2.RandomHorizontalFlip(p=0.5),
        ] if augment else []) + [
            v2.Resize((size, size)),
            v2.ToDtype(torch.float32, scale=True),
            v2.SanitizeBoundingBoxes(),
            v2.ToPureTensor(),
        ])

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        s = self.source.sample(index)
        image = tv_tensors.Image(self.source.load_image(index).contiguous())
        boxes = tv_tensors.BoundingBoxes(s.boxes.float(), format="XYXY", canvas_size=(s.height, s.width))
        image, target = self.transform(image, {"boxes": boxes, "labels": s.labels.long() + 1})  # 0 is background
        return image, target


class _IndicesOf:
    """The batches of an ssdkit training loader as index lists (nothing is loaded): the same images, same order."""

    def __init__(self, batch_sampler) -> None:
        self.batch_sampler = batch_sampler

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self.batch_sampler:
            yield [index for index, _epoch in batch]


def _as_lists(batch: list) -> tuple:
    """torchvision's detection collate: a tuple of images and a tuple of targets."""
    return tuple(zip(*batch))


def _cycle(loader, total: int):
    done = 0
    while done < total:
        for batch in loader:
            yield batch
            done += 1
            if done == total:
                return


@torch.no_grad()
def _detect(model: nn.Module, tv: SSD, coder: SSDBoxCoder, loader, m: ModelConfig, device: torch.device):
    """Detections of both models on ``loader``'s images, in original image pixels, labels 0-based."""
    model.eval()
    tv.eval()
    ours, theirs = [], []
    size = m.input_size
    for images, targets in loader:
        x = normalize(images.to(device), m.mean, m.std, m.channel_order)
        loc, cls = model(x)
        dets = coder.decode_batch(loc.float(), cls.float(), **EVAL)
        tv_dets = tv([im.to(device).float().div(255) for im in images])  # boxes in its input's pixels (size)
        for det, tv_det, t in zip(dets, tv_dets, targets):
            h, w = t["orig_size"]
            scale = torch.tensor([w / size, h / size, w / size, h / size], device=det["boxes"].device)
            ours.append({"boxes": (det["boxes"] * scale).cpu(), "labels": det["labels"].cpu(),
                         "scores": det["scores"].cpu()})
            theirs.append({"boxes": (tv_det["boxes"] * scale).cpu(), "labels": tv_det["labels"].cpu() - 1,
                           "scores": tv_det["scores"].cpu()})
    return ours, theirs


def bench_map(args, device: torch.device, width: float, say) -> dict:
    base = demo_config("unused")
    cfg = Config(
        model=replace(base.model, width_mult=width),
        data=replace(base.data, num_workers=args.workers, shapes_train_count=args.train_images,
                     shapes_val_count=args.val_images),
        train=replace(base.train, batch_size=args.map_batch, max_iterations=args.iterations, device=str(device),
                      seed=args.seed),
    )
    total = args.iterations
    m = cfg.model
    torch.manual_seed(args.seed)
    model, optimizer, _ = create_model_and_optimizer(cfg, device)
    tv = torchvision_ssd_on(model)  # same extractor, anchors and initial weights
    tv_opt = create_optimizer(cfg, tv)
    tv_sched = torch.optim.lr_scheduler.LambdaLR(tv_opt, lr_factor(cfg, total))
    say(f"mAP at equal budget: width {width} + BatchNorm, {total} iterations of batch {args.map_batch}, "
        f"{cfg.train.optimizer} lr {cfg.train.lr} {cfg.train.schedule} (warm-up {cfg.train.warmup_iterations}), "
        f"{len(cfg.data.classes)} shape classes, {args.val_images} held-out images")

    # ssdkit: its loaders (SSDTrainTransform), its trainer step, its LR scheduler.
    loaders = build_loaders(cfg, with_val=False)
    trainer = create_trainer(cfg, model, optimizer, device)
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_STARTED, create_scheduler(cfg, optimizer, total))
    losses: dict[str, list[float]] = {"ssdkit": [], "torchvision": []}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses["ssdkit"].append(e.state.output["loss"]))
    torch.manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    trainer.run(loaders.train_loader, max_iters=total)
    _sync(device)
    ours_s = time.perf_counter() - t0
    say(f"  ssdkit      trained in {ours_s:7.1f} s  (last loss {losses['ssdkit'][-1]:.3f})")

    # torchvision: the same training images in the same order, its v2 SSD preset, its loss.
    order = _IndicesOf(build_loaders(cfg, with_val=False).train_loader.batch_sampler)
    tv_loader = torch.utils.data.DataLoader(
        _TorchvisionShapes(loaders.train_source, m.input_size, train_fill(cfg), cfg.data.augment), batch_sampler=order,
        num_workers=args.workers, collate_fn=_as_lists,
    )
    step = torchvision_step(tv, tv_opt, device)
    torch.manual_seed(args.seed + 1)  # torchvision's transforms draw from the global generator
    t0 = time.perf_counter()
    for images, targets in _cycle(tv_loader, total):
        losses["torchvision"].append(step(list(images), list(targets)))
        tv_sched.step()
    _sync(device)
    tv_s = time.perf_counter() - t0
    say(f"  torchvision trained in {tv_s:7.1f} s  (last loss {losses['torchvision'][-1]:.3f})")

    val_source = build_source("shapes", cfg.data, "val")
    val_loader = make_loader(DetectionDataset(val_source, SSDEvalTransform(m.input_size)), args.map_batch,
                             shuffle=False, num_workers=args.workers)
    coder = SSDBoxCoder(m)
    ours, theirs = _detect(model, tv, coder, val_loader, m, device)
    gts = []
    for i in range(len(val_source)):
        s = val_source.sample(i)
        gts.append({"boxes": s.boxes, "labels": s.labels, "ignore": s.ignore})
    names = tuple(val_source.class_names)
    score = lambda dets: evaluate_voc(dets, gts, len(names), names, use_07_metric=True, pixel_offset=False)  # noqa: E731
    r_ours, r_tv = score(ours), score(theirs)
    # The project's evaluator on ssdkit's model: must agree with the number above (same decode, same metric).
    check = evaluate_model(model, val_loader, cfg, "voc07", device, names, channels_last=False)["map"]

    def tail(v: list[float]) -> float:
        k = max(1, len(v) // 10)
        return round(sum(v[-k:]) / k, 4)

    return {
        "width_mult": width,
        "batch_norm": m.batch_norm,
        "iterations": total,
        "batch": args.map_batch,
        "optimizer": f"{cfg.train.optimizer} lr {cfg.train.lr} wd {cfg.train.weight_decay}, {cfg.train.schedule}, "
                     f"warm-up {cfg.train.warmup_iterations}",
        "classes": list(names),
        "train_images": args.train_images,
        "val_images": len(val_source),
        "params": {"ssdkit": _params(model), "torchvision": _params(tv)},
        "anchors_match": anchors_match(tv, m),
        "train_seconds": {"ssdkit": round(ours_s, 1), "torchvision": round(tv_s, 1)},
        "final_loss_last10pct": {"ssdkit": tail(losses["ssdkit"]), "torchvision": tail(losses["torchvision"])},
        "voc07_map": {"ssdkit": round(float(r_ours["map"]), 4), "torchvision": round(float(r_tv["map"]), 4)},
        "ap": {"ssdkit": {k: round(float(v), 4) for k, v in r_ours["ap"].items()},
               "torchvision": {k: round(float(v), 4) for k, v in r_tv["ap"].items()}},
        "ssdkit_map_via_evaluate_model": round(float(check), 4),
    }


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8, help="step-speed batch size")
    ap.add_argument("--width-mult", type=float, default=None,
                    help="model width (default 1.0 for the step speed, 0.125 for --map)")
    ap.add_argument("--tv-net", choices=["auto", "stock", "ssdkit"], default="auto",
                    help="torchvision network for the step speed: stock ssd300_vgg16, or SSD on ssdkit's extractor "
                         "(auto: stock at width 1, else ssdkit's)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    ap.add_argument("--map", action="store_true", help="also train both on shapes at equal budget and compare mAP")
    ap.add_argument("--map-only", action="store_true", help="skip the step speed (implies --map)")
    ap.add_argument("--iterations", type=int, default=850, help="--map: training iterations of each side")
    ap.add_argument("--map-batch", type=int, default=4, help="--map: batch size (the ssdkit demo's)")
    ap.add_argument("--train-images", type=int, default=6000, help="--map: shapes training set size")
    ap.add_argument("--val-images", type=int, default=200, help="--map: held-out shapes images")
    ap.add_argument("--workers", type=int, default=0, help="--map: data loader workers (both sides)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }
    if not args.map_only:
        result["step"] = bench_speed(args, device, args.width_mult if args.width_mult is not None else 1.0, say)
    if args.map or args.map_only:
        result["map"] = bench_map(args, device, args.width_mult if args.width_mult is not None else 0.125, say)
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    mc = result["machine"]
    print(f"machine: {mc['platform']}, {mc['device']}, {mc['threads']} threads, torch {mc['torch']}, "
          f"torchvision {mc['torchvision']}")
    if "step" in result:
        s = result["step"]
        print(f"training step, batch {s['batch']}, width {s['width_mult']}, {s['objects_per_batch']} objects "
              f"(torchvision net: {s['torchvision_net']}; params ssdkit {s['params']['ssdkit']:,} / torchvision "
              f"{s['params']['torchvision']:,}" + ("" if s["anchors_match"] is None else
                                                   f"; same default boxes: {s['anchors_match']}") + ")")
        print(f"  ssdkit      {s['ssdkit_img_per_s']:9.2f} img/s  ({s['ssdkit_ms_per_step']:.1f} ms/step)")
        print(f"  torchvision {s['torchvision_img_per_s']:9.2f} img/s  ({s['torchvision_ms_per_step']:.1f} ms/step)")
        print(f"  ratio {s['ratio']:.2f}x (target >= 1.1x)  (torchvision matches and encodes per image in Python; "
              "ssdkit encodes the batch at once on the device)")
    if "map" in result:
        r = result["map"]
        print(f"VOC07 mAP@0.5 on {r['val_images']} held-out shapes images after {r['iterations']} iterations of batch "
              f"{r['batch']} (width {r['width_mult']}, BN; {r['optimizer']}):")
        print(f"  ssdkit recipe    {r['voc07_map']['ssdkit']:.4f}  (evaluate_model: "
              f"{r['ssdkit_map_via_evaluate_model']:.4f}; train {r['train_seconds']['ssdkit']} s)")
        print(f"  torchvision SSD  {r['voc07_map']['torchvision']:.4f}  (train {r['train_seconds']['torchvision']} s)")

    return result

if __name__ == "__main__":
    main()
