"""Tiled inference: the windows of one or many images through :meth:`Detector.step` in full batches, boxes back in
image pixels, and the merge of overlapping windows' detections.

Flow (DESIGN.md; the grid and the pixel map are :mod:`ssdkit.data.tiles`)::

    images ──to_image_tensor──▶ [3, H, W] ──tile_grid (+ the whole image with full_image)──▶ windows, streamed
        ──crop (a view), resize_batch to [B, 3, S, S], B = batch_size windows of any images──▶ Detector.step
        ──window_to_image──▶ boxes xyxy image px, per image ──merge_tiled──▶ best max_detections per image

Only ``batch_size`` resized windows exist at a time, and an image is decoded when its first window is due, so an
8000 x 8000 image costs its own pixels plus one batch. An image of one window goes through exactly the untiled
arithmetic (resize, step, ``x W / S``) and no merge, so its detections equal untiled inference bit for bit.

The merge of the windows' detections is :mod:`ssdkit.merge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ssdkit.data.preprocess import resize_batch, to_image_tensor
from ssdkit.data.tiles import TileSpec, tile_grid, window_to_image
from ssdkit.merge import merge_tiled

__all__ = ["image_windows", "detect_tiled"]


def image_windows(height: int, width: int, spec: TileSpec) -> torch.Tensor:
    """The windows tiled inference runs for an image: :func:`~ssdkit.data.tiles.tile_grid`, then the whole image
    when ``spec.full_image`` and there is more than one window. ``Tensor[T, 4]`` int64 ``(x0, y0, x1, y1)``."""
    grid = tile_grid(height, width, spec)
    if spec.full_image and len(grid) > 1:
        grid = torch.cat([grid, torch.tensor([[0, 0, width, height]])])
    return grid


class _Pending:
    """One image's windows and the detections of those already run."""

    def __init__(self, height: int, width: int, windows: torch.Tensor) -> None:
        self.height, self.width, self.windows = height, width, windows
        self.parts: list[tuple[torch.Tensor, ...]] = []
        self.done = 0


def detect_tiled(detector: Any, images: Sequence[Any], spec: TileSpec,
                 batch_size: int | None = None) -> list[dict[str, Any]]:
    """Tiled detection of ``images`` (anything :func:`~ssdkit.data.preprocess.to_image_tensor` takes) with
    ``detector`` (a :class:`~ssdkit.inference.Detector`): windows of all images in full batches of ``batch_size``
    (default: the detector's) through ``detector.step``, merged per image, the best ``max_detections`` kept.

    Returns:
        Per image the :meth:`Detector.__call__` dict: ``boxes`` ``Tensor[K, 4]`` float32 xyxy original pixels,
        ``labels`` ``Tensor[K]`` int64, ``scores`` ``Tensor[K]`` (decreasing), ``names``; on the CPU.
    """
    size = detector.input_size
    bs = batch_size or detector.batch_size
    limit = int(detector.settings["max_detections"])
    results: list[dict[str, Any] | None] = [None] * len(images)
    pending: dict[int, _Pending] = {}
    crops: list[torch.Tensor] = []
    owners: list[tuple[int, int]] = []  # (image, window) of each crop

    def finish(index: int) -> None:
        p = pending.pop(index)
        boxes, scores, labels, wid = (torch.cat(t) for t in zip(*p.parts))
        if len(p.windows) > 1:
            boxes, scores, labels = merge_tiled(boxes, scores, labels, wid, p.windows, p.height, p.width, spec)
            boxes, scores, labels = boxes[:limit], scores[:limit], labels[:limit]
        results[index] = {"boxes": boxes, "labels": labels, "scores": scores,
                          "names": [detector.class_names[c] for c in labels.tolist()]}

    def run() -> None:
        dets = detector.step(resize_batch(crops, size))
        counts = [len(d["scores"]) for d in dets]
        wins = torch.stack([pending[i].windows[w] for i, w in owners])
        boxes = window_to_image(torch.cat([d["boxes"] for d in dets]),
                                wins.repeat_interleave(torch.tensor(counts), 0), size).cpu()
        scores = torch.cat([d["scores"] for d in dets]).cpu()
        labels = torch.cat([d["labels"] for d in dets]).cpu()
        for (i, w), b, s, lab in zip(owners, boxes.split(counts), scores.split(counts), labels.split(counts)):
            p = pending[i]
            p.parts.append((b, s, lab, torch.full((len(s),), w, dtype=torch.int64)))
            p.done += 1
            if p.done == len(p.windows):
                finish(i)
        crops.clear()
        owners.clear()

    for index, image in enumerate(images):
        tensor = to_image_tensor(image)
        height, width = int(tensor.shape[1]), int(tensor.shape[2])
        windows = image_windows(height, width, spec)
        pending[index] = _Pending(height, width, windows)
        for w, (x0, y0, x1, y1) in enumerate(windows.tolist()):
            crops.append(tensor[:, y0:y1, x0:x1])  # a view: the window is resized when its batch runs
            owners.append((index, w))
            if len(crops) == bs:
                run()
        del tensor
    if crops:
        run()
    return results  # type: ignore[return-value]
