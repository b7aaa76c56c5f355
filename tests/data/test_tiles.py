"""Window grids (against SAHI's slicer when installed), TileSpec validation, back-mapping, cut flags."""

from __future__ import annotations

import pytest
import torch

from ssdkit.data.tiles import TILE_MATCHES, TILE_MERGES, TileSpec, cut_boxes, tile_grid, tile_starts, window_to_image
from ssdkit.errors import SSDKitError


def test_spec_defaults_and_stride():
    spec = TileSpec()
    assert (spec.size, spec.overlap, spec.full_image, spec.merge, spec.match, spec.merge_threshold) == \
        (512, 0.2, False, "nms", "iou", 0.5)
    assert spec.window_aware is True
    assert spec.stride == 512 - 102  # SAHI's int(overlap * size) px of overlap
    assert TileSpec(size=300, overlap=0.5).stride == 150
    assert TileSpec(size=300, overlap=0).stride == 300
    assert TILE_MERGES == ("nms", "nmm", "greedy_nmm") and TILE_MATCHES == ("iou", "ios")


@pytest.mark.parametrize("field, value", [
    ("size", 0), ("size", -5), ("size", 2.5), ("size", True), ("size", "512"),
    ("overlap", 1.0), ("overlap", -0.1), ("overlap", "0.2"), ("overlap", True),
    ("full_image", 1), ("window_aware", "yes"),
    ("merge", "soft_nms"), ("merge", "NMS"), ("match", "giou"),
    ("merge_threshold", 0), ("merge_threshold", 1.5), ("merge_threshold", None),
])
def test_bad_spec_values_name_the_field(field, value):
    with pytest.raises(SSDKitError, match=rf"^tile\.{field}: "):
        TileSpec(**{field: value})


def test_tile_starts():
    assert tile_starts(1000, 512, 410) == [0, 410, 488]  # the last window ends at the edge
    assert tile_starts(922, 512, 410) == [0, 410]  # ... exactly where the stride puts it: no extra window
    assert tile_starts(512, 512, 410) == [0]
    assert tile_starts(300, 512, 410) == [0]  # shorter than a window: one window spanning it
    assert tile_starts(1200, 256, 205) == [0, 205, 410, 615, 820, 944]


@pytest.mark.parametrize("h, w, size, overlap", [
    (1000, 1000, 512, 0.2), (777, 1013, 256, 0.2), (600, 400, 512, 0.2), (100, 80, 512, 0.2),
    (1200, 1200, 300, 0.0), (1200, 1200, 300, 0.5), (2000, 513, 512, 0.25), (8000, 8000, 1024, 0.2),
])
def test_grid_covers_the_image_with_windows_inside(h, w, size, overlap):
    spec = TileSpec(size=size, overlap=overlap)
    g = tile_grid(h, w, spec)
    assert g.dtype == torch.int64 and g.shape[1] == 4
    assert (g[:, 0] >= 0).all() and (g[:, 1] >= 0).all() and (g[:, 2] <= w).all() and (g[:, 3] <= h).all()
    assert ((g[:, 2] - g[:, 0]) == min(size, w)).all() and ((g[:, 3] - g[:, 1]) == min(size, h)).all()
    covered = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in g.tolist():
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert len({tuple(r) for r in g.tolist()}) == len(g)  # no window twice
    # neighbours overlap by at least int(overlap * size) px (more at the last row / column)
    xs = sorted({r[0] for r in g.tolist()})
    assert all(b - a <= spec.stride for a, b in zip(xs, xs[1:]))


def test_image_smaller_than_a_window_is_one_window():
    assert tile_grid(100, 80, TileSpec(size=512)).tolist() == [[0, 0, 80, 100]]
    assert tile_grid(512, 512, TileSpec(size=512)).tolist() == [[0, 0, 512, 512]]
    with pytest.raises(SSDKitError, match="image"):
        tile_grid(0, 10, TileSpec())


@pytest.mark.parametrize("h, w, size, overlap", [(1000, 1000, 512, 0.2), (777, 1013, 256, 0.3), (600, 400, 512, 0.2),
                                                 (1200, 1200, 300, 0.5), (1200, 900, 300, 0.0), (50, 70, 64, 0.2)])
def test_grid_equals_sahis_slicer(h, w, size, overlap):
    slicing = pytest.importorskip("sahi.slicing")
    ref = slicing.get_slice_bboxes(h, w, slice_height=size, slice_width=size, overlap_height_ratio=overlap,
                                   overlap_width_ratio=overlap, auto_slice_resolution=False)
    assert tile_grid(h, w, TileSpec(size=size, overlap=overlap)).tolist() == ref


def test_back_mapping_is_exact_per_axis():
    # a 512 x 300 window at (410, 88), resized to 300 x 300: x scales by 512/300, y by 1
    window = torch.tensor([410, 88, 922, 388])
    boxes = torch.tensor([[0.0, 0.0, 300.0, 300.0], [30.0, 60.0, 150.0, 75.0]])
    out = window_to_image(boxes, window, 300)
    sx = torch.tensor(512 / 300, dtype=torch.float32)
    expect = torch.stack([boxes[:, 0] * sx + 410, boxes[:, 1] + 88, boxes[:, 2] * sx + 410, boxes[:, 3] + 88], 1)
    assert torch.equal(out, expect)
    assert out[0].tolist() == [410.0, 88.0, 922.0, 388.0]  # the whole window maps onto the window exactly
    # per-box windows, and boxes past the input are clipped to their window
    wins = torch.tensor([[0, 0, 256, 256], [205, 410, 461, 666]])
    out = window_to_image(torch.tensor([[-5.0, 10.0, 310.0, 150.0], [150.0, 150.0, 300.0, 300.0]]), wins, 300)
    s = 256 / 300
    assert torch.allclose(out, torch.tensor([[0, 10 * s, 256, 150 * s], [205 + 128, 410 + 128, 461, 666]]))


def test_back_mapping_at_the_origin_is_to_original_bit_for_bit(tiny_config, tiny_names):
    from ssdkit.inference import Detector
    from ssdkit.models import build_model

    det = Detector(build_model(tiny_config).eval(), tiny_config, tiny_names)
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(50, 4, generator=g) * 300
    boxes = torch.cat([boxes[:, :2].minimum(boxes[:, 2:]), boxes[:, :2].maximum(boxes[:, 2:])], 1)
    for h, w in [(333, 517), (1, 7), (4000, 3001)]:
        ref = det.to_original({"boxes": boxes, "labels": torch.zeros(50, dtype=torch.int64),
                               "scores": torch.ones(50)}, h, w)["boxes"]
        assert torch.equal(window_to_image(boxes, torch.tensor([0, 0, w, h]), 300), ref)


def test_cut_flags_only_at_inner_edges():
    # image 922 x 512, windows [0, 512) and [410, 922) in x; a window's outer edges are the image border
    wins = torch.tensor([[0, 0, 512, 512]] * 4 + [[410, 0, 922, 512]] * 2)
    boxes = torch.tensor([
        [480.0, 100, 512, 150],   # touches the inner edge x = 512 of window 0: cut
        [480.0, 100, 505, 150],   # 7 px short of it: within 2% of 512 px (10.24 px): cut
        [0.0, 0, 40, 40],         # at the image border: not cut
        [100.0, 100, 200, 200],   # inside
        [410.0, 200, 450, 250],   # on window 1's inner edge x = 410: cut
        [880.0, 470, 922, 512],   # window 1's right / bottom edges are the image border: not cut
    ])
    assert cut_boxes(boxes, wins, 512, 922).tolist() == [True, True, False, False, True, False]
    assert cut_boxes(boxes[:0], wins[:0], 512, 922).shape == (0,)
