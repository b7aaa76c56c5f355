"""Windows over large images: the grid tiled inference runs on, and the map from window pixels to image pixels.

A small object in a large image shrinks below SSD's smallest default box when the whole image is resized to the
network input (a 20 px car in a 6000 px aerial image is 1 px at 300). Tiled (sliced) inference cuts the image
into overlapping windows at native resolution, runs each window as an image of its own and maps the boxes back::

    image [3, H, W] ──tile_grid──▶ windows [T, 4] (x0, y0, x1, y1) image px, int
        ──crop, resize_image to S x S──▶ Detector.step ──▶ boxes xyxy window-input px (0..S)
        ──window_to_image: p * (window side / S) + offset, per axis──▶ boxes xyxy image px
        ──ssdkit.merge.merge_tiled──▶ one set of detections per image

The grid is SAHI's (``sahi.slicing.get_slice_bboxes``, arXiv 2202.06934): windows of ``size`` px every
``stride = size - int(overlap * size)`` px from the top-left corner, the last row and column moved back to end
exactly at the image edge, and a side shorter than ``size`` covered by one window spanning it (an image smaller
than a window is one window: the whole image). Windows are ``min(size, H) x min(size, W)`` px.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssdkit.choices import TILE_MATCHES, TILE_MERGES
from ssdkit.errors import SSDKitError

__all__ = ["TILE_MERGES", "TILE_MATCHES", "TileSpec", "cut_boxes", "resolve_tile", "tile_grid", "tile_starts",
           "window_to_image"]


# A box side within this fraction of the window side of an inner window edge counts as cut by it: a detector
# trained on whole images puts a truncated object's edge at the border, give or take its regression error.
CUT_TOLERANCE = 0.02


@dataclass(frozen=True)
class TileSpec:
    """How tiled inference cuts images into windows and merges their detections.

    Args:
        size: window side in original image pixels (each window is resized to the model input).
        overlap: fraction of ``size`` neighbouring windows share, in ``[0, 1)`` (``int(overlap * size)`` px).
        full_image: also run the whole image resized to the model input and merge its detections (large objects
            that no window holds); only for images of more than one window.
        merge: ``"nms"`` keeps the best of matching detections; ``"nmm"`` / ``"greedy_nmm"`` merge them into
            the union box with the best score, as SAHI defines them (see :mod:`ssdkit.tiling`).
        match: ``"iou"`` or ``"ios"`` (intersection over the smaller box), the overlap that makes two
            detections of one class a match.
        merge_threshold: overlap at or above which two detections match, in ``(0, 1]``.
        window_aware: ssdkit's window rules (the default): only detections of different windows are matched (the
            decoder's NMS already separated those of one window), and a box cut by an inner window edge gives
            way to the whole box of a neighbouring window that holds the object (partial boxes of an object no
            window holds are merged into their union). False: every detection is matched with every other
            and partial boxes go to the merge as they are, exactly as SAHI's ``get_sliced_prediction`` does
            (for comparisons).

    Raises:
        SSDKitError: a value out of range; the message names the field (``tile.overlap: ...``).
    """

    size: int = 512
    overlap: float = 0.2
    full_image: bool = False
    merge: str = "nms"
    match: str = "iou"
    merge_threshold: float = 0.5
    window_aware: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise SSDKitError(f"tile.size: expected an integer >= 1 (window side in pixels), got {self.size!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)) \
                or not 0 <= self.overlap < 1:
            raise SSDKitError(f"tile.overlap: expected a fraction in [0, 1), got {self.overlap!r}")
        for name in ("full_image", "window_aware"):
            if not isinstance(getattr(self, name), bool):
                raise SSDKitError(f"tile.{name}: expected True or False, got {getattr(self, name)!r}")
        if self.merge not in TILE_MERGES:
            raise SSDKitError(f"tile.merge: expected one of {', '.join(TILE_MERGES)}, got {self.merge!r}")
        if self.match not in TILE_MATCHES:
            raise SSDKitError(f"tile.match: expected one of {', '.join(TILE_MATCHES)}, got {self.match!r}")
        t = self.merge_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1:
            raise SSDKitError(f"tile.merge_threshold: expected a value in (0, 1], got {t!r}")

    @property
    def stride(self) -> int:
        """Pixels between the starts of neighbouring windows: ``size - int(overlap * size)`` (SAHI's), >= 1."""
        return self.size - int(self.overlap * self.size)


def resolve_tile(tile, cfg) -> TileSpec | None:  # noqa: ANN001 - TileSpec | "auto" | None, a Config
    """The tiling to run: ``tile`` itself (a :class:`TileSpec`, or None for whole images), or for ``"auto"`` the
    windows the model was trained on (``cfg.data.tile_size`` / ``tile_overlap`` of its checkpoint; None when it
    trained on whole images or the file does not say)."""
    if tile is None or isinstance(tile, TileSpec):
        return tile
    if tile != "auto":
        raise SSDKitError(f"tile: expected a TileSpec, 'auto' or None, got {tile!r}")
    data = getattr(cfg, "data", None)
    size = getattr(data, "tile_size", None)
    return None if size is None else TileSpec(size=int(size), overlap=float(data.tile_overlap))


def tile_starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts along one axis of ``length`` px: ``0, stride, 2 * stride, ...`` while a window ends inside,
    then ``length - size`` (the last window ends at the edge); ``[0]`` when ``length <= size``."""
    if length <= size:
        return [0]
    return [*range(0, length - size, stride), length - size]


def tile_grid(height: int, width: int, spec: TileSpec) -> torch.Tensor:
    """The windows of a ``width x height`` image.

    Returns:
        ``Tensor[T, 4]`` int64 ``(x0, y0, x1, y1)`` image pixels (``x1``, ``y1`` exclusive), row by row from the
        top-left; each window is ``min(size, W) x min(size, H)`` px and lies inside the image; together they
        cover it. ``T = 1`` (the whole image) when the image is no larger than a window.
    """
    if isinstance(height, bool) or isinstance(width, bool) or int(height) != height or int(width) != width \
            or height < 1 or width < 1:
        raise SSDKitError(f"image: expected a size of at least 1 x 1 pixels, got {width!r} x {height!r}")
    height, width = int(height), int(width)
    ys = torch.tensor(tile_starts(height, spec.size, spec.stride))
    xs = torch.tensor(tile_starts(width, spec.size, spec.stride))
    y0, x0 = torch.meshgrid(ys, xs, indexing="ij")
    x0, y0 = x0.reshape(-1), y0.reshape(-1)
    return torch.stack([x0, y0, x0 + min(spec.size, width), y0 + min(spec.size, height)], 1)


def window_to_image(boxes: torch.Tensor, windows: torch.Tensor, input_size: int) -> torch.Tensor:
    """Boxes of resized windows -> image pixels: ``p * (window side / S) + offset`` per axis, clipped to the window.

    Args:
        boxes: ``Tensor[K, 4]`` float32 xyxy in window-input pixels (``0..S``, as :meth:`Detector.step` gives).
        windows: ``Tensor[K, 4]`` int ``(x0, y0, x1, y1)``, the window of each box (or ``Tensor[4]``, one for all).
        input_size: ``S``, the side windows were resized to.

    Returns:
        ``Tensor[K, 4]`` float32 xyxy image pixels, inside each box's window. With a window at the origin this is
        :meth:`Detector.to_original`'s arithmetic, bit for bit.
    """
    windows = windows.to(boxes.device).reshape(-1, 4)
    side = (windows[:, 2:] - windows[:, :2]).double()  # [K, 2] width, height
    scale = (side / float(input_size)).float().repeat(1, 2)  # the float32 of the exact quotient, as to_original
    limit = side.to(boxes.dtype).repeat(1, 2)
    offset = windows[:, :2].to(boxes.dtype).repeat(1, 2)
    return torch.minimum((boxes * scale).clamp_(min=0), limit) + offset


def cut_boxes(boxes: torch.Tensor, windows: torch.Tensor, height: int, width: int,
              tolerance: float = CUT_TOLERANCE) -> torch.Tensor:
    """Which boxes an inner window edge cuts: a side within ``tolerance x`` the window side of an edge of its
    window that is not on the image border (an edge the object may continue across).

    Args:
        boxes: ``Tensor[K, 4]`` xyxy image pixels. windows: ``Tensor[K, 4]`` each box's window, image pixels.
        height, width: of the image.

    Returns:
        ``Tensor[K]`` bool.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool, device=boxes.device)
    win = windows.to(boxes.device, boxes.dtype).reshape(-1, 4)
    side = (win[:, 2:] - win[:, :2]).repeat(1, 2)
    tol = side * tolerance
    inner = win != torch.tensor([0, 0, width, height], dtype=win.dtype, device=win.device)
    near = torch.cat([boxes[:, :2] <= win[:, :2] + tol[:, :2], boxes[:, 2:] >= win[:, 2:] - tol[:, 2:]], 1)
    return (inner & near).any(1)

