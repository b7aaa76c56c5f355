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
the backward pass (ssdkit's step and torchvision's ``references/detection`` loop both do).

Variants (``--variants``, each run by both sides from the same initial weights, at every ``--batch``): ``fp32``;
``bf16``: bfloat16 autocast (ssdkit: ``train.amp: bf16`` through ``ssdkit.runtime``, on CUDA and on CPUs with
bfloat16 units; torchvision: its reference's ``--amp`` autocast around forward + loss, in bfloat16); ``+cl``: the
model and input in channels_last (ssdkit: ``train.channels_last``). A variant the device cannot run (bf16 on a
CPU without bfloat16 units) is skipped with a note. Printed per variant: both img/s, the ratio (like for like),
the first step's loss (bf16 vs fp32 from the same weights shows what bfloat16 does to the loss); and best vs best
and best vs torchvision's float32 NCHW (its reference recipe). Target: >= 1.3x.

After ``--warmup`` steps of each run, ``--rounds`` rounds of ``--steps`` steps go through all runs (the order
reversed every other round), so a busy machine slows every run alike. ``--loader``: the batches come from the real
training loaders instead (500x375 JPEGs written for it; ssdkit's ``build_loaders`` with ``SSDTrainTransform``,
torchvision's v2 SSD preset over the same images; ``--workers`` workers) and the time each step waited for its
batch is reported (data wait, ms per step).

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

    python benchmarks/bench_train.py                                 # step speed, full SSD300, batch 4 and 8
    python benchmarks/bench_train.py --batch 8 --variants fp32+cl,bf16+cl --loader --workers 2
    python benchmarks/bench_train.py --width-mult 0.25 --batch 16 --device cuda --json
    python benchmarks/bench_train.py --map --map-only                # mAP at equal budget (width 0.125)
    python benchmarks/bench_train.py --batch 2 --steps 1 --rounds 1 --width-mult 0.125   # smoke test
    python benchmarks/bench_train.py --map --map-only --iterations 5 --map-batch 4 --val-images 8
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import tempfile
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
from ssdkit.runtime import amp_dtype, amp_fallback, describe_cpu, resolve_device

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


def torchvision_step(tv: SSD, optimizer: torch.optim.Optimizer, device: torch.device,
                     amp: torch.dtype | None = None):
    """One training step as torchvision's ``references/detection`` loop does it (``amp``: its ``--amp`` autocast
    around the forward and the loss, here with ``amp`` as the dtype; no GradScaler, which bfloat16 does not need)."""

    def step(images: list[torch.Tensor], targets: list[dict]) -> float:
        tv.train()
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
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

#: Step-speed variants: name -> (train.amp, train.channels_last). Each side runs every variant the same way.
VARIANTS = {"fp32": ("none", False), "bf16": ("bf16", False), "fp32+cl": ("none", True), "bf16+cl": ("bf16", True)}
TARGET_RATIO = 1.3


def _shapes_batch(batch: int, seed: int):
    """One batch of 300x300 shapes scenes (8 shape kinds as labels 0..7 of the 21 classes, 1-4 objects of 24-200
    px): ssdkit's collated uint8 batch, torchvision's float images and 1-based targets, the object count."""
    data = ShapesDataset(batch, seed=seed + 7, image_size=300, min_size=24, max_size=200, max_objects=4)
    items = []
    for i in range(batch):
        s = data.sample(i)
        items.append((data.load_image(i), {"boxes": s.boxes.float(), "labels": s.labels.long(), "ignore": s.ignore}))
    tv_images = [im.contiguous().float().div_(255) for im, _ in items]
    tv_targets = [{"boxes": t["boxes"].clone(), "labels": t["labels"] + 1} for _, t in items]  # 0 is background
    return collate(items), tv_images, tv_targets, sum(len(t["labels"]) for _, t in items)


class _Cycle:
    """Batches of ``loader`` forever (epoch after epoch); ``next_timed()`` also returns the seconds it waited."""

    def __init__(self, loader) -> None:
        self.loader, self.it = loader, iter(loader)

    def next_timed(self):
        t0 = time.perf_counter()
        try:
            batch = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            batch = next(self.it)
        return batch, time.perf_counter() - t0


def _real_loaders(args, cfg: Config, folder: str):
    """``--loader``: the training input pipelines over ``args.loader_images`` 500x375 shapes JPEGs in ``folder``:
    ssdkit's ``build_loaders`` (decode, ``SSDTrainTransform``, collate, pinned when CUDA) and torchvision's
    (the same decoded images through its v2 SSD preset, list collate), both with ``args.workers`` workers."""
    from ssdkit.data.shapes import write_shapes

    write_shapes(folder, "voc", count=args.loader_images, val_fraction=0.0, image_size=(500, 375),
                 progress=False, overwrite=True)
    # the loader checks the class count: the shapes' 8 classes + background (labels 0..7 fit the 21-class models)
    cfg = replace(cfg, model=replace(cfg.model, num_classes=len(ShapesDataset(1).class_names) + 1),
                  data=replace(cfg.data, train=folder, format="voc", val=None, augment=True, num_workers=args.workers))
    ours = build_loaders(cfg, with_val=False)
    tv_data = _TorchvisionShapes(ours.train_source, cfg.model.input_size, train_fill(cfg), augment=True)
    theirs = torch.utils.data.DataLoader(tv_data, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, collate_fn=_as_lists,
                                         persistent_workers=args.workers > 0,
                                         pin_memory=args.workers > 0 and torch.cuda.is_available())
    return _Cycle(ours.train_loader), _Cycle(theirs)


def bench_speed(args, device: torch.device, width: float, batch: int, say, loader_dir: str | None = None) -> dict:
    """Step speed of each of ``args.variants`` on both sides at ``batch``, alternating round by round."""
    base_cfg = Config(
        model=ssd300_config(NUM_CLASSES, width_mult=width),
        train=TrainConfig(batch_size=batch, lr=1e-3, momentum=0.9, weight_decay=5e-4, optimizer="sgd",
                          device=str(device)),
    )
    tv_net = args.tv_net if args.tv_net != "auto" else ("stock" if width == 1 else "ssdkit")
    if tv_net == "stock" and width != 1:
        raise SystemExit("--tv-net stock needs --width-mult 1 (torchvision's ssd300_vgg16 is full width)")
    notes: list[str] = []
    runs: dict = {}
    first_loss: dict = {}
    # A non-finite loss skips the backward pass on both sides, which would flatter the timing: count them.
    nonfinite: dict = {}
    data_wait: dict = {}
    fixed_batch, tv_images, tv_targets, objects = _shapes_batch(batch, args.seed)
    feeds = _real_loaders(args, base_cfg, loader_dir) if loader_dir else None
    params = anchors = None
    for variant in args.variants:
        amp, channels_last = VARIANTS[variant]
        dtype = amp_dtype(amp, device)
        if amp != "none" and dtype is None:
            notes.append(f"{variant} skipped: {amp_fallback(amp, device)}")
            continue
        cfg = replace(base_cfg, train=replace(base_cfg.train, amp=amp, channels_last=channels_last))
        torch.manual_seed(args.seed)  # the same initial weights in every variant: their first losses compare
        model, optimizer, _ = create_model_and_optimizer(cfg, device)
        ours_step = create_train_step(cfg, model, optimizer, device)  # the trainer's step, without the event loop
        torch.manual_seed(args.seed)
        tv = (ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).to(device)
              if tv_net == "stock" else torchvision_ssd_on(model))
        if channels_last:
            tv.to(memory_format=torch.channels_last)
        theirs_step = torchvision_step(tv, create_optimizer(cfg, tv), device, dtype)
        if params is None:
            params = {"ssdkit": _params(model), "torchvision": _params(tv)}
            anchors = anchors_match(tv, model.config) if tv_net != "stock" else None

        def run_ours(step=ours_step, key=f"ssdkit {variant}") -> None:
            b, wait = feeds[0].next_timed() if feeds else (fixed_batch, 0.0)
            data_wait[key] += wait
            loss = step(b)["loss"]
            first_loss.setdefault(key, loss)
            nonfinite[key] += not math.isfinite(loss)

        def run_theirs(step=theirs_step, key=f"torchvision {variant}") -> None:
            (ims, tgs), wait = feeds[1].next_timed() if feeds else ((tv_images, tv_targets), 0.0)
            data_wait[key] += wait
            loss = step(list(ims), list(tgs))
            first_loss.setdefault(key, loss)
            nonfinite[key] += not math.isfinite(loss)

        for key, fn in ((f"ssdkit {variant}", run_ours), (f"torchvision {variant}", run_theirs)):
            runs[key], nonfinite[key], data_wait[key] = fn, 0, 0.0
    say(f"step speed: batch {batch}, width {width}, torchvision net: {tv_net}, variants {', '.join(args.variants)}"
        f"{', real loaders (' + str(args.workers) + ' workers)' if feeds else ', one fixed batch'}; "
        f"warm-up {args.warmup}, {args.rounds} rounds x {args.steps} steps each")
    for note in notes:
        say(f"  note: {note}")
    for fn in runs.values():
        for _ in range(args.warmup):
            fn()
    _sync(device)
    seconds = dict.fromkeys(runs, 0.0)
    data_wait.update(dict.fromkeys(runs, 0.0))  # count the timed steps only
    order = list(runs)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                runs[name]()
            _sync(device)
            seconds[name] += time.perf_counter() - t0
    steps = args.steps * args.rounds
    if any(nonfinite.values()):
        say(f"warning: non-finite losses {nonfinite}: those steps skipped their backward pass; timings are off")
    ips = {name: batch * steps / sec for name, sec in seconds.items()}
    variants = {}
    for variant in args.variants:
        ours, theirs = f"ssdkit {variant}", f"torchvision {variant}"
        if ours not in ips:
            continue
        variants[variant] = {
            "ssdkit_img_per_s": round(ips[ours], 2),
            "torchvision_img_per_s": round(ips[theirs], 2),
            "ratio": round(ips[ours] / ips[theirs], 3),
            "ssdkit_ms_per_step": round(1e3 * seconds[ours] / steps, 1),
            "torchvision_ms_per_step": round(1e3 * seconds[theirs] / steps, 1),
            "first_loss": {"ssdkit": round(first_loss[ours], 4), "torchvision": round(first_loss[theirs], 4)},
        }
        if feeds:
            variants[variant]["data_wait_ms_per_step"] = {"ssdkit": round(1e3 * data_wait[ours] / steps, 1),
                                                          "torchvision": round(1e3 * data_wait[theirs] / steps, 1)}
    result = {
        "batch": batch,
        "width_mult": width,
        "objects_per_batch": None if feeds else objects,
        "input": f"real loaders, {args.workers} workers, {args.loader_images} 500x375 JPEGs" if feeds
                 else "one fixed batch of 300x300 shapes images",
        "torchvision_net": "ssd300_vgg16" if tv_net == "stock" else "SSD(ssdkit extractor)",
        "params": params,
        "anchors_match": anchors,
        "steps_timed": steps,
        "variants": variants,
        "nonfinite_losses": nonfinite,
        "notes": notes,
    }
    if variants:
        best_ours = max(variants, key=lambda v: variants[v]["ssdkit_img_per_s"])
        best_tv = max(variants, key=lambda v: variants[v]["torchvision_img_per_s"])
        result["best"] = {
            "ssdkit": best_ours, "torchvision": best_tv,
            "ratio": round(variants[best_ours]["ssdkit_img_per_s"] / variants[best_tv]["torchvision_img_per_s"], 3),
        }
        if "fp32" in variants:  # against torchvision's reference recipe (float32, NCHW)
            result["best"]["ratio_vs_torchvision_fp32"] = round(
                variants[best_ours]["ssdkit_img_per_s"] / variants["fp32"]["torchvision_img_per_s"], 3)
        if "fp32" in variants and "bf16" in variants:  # same weights and batch: how far bf16 moves the loss
            a, b = variants["fp32"]["first_loss"]["ssdkit"], variants["bf16"]["first_loss"]["ssdkit"]
            result["bf16_first_loss_rel_diff"] = round(abs(b - a) / max(abs(a), 1e-12), 5)
    return result


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


def map_config(args, device: torch.device, width: float | None) -> Config:
    """The ssdkit side's run config: the demo recipe on generated shapes, or for ``--map-data PATH`` what
    ``ssdkit train --data PATH`` would train with (auto config: its recipe, default boxes and validation split;
    untiled), both at ``--iterations`` of ``--map-batch``."""
    if args.map_data == "shapes":
        base = demo_config("unused")
        return Config(
            model=replace(base.model, width_mult=width if width is not None else 0.125),
            data=replace(base.data, num_workers=args.workers, shapes_train_count=args.train_images,
                         shapes_val_count=args.val_images),
            train=replace(base.train, batch_size=args.map_batch or 4, max_iterations=args.iterations,
                          device=str(device), seed=args.seed),
        )
    from ssdkit.engine.autoconfig import auto_config

    base, _notes = auto_config(args.map_data, tile=None)
    return Config(
        model=base.model if width is None else replace(base.model, width_mult=width),
        data=replace(base.data, num_workers=args.workers),
        train=replace(base.train, batch_size=args.map_batch or base.train.batch_size, max_iterations=args.iterations,
                      device=str(device), seed=args.seed),
    )


def bench_map(args, device: torch.device, width: float | None, say) -> dict:
    cfg = map_config(args, device, width)
    width = cfg.model.width_mult
    total = args.iterations
    m = cfg.model
    torch.manual_seed(args.seed)
    model, optimizer, _ = create_model_and_optimizer(cfg, device)
    tv = torchvision_ssd_on(model)  # same extractor, anchors and initial weights
    tv_opt = create_optimizer(cfg, tv)
    tv_amp = amp_dtype(cfg.train.amp, device)  # the recipe's autocast on both sides (torchvision's --amp)
    tv_sched = torch.optim.lr_scheduler.LambdaLR(tv_opt, lr_factor(cfg, total))
    bs = cfg.train.batch_size
    say(f"mAP at equal budget on {args.map_data}: width {width} + BatchNorm, input {m.input_size}, {total} "
        f"iterations of batch {bs}, {cfg.train.optimizer} lr {cfg.train.lr} {cfg.train.schedule} (warm-up "
        f"{cfg.train.warmup_iterations}), amp {cfg.train.amp}, {len(cfg.data.classes)} classes")

    # ssdkit: its loaders (SSDTrainTransform), its trainer step, its LR scheduler.
    loaders = build_loaders(cfg, with_val=args.map_data != "shapes")
    trainer = create_trainer(cfg, model, optimizer, device)
    from ignite.engine import Events

    trainer.add_event_handler(Events.ITERATION_STARTED, create_scheduler(cfg, optimizer, total))
    losses: dict[str, list[float]] = {"ssdkit": [], "torchvision": []}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses["ssdkit"].append(e.state.output["loss"]))
    wait = {"ssdkit": 0.0, "torchvision": 0.0, "started": 0.0}  # seconds blocked on the loader (data wait)
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: wait.update(started=time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED,
                              lambda e: wait.update(ssdkit=wait["ssdkit"] + time.perf_counter() - wait["started"]))
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
    step = torchvision_step(tv, tv_opt, device, tv_amp)
    torch.manual_seed(args.seed + 1)  # torchvision's transforms draw from the global generator
    t0 = time.perf_counter()
    feed = _cycle(tv_loader, total)
    while True:
        t1 = time.perf_counter()
        batch = next(feed, None)
        wait["torchvision"] += time.perf_counter() - t1
        if batch is None:
            break
        losses["torchvision"].append(step(list(batch[0]), list(batch[1])))
        tv_sched.step()
    _sync(device)
    tv_s = time.perf_counter() - t0
    say(f"  torchvision trained in {tv_s:7.1f} s  (last loss {losses['torchvision'][-1]:.3f})")

    val_source = build_source("shapes", cfg.data, "val") if args.map_data == "shapes" else loaders.val_source
    offset = getattr(val_source, "format", "") == "voc"  # VOC's devkit counts box pixels inclusively
    val_loader = make_loader(DetectionDataset(val_source, SSDEvalTransform(m.input_size)), bs,
                             shuffle=False, num_workers=args.workers)
    coder = SSDBoxCoder(m)
    ours, theirs = _detect(model, tv, coder, val_loader, m, device)
    gts = []
    for i in range(len(val_source)):
        s = val_source.sample(i)
        gts.append({"boxes": s.boxes, "labels": s.labels, "ignore": s.ignore})
    names = tuple(val_source.class_names)
    score = lambda dets: evaluate_voc(dets, gts, len(names), names, use_07_metric=True, pixel_offset=offset)  # noqa: E731
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
        "data": args.map_data,
        "input_size": m.input_size,
        "amp": cfg.train.amp,
        "batch": bs,
        "optimizer": f"{cfg.train.optimizer} lr {cfg.train.lr} wd {cfg.train.weight_decay}, {cfg.train.schedule}, "
                     f"warm-up {cfg.train.warmup_iterations}",
        "classes": list(names),
        "train_images": len(loaders.train_source),
        "val_images": len(val_source),
        "params": {"ssdkit": _params(model), "torchvision": _params(tv)},
        "anchors_match": anchors_match(tv, m),
        "train_seconds": {"ssdkit": round(ours_s, 1), "torchvision": round(tv_s, 1)},
        "data_wait_ms_per_step": {k: round(1e3 * wait[k] / max(1, total), 1) for k in ("ssdkit", "torchvision")},
        "workers": args.workers,
        "final_loss_last10pct": {"ssdkit": tail(losses["ssdkit"]), "torchvision": tail(losses["torchvision"])},
        "voc07_map": {"ssdkit": round(float(r_ours["map"]), 4), "torchvision": round(float(r_tv["map"]), 4)},
        "ap": {"ssdkit": {k: round(float(v), 4) for k, v in r_ours["ap"].items()},
               "torchvision": {k: round(float(v), 4) for k, v in r_tv["ap"].items()}},
        "ssdkit_map_via_evaluate_model": round(float(check), 4),
    }


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="4,8", help="step-speed batch sizes, comma-separated (default 4,8)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"step-speed variants, comma-separated, from {', '.join(VARIANTS)} (cl = channels_last; "
                         "bf16 = bfloat16 autocast, on CUDA and on CPUs with bfloat16 units)")
    ap.add_argument("--width-mult", type=float, default=None,
                    help="model width (default 1.0 for the step speed, 0.125 for --map)")
    ap.add_argument("--tv-net", choices=["auto", "stock", "ssdkit"], default="auto",
                    help="torchvision network for the step speed: stock ssd300_vgg16, or SSD on ssdkit's extractor "
                         "(auto: stock at width 1, else ssdkit's)")
    ap.add_argument("--steps", type=int, default=2, help="timed steps per run per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per run first")
    ap.add_argument("--loader", action="store_true",
                    help="step speed on batches from the real training loaders (JPEG decode + augmentation, "
                         "--workers workers) instead of one fixed batch; reports the data wait per step")
    ap.add_argument("--loader-images", type=int, default=64, help="--loader: 500x375 JPEGs written for it")
    ap.add_argument("--map", action="store_true", help="also train both on shapes at equal budget and compare mAP")
    ap.add_argument("--map-only", action="store_true", help="skip the step speed (implies --map)")
    ap.add_argument("--iterations", type=int, default=850, help="--map: training iterations of each side")
    ap.add_argument("--map-batch", type=int, default=None,
                    help="--map: batch size (default the recipe's: the demo's 4 on shapes, auto config's on a folder)")
    ap.add_argument("--map-data", default="shapes",
                    help="--map: shapes (generated, the demo recipe) or a dataset folder (auto config's recipe)")
    ap.add_argument("--train-images", type=int, default=6000, help="--map: shapes training set size")
    ap.add_argument("--val-images", type=int, default=200, help="--map: held-out shapes images")
    ap.add_argument("--workers", type=int, default=0, help="--map, --loader: data loader workers (both sides)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object (progress goes to stderr)")
    args = ap.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if unknown := [v for v in args.variants if v not in VARIANTS]:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)} (expected some of {', '.join(VARIANTS)})")
    batches = [int(b) for b in str(args.batch).split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "cpu": describe_cpu(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
    }
    if not args.map_only:
        width = args.width_mult if args.width_mult is not None else 1.0
        with tempfile.TemporaryDirectory() as tmp:
            result["step"] = [bench_speed(args, device, width, b, say, f"{tmp}/jpegs" if args.loader else None)
                              for b in batches]
    if args.map or args.map_only:
        result["map"] = bench_map(args, device, args.width_mult, say)
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    mc = result["machine"]
    print(f"machine: {mc['platform']}, {mc['device']}, {mc['threads']} threads, torch {mc['torch']}, "
          f"torchvision {mc['torchvision']}")
    print(f"cpu: {mc['cpu']}")
    for s in result.get("step", []):
        print(f"training step, batch {s['batch']}, width {s['width_mult']}, {s['input']} (torchvision net: "
              f"{s['torchvision_net']}; params ssdkit {s['params']['ssdkit']:,} / torchvision "
              f"{s['params']['torchvision']:,}" + ("" if s["anchors_match"] is None else
                                                   f"; same default boxes: {s['anchors_match']}") + ")")
        print(f"  {'variant':<9} {'ssdkit img/s':>12} {'torchvision':>12} {'ratio':>7}   first loss ssdkit / tv"
              + ("   data wait ms/step ssdkit / tv" if args.loader else ""))
        for name, v in s["variants"].items():
            wait = v.get("data_wait_ms_per_step")
            print(f"  {name:<9} {v['ssdkit_img_per_s']:>12.2f} {v['torchvision_img_per_s']:>12.2f} "
                  f"{v['ratio']:>6.2f}x   {v['first_loss']['ssdkit']:.3f} / {v['first_loss']['torchvision']:.3f}"
                  + (f"   {wait['ssdkit']:.1f} / {wait['torchvision']:.1f}" if wait else ""))
        if "best" in s:
            b = s["best"]
            vs_fp32 = (f"; vs torchvision fp32 (its reference recipe) {b['ratio_vs_torchvision_fp32']:.2f}x"
                       if "ratio_vs_torchvision_fp32" in b else "")
            print(f"  best vs best: ssdkit {b['ssdkit']} / torchvision {b['torchvision']} = {b['ratio']:.2f}x "
                  f"(target >= {TARGET_RATIO}x){vs_fp32}")
        if "bf16_first_loss_rel_diff" in s:
            print(f"  bf16 vs fp32 first loss (same weights and batch): {100 * s['bf16_first_loss_rel_diff']:.2f}% "
                  "apart")
        for note in s["notes"]:
            print(f"  note: {note}")
    if "map" in result:
        r = result["map"]
        print(f"VOC07 mAP@0.5 on {r['val_images']} held-out images of {r['data']} after {r['iterations']} iterations "
              f"of batch {r['batch']} (width {r['width_mult']}, BN, input {r['input_size']}, amp {r['amp']}; "
              f"{r['optimizer']}):")
        print(f"  ssdkit recipe    {r['voc07_map']['ssdkit']:.4f}  (evaluate_model: "
              f"{r['ssdkit_map_via_evaluate_model']:.4f}; train {r['train_seconds']['ssdkit']} s)")
        print(f"  torchvision SSD  {r['voc07_map']['torchvision']:.4f}  (train {r['train_seconds']['torchvision']} s)")
        w = r["data_wait_ms_per_step"]
        print(f"  data wait per step ({r['workers']} workers): ssdkit {w['ssdkit']} ms, torchvision "
              f"{w['torchvision']} ms")
    return result


if __name__ == "__main__":
    main()
