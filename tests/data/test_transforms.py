import colorsys

import numpy as np
import pytest
import torch

from ssdkit.data.transforms import SSDTrainTransform, _saturation_hue


def _image(h=375, w=500, seed=0, channels_last=False):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return img.permute(1, 2, 0).contiguous().permute(2, 0, 1) if channels_last else img


# The large last box makes the 0.9 mode reachable within the 50 trials.
BOXES = torch.tensor(
    [[50.0, 60.0, 200.0, 300.0], [250.0, 100.0, 480.0, 350.0], [10.0, 10.0, 60.0, 50.0], [30.0, 20.0, 470.0, 360.0]]
)
LABELS = torch.tensor([3, 7, 1, 0])


def _iou(box, rect):
    iw = max(0.0, min(box[2], rect[2]) - max(box[0], rect[0]))
    ih = max(0.0, min(box[3], rect[3]) - max(box[1], rect[1]))
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (rect[2] - rect[0]) * (rect[3] - rect[1]) - inter
    return inter / union


def _expected_boxes(boxes, p, size):
    """Recompute the output boxes from the reported parameters (the reference pipeline's geometry)."""
    left, top = p["expand_offset"]
    x0, y0, x1, y1 = p["crop"]
    out = []
    for b in boxes.tolist():
        b = [b[0] + left, b[1] + top, b[2] + left, b[3] + top]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        if p["min_iou"] is not None and not (x0 < cx < x1 and y0 < cy < y1):
            continue
        b = [
            min(max(b[0], x0), x1) - x0,
            min(max(b[1], y0), y1) - y0,
            min(max(b[2], x0), x1) - x0,
            min(max(b[3], y0), y1) - y0,
        ]
        b = [b[0] * size / (x1 - x0), b[1] * size / (y1 - y0), b[2] * size / (x1 - x0), b[3] * size / (y1 - y0)]
        if p["flip"]:
            b = [size - b[2], b[1], size - b[0], b[3]]
        out.append(b)
    return torch.tensor(out).reshape(-1, 4)


@pytest.fixture(scope="module")
def draws():
    """400 seeded draws on one image: (outputs, params)."""
    t = SSDTrainTransform(size=300)
    g = torch.Generator().manual_seed(0)
    img = _image(channels_last=True)
    return [t(img, BOXES, LABELS, generator=g, return_params=True) for _ in range(400)]


def test_output_shapes_and_types(draws):
    for img, boxes, labels, ignore, _ in draws[:50]:
        assert img.shape == (3, 300, 300) and img.dtype == torch.uint8
        assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
        assert len(boxes) == len(labels) == len(ignore)
        assert labels.dtype == torch.int64 and ignore.dtype == torch.bool


def test_crop_iou_constraint_met(draws):
    modes = set()
    for _, _, _, _, p in draws:
        modes.add(p["min_iou"])
        if p["min_iou"] is None:
            assert p["crop"] == (0, 0, *p["canvas_size"])
            continue
        x0, y0, x1, y1 = p["crop"]
        assert 0 <= x0 < x1 <= p["canvas_size"][0] and 0 <= y0 < y1 <= p["canvas_size"][1]
        w, h = x1 - x0, y1 - y0
        assert 0.5 <= w / h <= 2.0
        assert w >= int(0.3 * p["canvas_size"][0]) and h >= int(0.3 * p["canvas_size"][1])
        left, top = p["expand_offset"]
        shifted = (BOXES + torch.tensor([left, top, left, top])).tolist()
        kept = [b for b in shifted if x0 < (b[0] + b[2]) / 2 < x1 and y0 < (b[1] + b[3]) / 2 < y1]
        assert kept, "a crop must keep at least one box centre"
        assert max(_iou(b, p["crop"]) for b in kept) >= p["min_iou"]
    assert modes == {None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9}


def test_expand_ratio_range_and_rate(draws):
    ratios = [p["expand_ratio"] for *_, p in draws if p["expand"]]
    assert 0.42 < len(ratios) / len(draws) < 0.58
    assert all(1.0 <= r <= 4.0 for r in ratios)
    assert min(ratios) < 1.3 and max(ratios) > 3.7  # covers the range
    assert all(p["expand_ratio"] == 1.0 and p["expand_offset"] == (0, 0) for *_, p in draws if not p["expand"])
    for *_, p in draws:
        left, top = p["expand_offset"]
        cw, ch = p["canvas_size"]
        assert 0 <= left <= cw - 500 and 0 <= top <= ch - 375


def test_flip_rate(draws):
    rate = np.mean([p["flip"] for *_, p in draws])
    assert 0.42 < rate < 0.58


def test_photometric_rates_and_ranges(draws):
    photo = [p["photometric"] for *_, p in draws]
    for key, lo, hi in (("brightness", -32, 32), ("contrast", 0.5, 1.5), ("saturation", 0.5, 1.5), ("hue", -18, 18)):
        vals = [q[key] for q in photo if q[key] is not None]
        assert 0.4 < len(vals) / len(photo) < 0.6, key
        assert all(lo <= v <= hi for v in vals), key
    assert 0.4 < np.mean([q["contrast_first"] for q in photo]) < 0.6
    assert all(q["channel_perm"] is None for q in photo)  # channel swap is off by default


def test_boxes_match_params_and_stay_inside(draws):
    for _, boxes, _, _, p in draws:
        assert bool((boxes >= 0).all() and (boxes <= 300).all())
        expected = _expected_boxes(BOXES, p, 300)
        assert boxes.shape == expected.shape
        # The visible image part is snapped to whole output pixels: under one pixel of difference.
        assert torch.allclose(boxes, expected, atol=1.0), (boxes, expected, p)


def test_labels_follow_boxes(draws):
    for _, _, labels, _, p in draws:
        left, top = p["expand_offset"]
        x0, y0, x1, y1 = p["crop"]
        kept = []
        for b, lab in zip(BOXES.tolist(), LABELS.tolist()):
            cx, cy = (b[0] + b[2]) / 2 + left, (b[1] + b[3]) / 2 + top
            if p["min_iou"] is None or (x0 < cx < x1 and y0 < cy < y1):
                kept.append(lab)
        assert labels.tolist() == kept


def test_pixels_follow_geometry():
    """A bright square on black lands where its box says, through expand, crop, flip and resize."""
    img = torch.zeros(3, 200, 260, dtype=torch.uint8)
    img[:, 60:140, 100:180] = 255
    box = torch.tensor([[100.0, 60.0, 180.0, 140.0]])
    t = SSDTrainTransform(size=300, fill=(0, 0, 0), photometric=False)
    g = torch.Generator().manual_seed(1)
    checked = 0
    for _ in range(60):
        out, boxes, _, _, p = t(img, box, torch.tensor([0]), generator=g, return_params=True)
        if len(boxes) == 0:
            continue
        x0, y0, x1, y1 = boxes[0].tolist()
        if min(x1 - x0, y1 - y0) < 6:
            continue
        inner = out[:, round(y0) + 2 : round(y1) - 2, round(x0) + 2 : round(x1) - 2]
        assert inner.float().mean() > 250
        mask = out[0] > 127
        ys, xs = mask.nonzero(as_tuple=True)
        assert abs(xs.min().item() - x0) <= 1.5 and abs(xs.max().item() + 1 - x1) <= 1.5
        assert abs(ys.min().item() - y0) <= 1.5 and abs(ys.max().item() + 1 - y1) <= 1.5
        checked += 1
    assert checked > 20


def test_fill_outside_image():
    img = torch.full((3, 100, 100), 7, dtype=torch.uint8)
    t = SSDTrainTransform(size=64, fill=(123, 117, 104), photometric=False, flip_p=0.0)
    g = torch.Generator().manual_seed(3)
    seen = False
    for _ in range(40):
        out, _, _, _, p = t(img, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), generator=g, return_params=True)
        rect = p["image_rect"]
        if rect is None or rect == (0, 0, 64, 64):
            continue
        seen = True
        x0, y0, x1, y1 = rect
        assert bool((out[:, y0:y1, x0:x1] == 7).all())
        outside = torch.ones(64, 64, dtype=torch.bool)
        outside[y0:y1, x0:x1] = False
        assert bool((out[:, outside] == torch.tensor([123, 117, 104]).view(3, 1)).all())
    assert seen


def test_degenerate_boxes_dropped():
    boxes = torch.tensor([[10.0, 10.0, 10.0, 50.0], [20.0, 30.0, 80.0, 30.0], [100.0, 100.0, 200.0, 200.0]])
    t = SSDTrainTransform(size=300, min_ious=(None,), photometric=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        _, out, labels, ignore = t(
            _image(), boxes, torch.tensor([0, 1, 2]), torch.tensor([True, True, False]), generator=g
        )
        assert labels.tolist() == [2] and ignore.tolist() == [False]
        assert bool(((out[:, 2:] - out[:, :2]) > 0).all())


def test_empty_boxes():
    t = SSDTrainTransform(size=128)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        img, boxes, labels, ignore = t(_image(), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), generator=g)
        assert img.shape == (3, 128, 128) and boxes.shape == (0, 4) and labels.shape == (0,) and ignore.shape == (0,)


def test_seeded_reproducible_and_layout_independent():
    t = SSDTrainTransform()
    a = t(_image(), BOXES, LABELS, generator=torch.Generator().manual_seed(5))
    b = t(_image(channels_last=True), BOXES, LABELS, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_iou_rule_all():
    t = SSDTrainTransform(min_ious=(0.1,), iou_rule="all")
    g = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[100.0, 100.0, 300.0, 300.0], [150.0, 120.0, 350.0, 320.0]])
    for _ in range(20):
        *_, p = t(_image(), boxes, torch.tensor([0, 1]), generator=g, return_params=True)
        left, top = p["expand_offset"]
        shifted = (boxes + torch.tensor([left, top, left, top])).tolist()
        if p["min_iou"] is not None:
            assert all(_iou(b, p["crop"]) >= 0.1 for b in shifted)


def test_saturation_hue_matches_colorsys():
    x = torch.rand(3, 200, 1) * 255
    x[:, :10] = x[0, :10]  # grey pixels
    x[1, 10:20] = x[0, 10:20]  # ties for the max
    for sat, hue in ((None, 17.0), (1.4, None), (0.6, -12.0), (1.5, 18.0)):
        out = _saturation_hue(x.clone(), sat, hue)
        for i in range(200):
            h, s, v = colorsys.rgb_to_hsv(*(x[:, i, 0] / 255).tolist())
            h = (h + (hue or 0) / 360) % 1
            s = min(s * (sat or 1), 1)
            ref = torch.tensor(colorsys.hsv_to_rgb(h, s, v)) * 255
            assert torch.allclose(out[:, i, 0], ref, atol=1e-2)


def test_photometric_brightness_contrast_exact():
    img = torch.arange(0, 256, dtype=torch.uint8).repeat(3, 1, 1)
    params = {
        "brightness": 20.0,
        "contrast": 1.2,
        "contrast_first": True,
        "saturation": None,
        "hue": None,
        "channel_perm": None,
    }
    out = SSDTrainTransform._distort(img, params)
    ref = ((img.float() + 20).clamp(0, 255) * 1.2).clamp(0, 255).round()
    assert torch.equal(out.float(), ref)


def test_bad_inputs_rejected():
    t = SSDTrainTransform()
    with pytest.raises(ValueError, match="uint8"):
        t(_image().float(), BOXES, LABELS)
    with pytest.raises(ValueError, match="differ in length"):
        t(_image(), BOXES, LABELS[:2])
    with pytest.raises(ValueError, match="iou_rule"):
        SSDTrainTransform(iou_rule="some")
