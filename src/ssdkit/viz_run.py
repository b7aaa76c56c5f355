"""Pictures of a training run: the labels of the training set, augmented batches, validation predictions.

The style of :mod:`ssdkit.viz` (matplotlib's object API on an Agg canvas, never ``pyplot``; one colour per class
from :func:`ssdkit.viz.class_color`; atomic writes). What :mod:`ssdkit.engine.runfiles` puts in a run folder:

==========================  ===================================================================================
``plot_labels``             ``labels.png``: boxes per class, box centres, box width x height (fractions of the
                            image), object sizes in pixels with COCO's small / medium / large bounds
``batch_grid``              ``train_batch<k>.jpg``: a training batch as the network sees it (augmented, resized),
                            each image with its boxes and class names
``predictions_side_by_side``  ``val_predictions.jpg``: validation images, ground truth left, predictions right
==========================  ===================================================================================
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ssdkit.viz import _figure, _save_figure, class_color

__all__ = ["plot_labels", "batch_grid", "drawn_predictions", "predictions_side_by_side"]

_SIZE_BOUNDS = (32.0, 96.0)  # COCO's small / medium / large object bounds (sqrt of the area, pixels)


def _density(fig: Any, ax: Any, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str, title: str,
             invert_y: bool) -> None:
    """A 2-D histogram over the unit square (white where empty) with a colour bar of box counts."""
    import matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator

    if len(x):
        cmap = ListedColormap(matplotlib.colormaps["Blues"](np.linspace(0.25, 1.0, 256)))
        *_, im = ax.hist2d(np.clip(x, 0, 1), np.clip(y, 0, 1), bins=40 if len(x) > 400 else 20,
                           range=[[0, 1], [0, 1]], cmap=cmap, cmin=1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="boxes", ticks=MaxNLocator(6, integer=True))
    else:
        ax.text(0.5, 0.5, "no boxes", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlim=(0, 1), ylim=(1, 0) if invert_y else (0, 1), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)


def plot_labels(class_names: Sequence[str], labels: Any, boxes: Any, image_sizes: Any, path: str | os.PathLike,
                num_images: int | None = None) -> None:
    """Four panels on the training annotations (no image is read).

    Args:
        class_names: the C object class names, in label order.
        labels: ``[N]`` 0-based classes of every box.
        boxes: ``[N, 4]`` xyxy pixels of each box's own image.
        image_sizes: ``[N, 2]`` ``(width, height)`` of each box's image.
        num_images: images in the set, for the title.
    """
    from matplotlib.ticker import MaxNLocator

    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2).clip(min=1.0)
    names = [str(n) for n in class_names]
    c = len(names)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    fig, axes = _figure(2, 2, size=(13.0, 10.5))

    ax = axes[0, 0]
    counts = np.bincount(labels[(labels >= 0) & (labels < c)], minlength=c) if c else np.zeros(0, int)
    bars = ax.bar(range(c), counts, color=[tuple(v / 255 for v in class_color(k)) for k in range(c)])
    ax.set_xticks(range(c), labels=names, rotation=90 if c > 8 else 0, fontsize=9 if c <= 30 else 6)
    if c <= 30:
        ax.bar_label(bars, fontsize=8, padding=2)
    ax.set(ylabel="boxes", title=f"Boxes per class ({int(counts.sum())} boxes)")
    ax.margins(y=0.12)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", alpha=0.3)

    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 / sizes[:, 0], (boxes[:, 1] + boxes[:, 3]) / 2 / sizes[:, 1]
    _density(fig, axes[0, 1], cx, cy, "x / image width", "y / image height", "Box centres (image top at the top)",
             invert_y=True)
    _density(fig, axes[1, 0], w / sizes[:, 0], h / sizes[:, 1], "width / image width", "height / image height",
             "Box width x height", invert_y=False)

    ax = axes[1, 1]
    side = np.sqrt(np.clip(w * h, 0, None))
    side = side[side > 0]
    if len(side):
        lo, hi = max(float(side.min()), 1.0), max(float(side.max()), 2.0)
        bins = int(np.clip(np.sqrt(len(side)) * 2, 8, 50))
        ax.hist(side, bins=np.geomspace(lo, hi * 1.001, bins + 1), color="#4c72b0", edgecolor="white", linewidth=0.5)
        ax.set_xscale("log")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        for bound, name in zip(_SIZE_BOUNDS, ("small | medium", "medium | large")):
            ax.axvline(bound, color="crimson", linestyle="--", linewidth=1)
            ax.text(bound, 0.98, f" {name}", color="crimson", fontsize=8, va="top", rotation=90,
                    transform=ax.get_xaxis_transform())
    else:
        ax.text(0.5, 0.5, "no boxes", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="object size: sqrt(width x height), pixels of its image", ylabel="boxes",
           title="Object sizes (COCO bounds 32 and 96 px)")
    ax.grid(alpha=0.3)
    images = f" in {num_images} images" if num_images is not None else ""
    fig.suptitle(f"Training labels: {len(labels)} boxes{images}, {c} classes")
    fig.tight_layout()
    _save_figure(fig, path)


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_size(draw: Any, text: str, font: Any) -> tuple[int, int, int]:
    """Width, height and top offset of ``text`` in ``font``."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top, top


def _draw_boxes(image: torch.Tensor, boxes: Any, labels: Any, class_names: Sequence[str], scores: Any = None,
                scale: float = 1.0, captions: Sequence[str] | None = None) -> Any:
    """A PIL image of ``image`` (``Tensor[3, H, W]`` uint8) resized by ``scale``, with ``boxes`` (``[K, 4]`` xyxy
    pixels of ``image``) in their class colours and a caption on a filled band of that colour above each box
    (inside it at the top edge), legible on any background."""
    from PIL import Image, ImageDraw

    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().cpu().numpy())
    if scale != 1.0:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BILINEAR)
    draw = ImageDraw.Draw(pil)
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu() * scale
    labels = torch.as_tensor(labels).reshape(-1).tolist()
    font = _font(11 if pil.height < 400 else 13)
    width = 2 if pil.height < 600 else 3
    for k, (box, c) in enumerate(zip(boxes.tolist(), labels)):
        x0, y0, x1, y1 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])
        color = class_color(int(c))
        draw.rectangle((x0, y0, x1, y1), outline=color, width=width)
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        text = captions[k] if captions is not None else name
        if scores is not None:
            text += f" {float(scores[k]):.2f}"
        tw, th, top = _text_size(draw, text, font)
        ty = y0 - th - 4 if y0 - th - 4 >= 0 else y0 + width
        draw.rectangle((x0, ty, x0 + tw + 4, ty + th + 4), fill=color)
        dark = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2] < 150
        draw.text((x0 + 2, ty + 2 - top), text, fill=(255, 255, 255) if dark else (0, 0, 0), font=font)
    return pil


def _titled(pil: Any, title: str) -> Any:
    """``pil`` under a white band holding ``title``."""
    from PIL import Image, ImageDraw

    font = _font(13)
    draw = ImageDraw.Draw(pil)
    _, th, top = _text_size(draw, title, font)
    out = Image.new("RGB", (pil.width, pil.height + th + 8), (255, 255, 255))
    out.paste(pil, (0, th + 8))
    ImageDraw.Draw(out).text((3, 4 - top), title, fill=(0, 0, 0), font=font)
    return out


def _mosaic(tiles: Sequence[Any], columns: int, gap: int = 6) -> torch.Tensor:
    """PIL ``tiles`` in rows of ``columns`` on white (cells as large as the largest tile), as ``Tensor[3, H, W]``."""
    from PIL import Image

    cw, ch = max(t.width for t in tiles), max(t.height for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    out = Image.new("RGB", (columns * cw + (columns + 1) * gap, rows * ch + (rows + 1) * gap), (255, 255, 255))
    for k, t in enumerate(tiles):
        out.paste(t, (gap + (k % columns) * (cw + gap), gap + (k // columns) * (ch + gap)))
    return torch.from_numpy(np.asarray(out).copy()).permute(2, 0, 1)


def _scale_for(h: int, w: int, longest: int) -> float:
    """Shown with the longer side at ``longest`` pixels: small images enlarged (up to 4x), large ones shrunk."""
    return min(longest / max(h, w), 4.0)


def batch_grid(images: torch.Tensor, targets: Sequence[dict], class_names: Sequence[str],
               max_images: int = 16, longest: int = 300) -> torch.Tensor:
    """A grid of the first ``max_images`` images of a training batch with their boxes and class names.

    Args:
        images: ``Tensor[B, 3, S, S]`` uint8 RGB, as the loader gives them (augmented, resized).
        targets: the ``B`` target dicts (``boxes [M, 4]`` xyxy pixels of the batch images, ``labels [M]``,
            ``ignore [M]``, ``image_id``); ignored boxes are captioned ``"name (ignored)"``.
        class_names: names of the 0-based labels.
        longest: each image is shown ``longest`` pixels wide.

    Returns:
        ``Tensor[3, H, W]`` uint8, tiles in rows of ``ceil(sqrt(n))`` on white, each titled with its image id and
        box count.
    """
    n = min(len(targets), int(images.shape[0]), max_images)
    if n == 0:
        return torch.full((3, 64, 64), 255, dtype=torch.uint8)
    tiles = []
    for image, t in zip(images[:n].cpu(), targets[:n]):
        labels = t["labels"].cpu().long().tolist()
        ignore = t.get("ignore")
        ignore = ignore.cpu().tolist() if ignore is not None and len(ignore) == len(labels) else [False] * len(labels)
        captions = [(class_names[c] if 0 <= c < len(class_names) else str(c)) + (" (ignored)" if i else "")
                    for c, i in zip(labels, ignore)]
        pil = _draw_boxes(image, t["boxes"], labels, class_names, scale=_scale_for(*image.shape[-2:], longest),
                          captions=captions)
        tiles.append(_titled(pil, f"{t.get('image_id', '')}  ({len(labels)} box{'' if len(labels) == 1 else 'es'})"))
    return _mosaic(tiles, math.ceil(math.sqrt(n)))


def drawn_predictions(scores: torch.Tensor, num_objects: int, score_threshold: float,
                      max_boxes: int = 20) -> tuple[torch.Tensor, int]:
    """Which predictions a preview draws: those scoring above ``score_threshold``, best first, at most
    ``max(max_boxes, 2 * num_objects)`` (a dense image of small objects shows them all). -> (indices, how many
    scored above the threshold)."""
    order = torch.argsort(scores, descending=True, stable=True)
    above = order[scores[order] > score_threshold]
    return above[:max(max_boxes, 2 * num_objects)], len(above)


def predictions_side_by_side(pairs: Sequence[tuple[torch.Tensor, dict, dict]], class_names: Sequence[str],
                             score_threshold: float, longest: int = 400, max_boxes: int = 20) -> torch.Tensor:
    """Rows of ``ground truth | predictions`` for validation images.

    Args:
        pairs: ``(image Tensor[3, H, W] uint8, ground truth {"boxes" [M, 4], "labels" [M], "image_id"},
            detections {"boxes" [K, 4], "labels" [K], "scores" [K]})``, boxes in the image's pixels.
        score_threshold: predictions drawn: score above it, the highest scores first, at most ``max_boxes`` or,
            in an image with more objects than that (dense small objects), twice its ground-truth count.
        longest: each image is shown with its longer side at this many pixels (small images enlarged up to 4x).

    Returns:
        ``Tensor[3, H, W]`` uint8: one row per pair, titled ``<id>: ground truth (M)`` and ``predictions (K,
        score > t)``, on white.
    """
    tiles = []
    for image, gt, det in pairs:
        scores = torch.as_tensor(det["scores"]).cpu().float().reshape(-1)
        gt_labels = torch.as_tensor(gt["labels"]).reshape(-1)
        keep, above = drawn_predictions(scores, len(gt_labels), score_threshold, max_boxes)
        scale = _scale_for(*image.shape[-2:], longest)
        left = _draw_boxes(image, gt["boxes"], gt_labels, class_names, scale=scale)
        right = _draw_boxes(image, torch.as_tensor(det["boxes"]).reshape(-1, 4)[keep],
                            torch.as_tensor(det["labels"]).reshape(-1)[keep], class_names, scores[keep], scale=scale)
        tiles.append(_titled(left, f"{gt.get('image_id', '')}: ground truth ({len(gt_labels)})"))
        shown = f"{len(keep)}" if len(keep) == above else f"best {len(keep)} of {above}"
        tiles.append(_titled(right, f"predictions ({shown}, score > {score_threshold:.2f})"))
    if not tiles:
        return torch.full((3, 64, 64), 255, dtype=torch.uint8)
    return _mosaic(tiles, 2)
