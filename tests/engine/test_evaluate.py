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
