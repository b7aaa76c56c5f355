"""Detection metrics: VOC07 11-point AP, VOC2010+ area AP, COCO AP through pycocotools.

The metric names ``ssdkit.choices.METRICS`` lists map to these functions: ``"voc07"`` and ``"voc"`` to
:func:`evaluate_voc` (``use_07_metric`` True / False), ``"coco"`` to :func:`evaluate_coco`.

==========  ===================================================================================================
module      responsibility
==========  ===================================================================================================
common      the in-memory formats (detection sets, ground truths per image) turned into checked numpy arrays
voc         VOC AP exactly as the VOC devkit computes it (11-point and area AP, the devkit's greedy matching)
coco        pycocotools glue: in-memory data to a COCO dataset and results list, ``COCOeval``'s numbers, size ranges
errors      a detection confusion matrix; precision / recall / F1 by score threshold and the F1-optimal threshold
tide        the TIDE error breakdown (dAP of Cls, Loc, Both, Dupe, Bkg, Miss; FalsePos, FalseNeg), as ``tidecv``
files       the same metrics of a COCO instances file and a COCO results file (:mod:`ssdkit.data.coco_json`)
report      everything above for one dataset as PNG + JSON files and a ``report.md``
==========  ===================================================================================================
"""

from ssdkit.metrics.coco import (
    COCO_BACKENDS,
    COCO_SIZE_RANGES,
    COCO_STAT_NAMES,
    detections_to_coco_results,
    evaluate_coco,
)
from ssdkit.metrics.errors import confusion_matrix, precision_recall_f1
from ssdkit.metrics.files import evaluate_coco_files, evaluate_tide_files, evaluate_voc_files, load_files
from ssdkit.metrics.report import write_report
from ssdkit.metrics.tide import TIDE_MAIN_ERRORS, TIDE_SPECIAL_ERRORS, evaluate_tide
from ssdkit.metrics.voc import evaluate_voc, voc_ap

__all__ = [
    "voc_ap",
    "evaluate_voc",
    "evaluate_coco",
    "evaluate_coco_files",
    "evaluate_voc_files",
    "load_files",
    "evaluate_tide",
    "evaluate_tide_files",
    "confusion_matrix",
    "precision_recall_f1",
    "write_report",
    "detections_to_coco_results",
    "COCO_STAT_NAMES",
    "COCO_SIZE_RANGES",
    "COCO_BACKENDS",
    "TIDE_MAIN_ERRORS",
    "TIDE_SPECIAL_ERRORS",
]
