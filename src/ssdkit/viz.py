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
    "plot_confusion_matrix",
    "plot_pr_f1",
    "plot_tide",
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


def _require(result: dict, keys: Sequence[str], producer: str) -> None:
    for key in keys:
        if key not in result:
            raise SSDKitError(f"result: missing key {key!r} (pass the dict {producer} returns)")


def _matrix_panel(fig: Any, ax: Any, values: np.ndarray, text: Any, names: Sequence[str], norm: Any, title: str,
                  label: str, font: float, integer: bool) -> None:  # fmt: skip
    """One heat map of a ``[C + 1, C + 1]`` confusion matrix (background last): 0 white, NaN rows grey."""
    import matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator

    # Blues without its near-white end, so that a count of 1 reads as blue against the white of 0
    cmap = ListedColormap(matplotlib.colormaps["Blues"](np.linspace(0.18, 1.0, 256))).with_extremes(bad=(1, 1, 1, 0))
    n = len(names)
    for r in np.flatnonzero(np.isnan(values).all(1)):  # a class without objects: its row is undefined
        ax.axhspan(r - 0.5, r + 0.5, color="0.85", zorder=0)
    im = ax.imshow(np.ma.masked_where(~(values > 0), values), cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xticks(range(n), labels=names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels=names, fontsize=font)
    ax.set(xlabel="predicted class (background: missed object)", ylabel="true class (background: false positive)",
           title=title)  # fmt: skip
    edges = np.arange(n + 1) - 0.5  # cell borders: two line collections (minor ticks would be 4n artists)
    ax.hlines(edges, -0.5, n - 0.5, color="0.9", linewidth=0.5)
    ax.vlines(edges, -0.5, n - 0.5, color="0.9", linewidth=0.5)
    for line in (ax.axhline, ax.axvline):  # the background row and column are not classes: set them off
        line(n - 1.5, color="0.3", linewidth=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label=label, ticks=MaxNLocator(6, integer=integer))
    if text is not None:
        for (r, c), t in np.ndenumerate(text):
            if t:
                dark = norm(values[r, c]) > 0.55
                ax.text(c, r, t, ha="center", va="center", fontsize=font, color="white" if dark else "black")


def plot_confusion_matrix(result: dict, path: str | os.PathLike) -> None:
    """Heat maps of :func:`ssdkit.metrics.confusion_matrix`'s result: counts, and rows normalised to 1.

    Rows are true classes, columns predicted classes; the last row / column is background (false positives /
    missed objects). Counts use a square-root colour scale; cells carry numbers up to 30 classes; the two maps
    stand side by side up to 30 classes, one above the other beyond.
    """
    _require(result, ("counts", "normalized", "class_names"), "confusion_matrix")
    from matplotlib.colors import Normalize, PowerNorm

    counts = np.asarray(result["counts"], dtype=float)
    normalized = np.asarray(result["normalized"], dtype=float)
    names = [str(n) for n in result["class_names"]]
    n = len(names)
    if counts.shape != (n, n) or normalized.shape != (n, n):
        raise SSDKitError(f"result: counts and normalized must be [{n}, {n}] (one row per class name)")
    side = min(max(0.22 * n + 3.0, 5.5), 16.0)
    font = 9.0 if n <= 12 else 7.0 if n <= 31 else 5.5
    wide = n <= 31
    fig, axes = _figure(1 if wide else 2, 2 if wide else 1, size=(2 * side + 2, side) if wide else (side + 1, 2 * side))
    count_text = np.where(counts > 0, counts.astype(np.int64).astype(str), "") if n <= 31 else None
    norm_text = np.where(normalized > 0, np.char.mod("%.2f", np.nan_to_num(normalized)), "") if n <= 31 else None
    where = [f"score > {result['score_threshold']:.2f}"] if result.get("score_threshold") is not None else []
    where += [f"IoU > {result['iou_threshold']:.2f}"] if result.get("iou_threshold") is not None else []
    suffix = f" ({', '.join(where)})" if where else ""
    _matrix_panel(fig, axes.flat[0], counts, count_text, names, PowerNorm(0.5, 0.0, max(float(counts.max()), 1.0)),
                  f"Confusion matrix: counts{suffix}", "count (square-root colour scale)", font, True)  # fmt: skip
    _matrix_panel(fig, axes.flat[1], normalized, norm_text, names, Normalize(0.0, 1.0),
                  "Row-normalised: where the objects of each class go", "fraction of the row", font, False)  # fmt: skip
    fig.tight_layout()
    _save_figure(fig, path)


def plot_pr_f1(result: dict, path: str | os.PathLike) -> None:
    """Precision, recall and F1 against the score threshold (:func:`ssdkit.metrics.precision_recall_f1`).

    Three panels; overall (micro) bold black, each class thin in its colour, the overall F1-optimal threshold as a
    dashed line labelled with its F1, precision and recall. Per-class lines get a legend up to 20 classes.
    """
    _require(result, ("thresholds", "overall", "per_class"), "precision_recall_f1")
    t = np.asarray(result["thresholds"], dtype=float)
    per_class = result["per_class"]
    overall = result["overall"]
    fig, axes = _figure(1, 3, size=(16.0, 5.0))
    thin = {"linewidth": 0.8, "alpha": 0.6} if len(per_class) <= 20 else {"linewidth": 0.5, "alpha": 0.25}
    best = overall.get("best_threshold")
    for ax, key, title in zip(axes[0], ("precision", "recall", "f1"), ("Precision", "Recall", "F1")):
        for c, (name, curve) in enumerate(per_class.items()):
            color = tuple(v / 255 for v in class_color(c))
            ax.plot(t, np.asarray(curve[key], dtype=float), color=color, label=name, **thin)
        ax.plot(t, np.asarray(overall[key], dtype=float), color="black", linewidth=2.5, label="all classes")
        ax.set_xlim(float(t.min()), float(t.max()) if t.max() > t.min() else float(t.min()) + 1.0)
        ax.set_ylim(0, 1.02)
        ax.set(xlabel="score threshold (detections kept: score > threshold)", title=title)
        ax.grid(alpha=0.3)
        if best is not None:
            ax.axvline(best, color="crimson", linestyle="--", linewidth=1.2)
    if best is not None:
        f1, p, r = overall["best_f1"], overall["best_precision"], overall["best_recall"]
        axes[0, 2].plot([best], [f1], marker="o", color="crimson")
        axes[0, 2].annotate(
            f"best {best:.2f}\nF1 {f1:.3f}\nP {p:.3f}, R {r:.3f}", xy=(best, f1), xytext=(0.97, 0.97),
            textcoords="axes fraction", ha="right", va="top", fontsize=9, color="crimson",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "crimson"},
            arrowprops={"arrowstyle": "->", "color": "crimson"},
        )  # fmt: skip
    iou = result.get("iou_threshold")
    fig.suptitle("Precision / recall / F1 by score threshold" + (f" (IoU > {iou:.2f})" if iou is not None else ""))
    if len(per_class) <= 20:
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize="small", frameon=False,
                   bbox_to_anchor=(0.5, -0.02))  # fmt: skip
        fig.tight_layout(rect=(0, 0.04 + 0.035 * math.ceil(len(labels) / 7), 1, 1))
    else:
        fig.tight_layout()
    _save_figure(fig, path)


# TIDE's own palette for its error types
_TIDE_COLORS = {"Cls": "#9b59b6", "Loc": "#e67e22", "Both": "#f1c40f", "Dupe": "#e74c3c", "Bkg": "#2ecc71",
                "Miss": "#3498db", "FalsePos": "#7f8c8d", "FalseNeg": "#34495e"}  # fmt: skip
_TIDE_LABELS = {"Cls": "Cls: right box, wrong class", "Loc": "Loc: right class, poor box",
                "Both": "Both: wrong class and box", "Dupe": "Dupe: duplicate detection",
                "Bkg": "Bkg: detection on background", "Miss": "Miss: object never detected",
                "FalsePos": "FalsePos: every false positive", "FalseNeg": "FalseNeg: every missed object"}  # fmt: skip


def plot_tide(result: dict, path: str | os.PathLike) -> None:
    """Bars of TIDE's six dAPs (:func:`ssdkit.metrics.evaluate_tide`) and, beside them, FalsePos / FalseNeg.

    Each bar is the AP that fixing only that error type would add (fractions, as every ssdkit AP).
    """
    _require(result, ("dAP", "special", "ap"), "evaluate_tide")
    fig, axes = _figure(1, 2, size=(12.0, 4.2))
    panels = ((axes[0, 0], result["dAP"], "Main errors (fix one type)"),
              (axes[0, 1], result["special"], "False positives / negatives"))  # fmt: skip
    values = {k: float(v) if _is_number(v) else 0.0 for _, d, _ in panels for k, v in d.items()}  # NaN: no data
    top = max([*values.values(), 1e-3])
    for ax, d, title in panels:
        y = np.arange(len(d))[::-1]
        ax.barh(y, [values[k] for k in d], color=[_TIDE_COLORS.get(k, "0.5") for k in d], height=0.65)
        ax.set_yticks(y, labels=[_TIDE_LABELS.get(k, k) for k in d])
        for yi, k in zip(y, d):
            ax.text(values[k] + top * 0.01, yi, f"{values[k]:.3f}", va="center", fontsize=9)
        ax.set_xlim(0, top * 1.18)
        ax.set(xlabel="dAP (AP gained by fixing them)", title=title)
        ax.grid(axis="x", alpha=0.3)
    ap, pos = result.get("ap"), result.get("pos_threshold")
    iou = f"{round(pos * 100)}" if _is_number(pos) else ""
    fig.suptitle("TIDE error breakdown" + (f": AP{iou} {ap:.3f}" if _is_number(ap) else ""))
    fig.tight_layout()
    _save_figure(fig, path)
