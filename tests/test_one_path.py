"""One inference path: ``evaluate --checkpoint`` and ``predict`` see the same pixels and give the same detections."""

import json

import torch

from ssdkit.checkpoint import save_checkpoint
from ssdkit.config import Config, ModelConfig
from ssdkit.data.shapes import write_shapes
from ssdkit.engine.evaluate import evaluate_checkpoint
from ssdkit.models import build_model
from ssdkit.predict import predict

NAMES = ("circle", "square", "triangle")


def test_evaluate_and_predict_give_identical_detections(tmp_path):
    data = write_shapes(tmp_path / "voc", count=5, image_size=(180, 120), min_size=20, max_size=80,
                        class_names=NAMES, val_fraction=0.0, progress=False)
    cfg = ModelConfig(width_mult=0.125, num_classes=len(NAMES) + 1)
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, build_model(cfg), Config(model=cfg), NAMES)

    ev = evaluate_checkpoint(ckpt, str(data), split="train", batch_size=2, device="cpu", progress=False,
                             return_detections=True)
    pred = predict(ckpt, [str(data / "JPEGImages")], tmp_path / "out", score=0.01, batch=2, device="cpu",
                   draw=False, progress=False)
    assert ev["num_images"] == pred["images"] == 5
    by_image: dict = {}
    for r in json.loads((tmp_path / "out" / "detections.json").read_text()):
        by_image.setdefault(r["image_id"], []).append(r)
    for i, det in enumerate(ev["detections"]):
        rows = by_image.get(i, [])  # predict numbers images by their numeric stems: 000000.jpg -> 0
        assert len(rows) == len(det["scores"]) > 0, f"image {i}"
        got = torch.tensor([[*r["bbox"], r["score"], r["category_id"] - 1] for r in rows])
        boxes = det["boxes"].clone()
        boxes[:, 2:] -= boxes[:, :2]  # xyxy -> COCO xywh, as predict writes them
        want = torch.cat([boxes, det["scores"][:, None], det["labels"][:, None].float()], 1)
        assert torch.equal(got, want), f"image {i}"
