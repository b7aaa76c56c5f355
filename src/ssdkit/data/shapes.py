"""The built-in synthetic dataset: coloured shapes on textured backgrounds, generated on the fly.

Each image is a function of ``(seed, index)`` only, so ``load_image(i)`` regenerates the same pixels in any
process and ``sample(i)`` is cheap: the geometry comes from its own random stream and is computed without
drawing. Backgrounds are a two-colour gradient at a random angle, uniform pixel noise and random lines; objects
are filled shapes of random colour (kept away from the background colour), sizes log-uniform between
``min_size`` and ``max_size`` pixels, possibly overlapping but never hiding most of an earlier object.

:func:`write_shapes` writes such a dataset as VOC, COCO, YOLO or list files (JPEG images), for the readers and the CLI.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from ssdkit.data.sample import Sample
from ssdkit.errors import SSDKitError

__all__ = ["SHAPE_CLASSES", "ShapesDataset", "write_shapes"]

#: Every shape the generator can draw; ``class_names`` picks a subset (label = position in that subset).
SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "star", "hexagon", "ellipse", "cross")

# An object may hide at most this fraction of an earlier object's box (else its placement is redrawn).
_MAX_COVER = 0.5
_PLACEMENT_TRIES = 20
# Minimum RGB distance between an object's colour and the background colour under it.
_MIN_CONTRAST = 90.0


def _unit_polygon(kind: str, aspect: float, rng: np.random.Generator) -> np.ndarray | None:
    """Vertices ``[K, 2]`` of ``kind`` in a unit box ``[0, 1]^2`` (touching all four sides); None = ellipse."""
    if kind in ("circle", "ellipse"):
        return None
    if kind == "square":
        return np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    if kind == "triangle":
        apex = rng.uniform(0.3, 0.7)
        return np.array([[apex, 0], [1, 1], [0, 1]], dtype=np.float64)
    if kind == "diamond":
        return np.array([[0.5, 0], [1, 0.5], [0.5, 1], [0, 0.5]], dtype=np.float64)
    if kind == "cross":
        t = rng.uniform(0.3, 0.4) / 2  # half the bar thickness
        a, b = 0.5 - t, 0.5 + t
        pts = [[a, 0], [b, 0], [b, a], [1, a], [1, b], [b, b], [b, 1], [a, 1], [a, b], [0, b], [0, a], [a, a]]
        return np.array(pts, dtype=np.float64)
    if kind == "hexagon":
        ang = np.arange(6) * (math.pi / 3)
        pts = np.stack([np.cos(ang), np.sin(ang)], 1)
    elif kind == "star":
        ang = np.arange(10) * (math.pi / 5) - math.pi / 2
        radius = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        pts = np.stack([np.cos(ang) * radius, np.sin(ang) * radius], 1)
    else:  # pragma: no cover - guarded by the constructor
        raise ValueError(kind)
    lo, hi = pts.min(0), pts.max(0)
    return (pts - lo) / (hi - lo)


class ShapesDataset:
    """Procedural detection dataset (a :class:`~ssdkit.data.sample.DetectionSource`).

    Args:
        count: number of images.
        seed: dataset seed; image ``i`` depends only on ``(seed, i)``.
        image_size: side of the square images, or ``(width, height)``.
        min_objects, max_objects: objects drawn per image (uniform); a placement that would hide most of an
            earlier object is redrawn up to 20 times, then dropped, so an image can hold fewer (never 0
            when ``min_objects >= 1``).
        class_names: the shapes to use, a subset of :data:`SHAPE_CLASSES`; labels index this tuple.
        min_size, max_size: object size range (longer box side, pixels), sampled log-uniformly;
            ``max_size`` defaults to 90% of the shorter image side.

    ``load_image(i)`` returns ``Tensor[3, H, W]`` uint8 RGB (a view of an ``H x W x 3`` array, the layout
    JPEG decoders give); ``sample(i)`` returns the :class:`Sample` (boxes xyxy pixels), cached.
    """

    def __init__(
        self,
        count: int,
        seed: int = 0,
        image_size: int | tuple[int, int] = 300,
        min_objects: int = 1,
        max_objects: int = 6,
        class_names: Sequence[str] = SHAPE_CLASSES,
        min_size: float = 8.0,
        max_size: float | None = None,
    ) -> None:
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise SSDKitError(f"count: expected a non-negative integer, got {count!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**63:
            raise SSDKitError(f"seed: expected an integer in [0, 2**63), got {seed!r}")
        if isinstance(image_size, int | np.integer):
            width = height = int(image_size)
        else:
            width, height = (int(v) for v in image_size)
        if not (16 <= min(width, height) and max(width, height) <= 65536):
            raise SSDKitError(f"image_size: sides must be 16-65536 pixels, got {image_size!r}")
        if not 0 <= min_objects <= max_objects <= 10_000:
            raise SSDKitError(f"min_objects/max_objects: need 0 <= min <= max <= 10000, got {min_objects}/"
                              f"{max_objects}")
        class_names = tuple(class_names)
        unknown = [c for c in class_names if c not in SHAPE_CLASSES]
        if unknown or not class_names or len(set(class_names)) != len(class_names):
            raise SSDKitError(
                f"class_names: expected distinct names from {', '.join(SHAPE_CLASSES)}, got {class_names!r}"
            )
        max_size = 0.9 * min(width, height) if max_size is None else float(max_size)
        if not 1 <= min_size <= max_size <= min(width, height):
            raise SSDKitError(
                f"min_size/max_size: need 1 <= min <= max <= {min(width, height)}, got {min_size}/{max_size}"
            )
        self.count = int(count)
        self.seed = int(seed)
        self.width, self.height = width, height
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)
        self.class_names = class_names
        self.min_size, self.max_size = float(min_size), float(max_size)
        self._cache: dict[int, tuple[Sample, list[dict]]] = {}

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (
            f"ShapesDataset(count={self.count}, seed={self.seed}, image_size=({self.width}, {self.height}), "
            f"classes={len(self.class_names)})"
        )

    def _check_index(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < self.count:
            raise IndexError(f"index {index} out of range for ShapesDataset of {self.count} images")
        return index

    # -- generation ----------------------------------------------------------------------------------------

    def _background_params(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, index, 1])
        return {
            "colors": rng.integers(0, 256, size=(2, 3)).astype(np.float32),
            "angle": rng.uniform(0, 2 * math.pi),
            "noise": rng.uniform(0, 24),  # amplitude of uniform pixel noise
            "rng": rng,
        }

    def _layout(self, index: int) -> tuple[Sample, list[dict]]:
        """Geometry of image ``index`` (no drawing): its Sample and one drawing record per object."""
        index = self._check_index(index)
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        rng = np.random.default_rng([self.seed, index, 0])
        bg = self._background_params(index)
        w, h = self.width, self.height
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        boxes: list[list[float]] = []
        records: list[dict] = []
        log_lo, log_hi = math.log(self.min_size), math.log(self.max_size)
        for _ in range(n):
            for _try in range(_PLACEMENT_TRIES):
                label = int(rng.integers(len(self.class_names)))
                kind = self.class_names[label]
                size = math.exp(rng.uniform(log_lo, log_hi))
                aspect = 1.0
                if kind == "ellipse":
                    aspect = rng.uniform(0.4, 0.65)
                elif kind == "triangle":
                    aspect = rng.uniform(0.75, 1.0)
                elif kind in ("square", "diamond", "cross"):
                    aspect = rng.uniform(0.85, 1.0)
                bw, bh = (size, size * aspect) if rng.random() < 0.5 else (size * aspect, size)
                bw, bh = max(2, round(bw)), max(2, round(bh))
                x0 = int(rng.integers(0, w - bw + 1))
                y0 = int(rng.integers(0, h - bh + 1))
                box = [x0, y0, x0 + bw, y0 + bh]
                poly = _unit_polygon(kind, aspect, rng)
                color = rng.integers(0, 256, size=3)
                if not self._hides_earlier(box, boxes):
                    break
            else:
                continue
            # Keep the object visible against the gradient colour at its centre.
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            under = self._gradient_at(bg, cx, cy)
            if np.linalg.norm(color - under) < _MIN_CONTRAST:
                color = np.where(under > 127, under - 128, under + 128).astype(np.int64)
            boxes.append(box)
            records.append({"kind": kind, "box": box, "poly": poly, "color": tuple(int(c) for c in color)})
        labels = [self.class_names.index(r["kind"]) for r in records]
        sample = Sample(
            image_id=f"{index:06d}",
            image_path=None,
            width=w,
            height=h,
            boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.int64),
            class_names=self.class_names,
            extra={"seed": self.seed, "index": index},
        )
        self._cache[index] = (sample, records)
        return sample, records

    @staticmethod
    def _hides_earlier(box: list[float], boxes: list[list[float]]) -> bool:
        for b in boxes:
            iw = min(box[2], b[2]) - max(box[0], b[0])
            ih = min(box[3], b[3]) - max(box[1], b[1])
            if iw > 0 and ih > 0 and iw * ih > _MAX_COVER * (b[2] - b[0]) * (b[3] - b[1]):
                return True
        return False

    def _gradient_at(self, bg: dict, x: float, y: float) -> np.ndarray:
        t = self._gradient_t(bg, np.array([x]), np.array([y]))[0]
        return bg["colors"][0] * (1 - t) + bg["colors"][1] * t

    def _gradient_t(self, bg: dict, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Gradient position in [0, 1] of pixels ``(xs, ys)`` along the direction ``angle``."""
        dx, dy = math.cos(bg["angle"]), math.sin(bg["angle"])
        corners = np.array([0, self.width]) * dx
        lo = min(corners) + min(0, self.height * dy)
        hi = max(corners) + max(0, self.height * dy)
        return ((xs * dx + ys * dy) - lo) / max(hi - lo, 1e-6)

    def _render(self, index: int) -> np.ndarray:
        _, records = self._layout(index)
        bg = self._background_params(index)
        rng = bg["rng"]
        w, h = self.width, self.height
        t = self._gradient_t(bg, np.arange(w, dtype=np.float32)[None, :], np.arange(h, dtype=np.float32)[:, None])
        # Gradient through a 256-entry colour table: broadcasting over a last axis of 3 is slow in numpy.
        c0, c1 = bg["colors"]
        table = (c0 + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * (c1 - c0)).astype(np.int16)
        img = table[(t * 255).astype(np.intp).clip(0, 255)]
        amp = int(bg["noise"])
        img += rng.integers(-amp, amp + 1, size=(h, w, 3), dtype=np.int16)
        pil = Image.fromarray(img.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(pil)
        for _ in range(int(rng.integers(0, 9))):
            pts = rng.uniform(0, 1, size=4) * (w, h, w, h)
            color = tuple(int(v) for v in rng.integers(0, 256, size=3))
            draw.line([tuple(pts[:2]), tuple(pts[2:])], fill=color, width=int(rng.integers(1, 4)))
        for rec in records:
            x0, y0, x1, y1 = rec["box"]
            # PIL's shapes include their last row/column: draw up to x1 - 1 so pixels fill [x0, x1) exactly.
            if rec["poly"] is None:
                draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=rec["color"])
            else:
                pts = rec["poly"] * (x1 - 1 - x0, y1 - 1 - y0) + (x0, y0)
                draw.polygon([tuple(p) for p in pts.round()], fill=rec["color"])
        return np.array(pil)  # writable copy: torch refuses read-only arrays

    # -- DetectionSource -----------------------------------------------------------------------------------

    def sample(self, index: int) -> Sample:
        """Annotations of image ``index`` (cached; no pixels are drawn)."""
        return self._layout(index)[0]

    def load_image(self, index: int) -> torch.Tensor:
        """``Tensor[3, H, W]`` uint8 RGB of image ``index``, identical on every call."""
        return torch.from_numpy(self._render(index)).permute(2, 0, 1)


# -- writing files -----------------------------------------------------------------------------------------


def write_shapes(
    out_dir: str | os.PathLike,
    format: str = "voc",
    count: int = 500,
    seed: int = 0,
    val_fraction: float = 0.2,
    image_size: int | tuple[int, int] = 300,
    quality: int = 90,
    progress: bool | None = None,
    overwrite: bool = False,
    **dataset_kwargs,
) -> Path:
    """Write a :class:`ShapesDataset` as JPEG files plus annotations (``ssdkit make-shapes``); returns ``out_dir``.

    ``format``: ``voc``, ``coco``, ``yolo`` or ``listfile`` (layouts: :mod:`ssdkit.data.writers`). The last
    ``round(count * val_fraction)`` images form the ``val`` split, the rest ``train``. A tqdm bar is shown when
    ``count > 50`` (``progress`` forces it on or off). ``dataset_kwargs`` go to :class:`ShapesDataset`
    (``min_size``, ``max_size``, ``min_objects``, ``max_objects``, ``class_names``).

    Raises:
        SSDKitError: a bad argument, or ``out_dir`` is not empty and ``overwrite`` is False (an existing dataset
            is never overwritten silently).
    """
    from ssdkit.data.writers import write_dataset

    if not 0 <= val_fraction <= 1:
        raise SSDKitError(f"val_fraction: must be in [0, 1], got {val_fraction!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SSDKitError(f"out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SSDKitError(f"out: {out} is not empty; choose a new folder or pass overwrite (--overwrite) to "
                          "write over it")
    ds = ShapesDataset(count, seed=seed, image_size=image_size, **dataset_kwargs)
    n_val = round(count * val_fraction)
    wrap = None
    if progress if progress is not None else count > 50:
        from tqdm.auto import tqdm

        def wrap(it):
            return tqdm(it, desc=f"writing shapes ({format})", unit="img")

    return write_dataset(ds, out, format, ["train"] * (count - n_val) + ["val"] * n_val, quality=quality,
                         progress=wrap, description=f"ssdkit shapes (seed {seed})")
