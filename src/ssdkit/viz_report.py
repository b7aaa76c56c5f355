"""Plots of an evaluation report: the detection confusion matrix, P / R / F1 against the score threshold, TIDE's
error breakdown (matplotlib's object API on the Agg canvas, atomic writes: see :mod:`ssdkit.viz`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ssdkit.errors import SSDKitError
from ssdkit.viz import _figure, _is_number, _save_figure, class_color

__all__ = ["plot_confusion_matrix", "plot_pr_f1", "plot_tide"]


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
