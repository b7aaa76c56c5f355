"""Tiled training: every window of a large image is a training sample at native scale.

:class:`WindowSource` turns a source of large images into a source of windows (the same grid tiled inference
runs on, :func:`ssdkit.data.tiles.tile_grid`), so a 20 px object in a 4000 px frame is trained on at 20 px, not
shrunk to 1.5 px with the whole frame. It is a :class:`~ssdkit.data.sample.DetectionSource` like any other: every
reader, the SSD augmentation, the workers and the seeds work unchanged on it.

Objects cut by a window edge (``visible`` = the share of the object's area inside the window):

- ``visible >= min_visible``: kept, clipped to the window;
- otherwise ``cut="drop"`` removes it, ``cut="ignore"`` keeps it clipped as an ignore region (its default boxes
  are neither positive nor negative: a half-visible car is not background either).

Windows without any object are kept for ``empty_fraction`` of the windows that hold objects (chosen by a seeded
draw, the same in every process), so the model also sees empty ground without drowning in it. The window list is
computed once from the annotations (no pixels are read), so ``sample(i)`` stays cheap and deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ssdkit.choices import TILE_CUTS
from ssdkit.data.sample import Problem, Sample
from ssdkit.data.tiles import TileSpec, tile_grid
from ssdkit.errors import SSDKitError

__all__ = ["TILE_CUTS", "WindowSource", "window_sample"]



def window_sample(sample: Sample, window: tuple[int, int, int, int], min_visible: float, cut: str,
                  index: int) -> tuple[Sample, int]:
    """The annotations of ``sample`` inside ``window`` ``(x0, y0, x1, y1)`` image px, in window px.

    Returns:
        ``(sample of the window, number of objects cut by its edges below min_visible)``.
    """
    x0, y0, x1, y1 = window
    b = sample.boxes
    area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).clamp(min=0)
    lo = torch.tensor([x0, y0, x0, y0], dtype=b.dtype)
    hi = torch.tensor([x1, y1, x1, y1], dtype=b.dtype)
    clipped = torch.minimum(torch.maximum(b, lo), hi)
    inside = ((clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])).clamp(min=0)
    overlap = inside > 0
    visible = torch.where(area > 0, inside / area.clamp(min=1e-12), overlap.float())
    keep = overlap & (visible >= min_visible)
    weak = overlap & ~keep
    take = keep | weak if cut == "ignore" else keep
    ignore = sample.ignore | weak if cut == "ignore" else sample.ignore
    extra = dict(sample.extra, source_image=sample.image_id, window=list(window), index=index)
    out = Sample(f"{sample.image_id}@{x0},{y0}", sample.image_path, x1 - x0, y1 - y0, clipped[take] - lo,
                 sample.labels[take], ignore[take], sample.class_names, extra)
    return out, int(weak.sum())


@dataclass(frozen=True)
class _Window:
    image: int
    box: tuple[int, int, int, int]


class WindowSource:
    """The windows of ``source``'s images as samples (module docstring).

    Args:
        source: any DetectionSource (annotations in image px).
        spec: window size and overlap (``TileSpec.size``, ``.overlap``; the merge settings are not used here).
        min_visible: the share of an object's area that must be inside a window to keep it, in (0, 1].
        cut: ``"drop"`` or ``"ignore"`` for objects below ``min_visible``.
        empty_fraction: windows without objects kept, as a fraction of the windows with objects (>= 0).
        seed: the draw of the empty windows.

    Attributes:
        problems: the source's problems, plus one ``cut_by_window`` problem per object below ``min_visible`` in
            some window (what ``ssdkit check-data --tile`` reports).
    """

    def __init__(self, source, spec: TileSpec, min_visible: float = 0.5, cut: str = "drop",
                 empty_fraction: float = 0.1, seed: int = 0) -> None:
        if not 0 < min_visible <= 1:
            raise SSDKitError(f"data.tile_min_visible: must be in (0, 1], got {min_visible!r}")
        if cut not in TILE_CUTS:
            raise SSDKitError(f"data.tile_cut: expected one of {', '.join(TILE_CUTS)}, got {cut!r}")
        if not empty_fraction >= 0:
            raise SSDKitError(f"data.tile_empty_fraction: must be >= 0, got {empty_fraction!r}")
        self.source, self.spec = source, spec
        self.min_visible, self.cut = float(min_visible), cut
        self.class_names = tuple(source.class_names)
        for attr in ("format", "root"):
            if hasattr(source, attr):
                setattr(self, attr, getattr(source, attr))
        self._cuts: list[Problem] = []
        full, empty = [], []
        for i in range(len(source)):
            s = source.sample(i)
            for w in tile_grid(s.height, s.width, spec).tolist():
                win, weak = window_sample(s, tuple(w), self.min_visible, cut, i)
                (full if len(win) else empty).append(_Window(i, tuple(w)))
                if weak:
                    where = str(s.extra.get("annotation_path") or s.image_path or s.image_id)
                    self._cuts.append(Problem(where, f"image {s.image_id} window {tuple(w)}",
                                              f"{weak} object(s) less than {min_visible:.0%} inside the window; "
                                              f"{'ignored' if cut == 'ignore' else 'dropped'} there",
                                              "cut_by_window", fixable=True))
        n_empty = min(len(empty), round(empty_fraction * len(full)))
        pick = torch.randperm(len(empty), generator=torch.Generator().manual_seed(seed))[:n_empty].sort().values
        self.windows = full + [empty[k] for k in pick.tolist()]
        self.windows.sort(key=lambda w: (w.image, w.box[1], w.box[0]))
        self._cache: dict[int, Sample] = {}

    @property
    def problems(self) -> list[Problem]:
        return [*getattr(self.source, "problems", ()), *self._cuts]

    def scan(self) -> list[Problem]:
        """Every problem: the source's (all its samples checked now, where it can) and the windows' cuts."""
        if hasattr(self.source, "scan"):
            self.source.scan()
        return self.problems

    def __len__(self) -> int:
        return len(self.windows)

    def sample(self, index: int) -> Sample:
        if index not in self._cache:
            w = self.windows[index]
            self._cache[index] = window_sample(self.source.sample(w.image), w.box, self.min_visible, self.cut,
                                               w.image)[0]
        return self._cache[index]

    def load_image(self, index: int) -> torch.Tensor:
        """``Tensor[3, h, w]`` uint8: the window's pixels (a copy, so the full image can be freed)."""
        w = self.windows[index]
        x0, y0, x1, y1 = w.box
        return self.source.load_image(w.image)[:, y0:y1, x0:x1].contiguous()
