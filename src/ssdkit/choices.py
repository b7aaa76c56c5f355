"""The one table of names ssdkit accepts: the CLI's ``choices=``, config validation and the library read it here.

A name added here is offered by the CLI help, accepted by the configs and must be handled by the library; a
test runs every command with every choice listed here, so an advertised choice can never be rejected.
"""

from __future__ import annotations

from ssdkit import arch

#: Dataset formats of :func:`ssdkit.data.readers.read_dataset` (``list`` is the CLI spelling of ``listfile``).
DATA_FORMATS = ("voc", "coco", "yolo", "listfile", "vedai")
DATA_FORMAT_ALIASES = {"list": "listfile"}
#: What ``--format`` offers: every reader name and its aliases.
DATA_FORMAT_CHOICES = (*DATA_FORMATS, *DATA_FORMAT_ALIASES)

#: The data spec of the built-in synthetic dataset (``--data shapes``, ``data.train: shapes``).
SHAPES = "shapes"

#: Formats ``ssdkit make-shapes`` writes (:data:`ssdkit.data.writers.WRITE_FORMATS` and the ``list`` alias).
SHAPES_FORMATS = ("voc", "coco", "yolo", "listfile", "list")

#: Detection metrics: VOC2007 11-point AP@0.5, VOC2010+ area AP@0.5, COCO AP@[.5:.95] (pycocotools).
METRICS = ("voc07", "voc", "coco")

#: Named decode settings (DESIGN.md habit 9): thresholds come from here, never from literals at call sites.
DECODE_PRESETS: dict[str, dict[str, float | int]] = {
    # the seed notebook's threshold: what a person wants to look at
    "visualize": {"score_thresh": 0.6, "nms_thresh": 0.45, "top_k": 200, "max_detections": 200},
    # mAP needs the low-score tail
    "evaluate": {"score_thresh": 0.01, "nms_thresh": 0.45, "top_k": 200, "max_detections": 200},
}
#: The preset ``ssdkit predict`` uses (its ``--score`` overrides the preset's score threshold).
PREDICT_PRESET = "visualize"
#: The preset every mAP computation uses.
EVAL_PRESET = "evaluate"

#: Model presets of :data:`ssdkit.config.PRESETS` (``--model``, ``model.preset``).
MODEL_PRESETS = ("ssd300", "ssd512", "ssd300_small", "ssd300_tiny")
#: Backbone layouts the model code builds (``model.arch``), from the layer table.
ARCHS = arch.ARCHS
#: Input pixel channel orders (``model.channel_order``).
CHANNEL_ORDERS = ("rgb", "bgr")

#: ``train.*`` choices.
SCHEDULES = ("multistep", "cosine", "constant")
OPTIMIZERS = ("sgd", "adamw")
AMP_MODES = ("none", "bf16", "fp16")

#: Devices (``cuda:N`` is accepted too).
DEVICES = ("auto", "cpu", "cuda")

#: Tiled inference: how detections of overlapping windows are merged, and how two boxes are matched.
TILE_MERGES = ("nms", "nmm", "greedy_nmm")
TILE_MATCHES = ("iou", "ios")
#: Tiled training: what happens to an object too little of which is inside a window (``data.tile_cut``).
TILE_CUTS = ("drop", "ignore")

#: ``ssdkit export --format`` (torchscript: deprecated upstream in favour of torch.export, kept while it lives).
EXPORT_FORMATS = ("onnx", "torchscript", "safetensors", "pt2", "openvino")
#: Formats that can be written as int8 (``--int8 --calib DATA``).
INT8_FORMATS = ("onnx", "openvino")

#: Inference precision of an eager model (``--precision``).
PRECISIONS = ("fp32", "bf16")

#: ``ssdkit benchmark --formats``.
BENCHMARK_FORMATS = ("eager", "eager-bf16", "compile", "onnx", "onnx-int8", "openvino", "openvino-int8", "pt2")

#: Files ``ssdkit predict`` reads as videos (by extension).
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")

#: ``ssdkit import-weights --from``.
IMPORT_SOURCES = ("torchvision", "amdegroot", "torchcv")


def data_format(name: str | None) -> str | None:
    """The reader name of a ``--format`` / ``data.format`` value (aliases resolved; None stays None)."""
    return DATA_FORMAT_ALIASES.get(name, name) if name is not None else None
