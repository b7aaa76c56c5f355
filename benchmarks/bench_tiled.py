"""Tiled (sliced) inference on large images: ssdkit's built-in tiling vs SAHI's ``get_sliced_prediction``.

Same model weights (SAHI gets them as a :class:`sahi.models.base.DetectionModel` around the untiled ssdkit
``Detector``, with native batching), same images, windows, overlap and merge (``--merge`` / ``--match`` /
``--merge-threshold``; default NMS / IoU, what SAHI itself switches to below a 0.1 score threshold), same decode
preset (``evaluate``: score > 0.01, NMS 0.45, top-k 200, 200 boxes per window), same ``--batch`` windows per
forward pass, in the same run, interleaved round by round. Both sides' detections are cut to the preset's 200 best
per image. Printed: images/s of each and the ratio, VOC07 AP50 (ssdkit's ``evaluate_voc``) of ssdkit tiled
(window-aware merge, the default), ssdkit tiled with ``window_aware=False`` (SAHI's merge rules: its output must
equal SAHI's, and the script checks it), SAHI, and untiled ssdkit. Also, where the packages are there: ssdkit tiled in
bfloat16 (``precision="bf16"``) and on an OpenVINO int8 file of the same weights (NNCF, calibrated on window-sized
scenes), SAHI around that same int8 file (like for like), and SAHI at its own default ``batch_size=1``.

Images: generated scenes of small objects, ``ShapesDataset(count, image_size=1200, min_size=8, max_size=32,
max_objects=40)`` (held in memory: decoding is not timed). Weights: ``--checkpoint`` (an ssdkit checkpoint with the
same 6 shape classes), else a narrow SSD300 (``--width-mult``, BatchNorm) trained here for ``--train-steps`` on
``--tile``-sized scenes of the same objects, i.e. at the scale the windows show them.

    python benchmarks/bench_tiled.py                       # 20 images, 600 training steps (a few CPU minutes)
    python benchmarks/bench_tiled.py --quick               # toy size: 2 images of 600 px, 2 training steps
    python benchmarks/bench_tiled.py --save tiled.pt       # ... and keep the weights
    python benchmarks/bench_tiled.py --checkpoint tiled.pt --merge greedy_nmm --match ios --json

SAHI is optional (``pip install sahi``): without it the SAHI side is skipped with a note.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys
import time

import numpy as np
import torch

from ssdkit.config import ModelConfig
from ssdkit.data.shapes import ShapesDataset
from ssdkit.data.tiles import TileSpec
from ssdkit.inference import Detector
from ssdkit.metrics import evaluate_voc
from ssdkit.models import build_model
from ssdkit.runtime import describe_cpu
from ssdkit.tiling import image_windows

CLASSES = ("circle", "square", "triangle", "star", "hexagon", "cross")
SAHI_MERGE = {"nms": "NMS", "nmm": "NMM", "greedy_nmm": "GREEDYNMM"}


def train_model(cfg: ModelConfig, steps: int, tile: int, batch: int = 4, say=print) -> torch.nn.Module:
    """A narrow SSD trained from scratch on ``tile``-px shapes scenes (8-32 px objects): the demo's recipe
    (AdamW 3e-3, cosine, BatchNorm, no augmentation) at the scale tiled windows show the objects."""
    from ssdkit.coder import SSDBoxCoder
    from ssdkit.data.loader import DetectionDataset, make_loader
    from ssdkit.data.preprocess import SSDEvalTransform, normalize
    from ssdkit.loss import SSDLoss

    torch.manual_seed(0)
    model = build_model(cfg)
    if steps <= 0:
        return model.eval()
    coder, loss_fn = SSDBoxCoder(cfg), SSDLoss(cfg.num_classes)
    source = ShapesDataset(steps * batch, seed=100, image_size=tile, min_size=8, max_size=32, max_objects=4,
                           class_names=CLASSES)
    loader = make_loader(DetectionDataset(source, SSDEvalTransform(cfg.input_size)), batch, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    warm = max(1, min(50, steps // 10))

    def lr_factor(i: int) -> float:  # linear warm-up, then cosine to 0
        return (i + 1) / warm if i < warm else 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    model.train()
    t0 = time.perf_counter()
    for step, (images, targets) in enumerate(loader):
        x = normalize(images, cfg.mean, cfg.std, cfg.channel_order)
        loc_t, cls_t = coder.encode_batch([t["boxes"] for t in targets], [t["labels"] for t in targets])
        loc, logits = model(x)
        loss = loss_fn(loc, loc_t, logits, cls_t).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            say(f"train step {step + 1}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f} s)")
    return model.eval()


def sahi_model(detector: Detector):
    """A SAHI ``DetectionModel`` running ``detector`` (untiled) on each slice SAHI gives it, batched."""
    from sahi.models.base import DetectionModel
    from sahi.prediction import ObjectPrediction
    from sahi.utils.compatibility import fix_full_shape_list, fix_shift_amount_list

    class SSDKitDetectionModel(DetectionModel):
        def load_model(self) -> None:
            self.set_model(detector)

        def set_model(self, model, **kwargs) -> None:
            self.model = model

        def perform_inference(self, image: np.ndarray) -> None:
            self._original_predictions = [self.model(image)]

        def perform_batch_inference(self, images: list[np.ndarray]) -> None:  # native batching: one forward
            self._original_predictions = self.model(list(images))

        @property
        def num_categories(self) -> int:
            return len(self.model.class_names)

        def _create_object_prediction_list_from_original_predictions(self, shift_amount_list=None,
                                                                     full_shape_list=None) -> None:
            shifts = fix_shift_amount_list(shift_amount_list or [[0, 0]])
            shapes = fix_full_shape_list(full_shape_list)
            per_image = []
            for k, det in enumerate(self._original_predictions):
                per_image.append([
                    ObjectPrediction(bbox=box, category_id=label, category_name=self.model.class_names[label],
                                     score=score, shift_amount=shifts[k], full_shape=shapes[k] if shapes else None)
                    for box, label, score in zip(det["boxes"].tolist(), det["labels"].tolist(), det["scores"].tolist())
                    if score > self.confidence_threshold
                ])
            self._object_prediction_list_per_image = per_image

    return SSDKitDetectionModel(model=detector, confidence_threshold=float(detector.settings["score_thresh"]),
                                category_mapping={str(i): n for i, n in enumerate(detector.class_names)},
                                device=str(detector.device))


def int8_detectors(model, cfg: ModelConfig, spec: TileSpec, args, say, notes: list) -> tuple | None:
    """(tiled, untiled) Detectors over an OpenVINO int8 file of ``model`` (NNCF, calibrated on window-sized
    scenes of the same objects), or None with a note when openvino / nncf are missing."""
    import atexit
    import importlib.util
    import shutil
    import tempfile
    from pathlib import Path

    if not (importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf")):
        notes.append("OpenVINO int8 rows skipped (pip install 'ssdkit[openvino]')")
        say(f"note: {notes[-1]}")
        return None
    from ssdkit.export import export_openvino

    count = args.calib_count or (4 if args.quick else 200)
    calib = ShapesDataset(count, seed=7, image_size=args.tile, min_size=8, max_size=32, max_objects=4,
                          class_names=CLASSES)
    tmp = tempfile.mkdtemp(prefix="ssdkit-bench-tiled-")
    atexit.register(shutil.rmtree, tmp, True)
    xml = Path(tmp) / "tiled-int8.xml"
    export_openvino(copy.deepcopy(model).float().cpu(), xml, class_names=CLASSES, int8=True, calib=calib,
                    calib_count=count)
    say(f"OpenVINO int8 file calibrated on {count} scenes of {args.tile} px: {xml}")
    common = dict(preset="evaluate", batch_size=args.batch)
    return (Detector.from_file(xml, tile=spec, **common), Detector.from_file(xml, tile=None, **common))


def sahi_predict(model, images: list[np.ndarray], spec: TileSpec, batch: int, limit: int) -> list[dict]:
    from sahi.predict import get_sliced_prediction

    out = []
    for image in images:
        preds = get_sliced_prediction(
            image, model, slice_height=spec.size, slice_width=spec.size, overlap_height_ratio=spec.overlap,
            overlap_width_ratio=spec.overlap, perform_standard_pred=spec.full_image,
            postprocess_type=SAHI_MERGE[spec.merge], postprocess_match_metric=spec.match.upper(),
            postprocess_match_threshold=spec.merge_threshold, postprocess_class_agnostic=False, verbose=0,
            batch_size=batch, force_postprocess_type=True,  # keep the merge asked for at a low score threshold
        ).object_prediction_list
        boxes = torch.tensor([p.bbox.to_xyxy() for p in preds], dtype=torch.float32).reshape(-1, 4)
        scores = torch.tensor([p.score.value for p in preds], dtype=torch.float32)
        labels = torch.tensor([p.category.id for p in preds], dtype=torch.int64)
        top = torch.sort(scores, descending=True, stable=True).indices[:limit]
        out.append({"boxes": boxes[top], "scores": scores[top], "labels": labels[top]})
    return out


def same_detections(a: list[dict], b: list[dict], atol: float = 1e-3) -> tuple[bool, float]:
    """Whether two runs give the same detections per image (as sets: label, score, box), and the largest box gap."""
    worst = 0.0
    for da, db in zip(a, b):
        if len(da["scores"]) != len(db["scores"]):
            return False, float("inf")

        def canon(d):
            rows = torch.cat([d["labels"][:, None].double(), -d["scores"][:, None].double(), d["boxes"].double()], 1)
            return rows[np.lexsort(rows.numpy().T[::-1].copy())]

        ra, rb = canon(da), canon(db)
        if len(ra):
            if not torch.equal(ra[:, 0], rb[:, 0]) or not torch.allclose(ra[:, 1], rb[:, 1], atol=1e-6):
                return False, float("inf")
            worst = max(worst, float((ra[:, 2:] - rb[:, 2:]).abs().max()))
    return worst <= atol, worst


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="scenes (default 20; 2 with --quick)")
    ap.add_argument("--image-size", type=int, default=None, help="scene side (default 1200; 600 with --quick)")
    ap.add_argument("--tile", type=int, default=256, help="window side, px")
    ap.add_argument("--overlap", type=float, default=0.2)
    # SAHI's own default, GREEDYNMM / IOS, is what it switches away from to NMS / IOU below a 0.1 score threshold
    ap.add_argument("--merge", default="nms", choices=SAHI_MERGE, help="default nms (SAHI's choice at score < 0.1)")
    ap.add_argument("--match", default="iou", choices=("iou", "ios"))
    ap.add_argument("--merge-threshold", type=float, default=0.5)
    ap.add_argument("--full-image", action="store_true", help="also the whole image (SAHI perform_standard_pred)")
    ap.add_argument("--batch", type=int, default=8, help="windows per forward pass, both sides")
    ap.add_argument("--checkpoint", default=None, help="ssdkit checkpoint with the 6 shape classes")
    ap.add_argument("--train-steps", type=int, default=None, help="default 600; 2 with --quick")
    ap.add_argument("--save", default=None, help="write the weights trained here as an ssdkit checkpoint")
    ap.add_argument("--width-mult", type=float, default=0.125)
    ap.add_argument("--repeat", type=int, default=None, help="timed rounds, best kept (default 2; 1 with --quick)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-sahi", action="store_true", help="skip SAHI even when installed")
    ap.add_argument("--no-bf16", action="store_true", help="skip the ssdkit bf16 row (CPUs with bf16 units, CUDA)")
    ap.add_argument("--no-int8", action="store_true", help="skip the OpenVINO int8 rows (need openvino + nncf)")
    ap.add_argument("--calib-count", type=int, default=None,
                    help="window-sized scenes the int8 model is calibrated on (default 200; 4 with --quick)")
    ap.add_argument("--sahi-batch", type=int, default=1,
                    help="batch_size of SAHI's default-settings row (SAHI's own default: 1); 0 skips the row")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n_images = args.images or (2 if args.quick else 20)
    side = args.image_size or (600 if args.quick else 1200)
    steps = args.train_steps if args.train_steps is not None else (2 if args.quick else 600)
    repeat = args.repeat or (1 if args.quick else 2)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    if args.checkpoint:
        base = Detector.from_checkpoint(args.checkpoint, device=args.device, preset="evaluate")
        if tuple(base.class_names) != CLASSES:
            raise SystemExit(f"{args.checkpoint}: classes {base.class_names} are not {CLASSES}")
        model, cfg = base.model, base.config
    else:
        cfg = ModelConfig(num_classes=len(CLASSES) + 1, width_mult=args.width_mult, batch_norm=True)
        model = train_model(cfg, steps, args.tile, say=say)
        if args.save:
            from ssdkit.checkpoint import save_checkpoint
            from ssdkit.config import Config

            save_checkpoint(args.save, model, Config(model=cfg), CLASSES)
            say(f"saved {args.save} (pass it as --checkpoint to skip training)")
    spec = TileSpec(size=args.tile, overlap=args.overlap, full_image=args.full_image, merge=args.merge,
                    match=args.match, merge_threshold=args.merge_threshold)
    sahi_rules = dataclasses.replace(spec, window_aware=False)
    common = dict(device=args.device, preset="evaluate", batch_size=args.batch)
    untiled = Detector(model, cfg, CLASSES, **common)
    tiled = Detector(model, cfg, CLASSES, tile=spec, **common)
    tiled_sahi_rules = Detector(model, cfg, CLASSES, tile=sahi_rules, **common)
    tiled_bf16 = None
    if not args.no_bf16:  # the same weights in bfloat16 (its own copy: the Detector casts its model)
        from ssdkit.runtime import cpu_bf16_supported

        if args.device == "cuda" or cpu_bf16_supported():
            tiled_bf16 = Detector(copy.deepcopy(model), cfg, CLASSES, tile=spec, precision="bf16", **common)
    limit = int(untiled.settings["max_detections"])
    notes = []
    int8 = None if args.no_int8 else int8_detectors(model, cfg, spec, args, say, notes)

    scenes = ShapesDataset(n_images, seed=1, image_size=side, min_size=8, max_size=32, max_objects=40,
                           class_names=CLASSES)
    images = [scenes.load_image(i).permute(1, 2, 0).numpy() for i in range(n_images)]  # H x W x 3 uint8
    gts = [{"boxes": scenes.sample(i).boxes, "labels": scenes.sample(i).labels} for i in range(n_images)]

    runners = {"ssdkit tiled": lambda: tiled(images), "ssdkit tiled, SAHI rules": lambda: tiled_sahi_rules(images)}
    if tiled_bf16 is not None:
        runners["ssdkit tiled bf16"] = lambda: tiled_bf16(images)
    if int8 is not None:
        runners["ssdkit tiled openvino int8"] = lambda: int8[0](images)
    try:
        if args.no_sahi:
            raise ImportError("--no-sahi")
        import sahi

        wrapped = sahi_model(untiled)
        runners["sahi"] = lambda: sahi_predict(wrapped, images, spec, args.batch, limit)
        if args.sahi_batch and args.sahi_batch != args.batch:  # as SAHI runs by default: one window per forward
            runners["sahi, batch_size 1" if args.sahi_batch == 1 else f"sahi, batch_size {args.sahi_batch}"] = (
                lambda: sahi_predict(wrapped, images, spec, args.sahi_batch, limit))
        if int8 is not None:  # like for like at int8: SAHI around the same OpenVINO int8 file
            wrapped_int8 = sahi_model(int8[1])
            runners["sahi, openvino int8"] = lambda: sahi_predict(wrapped_int8, images, spec, args.batch, limit)
        sahi_version = sahi.__version__
    except ImportError as e:
        sahi_version = None
        notes.append(f"SAHI side skipped ({e}); pip install sahi to compare")
        say(f"note: {notes[-1]}")
    runners["ssdkit untiled"] = lambda: untiled(images)

    outputs, best = {}, {name: math.inf for name in runners}
    threads = torch.get_num_threads()
    for name, run in runners.items():  # warm-up, and the detections the mAP is computed on
        outputs[name] = run()
    for _ in range(repeat):  # interleaved rounds: this box's speed drifts
        for name, run in runners.items():
            t = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t)
    ips = {name: round(n_images / t, 3) for name, t in best.items()}
    maps = {name: round(evaluate_voc(dets, gts, len(CLASSES), CLASSES, use_07_metric=True,
                                     pixel_offset=False)["map"], 4) for name, dets in outputs.items()}
    windows = len(image_windows(side, side, spec))
    results = {
        "images": n_images, "image_size": side, "windows_per_image": windows, "tile": dataclasses.asdict(spec),
        "batch": args.batch, "device": args.device, "cpu": describe_cpu(), "threads": threads,
        "torch": torch.__version__,
        "sahi": sahi_version, "weights": args.checkpoint or f"trained here: {steps} steps, width {args.width_mult}",
        "img_per_s": ips, "voc07_map50": maps, "notes": notes,
    }
    if "sahi" in outputs:
        results["ratio_vs_sahi"] = round(ips["ssdkit tiled"] / ips["sahi"], 2)
        results["ratio_sahi_rules_vs_sahi"] = round(ips["ssdkit tiled, SAHI rules"] / ips["sahi"], 2)
        if "ssdkit tiled bf16" in ips:
            results["ratio_bf16_vs_sahi"] = round(ips["ssdkit tiled bf16"] / ips["sahi"], 2)
        if "ssdkit tiled openvino int8" in ips:
            results["ratio_int8_vs_sahi"] = round(ips["ssdkit tiled openvino int8"] / ips["sahi"], 2)
            results["ratio_int8_vs_sahi_int8"] = round(ips["ssdkit tiled openvino int8"]
                                                       / ips["sahi, openvino int8"], 2)
        default = next((k for k in ips if k.startswith("sahi, batch_size")), None)
        if default:
            results["ratio_vs_sahi_default_batch"] = round(ips["ssdkit tiled"] / ips[default], 2)
            results["best_ssdkit_vs_sahi_default_batch"] = round(
                max(v for k, v in ips.items() if k.startswith("ssdkit tiled")) / ips[default], 2)
        equal, gap = same_detections(outputs["ssdkit tiled, SAHI rules"], outputs["sahi"])
        results["sahi_rules_equal_sahi"] = equal
        results["sahi_rules_max_box_gap_px"] = gap
    if args.json:
        print(json.dumps(results, indent=1))
        return results
    print(f"{n_images} scenes of {side} px, {windows} windows of {spec.size} px each (overlap {spec.overlap}), "
          f"merge {spec.merge}/{spec.match} >= {spec.merge_threshold}, batch {args.batch}, {results['weights']}")
    for name in runners:
        print(f"{name:<26} {ips[name]:>8.3f} img/s   VOC07 AP50 {maps[name]:.4f}")
    if "sahi" in outputs:
        print(f"ssdkit tiled / sahi: {results['ratio_vs_sahi']}x; ssdkit with SAHI rules / sahi: "
              f"{results['ratio_sahi_rules_vs_sahi']}x; ssdkit tiled bf16 / sahi (fp32): "
              f"{results.get('ratio_bf16_vs_sahi', '-')}x; ssdkit tiled openvino int8 / sahi (fp32): "
              f"{results.get('ratio_int8_vs_sahi', '-')}x, / sahi (openvino int8): "
              f"{results.get('ratio_int8_vs_sahi_int8', '-')}x; ssdkit tiled / sahi at batch_size "
              f"{args.sahi_batch}: {results.get('ratio_vs_sahi_default_batch', '-')}x (best ssdkit row: "
              f"{results.get('best_ssdkit_vs_sahi_default_batch', '-')}x); SAHI rules give SAHI's detections: "
              f"{results['sahi_rules_equal_sahi']} (largest box gap {results['sahi_rules_max_box_gap_px']:.2g} px)")
    for note in notes:
        print(f"note: {note}")
    print(f"({args.device}, {threads} threads, torch {torch.__version__}, sahi {sahi_version}; {results['cpu']})")
    return results


if __name__ == "__main__":
    main()
