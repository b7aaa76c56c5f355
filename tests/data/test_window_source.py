"""WindowSource: windows of large images as training samples, cut objects kept, dropped or ignored."""

import pytest
import torch

from ssdkit.data.sample import Sample
from ssdkit.data.shapes import ShapesDataset
from ssdkit.data.tiles import TileSpec, tile_grid
from ssdkit.data.window_source import WindowSource, window_sample
from ssdkit.errors import SSDKitError


class _One:
    class_names = ("a", "b")

    def __init__(self, boxes, labels, size=(100, 60)):
        self.s = Sample("img", None, size[0], size[1], boxes, labels, class_names=self.class_names)

    def __len__(self):
        return 1

    def sample(self, i):
        return self.s

    def load_image(self, i):
        w, h = self.s.width, self.s.height
        return torch.arange(3 * h * w, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, h, w)


def test_window_boxes_are_clipped_and_cut_objects_follow_the_rule():
    s = _One([[10, 10, 30, 30], [45, 5, 65, 25]], [0, 1]).s  # the second straddles x = 50
    win, weak = window_sample(s, (0, 0, 50, 60), 0.5, "drop", 0)
    assert win.boxes.tolist() == [[10, 10, 30, 30]] and weak == 1  # 25% inside: dropped
    win, weak = window_sample(s, (0, 0, 50, 60), 0.2, "drop", 0)
    assert win.boxes.tolist() == [[10, 10, 30, 30], [45, 5, 50, 25]] and weak == 0  # 25% >= 20%: kept, clipped
    win, _ = window_sample(s, (0, 0, 50, 60), 0.5, "ignore", 0)
    assert win.labels.tolist() == [0, 1] and win.ignore.tolist() == [False, True]  # kept as an ignore region
    win, _ = window_sample(s, (40, 0, 100, 60), 0.5, "drop", 0)  # window px: offset by the window's corner
    assert win.boxes.tolist() == [[5, 5, 25, 25]] and (win.width, win.height) == (60, 60)


def test_windows_pixels_and_the_empty_share():
    src = _One([[5, 5, 20, 20]], [1], size=(100, 60))
    spec = TileSpec(size=40, overlap=0.0)
    grid = tile_grid(60, 100, spec)
    ws = WindowSource(src, spec, empty_fraction=0.0)
    assert len(ws) == 1 and ws.sample(0).boxes.tolist() == [[5, 5, 20, 20]]
    assert torch.equal(ws.load_image(0), src.load_image(0)[:, 0:40, 0:40])
    all_windows = WindowSource(src, spec, empty_fraction=100.0)
    assert len(all_windows) == len(grid)  # every empty window once at most
    again = WindowSource(src, spec, empty_fraction=1.0, seed=3)
    assert [w.box for w in again.windows] == [w.box for w in WindowSource(src, spec, empty_fraction=1.0,
                                                                          seed=3).windows]  # seeded: reproducible


def test_problems_report_cut_objects_and_bad_settings():
    src = _One([[35, 5, 45, 15]], [0], size=(80, 40))  # half in each of two 40 px windows
    ws = WindowSource(src, TileSpec(size=40, overlap=0.0), min_visible=0.6)
    assert [p.kind for p in ws.problems] == ["cut_by_window", "cut_by_window"] and len(ws) == 0
    for kwargs, match in [({"min_visible": 0}, "tile_min_visible"), ({"cut": "keep"}, "tile_cut"),
                          ({"empty_fraction": -1}, "tile_empty_fraction")]:
        with pytest.raises(SSDKitError, match=match):
            WindowSource(src, TileSpec(size=40), **kwargs)


def test_on_large_shapes_every_object_is_trained_at_native_scale():
    big = ShapesDataset(2, seed=1, image_size=600, min_size=8, max_size=24, max_objects=20)
    ws = WindowSource(big, TileSpec(size=200, overlap=0.2))
    sizes = torch.cat([(ws.sample(i).boxes[:, 2:] - ws.sample(i).boxes[:, :2]) for i in range(len(ws))])
    assert len(ws) > 2 and sizes.max() <= 24 + 1e-4  # native pixels: nothing rescaled
    assert {w.image for w in ws.windows} == {0, 1}
