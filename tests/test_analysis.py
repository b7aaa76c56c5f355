import math

import torch
from torchvision.ops import box_iou

from ssdkit.analysis import anchor_fit, coverage_report, describe, format_description
from ssdkit.anchors import default_boxes_for
from ssdkit.boxes import change_box_order
from ssdkit.config import ModelConfig, ssd512_config
from ssdkit.data.sample import Sample


def test_describe_gives_the_notebook_numbers():
    d = describe(ModelConfig(num_classes=10))
    assert [lv["feature_map"] for lv in d["levels"]] == [[512, 38, 38], [1024, 19, 19], [512, 10, 10],
                                                         [256, 5, 5], [256, 3, 3], [256, 1, 1]]
    assert [lv["default_boxes"] for lv in d["levels"]] == [5776, 2166, 600, 150, 36, 4]
    assert [lv["loc_channels"] for lv in d["levels"]] == [16, 24, 24, 24, 16, 16]
    assert [lv["cls_channels"] for lv in d["levels"]] == [40, 60, 60, 60, 40, 40]
    assert d["total_default_boxes"] == 8732
    assert d["outputs"] == {"loc_preds": [1, 8732, 4], "cls_preds": [1, 8732, 10]}
    assert 60 < d["gflops_per_image"] < 66  # ~63 GFLOPs per 300x300 image
    assert d["layers"][4]["layer"].endswith("ceil_mode=True)") and d["layers"][4]["vgg16"].endswith("ceil_mode=False)")
    text = format_description(d)
    assert "8732" in text and "5776 + 2166 + 600 + 150 + 36 + 4" in text


def test_describe_ssd512():
    d = describe(ssd512_config())
    assert d["total_default_boxes"] == 24564 and len(d["levels"]) == 7


def _samples_of(boxes_per_image, size=300):
    return [Sample(image_id=str(i), image_path=None, width=size, height=size, boxes=b,
                   labels=torch.zeros(len(b), dtype=torch.long)) for i, b in enumerate(boxes_per_image)]


def _small_object_scenes(n_images=30, per_image=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_images):
        s = 10 + torch.rand(per_image, 1, generator=g) * 20  # 10-30 px objects
        ar = torch.exp((torch.rand(per_image, 1, generator=g) - 0.5) * 0.6)
        wh = torch.cat([s * ar.sqrt(), s / ar.sqrt()], 1)
        xy = torch.rand(per_image, 2, generator=g) * (300 - wh)
        out.append(torch.cat([xy, xy + wh], 1))
    return out


def test_anchor_numbers_equal_brute_force():
    scenes = _small_object_scenes(5, 6)
    cfg = ModelConfig()
    r = coverage_report(torch.cat(scenes), cfg)
    anchors = change_box_order(default_boxes_for(cfg), "xywh2xyxy")
    for k, box in enumerate(torch.cat(scenes)):
        best, count = 0.0, 0
        for a in anchors:
            iou = float(box_iou(box[None], a[None])[0, 0])
            best = max(best, iou)
            count += iou >= 0.5
        assert math.isclose(r["best_iou"][k].item(), best, rel_tol=1e-6, abs_tol=1e-7)
        assert r["num_matches"][k].item() == count
    assert r["covered"] == int((r["num_matches"] >= 1).sum())


def test_small_objects_low_coverage_and_recommendation_fixes_it():
    samples = _samples_of(_small_object_scenes())
    r = anchor_fit(samples, ModelConfig())
    assert r["coverage"] < 0.5  # default SSD300 boxes (30..315 px) miss most 10-30 px objects
    rec = r["recommended"]
    assert rec["coverage"] >= 0.95
    cfg = ModelConfig(input_size=rec["input_size"], box_sizes=tuple(rec["box_sizes"]), steps=tuple(rec["steps"]),
                      extra_low_level=rec["extra_low_level"], aspect_ratios=tuple(map(tuple, rec["aspect_ratios"])))
    again = anchor_fit(samples, cfg, recommend=False)
    assert abs(again["coverage"] - rec["coverage"]) < 1e-9
    assert "box_sizes" in rec["snippet"]


def test_tiling_advice_and_window_scale_analysis(tmp_path):
    from ssdkit.analysis import anchors_report
    from ssdkit.analysis.report import MIN_INPUT_OBJECT, recommend_tile
    from ssdkit.data.shapes import ShapesDataset, write_shapes

    large = ShapesDataset(4, seed=2, image_size=1200, min_size=10, max_size=30, max_objects=30)
    advice = recommend_tile([large.sample(i) for i in range(4)], 300)
    assert advice["tile"] is not None and advice["at_input_untiled"] < MIN_INPUT_OBJECT
    p10 = advice["object_px"][0]
    assert p10 * 300 / advice["tile"] >= MIN_INPUT_OBJECT  # the window keeps the small objects big enough
    small = ShapesDataset(4, seed=2, image_size=300, min_size=40, max_size=120)
    assert recommend_tile([small.sample(i) for i in range(4)], 300)["tile"] is None

    data = write_shapes(tmp_path / "big", count=3, image_size=900, min_size=10, max_size=24, max_objects=20,
                        progress=False)
    whole = anchors_report(str(data))
    tiled = anchors_report(str(data), tile="auto")
    assert whole["window"] is None and tiled["window"] == whole["tiling"]["tile"]
    assert tiled["coverage"] > whole["coverage"]  # at window scale the default boxes reach the objects
    assert "tile_size" in tiled["recommended"]["snippet"]


def test_match_stats_equals_a_dense_box_iou_against_every_default_box():
    """The candidate-based statistics (best IoU, boxes >= 0.5) equal torchvision's box_iou over all boxes."""
    import pytest

    from ssdkit.analysis import match_stats
    from ssdkit.config import ssd300_config, tiny_objects_config

    g = torch.Generator().manual_seed(0)
    for cfg in (ssd300_config(), ssd512_config(), tiny_objects_config()):
        size = cfg.input_size
        centre = torch.rand(800, 2, generator=g) * size
        wh = torch.exp(torch.rand(800, 2, generator=g) * 5.5)  # 1 px .. 245 px, any aspect
        boxes = torch.cat([centre - wh / 2, centre + wh / 2], 1).clamp(0, size)
        boxes[:3, 2:] = boxes[:3, :2]  # zero-area objects overlap nothing
        best, count = match_stats(boxes, cfg)
        iou = box_iou(boxes, change_box_order(default_boxes_for(cfg), "xywh2xyxy"))
        assert torch.equal(count, (iou >= 0.5).sum(1))
        assert best.tolist() == pytest.approx(iou.max(1).values.tolist(), abs=1e-7)
        assert (count > 0).any() and (count == 0).any()
