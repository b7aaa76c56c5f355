"""``ssdkit`` command line. Parsing only: every command delegates to a function users can also call.

Errors users can cause (``SSDKitError``) print one line ``ssdkit: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ssdkit.errors import SSDKitError


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=_json_default))


def _json_default(o):
    import numpy as np
    import torch

    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, np.ndarray | np.generic):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float):
        return None
    return str(o)


# ------------------------------------------------------------------------------------------------ commands


def cmd_describe(args) -> int:
    from ssdkit.analysis import describe, format_description
    from ssdkit.config import model_config_from_arg

    d = describe(model_config_from_arg(args.model, args.num_classes))
    if args.json:
        _print_json(d)
    else:
        print(format_description(d))
    return 0


def _read(args):
    from ssdkit.engine.data import build_source

    return build_source(args.data, split=args.split, format=args.format, classes=args.classes)


def cmd_check_data(args) -> int:
    from ssdkit.data.check import check_dataset
    from ssdkit.data.readers import read_dataset

    ds = read_dataset(args.data, format=args.format, split=args.split, classes=args.classes)
    report = check_dataset(ds, verify_images=not args.no_verify)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(report.format())
    if args.strict and report.problems:
        print(f"ssdkit: error: {len(report.problems)} problem(s) found and --strict was given", file=sys.stderr)
        return 1
    return 0


def cmd_make_shapes(args) -> int:
    from ssdkit.data.shapes import write_shapes

    out = write_shapes(args.out, format=args.format, count=args.count, seed=args.seed, image_size=args.size)
    print(f"wrote {args.count} shapes images ({args.format}) to {out if out else args.out}")
    return 0


def cmd_anchors(args) -> int:
    from ssdkit.analysis import anchor_fit, default_box_sizes, format_anchor_fit
    from ssdkit.config import model_config_from_arg

    source = _read(args)
    cfg = model_config_from_arg(args.model, max(2, len(source.class_names) + 1))
    samples = [source.sample(i) for i in range(len(source))]
    result = anchor_fit(samples, cfg, iou_threshold=args.iou)
    if args.plot:
        from ssdkit.viz import plot_anchor_fit

        plot_anchor_fit(result["object_wh"], default_box_sizes(cfg), args.plot)
    if args.json:
        _print_json({k: v for k, v in result.items() if k != "object_wh"})
    else:
        print(format_anchor_fit(result))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def cmd_train(args) -> int:
    from ssdkit.config import load_config
    from ssdkit.engine.train import train

    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress, nproc=args.nproc)
    if args.json:
        _print_json(summary)
    return 0


def cmd_evaluate(args) -> int:
    if args.gt or args.detections:
        if not (args.gt and args.detections):
            raise SSDKitError("evaluate: --gt and --detections go together")
        from ssdkit.metrics import evaluate_coco_files, evaluate_voc_files

        if args.metric == "coco":
            result = evaluate_coco_files(args.gt, args.detections)
        else:
            result = evaluate_voc_files(args.gt, args.detections, use_07_metric=args.metric == "voc07")
    else:
        if not (args.checkpoint and args.data):
            raise SSDKitError("evaluate: give --checkpoint and --data, or --gt and --detections")
        from ssdkit.engine.evaluate import evaluate_checkpoint

        result = evaluate_checkpoint(args.checkpoint, args.data, split=args.split, metric=args.metric,
                                     format=args.format, batch_size=args.batch, device=args.device,
                                     progress=not args.json)
    if args.plot_dir and args.metric != "coco" and "precision" in result:
        from ssdkit.viz import plot_pr_curves

        path = Path(args.plot_dir) / "pr_curves.png"
        plot_pr_curves(result, path)
        result["pr_curves"] = str(path)
    if args.json:
        _print_json({k: v for k, v in result.items() if k not in ("precision", "recall")})
    else:
        print(format_metrics(result, args.metric))
    return 0


def format_metrics(result: dict, metric: str) -> str:
    lines = []
    if metric == "coco":
        for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"):
            if k in result:
                lines.append(f"{k:>6}: {result[k]:.4f}")
        per_class = result.get("ap", {})
    else:
        lines.append(f"mAP ({metric}, IoU 0.5): {result['map']:.4f}")
        per_class = result.get("ap", {})
    if per_class:
        lines.append("")
        lines.append(f"{'class':<20} {'AP':>8}")
        for name, ap in per_class.items():
            lines.append(f"{name:<20} {ap:>8.4f}")
    if "pr_curves" in result:
        lines.append(f"\nPR curves: {result['pr_curves']}")
    return "\n".join(lines)


def cmd_predict(args) -> int:
    from ssdkit.predict import predict

    summary = predict(args.checkpoint, args.inputs, args.out, score=args.score, batch=args.batch,
                      device=args.device, draw=not args.no_draw, progress=not args.json)
    if args.json:
        _print_json(summary)
    else:
        # predict already wrote one "skipped: ..." line per file on stderr as it went; count them only.
        n_skipped = len(summary.get("skipped", []))
        skipped = f", {n_skipped} skipped (listed above)" if n_skipped else ""
        print(f"{summary.get('images', 0)} image(s), {summary.get('detections', 0)} detection(s){skipped}; "
              f"results in {args.out}")
    return 0


def cmd_export(args) -> int:
    from ssdkit.export import export

    result = export(args.checkpoint, args.format, out=args.out, with_postprocess=args.with_postprocess)
    if args.json:
        _print_json(result)
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0


def cmd_import_weights(args) -> int:
    from ssdkit.interop import import_weights

    report = import_weights(args.source, args.weights, args.out, classes=args.classes)
    if args.json:
        _print_json(report)
    else:
        mapped = report.get("mapped", {})
        print(f"imported {report.get('variant', args.source)}: {report.get('num_classes')} classes (incl. background), "
              f"{len(mapped)} tensors mapped -> {args.out}")
        for k, v in report.get("constants", {}).items():
            print(f"constant: {k} = {v}")
        for note in report.get("notes", []):
            print(f"note: {note}")
    return 0


def cmd_demo(args) -> int:
    from ssdkit.engine.demo import run_demo

    summary = run_demo(args.out, quick=args.quick, progress=not args.json)
    if args.json:
        _print_json(summary)
    return 0


# ------------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from ssdkit import __version__

    p = argparse.ArgumentParser(prog="ssdkit", description="SSD object detection toolkit")
    p.add_argument("--version", action="version", version=f"ssdkit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_args(sp, required=True):
        sp.add_argument("--data", required=required,
                        help="dataset path (VOC dir, COCO json, YOLO yaml/dir, list file, VEDAI dir) or 'shapes'")
        sp.add_argument("--split", default=None, help="split name (VOC ImageSets, COCO/YOLO split, VEDAI fold)")
        sp.add_argument("--format", default=None, choices=["voc", "coco", "yolo", "list", "vedai"],
                        help="force a format instead of auto-detecting it")
        sp.add_argument("--classes", default=None, help="class names file (one per line) or comma-separated names")

    sp = sub.add_parser("describe", help="the notebook's model analysis: layers, feature maps, default boxes, FLOPs")
    sp.add_argument("--model", default="ssd300", help="ssd300 | ssd512 | ssd300_small | CONFIG.yaml")
    sp.add_argument("--num-classes", type=int, default=None, help="classes including background (default 21)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_describe)

    sp = sub.add_parser("check-data", help="validate a dataset: counts, sizes and every problem found")
    data_args(sp)
    sp.add_argument("--strict", action="store_true", help="exit 1 if any problem is found")
    sp.add_argument("--no-verify", action="store_true", help="do not open images (faster)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_check_data)

    sp = sub.add_parser("make-shapes", help="write the built-in shapes dataset to disk as VOC or COCO")
    sp.add_argument("--out", required=True)
    sp.add_argument("--format", default="voc", choices=["voc", "coco"])
    sp.add_argument("--count", type=int, default=500)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--size", type=int, default=300, help="image size in pixels")
    sp.set_defaults(func=cmd_make_shapes)

    sp = sub.add_parser("anchors", help="do the objects get default boxes? coverage and a recommended config")
    data_args(sp)
    sp.add_argument("--model", default="ssd300", help="ssd300 | ssd512 | ssd300_small | CONFIG.yaml")
    sp.add_argument("--iou", type=float, default=0.5, help="IoU at which a default box covers an object")
    sp.add_argument("--plot", default=None, help="write a PNG of object sizes against default box sizes")
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
    sp.add_argument("--checkpoint", default=None)
    data_args(sp, required=False)
    sp.add_argument("--gt", default=None, help="COCO ground-truth JSON (with --detections)")
    sp.add_argument("--detections", default=None, help="COCO results JSON of any detector")
    sp.add_argument("--metric", default="voc07", choices=["voc07", "voc", "coco"])
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    sp.add_argument("--plot-dir", default=None, help="write PR curves (PNG) here")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("predict", help="detect objects in images; COCO results JSON and drawn images")
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("inputs", nargs="+", help="image files, folders or globs")
    sp.add_argument("--out", default="predictions")
    sp.add_argument("--score", type=float, default=0.5)
    sp.add_argument("--batch", type=int, default=8)
    sp.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    sp.add_argument("--no-draw", action="store_true")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_predict)

    sp = sub.add_parser("export", help="export to ONNX / TorchScript / safetensors with a parity check")
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--format", required=True, choices=["onnx", "torchscript", "safetensors"])
    sp.add_argument("--with-postprocess", action="store_true", help="put decoding and NMS in the graph")
    sp.add_argument("--out", default=None)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("import-weights", help="convert torchvision / amdegroot / torchcv SSD weights")
    sp.add_argument("--from", dest="source", required=True, choices=["torchvision", "amdegroot", "torchcv"])
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
        print(f"ssdkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ssdkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
