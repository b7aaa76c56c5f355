"""The ``ssdkit`` commands: each calls one library function and prints its result (``--json``: strict JSON)."""

from __future__ import annotations

import json
import math
import sys

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
    from pathlib import Path

    from ssdkit.config import load_config
    from ssdkit.engine.train import train

    config, overrides = args.config, list(args.overrides)
    if config is not None and "=" in config and not Path(config).exists():  # `train --data X key=value`
        config, overrides = None, [config, *overrides]
    if args.data is not None:
        if config is not None:
            raise SSDKitError("train: give a CONFIG.yaml or --data PATH, not both (use key=value to change values)")
        from ssdkit.engine.autoconfig import auto_config

        cfg, notes = auto_config(args.data, val_data=args.val_data, model=args.model, epochs=args.epochs,
                                 batch=args.batch, tile=args.tile, format=args.format, overrides=overrides)
        if not args.json:
            for note in notes:
                print(f"ssdkit train: {note}")
    elif config is None:
        raise SSDKitError("train: give a CONFIG.yaml, or --data PATH to configure the run from the data")
    else:
        cfg = load_config(config, overrides)
    summary = train(cfg, resume=args.resume, progress=not args.no_progress, nproc=args.nproc, exist_ok=args.exist_ok)
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

    summary = run_demo(args.out, quick=args.quick, progress=not args.json, exist_ok=args.exist_ok)
    _emit(args, summary, lambda s: None)
    return 0



def _tile(args):
    """The TileSpec of the --tile flags; "auto" without --tile (the model's training windows, if any); None for
    --tile 0 (whole images)."""
    if args.tile is None:
        return "auto"
    if args.tile == 0:
        return None
    from ssdkit.data.tiles import TileSpec

    return TileSpec(size=args.tile, overlap=args.tile_overlap, full_image=args.tile_full_image,
                    merge=args.tile_merge, match=args.tile_match)
