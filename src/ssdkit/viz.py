"""Drawing detections on images and saving plots (PR curves, training curves, anchor fit, error analysis).

Plots use matplotlib's object API with the Agg canvas (``matplotlib.figure.Figure``), never ``pyplot``: no window
opens, no global figure state, safe in headless jobs. Every file is written atomically (temp file in the same
folder, then ``os.replace``), so a crash never leaves half an image.
"""

from __future__ import annotations

import colorsys
import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssdkit.errors import SSDKitError
from ssdkit.utils import atomic_write_bytes

__all__ = [
    "class_color",
    "draw_detections",
    "save_image",
    "plot_pr_curves",
    "plot_training_curves",
    "plot_anchor_fit",
]

# tab10 then a few more distinct colours; classes beyond the table get golden-ratio hues.
_PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (255, 215, 0), (0, 128, 128), (128, 0, 0), (0, 0, 128), (170, 255, 195),
    (128, 128, 0), (255, 99, 71), (0, 255, 127), (106, 90, 205), (255, 20, 147),
]  # fmt: skip


def class_color(label: int) -> tuple[int, int, int]:
    """A fixed RGB colour for a 0-based class label (the same in every image and run)."""
    label = int(label)
    if 0 <= label < len(_PALETTE):
        return _PALETTE[label]
    h = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: torch.Tensor,
    boxes: Any,
    labels: Any,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    score_format: str = "{:.2f}",
    width: int = 2,
) -> torch.Tensor:
    """Draw boxes with ``"name 0.87"`` captions, one stable colour per class.

    Args:
        image: ``Tensor[3, H, W]`` uint8 (RGB).
        boxes: ``[K, 4]`` xyxy pixels of ``image``.
        labels: ``[K]`` int 0-based classes.
        scores: optional ``[K]`` float, appended to captions with ``score_format``.
        class_names: optional names indexed by label (the label number is shown otherwise).
        width: line width in pixels.

    Returns:
        A new ``Tensor[3, H, W]`` uint8; ``image`` is not modified.
    """
    from torchvision.utils import draw_bounding_boxes

    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        desc = f"{image.dtype} {list(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise SSDKitError(f"image: expected a uint8 Tensor[3, H, W], got {desc}")
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).cpu()
    labels = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).cpu()
    if len(labels) != len(boxes):
        raise SSDKitError(f"labels: expected {len(boxes)} labels (one per box), got {len(labels)}")
    if scores is not None:
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1).cpu()
        if len(scores) != len(boxes):
            raise SSDKitError(f"scores: expected {len(boxes)} scores (one per box), got {len(scores)}")
    image = image.cpu()
    if len(boxes) == 0:
        return image.clone()
    captions = []
    for k, c in enumerate(labels.tolist()):
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        captions.append(f"{name} {score_format.format(float(scores[k]))}" if scores is not None else name)
    colors = [class_color(c) for c in labels.tolist()]
    # torchvision rejects inverted boxes; an inverted prediction is still worth seeing, so draw it normalised
    fixed = torch.stack(
        [torch.minimum(boxes[:, 0], boxes[:, 2]), torch.minimum(boxes[:, 1], boxes[:, 3]),
         torch.maximum(boxes[:, 0], boxes[:, 2]), torch.maximum(boxes[:, 1], boxes[:, 3])], 1
    )  # fmt: skip
    return draw_bounding_boxes(image, fixed, labels=captions, colors=colors, width=width)


def _image_format(path: Path) -> str:
    from PIL import Image

    ext = path.suffix.lower()
    formats = Image.registered_extensions()
    if ext not in formats:
        raise SSDKitError(f"{path}: unknown image suffix {ext!r} (use .png, .jpg, ...)")
    return formats[ext]


def save_image(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Save a ``Tensor[3, H, W]`` (or ``[1, H, W]``) uint8 RGB image atomically; format from the suffix."""
    from PIL import Image

    path = Path(path)
    fmt = _image_format(path)
    if (
        not isinstance(image, torch.Tensor)
        or image.dtype != torch.uint8
        or image.dim() != 3
        or image.shape[0] not in (1, 3)
    ):
        desc = f"{image.dtype} {list(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise SSDKitError(f"image: expected a uint8 Tensor[3, H, W], got {desc}")
    arr = image.detach().cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    pil.save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


def _save_figure(fig: Any, path: str | os.PathLike) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    canvas = FigureCanvasAgg(fig)
    if fmt not in canvas.get_supported_filetypes():
        raise SSDKitError(f"{path}: unsupported plot format {fmt!r} (use .png, .pdf, .svg, ...)")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (7.0, 5.0)) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def plot_pr_curves(voc_result: dict, path: str | os.PathLike) -> None:
    """One precision-recall curve per class (AP in the legend), from :func:`ssdkit.metrics.evaluate_voc`'s result.

    Classes without ground truth (AP NaN) are skipped.
    """
    for key in ("precision", "recall", "ap"):
        if key not in voc_result:
            raise SSDKitError(f"voc_result: missing key {key!r} (pass the dict evaluate_voc returns)")
    fig, axes = _figure(size=(8.0, 6.0))
    ax = axes[0, 0]
    for c, name in enumerate(voc_result["ap"]):
        ap = voc_result["ap"][name]
        if ap is None or (isinstance(ap, float) and math.isnan(ap)):
            continue
        rec = np.asarray(voc_result["recall"][name], dtype=float)
        prec = np.asarray(voc_result["precision"][name], dtype=float)
        color = tuple(v / 255 for v in class_color(c))
        ax.plot(rec, prec, color=color, label=f"{name} (AP {ap:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    m = voc_result.get("map")
    ax.set_title(
        f"Precision-recall (mAP {m:.4f})" if isinstance(m, float) and not math.isnan(m) else "Precision-recall"
    )
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", ncol=2 if len(voc_result["ap"]) > 10 else 1, loc="lower left")
    _save_figure(fig, path)


def plot_training_curves(records: Sequence[dict], path: str | os.PathLike) -> None:
    """Two panels: loss parts by iteration (every key ending in ``loss`` of records with ``"iteration"``) and the
    validation mAP over the evaluations (records with ``"map"``; by iteration when they all have one, else by
    epoch) as a line with the best marked; a single evaluation is written as its value, not a lone dot."""
    fig, axes = _figure(1, 2, size=(12.0, 4.5))
    ax_loss, ax_map = axes[0, 0], axes[0, 1]
    found = {k for r in records if "iteration" in r for k in r if k.endswith("loss")}
    loss_keys = sorted(found, key=lambda k: (k != "loss", k))  # the total first
    for k in loss_keys:
        pts = [(r["iteration"], r[k]) for r in records if "iteration" in r and _is_number(r.get(k))]
        if pts:
            x, y = zip(*pts)
            ax_loss.plot(x, y, label=k, marker="o" if len(pts) < 20 else None, markersize=3,
                         linewidth=2.0 if k == "loss" else 1.2)
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Training loss")
    ax_loss.grid(alpha=0.3)
    if loss_keys:
        ax_loss.legend(fontsize="small")
    evals = [r for r in records if _is_number(r.get("map"))]
    by = "iteration" if evals and all("iteration" in r for r in evals) else "epoch"
    pts = [(r[by], r["map"]) for r in evals if by in r]
    metric = next((r["metric"] for r in evals if isinstance(r.get("metric"), str)), None)
    if len(pts) == 1:
        (x0, y0), = pts
        ax_map.text(0.5, 0.55, f"mAP {y0:.4f}", ha="center", va="center", fontsize=22, transform=ax_map.transAxes)
        ax_map.text(0.5, 0.38, f"one evaluation, at {by} {x0}", ha="center", va="center", fontsize=11,
                    color="0.35", transform=ax_map.transAxes)
        ax_map.set_xticks([])
        ax_map.set_yticks([])
    elif pts:
        x, y = zip(*pts)
        ax_map.plot(x, y, marker="o", markersize=4, clip_on=False)
        best = max(range(len(y)), key=lambda i: y[i])
        ax_map.annotate(f"best {y[best]:.4f}", xy=(x[best], y[best]), xytext=(0, 8), textcoords="offset points",
                        ha="center", fontsize=9, color="crimson")
        ax_map.plot([x[best]], [y[best]], marker="o", color="crimson", clip_on=False)
        top = max(y)
        ax_map.set_ylim(0, min(1.0, top * 1.15) if top > 0 else 1.0)
        ax_map.set_xlabel(by)
        ax_map.set_ylabel("mAP")
        ax_map.grid(alpha=0.3)
    else:
        ax_map.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax_map.transAxes)
        ax_map.set_xticks([])
        ax_map.set_yticks([])
    ax_map.set_title(f"Validation mAP ({metric})" if metric else "Validation mAP")
    _save_figure(fig, path)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def plot_anchor_fit(
    object_sizes: Any, default_box_sizes: Sequence[tuple[float, float]], path: str | os.PathLike
) -> None:
    """Scatter of object sizes against default-box sizes, log-log axes.

    Args:
        object_sizes: ``[N, 2]`` (w, h) of the dataset's objects, pixels of the network input.
        default_box_sizes: ``(w, h)`` of each distinct default box shape, same units.
    """
    sizes = np.asarray(object_sizes, dtype=float).reshape(-1, 2)
    anchors = np.asarray(default_box_sizes, dtype=float).reshape(-1, 2)
    fig, axes = _figure(size=(6.5, 6.0))
    ax = axes[0, 0]
    ok = (sizes > 0).all(1)  # log axes cannot show empty boxes
    if ok.any():
        ax.scatter(sizes[ok, 0], sizes[ok, 1], s=4, alpha=0.3, label=f"objects ({int(ok.sum())})")
    good = (anchors > 0).all(1)
    if good.any():
        ax.scatter(anchors[good, 0], anchors[good, 1], s=60, marker="x", color="red",
                   label=f"default boxes ({int(good.sum())})")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("Object sizes vs default boxes")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    _save_figure(fig, path)
