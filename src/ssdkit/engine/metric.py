"""The ignite metric of detection mAP: accumulates per-image detections and ground truths, evaluates at the end.

It is a thin adapter: the numbers come from :mod:`ssdkit.metrics` (the VOC devkit's rules, pycocotools' COCOeval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from ignite.metrics import Metric

from ssdkit.choices import METRICS
from ssdkit.errors import SSDKitError
from ssdkit.metrics import evaluate_coco, evaluate_voc
from ssdkit.metrics.common import check_pair as _check_pair
from ssdkit.metrics.common import resolve_class_names as _class_names

__all__ = ["DetectionMAP"]


def _to_cpu(d: dict) -> dict:
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in d.items()}


class DetectionMAP(Metric):
    """Ignite metric accumulating detections and ground truths, then computing VOC07, VOC or COCO metrics.

    ``update((detections_list, ground_truths_list))`` takes one batch: two lists of per-image dicts (module
    docstring), same length. Everything is kept on CPU; ``compute`` gathers the images of every process
    (``idist.all_gather`` of Python objects) and evaluates them all.

    Args:
        num_classes: number of object classes (no background).
        metric: ``"voc07"`` (11-point), ``"voc"`` (area AP) or ``"coco"`` (pycocotools).
        class_names: optional ``num_classes`` names (result keys).
        iou_threshold, pixel_offset: VOC matching options (see :func:`evaluate_voc`).
        output_transform: maps ``engine.state.output`` to ``(detections_list, ground_truths_list)``.

    ``compute()`` returns the dict of :func:`evaluate_voc` / :func:`evaluate_coco` with a top-level ``"map"``
    (for COCO, ``map = AP``). Attach it under a name that is not a key of that dict (e.g. ``"voc07"``).
    """

    def __init__(
        self,
        num_classes: int,
        metric: str = "voc07",
        class_names: Sequence[str] | None = None,
        iou_threshold: float = 0.5,
        pixel_offset: bool = True,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ):
        if metric not in METRICS:
            raise SSDKitError(f"metric: expected one of {list(METRICS)}, got {metric!r}")
        self.num_classes = int(num_classes)
        self.metric = metric
        self.class_names = _class_names(self.num_classes, class_names)
        self.iou_threshold = iou_threshold
        self.pixel_offset = pixel_offset
        self._detections: list[dict] = []
        self._ground_truths: list[dict] = []
        # skip_unrolling: a batch is one pair of lists of dicts, never to be split per sample by ignite
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    def reset(self) -> None:
        self._detections = []
        self._ground_truths = []

    def update(self, output: tuple[Sequence[dict], Sequence[dict]]) -> None:
        detections, ground_truths = output
        _check_pair(detections, ground_truths)
        self._detections.extend(_to_cpu(d) for d in detections)
        self._ground_truths.extend(_to_cpu(g) for g in ground_truths)

    def compute(self) -> dict:
        import ignite.distributed as idist

        detections, ground_truths = self._detections, self._ground_truths
        if idist.get_world_size() > 1:
            # all_gather of a non-tensor object returns one entry per process (torch.distributed.all_gather_object)
            gathered = idist.all_gather((detections, ground_truths))
            detections = [d for part in gathered for d in part[0]]
            ground_truths = [g for part in gathered for g in part[1]]
        if self.metric == "coco":
            result = evaluate_coco(detections, ground_truths, self.class_names)
            result["map"] = result["AP"]
            return result
        return evaluate_voc(
            detections,
            ground_truths,
            self.num_classes,
            self.class_names,
            iou_threshold=self.iou_threshold,
            use_07_metric=self.metric == "voc07",
            pixel_offset=self.pixel_offset,
        )
