"""The in-memory formats every metric reads, turned into numpy arrays and checked.

N images, K detections and M objects per image:

- a detection set for one image is a dict ``{"boxes": Tensor[K, 4] float xyxy pixels, "labels": Tensor[K] int64
  0-based object classes, "scores": Tensor[K] float}``;
- a ground truth for one image is a dict ``{"boxes": Tensor[M, 4] float xyxy pixels, "labels": Tensor[M] int64
  0-based, "ignore": Tensor[M] bool (optional; VOC difficult / COCO crowd), "image_id" (optional), "size": (h, w)
  (optional)}``.

``detections[i]`` and ``ground_truths[i]`` describe the same image; numpy arrays and lists are accepted wherever a
tensor is. Labels never include background here: ``num_classes`` counts object classes only (the model's
``num_classes`` minus one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ssdkit.errors import SSDKitError

__all__ = ["to_numpy", "gt_arrays", "det_arrays", "check_pair", "check_labels", "resolve_class_names"]


def to_numpy(x: Any, dtype: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    """``x`` (tensor, array or list) as a numpy array of ``dtype``; an empty one gets shape ``[0, *shape_tail]``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x, dtype=dtype)
    if a.size == 0:
        a = a.reshape((0, *shape_tail))
    return a


def gt_arrays(gt: dict, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes [M, 4] float64 xyxy, labels [M] int64, ignore [M] bool)`` of ``ground_truths[i]``."""
    try:
        boxes = to_numpy(gt["boxes"], np.float64, (4,))
        labels = to_numpy(gt["labels"], np.int64)
    except KeyError as e:
        raise SSDKitError(f"ground_truths[{i}]: missing key {e.args[0]!r} (expected 'boxes' and 'labels')") from None
    ignore = to_numpy(gt["ignore"], bool) if gt.get("ignore") is not None else np.zeros(len(labels), bool)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(labels) or len(ignore) != len(labels):
        raise SSDKitError(
            f"ground_truths[{i}]: expected boxes [M, 4], labels [M], ignore [M]; got boxes {list(boxes.shape)}, "
            f"labels {list(labels.shape)}, ignore {list(ignore.shape)}"
        )
    return boxes, labels, ignore


def det_arrays(det: dict, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes [K, 4] float64 xyxy, labels [K] int64, scores [K] float64)`` of ``detections[i]``."""
    try:
        boxes = to_numpy(det["boxes"], np.float64, (4,))
        labels = to_numpy(det["labels"], np.int64)
        scores = to_numpy(det["scores"], np.float64)
    except KeyError as e:
        raise SSDKitError(
            f"detections[{i}]: missing key {e.args[0]!r} (expected 'boxes', 'labels' and 'scores')"
        ) from None
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(labels) or len(scores) != len(labels):
        raise SSDKitError(
            f"detections[{i}]: expected boxes [K, 4], labels [K], scores [K]; got boxes {list(boxes.shape)}, "
            f"labels {list(labels.shape)}, scores {list(scores.shape)}"
        )
    return boxes, labels, scores


def check_pair(detections: Sequence[dict], ground_truths: Sequence[dict]) -> None:
    """Raise unless there is one detection set per ground truth (the same N images)."""
    if len(detections) != len(ground_truths):
        raise SSDKitError(
            f"detections and ground_truths must describe the same images: got {len(detections)} detection sets "
            f"and {len(ground_truths)} ground truths"
        )


def check_labels(labels: np.ndarray, num_classes: int, what: str) -> None:
    """Raise unless every label of ``labels`` ``[K]`` lies in ``[0, num_classes)``; ``what`` names the array."""
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels[(labels < 0) | (labels >= num_classes)][0])
        raise SSDKitError(
            f"{what}: label {bad} outside [0, {num_classes}) (labels are 0-based object classes, no background)"
        )


def resolve_class_names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    """``num_classes`` unique names, the result keys of every metric; default ``"0"``, ``"1"``, ..."""
    if class_names is None:
        return [str(c) for c in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes:
        raise SSDKitError(f"class_names: expected {num_classes} names (num_classes), got {len(names)}")
    if len(set(names)) != len(names):
        raise SSDKitError(f"class_names: names must be unique, got {names}")
    return names
