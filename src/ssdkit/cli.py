"""``ssdkit`` command line: parsing only. Every command calls one library function and prints its result.

Errors users can cause (``SSDKitError``, and ``OSError`` on a path they gave) print one line
``ssdkit: error: ...`` and exit with status 2. ``--json`` prints strict JSON (NaN and infinities as null).
Choices (formats, metrics, presets) come from :mod:`ssdkit.choices`, the table the library validates against.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from ssdkit import choices
from ssdkit.errors import SSDKitError

# ------------------------------------------------------------------------------------------------- output


def _plain(o, notes: list[str]):
    """``o`` as strict-JSON-able data: tensors and arrays as lists, paths as strings, NaN/inf as None."""
    import numpy as np
    import torch

    if isinstance(o, dict):
        return {str(k): _plain(v, notes) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v, notes) for v in o]
    if isinstance(o, (torch.Tensor, np.ndarray, np.generic)):
        return _plain(o.tolist(), notes)
    if isinstance(o, float) and not math.isfinite(o):
        notes.append(repr(o))
        return None
    if o is None or isinstance(o, (str, int, float, bool)):
        return o
    return str(o)


def _print_json(data) -> None:
    notes: list[str] = []
    print(json.dumps(_plain(data, notes), indent=2, allow_nan=False))
    if notes:
        print(f"ssdkit: note: {len(notes)} non-finite number(s) ({', '.join(sorted(set(notes)))}) written as null",
              file=sys.stderr)


def _emit(args, result, text) -> None:
    """``--json``: the result as JSON; else ``text(result)`` (a string, or None to print nothing)."""
    if getattr(args, "json", False):
        _print_json(result)
    else:
        out = text(result)
        if out:
            print(out)


# ------------------------------------------------------------------------------------------------ commands


def cmd_describe(args) -> int:
    from ssdkit.analysis import describe, format_description

    _emit(args, describe(args.model, num_classes=args.num_classes), format_description)
    return 0


def cmd_check_data(args) -> int:
    from ssdkit.data.check import check_data

    report = check_data(args.data, split=args.split, format=args.format, classes=args.classes,
                        verify_images=not args.no_verify, decode=args.decode)
    _emit(args, report.to_dict(), lambda _: report.format())
    if args.strict and report.problems:
        print(f"ssdkit: error: {len(report.problems)} problem(s) found and --strict was given", file=sys.stderr)
        return 1
    return 0


def cmd_make_shapes(args) -> int:
    from ssdkit.data.shapes import write_shapes

    kwargs = {k: getattr(args, k) for k in ("min_size", "max_size", "min_objects", "max_objects")
              if getattr(args, k) is not None}
    out = write_shapes(args.out, format=choices.data_format(args.format), count=args.count, seed=args.seed,
                       image_size=args.size, overwrite=args.overwrite, progress=False if args.json else None, **kwargs)
    result = {"out": str(out), "format": args.format, "count": args.count}
    _emit(args, result, lambda r: f"wrote {r['count']} shapes images ({r['format']}) to {r['out']}")
    return 0


def cmd_anchors(args) -> int:
    from ssdkit.analysis import anchors_report, format_anchor_fit

    result = anchors_report(args.data, args.model, split=args.split, format=args.format, classes=args.classes,
                            iou_threshold=args.iou, plot=args.plot, tile=args.tile)
    _emit(args, result, format_anchor_fit)
    return 0


def cmd_train(args) -> int:
    from ssdkit.config import load_config
    from ssdkit.engine.train import train

    summary = train(load_config(args.config, args.overrides), resume=args.resume, progress=not args.no_progress,
                    nproc=args.nproc)
    _emit(args, summary, lambda s: None)
    return 0


def cmd_evaluate(args) -> int:
    from ssdkit.engine.evaluation import evaluate, format_metrics

    result = evaluate(args.checkpoint, args.data, gt=args.gt, detections=args.detections, metric=args.metric,
                      split=args.split, format=args.format, batch_size=args.batch, device=args.device,
                      plot_dir=args.plot_dir, progress=not args.json, tile=_tile(args), report=args.report,
                      size_ranges=args.size_ranges, precision=args.precision)
    _emit(args, {k: v for k, v in result.items() if k not in ("precision", "recall")}, format_metrics)
    return 0


def cmd_predict(args) -> int:
    from ssdkit.predict import predict

    summary = predict(args.checkpoint, args.inputs, args.out, score=args.score, batch=args.batch,
                      device=args.device, draw=not args.no_draw, progress=not args.json, tile=_tile(args),
                      gt=args.gt, precision=args.precision, every=args.every)

    def text(s):  # predict already wrote one "skipped: ..." line per file on stderr as it went: count them only
        skipped = f", {len(s['skipped'])} skipped (listed above)" if s["skipped"] else ""
        return f"{s['images']} image(s), {s['detections']} detection(s){skipped}; results in {s['out_dir']}"

    _emit(args, summary, text)
    return 0


def cmd_export(args) -> int:
    from ssdkit.export import export

    result = export(args.checkpoint, args.format, out=args.out, with_postprocess=args.with_postprocess,
                    int8=args.int8, calib=args.calib, calib_count=args.calib_count, eval_count=args.eval_count)
    _emit(args, result, lambda r: "\n".join(f"{k}: {v}" for k, v in r.items()))
    return 0


def cmd_benchmark(args) -> int:
    from ssdkit.benchmark import benchmark, format_benchmark

    result = benchmark(args.checkpoint, args.data, formats=args.formats, batches=args.batch, repeat=args.repeat,
                       images=args.images, eval_count=args.eval_count, calib_count=args.calib_count,
                       say=None if args.json else print)
    _emit(args, result, format_benchmark)
    return 0


def cmd_import_weights(args) -> int:
    from ssdkit.interop import import_weights

    report = import_weights(args.source, args.weights, args.out, classes=args.classes)

    def text(r):
        lines = [f"imported {r.get('variant', args.source)}: {r.get('num_classes')} classes (incl. background), "
                 f"{len(r.get('mapped', {}))} tensors mapped -> {r['out']}"]
        lines += [f"constant: {k} = {v}" for k, v in r.get("constants", {}).items()]
        lines += [f"note: {n}" for n in r.get("notes", [])]
        return "\n".join(lines)

    _emit(args, report, text)
    return 0


def cmd_demo(args) -> int:
    from ssdkit.engine.demo import run_demo

    summary = run_demo(args.out, quick=args.quick, progress=not args.json)
    _emit(args, summary, lambda s: None)
    return 0


# ------------------------------------------------------------------------------------------------- parser

_MODEL_HELP = f"{' | '.join(choices.MODEL_PRESETS)} | CONFIG.yaml (default ssd300)"
_DEVICE_HELP = "auto | cpu | cuda | cuda:N"


def _tile_args(sp) -> None:
    sp.add_argument("--tile", type=int, default=None, metavar="N",
                    help="tiled inference for small objects in large images: N x N windows at native resolution")
    sp.add_argument("--tile-overlap", type=float, default=0.2, help="window overlap, 0 to <1 (default 0.2)")
    sp.add_argument("--tile-full-image", action="store_true", help="also run the whole image (for large objects)")
    sp.add_argument("--tile-merge", default="nms", choices=choices.TILE_MERGES,
                    help="merge across windows (default nms)")
    sp.add_argument("--tile-match", default="iou", choices=choices.TILE_MATCHES,
                    help="box matching for the merge: IoU or intersection over the smaller box (default iou)")


def _tile(args):
    """The TileSpec of the --tile flags, or None."""
    if args.tile is None:
        return None
    from ssdkit.data.tiles import TileSpec

    return TileSpec(size=args.tile, overlap=args.tile_overlap, full_image=args.tile_full_image,
                    merge=args.tile_merge, match=args.tile_match)


def _precision_arg(sp) -> None:
    sp.add_argument("--precision", default="fp32", choices=choices.PRECISIONS,
                    help="bf16: weights in bfloat16 (several times faster on CPUs with AMX/AVX512-BF16; falls back "
                         "to fp32 with a warning elsewhere)")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got {text!r}")
    return values


def _name_list(allowed):  # noqa: ANN202
    def parse(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"expected names from {', '.join(allowed)}, got {text!r}")
        return names

    return parse


def _tile_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a window side in pixels or 'auto', got {text!r}") from None


def _size_ranges(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected increasing numbers like 0,16,32,96,inf, got {text!r}") from None
    if len(values) < 2 or list(values) != sorted(set(values)) or values[0] < 0:
        raise argparse.ArgumentTypeError(f"expected at least two increasing bounds >= 0, got {text!r}")
    return values


def _data_args(sp, required: bool = True) -> None:
    sp.add_argument("--data", required=required,
                    help="dataset path (VOC dir, COCO json, YOLO yaml/dir, list file, VEDAI dir) or 'shapes'")
    sp.add_argument("--split", default=None, help="split name (VOC ImageSets, COCO/YOLO split, VEDAI fold)")
    sp.add_argument("--format", default=None, choices=choices.DATA_FORMAT_CHOICES,
                    help="force a format instead of auto-detecting it")
    sp.add_argument("--classes", default=None, help="class names file (one per line) or comma-separated names")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in ssdkit's one-line form (after the usage line): ``ssdkit: error: <command>: ...``."""

    def error(self, message: str):  # noqa: ANN201 - argparse's signature
        self.print_usage(sys.stderr)
        command = self.prog.removeprefix("ssdkit").strip()
        print(f"ssdkit: error: {command + ': ' if command else ''}{_one_line(message)}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    from ssdkit import __version__

    p = _Parser(prog="ssdkit", description="SSD object detection toolkit")
    p.add_argument("--version", action="version", version=f"ssdkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("describe", help="the notebook's model analysis: layers, feature maps, default boxes, FLOPs")
    sp.add_argument("--model", default=None, help=_MODEL_HELP)
    sp.add_argument("--num-classes", type=int, default=None, help="classes including background (default 21)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_describe)

    sp = sub.add_parser("check-data", help="validate a dataset: counts, sizes and every problem found")
    _data_args(sp)
    sp.add_argument("--strict", action="store_true", help="exit 1 if any problem is found")
    sp.add_argument("--no-verify", action="store_true", help="do not open images (faster)")
    sp.add_argument("--decode", action="store_true", help="decode every image fully (finds corrupt pixel data)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_check_data)

    sp = sub.add_parser("make-shapes", help="write the built-in shapes dataset to disk")
    sp.add_argument("--out", required=True, help="a new or empty folder")
    sp.add_argument("--format", default="voc", choices=choices.SHAPES_FORMATS)
    sp.add_argument("--count", type=int, default=500)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--size", type=int, default=300, help="image side in pixels")
    sp.add_argument("--min-size", type=float, default=None, help="smallest object (longer side, px; default 8)")
    sp.add_argument("--max-size", type=float, default=None, help="largest object (px; default 90%% of the image)")
    sp.add_argument("--min-objects", type=int, default=None, help="objects per image, at least (default 1)")
    sp.add_argument("--max-objects", type=int, default=None, help="objects per image, at most (default 6)")
    sp.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_make_shapes)

    sp = sub.add_parser("anchors", help="do the objects get default boxes? coverage and a recommended config")
    _data_args(sp)
    sp.add_argument("--model", default=None, help=_MODEL_HELP)
    sp.add_argument("--iou", type=float, default=0.5, help="IoU at which a default box covers an object")
    sp.add_argument("--plot", default=None, help="write a PNG of object sizes against default box sizes")
    sp.add_argument("--tile", type=_tile_size, default=None, metavar="N|auto",
                    help="analyse N x N windows (tiled training/inference) instead of whole images; auto: the "
                         "recommended window, or none")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_anchors)

    sp = sub.add_parser("train", help="train from a YAML config (key=value overrides)")
    sp.add_argument("config")
    sp.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.lr=0.01")
    sp.add_argument("--resume", default=None, help="checkpoint to resume from")
    sp.add_argument("--nproc", type=int, default=None, help="processes (torch.distributed through ignite)")
    sp.add_argument("--no-progress", action="store_true")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("evaluate", help="VOC07 / VOC / COCO mAP of a checkpoint, or of a COCO results file")
    sp.add_argument("--checkpoint", "--model", dest="checkpoint", default=None,
                    help="an ssdkit checkpoint, or a file ssdkit export wrote (ONNX, OpenVINO .xml, .pt2)")
    _data_args(sp, required=False)
    sp.add_argument("--gt", default=None, help="COCO ground-truth JSON (with --detections)")
    sp.add_argument("--detections", default=None,
                    help="COCO results JSON of any detector (with --gt), or ssdkit predict's detections.json (with "
                         "--data: matched by file name)")
    sp.add_argument("--metric", default="voc07", choices=choices.METRICS)
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--device", default="auto", help=_DEVICE_HELP)
    _precision_arg(sp)
    sp.add_argument("--plot-dir", default=None, help="write PR curves (PNG) here")
    sp.add_argument("--report", default=None, metavar="DIR",
                    help="write the error report here: confusion matrix, P/R/F1 and the best score threshold, TIDE "
                         "errors, AP by object size, report.md")
    sp.add_argument("--size-ranges", type=_size_ranges, default=None, metavar="0,16,32,96,inf",
                    help="object-size bounds (sqrt of area, px) of the COCO AP by size (default COCO's 0,32,96,inf)")
    _tile_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_evaluate)

    visualize = choices.DECODE_PRESETS[choices.PREDICT_PRESET]["score_thresh"]
    sp = sub.add_parser("predict", help="detect objects in images and videos; COCO results JSON, drawn images")
    sp.add_argument("--checkpoint", "--model", dest="checkpoint", required=True,
                    help="an ssdkit checkpoint, or a file ssdkit export wrote (ONNX, OpenVINO .xml, .pt2)")
    sp.add_argument("inputs", nargs="+", help="image files, folders, globs or videos (mp4, mkv, avi, ...)")
    sp.add_argument("--out", default="predictions")
    sp.add_argument("--score", type=float, default=None,
                    help=f"score threshold (default: the {choices.PREDICT_PRESET!r} preset's {visualize})")
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--device", default="auto", help=_DEVICE_HELP)
    sp.add_argument("--no-draw", action="store_true")
    _precision_arg(sp)
    sp.add_argument("--every", type=int, default=1, help="videos: process one frame in N (default every frame)")
    sp.add_argument("--gt", default=None, help="a COCO ground truth: take image and category ids from it (by file "
                                               "name and class name) so evaluate --gt reads the results directly")
    _tile_args(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("export", help="export to ONNX / OpenVINO / torch.export / TorchScript / safetensors, with a "
                                       "parity check (int8: the mAP change)")
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--format", required=True, choices=choices.EXPORT_FORMATS,
                    help="onnx | openvino | pt2 (torch.export) | safetensors (weights) | torchscript (deprecated "
                         "upstream in favour of torch.export; kept while PyTorch keeps it)")
    sp.add_argument("--with-postprocess", action="store_true", help="put decoding and NMS in the graph")
    sp.add_argument("--int8", action="store_true",
                    help=f"static int8 quantization ({', '.join(choices.INT8_FORMATS)}), calibrated on --calib")
    sp.add_argument("--calib", default=None, help="calibration data for --int8 (a dataset path or 'shapes')")
    sp.add_argument("--calib-count", type=int, default=300, help="calibration images (default 300)")
    sp.add_argument("--eval-count", type=int, default=200, help="images the int8 mAP change is measured on")
    sp.add_argument("--out", default=None)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("benchmark", help="mAP and end-to-end ms/img of every export format and precision, one table")
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--data", required=True, help="evaluation (and int8 calibration) data: a dataset path or 'shapes'")
    sp.add_argument("--formats", type=_name_list(choices.BENCHMARK_FORMATS), default=None,
                    help=f"comma-separated, from {', '.join(choices.BENCHMARK_FORMATS)} (default all available)")
    sp.add_argument("--batch", type=_int_list, default=(1, 8), help="batch sizes timed, e.g. 1,8 (default)")
    sp.add_argument("--repeat", type=int, default=3, help="timed passes per format and batch; the best is kept")
    sp.add_argument("--images", type=int, default=16, help="images per timed pass")
    sp.add_argument("--eval-count", type=int, default=200, help="images the mAP is computed on (0: none)")
    sp.add_argument("--calib-count", type=int, default=300, help="int8 calibration images")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_benchmark)

    sp = sub.add_parser("import-weights", help="convert torchvision / amdegroot / torchcv SSD weights")
    sp.add_argument("--from", dest="source", required=True, choices=choices.IMPORT_SOURCES)
    sp.add_argument("--weights", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--classes", default=None, help="class names file (one per line), without background")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_import_weights)

    sp = sub.add_parser("demo", help="make shapes data, train a small SSD300 on the CPU, evaluate, draw")
    sp.add_argument("--out", default="ssdkit-demo")
    sp.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "classes", None) and "," in args.classes and not Path(args.classes).exists():
        args.classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    try:
        return args.func(args)
    except SSDKitError as e:
        print(f"ssdkit: error: {_one_line(str(e))}", file=sys.stderr)
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 1
    except OSError as e:  # a path the user gave: unwritable, a file where a folder should be, a full disk, ...
        where = f"{e.filename}: " if e.filename else ""
        print(f"ssdkit: error: {where}{e.strerror or _one_line(str(e))}", file=sys.stderr)
    except MemoryError:
        print("ssdkit: error: out of memory (try a smaller --batch, or smaller images)", file=sys.stderr)
    except KeyboardInterrupt:
        print("ssdkit: interrupted", file=sys.stderr)
        return 130
    return 2


def _one_line(message: str) -> str:
    return " ".join(message.split())


if __name__ == "__main__":
    sys.exit(main())
