"""The ``ssdkit`` argument parser: every choice comes from :mod:`ssdkit.choices`, the table the library validates
against; argparse errors print in ssdkit's one-line form."""

from __future__ import annotations

import argparse
import sys

from ssdkit import choices
from ssdkit.cli.commands import (
    cmd_anchors,
    cmd_benchmark,
    cmd_check_data,
    cmd_demo,
    cmd_describe,
    cmd_evaluate,
    cmd_export,
    cmd_import_weights,
    cmd_make_shapes,
    cmd_predict,
    cmd_train,
)

__all__ = ["build_parser"]


_MODEL_HELP = f"{' | '.join(choices.MODEL_PRESETS)} | CONFIG.yaml (default ssd300)"
_DEVICE_HELP = "auto | cpu | cuda | cuda:N"


def _tile_args(sp) -> None:
    sp.add_argument("--tile", type=int, default=None, metavar="N",
                    help="tiled inference for small objects in large images: N x N windows at native resolution "
                         "(default: the windows the model was trained on, if it was trained tiled; 0: whole images)")
    sp.add_argument("--tile-overlap", type=float, default=0.2, help="window overlap, 0 to <1 (default 0.2)")
    sp.add_argument("--tile-full-image", action="store_true", help="also run the whole image (for large objects)")
    sp.add_argument("--tile-merge", default="nms", choices=choices.TILE_MERGES,
                    help="merge across windows (default nms)")
    sp.add_argument("--tile-match", default="iou", choices=choices.TILE_MATCHES,
                    help="box matching for the merge: IoU or intersection over the smaller box (default iou)")


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


def _tile_size(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
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
        message = " ".join(message.split())
        print(f"ssdkit: error: {command + ': ' if command else ''}{message}", file=sys.stderr)
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

    sp = sub.add_parser("train", help="train from a YAML config, or from a labelled folder (--data) with an automatic "
                                      "config; key=value overrides")
    sp.add_argument("config", nargs="?", default=None, help="a run config YAML (or use --data)")
    sp.add_argument("--data", default=None, help="train from this dataset (any format): classes, default boxes, "
                                                 "validation split, tiling and the recipe chosen from the data")
    sp.add_argument("--val-data", default=None, help="with --data: the validation set (default: the data's own 'val' "
                                                     "split, else a seeded 10%% hold-out)")
    sp.add_argument("--model", default=None, help=f"with --data: {_MODEL_HELP}")
    sp.add_argument("--epochs", type=int, default=None, help="with --data: training epochs (default the recipe's)")
    sp.add_argument("--batch", type=int, default=None, help="with --data: batch size (default the recipe's)")
    sp.add_argument("--tile", type=_tile_size, default="auto", metavar="N|auto",
                    help="with --data: tiled training in N x N windows; auto (default) tiles when objects are small "
                         "in large images; none: never")
    sp.add_argument("--format", default=None, choices=choices.DATA_FORMAT_CHOICES, help="with --data: force a format")
    sp.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.lr=0.01")
    sp.add_argument("--resume", default=None, help="checkpoint to resume from")
    sp.add_argument("--nproc", type=int, default=None, help="processes (torch.distributed through ignite)")
    sp.add_argument("--exist-ok", action="store_true",
                    help="write into train.output_dir even if it holds another run (default: a new numbered folder "
                         "next to it, runs/x2, runs/x3, ...)")
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
    sp.add_argument("--exist-ok", action="store_true", help="write into --out even if it holds an earlier demo")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_demo)
    return p
