import math

import pytest
import torch
from torch import nn

from ssdkit.checkpoint import save_checkpoint
from ssdkit.coder import SSDBoxCoder
from ssdkit.data.loader import DetectionDataset, make_loader
from ssdkit.data.preprocess import SSDEvalTransform
from ssdkit.data.shapes import ShapesDataset
from ssdkit.engine.evaluate import evaluate_checkpoint, evaluate_model
from ssdkit.errors import CheckpointError, DataError
from ssdkit.models import build_model

from . import tiny_config


class _Oracle(nn.Module):
    """Predicts the encoded ground truth of each batch (in loader order): a perfect detector in input pixels."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)

    def forward(self, x):
        loc, cls = self.outputs.pop(0)
        assert loc.shape[0] == x.shape[0]
        return loc, cls


def test_perfect_detections_are_rescaled_to_original_pixels(tmp_path):
    """Non-square originals resized to 300 x 300: mAP 1 only if boxes go back to original pixels exactly."""
    cfg = tiny_config(tmp_path)
    coder = SSDBoxCoder(cfg.model)
    source = ShapesDataset(3, seed=5, image_size=(160, 96), min_size=20)
    loader = make_loader(DetectionDataset(source, SSDEvalTransform(300)), batch_size=2, shuffle=False)
    outputs = []
    for _, targets in loader:
        loc, cls = coder.encode_batch([t["boxes"] for t in targets], [t["labels"] for t in targets])
        outputs.append((loc, torch.nn.functional.one_hot(cls.clamp(min=0), cfg.model.num_classes).float() * 20))
    for metric in ("voc07", "coco"):
        model = _Oracle(outputs)
        result = evaluate_model(model, loader, cfg, metric, device="cpu")
        assert result["map"] == pytest.approx(1.0), metric
        assert result["num_images"] == 3 and result["metric"] == metric


def test_evaluate_checkpoint_on_tiny_shapes(tmp_path):
    cfg = tiny_config(tmp_path, data={"shapes_val_count": 3})
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model(cfg.model), cfg, ShapesDataset(1).class_names)
    result = evaluate_checkpoint(path, "shapes", batch_size=3, device="cpu", progress=False)
    assert "map" in result and result["num_images"] == 3 and result["metric"] == "voc07"
    assert math.isnan(result["map"]) or 0.0 <= result["map"] <= 1.0
    assert set(result["ap"]) == set(ShapesDataset(1).class_names)
    with pytest.raises(CheckpointError, match="missing.pt"):
        evaluate_checkpoint(tmp_path / "missing.pt", "shapes", progress=False)
    with pytest.raises(DataError, match="nowhere"):
        evaluate_checkpoint(path, str(tmp_path / "nowhere"), progress=False)


# ---- tiled evaluation -----------------------------------------------------------------------------------------


class _Rects:
    """A DetectionSource of black scenes with small flat PALETTE rectangles (tiling_oracle), some across window
    edges."""

    class_names = ("white", "red", "green")

    def __init__(self, count: int, h: int = 700, w: int = 900) -> None:
        # 256 px windows, overlap 0.2: window edges at x, y = 205, 256, 410, 461, ...; each object crosses one
        self.h, self.w = h, w
        self.objects = [[(0, (248 + i, 100 + 50 * i, 262 + i, 114 + 50 * i)),
                         (1, (455, 300 + 30 * i, 467, 316 + 30 * i)),
                         (2, (600 + 10 * i, 250, 610 + 10 * i, 264))] for i in range(count)]

    def __len__(self) -> int:
        return len(self.objects)

    def sample(self, i: int):
        from ssdkit.data.sample import Sample

        return Sample(image_id=str(i), image_path=None, width=self.w, height=self.h,
                      boxes=torch.tensor([b for _, b in self.objects[i]], dtype=torch.float32),
                      labels=torch.tensor([c for c, _ in self.objects[i]]), class_names=self.class_names)

    def load_image(self, i: int) -> torch.Tensor:
        from tiling_oracle import scene

        return scene(self.h, self.w, self.objects[i])


def test_tiled_evaluation_finds_small_objects_cut_by_window_edges(tmp_path):
    from tiling_oracle import ColourOracle

    from ssdkit.config import ModelConfig
    from ssdkit.data.tiles import TileSpec
    from ssdkit.engine.evaluate import tiled_loader

    cfg = ModelConfig(num_classes=4, width_mult=0.125)
    oracle = ColourOracle(cfg)
    source = _Rects(4)
    spec = TileSpec(size=256, overlap=0.2)
    result = evaluate_model(oracle, tiled_loader(source, 3), cfg, "voc07", device="cpu", tile=spec, batch_size=5,
                            return_detections=True)
    assert result["map"] == pytest.approx(1.0) and result["num_images"] == 4
    assert set(result["ap"]) == set(source.class_names)
    # every object once, with its box (objects lie across the window edges at x = 256, 461, ...)
    for det, objs in zip(result["detections"], source.objects):
        assert sorted(det["labels"].tolist()) == [0, 1, 2]
        for label, box in objs:
            k = det["labels"].tolist().index(label)
            assert torch.allclose(det["boxes"][k], torch.tensor(box, dtype=torch.float32), atol=2.0)
    # the same with the images decoded in a worker process
    again = evaluate_model(oracle, tiled_loader(source, 3, num_workers=1), cfg, "voc07", device="cpu", tile=spec,
                           batch_size=5, return_detections=True)
    assert again["map"] == result["map"]
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(again["detections"], result["detections"]))
    # SAHI's rules keep the partial copies (false positives at NMS / IoU): lower AP
    sahi = evaluate_model(oracle, tiled_loader(source, 3), cfg, "voc07", device="cpu", batch_size=5,
                          tile=TileSpec(size=256, overlap=0.2, window_aware=False))
    assert sahi["map"] < 0.9
    # a resized batch cannot be tiled
    loader = make_loader(DetectionDataset(source, SSDEvalTransform(300)), batch_size=2, shuffle=False)
    with pytest.raises(Exception, match="full-size images"):
        evaluate_model(oracle, loader, cfg, "voc07", device="cpu", tile=spec)


def test_evaluate_checkpoint_tiled_equals_the_tiled_detector(tmp_path):
    from ssdkit.data.tiles import TileSpec
    from ssdkit.engine.evaluation import evaluate
    from ssdkit.errors import SSDKitError
    from ssdkit.inference import Detector

    cfg = tiny_config(tmp_path, data={"shapes_val_count": 3})
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model(cfg.model), cfg, ShapesDataset(1).class_names)
    spec = TileSpec(size=40, overlap=0.25, merge="greedy_nmm", match="ios")
    result = evaluate_checkpoint(path, "shapes", batch_size=3, device="cpu", progress=False, tile=spec,
                                 return_detections=True)
    assert result["num_images"] == 3 and set(result["ap"]) == set(ShapesDataset(1).class_names)
    assert math.isnan(result["map"]) or 0.0 <= result["map"] <= 1.0
    from ssdkit.data.sources import build_source

    source = build_source("shapes", cfg.data, "val", classes=ShapesDataset(1).class_names)
    images = [source.load_image(i) for i in range(3)]
    expect = Detector.from_checkpoint(path, device="cpu", preset="evaluate", batch_size=3, tile=spec)(images)
    for got, ref in zip(result["detections"], expect):
        for key in ("boxes", "labels", "scores"):
            assert torch.equal(got[key], ref[key])
    assert all(len(d["boxes"]) > 0 for d in expect)
    with pytest.raises(SSDKitError, match="tile"):
        evaluate(gt="gt.json", detections="dt.json", tile=spec)
    with pytest.raises(SSDKitError, match="^tile: expected a TileSpec"):
        evaluate_checkpoint(path, "shapes", device="cpu", progress=False, tile=256)


def test_a_model_trained_on_windows_predicts_and_evaluates_on_them_by_default(tmp_path):
    """``data.tile_size`` in the checkpoint: Detector / evaluate tile with the trained windows unless told not to."""
    from ssdkit.data.tiles import TileSpec
    from ssdkit.engine.evaluation import evaluate
    from ssdkit.inference import Detector

    cfg = tiny_config(tmp_path, data={"shapes_val_count": 2, "shapes_image_size": 96, "tile_size": 48,
                                      "tile_overlap": 0.25})
    path = tmp_path / "tiled.pt"
    save_checkpoint(path, build_model(cfg.model), cfg, ShapesDataset(1).class_names)
    assert Detector.from_checkpoint(path, device="cpu").tile == TileSpec(size=48, overlap=0.25)
    assert Detector.from_checkpoint(path, device="cpu", tile=None).tile is None
    auto = evaluate_checkpoint(path, "shapes", device="cpu", progress=False)
    assert auto["tile"]["size"] == 48 and auto["tile"]["overlap"] == 0.25
    assert evaluate_checkpoint(path, "shapes", device="cpu", progress=False, tile=None)["tile"] is None
    plain = tmp_path / "plain.pt"  # trained on whole images: "auto" means untiled
    whole = tiny_config(tmp_path, data={"shapes_val_count": 2})
    save_checkpoint(plain, build_model(whole.model), whole, ShapesDataset(1).class_names)
    assert Detector.from_checkpoint(plain, device="cpu").tile is None
    assert evaluate(checkpoint=plain, data="shapes", device="cpu", progress=False)["tile"] is None
