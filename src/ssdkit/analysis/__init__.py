"""Model and anchor analysis: the seed notebook's questions as functions (one module each).

* :func:`describe` — the notebook's walk through SSD300: extractor layers beside VGG16's, feature-map shapes,
  anchors per location and level, predictor widths, default-box sizes, parameters and FLOPs.
* :func:`anchor_fit` — "do small objects get default boxes?" answered for a dataset: each object's best
  default-box IoU, how many default boxes reach IoU >= 0.5, coverage per size bucket, and a recommended
  config that covers the data.
"""

from ssdkit.analysis.anchor_fit import (
    SIZE_BUCKETS,
    anchor_fit,
    coverage_report,
    default_box_sizes,
    match_stats,
    object_boxes_at_input,
    recommend_config,
)
from ssdkit.analysis.describe import describe, format_description
from ssdkit.analysis.report import anchors_report, format_anchor_fit
from ssdkit.anchors import level_of_default_boxes

__all__ = ["describe", "format_description", "anchor_fit", "anchors_report", "format_anchor_fit", "coverage_report",
           "match_stats", "recommend_config", "default_box_sizes", "level_of_default_boxes", "SIZE_BUCKETS",
           "object_boxes_at_input"]
