"""Detector: geometry back to original pixels, input kinds, batching, presets, normalisation, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ssdkit.checkpoint import save_checkpoint
from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config, ModelConfig
from ssdkit.data.preprocess import InputNormalizer, to_image_tensor
from ssdkit.errors import CheckpointError, SSDKitError
from ssdkit.inference import PRESETS, Detector, resolve_preset
from ssdkit.models import build_model


class FixedModel(nn.Module):
    """Predicts the same encoded output for every image: zero offsets (boxes = default boxes), and class ``k``
    with high confidence at a few chosen default boxes, background elsewhere."""

    def __init__(self, config: ModelConfig, picks: dict[int, int]) -> None:
        super().__init__()
        self.config = config
        self.num_anchors = SSDBoxCoder(config).default_boxes.shape[0]
        logits = torch.zeros(self.num_anchors, config.num_classes)
        logits[:, 0] = 10.0
        for anchor, label in picks.items():
            logits[anchor, 0] = 0.0
            logits[anchor, label + 1] = 10.0
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor):
        n = x.shape[0]
        return torch.zeros(n, self.num_anchors, 4), self.logits.expand(n, -1, -1)


@pytest.fixture(scope="module")
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return build_model(tiny_config).eval()


def _image(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1)
    return (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)


def test_boxes_scale_back_to_original_pixels(tiny_config, tiny_names):
    coder = SSDBoxCoder(tiny_config)
    # boxes well inside the input (no clipping) at three levels
    xyxy = torch.cat([coder.default_boxes[:, :2] - coder.default_boxes[:, 2:] / 2,
                      coder.default_boxes[:, :2] + coder.default_boxes[:, 2:] / 2], 1)
    inside = ((xyxy >= 5) & (xyxy <= tiny_config.input_size - 5)).all(1).nonzero().squeeze(1)
    picks = {int(inside[0]): 0, int(inside[len(inside) // 2]): 1, int(inside[-1]): 2}
    det = Detector(FixedModel(tiny_config, picks), tiny_config, tiny_names, preset="visualize")
    small = det(torch.from_numpy(_image(120, 160)).permute(2, 0, 1))
    big = det(torch.from_numpy(_image(360, 480)).permute(2, 0, 1))
    assert len(small["boxes"]) == 3 and len(big["boxes"]) == 3
    order_s, order_b = small["labels"].argsort(), big["labels"].argsort()
    assert torch.allclose(big["boxes"][order_b], small["boxes"][order_s] * 3, atol=1.0)
    # and exactly the default boxes scaled by (W/S, H/S)
    for anchor, label in picks.items():
        k = int((small["labels"] == label).nonzero())
        expect = xyxy[anchor] * torch.tensor([160 / 300, 120 / 300, 160 / 300, 120 / 300])
        assert torch.allclose(small["boxes"][k], expect, atol=1e-3)
        assert small["names"][k] == tiny_names[label]


def test_boxes_clipped_to_original_image(tiny_config, tiny_names):
    coder = SSDBoxCoder(tiny_config)
    xyxy = torch.cat([coder.default_boxes[:, :2] - coder.default_boxes[:, 2:] / 2,
                      coder.default_boxes[:, :2] + coder.default_boxes[:, 2:] / 2], 1)
    outside = int((xyxy[:, 2] > tiny_config.input_size + 10).nonzero()[0])
    det = Detector(FixedModel(tiny_config, {outside: 0}), tiny_config, tiny_names)
    out = det(torch.zeros(3, 50, 70, dtype=torch.uint8))
    assert out["boxes"][:, [0, 2]].max() <= 70 and out["boxes"][:, [1, 3]].max() <= 50
    assert out["boxes"].min() >= 0


def test_input_kinds_give_the_same_result(tmp_path, tiny_model, tiny_config, tiny_names):
    arr = _image(90, 130, seed=3)
    path = tmp_path / "img.png"
    Image.fromarray(arr).save(path)
    det = Detector(tiny_model, tiny_config, tiny_names, preset="evaluate")
    ref = det(torch.from_numpy(arr).permute(2, 0, 1).contiguous())
    assert set(ref) == {"boxes", "labels", "scores", "names"} and len(ref["boxes"]) > 0
    # every 8-bit kind is the same uint8 image: the same pixels through the one preprocessing, the same detections
    kinds = [str(path), path, Image.fromarray(arr), arr]
    batch = det(kinds, batch_size=len(kinds))
    assert isinstance(batch, list) and len(batch) == len(kinds)
    for out in batch:  # (other batch sizes may take other conv kernels: equal up to float rounding)
        assert out["names"] == ref["names"] and torch.equal(out["labels"], ref["labels"])
        assert torch.allclose(out["boxes"], ref["boxes"], atol=1e-4)
    assert [torch.equal(a["boxes"], b["boxes"]) for a, b in zip(batch, batch[1:])] == [True] * 3
    # float 0-1 input is resized in float (not rounded to uint8): in a mixed batch it gives what it gives alone,
    # and the uint8 images beside it are unaffected
    as_float = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    alone = det(as_float)
    mixed = det([as_float, arr], batch_size=2)
    assert torch.allclose(mixed[0]["boxes"], alone["boxes"], atol=1e-4)
    assert torch.equal(mixed[0]["labels"], alone["labels"])
    assert torch.allclose(mixed[1]["boxes"], ref["boxes"], atol=1e-4) and torch.equal(mixed[1]["labels"], ref["labels"])


def test_batching_mixed_sizes_matches_one_batch(tiny_model, tiny_config, tiny_names):
    images = [torch.from_numpy(_image(h, w, seed=h)).permute(2, 0, 1) for h, w in [(100, 150), (80, 60), (90, 150)]]
    det = Detector(tiny_model, tiny_config, tiny_names, preset="evaluate", batch_size=2)
    chunked = det(images)
    whole = det(images, batch_size=3)
    for a, b in zip(chunked, whole):
        assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
        assert torch.equal(a["labels"], b["labels"])


def test_presets_and_overrides(tiny_model, tiny_config, tiny_names):
    det = Detector(tiny_model, tiny_config, tiny_names)
    assert det.settings == PRESETS["visualize"] and det.settings["score_thresh"] == 0.6
    ev = Detector(tiny_model, tiny_config, tiny_names, preset="evaluate", score_thresh=0.3, max_detections=5)
    assert ev.settings["score_thresh"] == 0.3 and ev.settings["max_detections"] == 5
    assert ev.settings["top_k"] == PRESETS["evaluate"]["top_k"]
    out = ev(torch.from_numpy(_image()).permute(2, 0, 1))
    assert len(out["scores"]) <= 5 and bool((out["scores"] > 0.3).all())
    with pytest.raises(SSDKitError, match="unknown preset 'fast'.*visualize, evaluate"):
        Detector(tiny_model, tiny_config, tiny_names, preset="fast")
    with pytest.raises(SSDKitError, match="score"):
        resolve_preset("evaluate", score=0.2)


def test_normalizer_matches_config_formula(tiny_config):
    x = torch.rand(2, 3, 8, 8) * 255
    mean, std = torch.tensor(tiny_config.mean).view(1, 3, 1, 1), torch.tensor(tiny_config.std).view(1, 3, 1, 1)
    assert torch.allclose(InputNormalizer(tiny_config)(x), (x / 255 - mean) / std, atol=1e-5)
    bgr = ModelConfig(width_mult=0.125, num_classes=4, channel_order="bgr", mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    m, s = torch.tensor(bgr.mean).view(1, 3, 1, 1), torch.tensor(bgr.std).view(1, 3, 1, 1)
    assert torch.allclose(InputNormalizer(bgr)(x), (x.flip(1) / 255 - m) / s, atol=1e-5)


def test_bad_inputs_are_user_errors(tiny_model, tiny_config, tiny_names):
    with pytest.raises(SSDKitError, match="0-1"):
        to_image_tensor(torch.full((3, 4, 4), 200.0))
    with pytest.raises(SSDKitError, match="Tensor\\[3, H, W\\]"):
        to_image_tensor(torch.zeros(4, 4, 3, dtype=torch.uint8))
    with pytest.raises(SSDKitError, match="expected a path"):
        to_image_tensor(42)
    with pytest.raises(SSDKitError, match="cannot read image"):
        Detector(tiny_model, tiny_config, tiny_names)("/nonexistent/x.jpg")
    with pytest.raises(SSDKitError, match="class_names"):
        Detector(tiny_model, tiny_config, ("a",))


def test_from_checkpoint(tmp_path, tiny_model, tiny_config, tiny_names):
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_model, Config(model=tiny_config), tiny_names)
    det = Detector.from_checkpoint(path, device="cpu", preset="evaluate")
    assert det.class_names == tiny_names and det.settings["score_thresh"] == 0.01
    ref = Detector(tiny_model, tiny_config, tiny_names, preset="evaluate")
    img = torch.from_numpy(_image()).permute(2, 0, 1)
    assert torch.allclose(det(img)["boxes"], ref(img)["boxes"])


def test_bad_checkpoint_path_is_one_line_error(tmp_path):
    with pytest.raises(CheckpointError) as e:
        Detector.from_checkpoint(tmp_path / "missing.pt", device="cpu")
    assert "missing.pt" in str(e.value) and "\n" not in str(e.value)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as e:
        Detector.from_checkpoint(junk, device="cpu")
    assert "junk.pt" in str(e.value) and "\n" not in str(e.value)


def test_detector_is_exported_from_the_package():
    import ssdkit
    from ssdkit import Detector as PublicDetector

    assert PublicDetector is Detector and "Detector" in ssdkit.__all__
    # a fresh interpreter: the package import has no cycle through ssdkit.inference
    code = "from ssdkit import Detector; import ssdkit.inference as i; assert Detector is i.Detector"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bf16_and_exported_files_give_the_checkpoints_detections(tmp_path, tiny_checkpoint):
    from ssdkit.export import export_onnx

    images = [torch.from_numpy(_image(120, 160, seed=s)).permute(2, 0, 1) for s in (1, 2)]
    ref = Detector.from_checkpoint(tiny_checkpoint, device="cpu", preset="evaluate")(images)
    bf16 = Detector.from_checkpoint(tiny_checkpoint, device="cpu", preset="evaluate", precision="bf16")
    assert bf16.precision == "bf16" and next(bf16.model.parameters()).dtype == torch.bfloat16
    top = bf16(images)
    for a, b in zip(ref, top):  # bf16 moves boxes by a pixel or so: the most confident ones are still found
        assert len(b["scores"]) > 0
        for box, label in zip(a["boxes"][:5], a["labels"][:5]):
            same = b["boxes"][b["labels"] == label]
            assert len(same) and float((same - box).abs().amax(1).min()) < 4.0
    onnx = tmp_path / "m.onnx"
    export_onnx(tiny_checkpoint, onnx)
    from_file = Detector.from_file(onnx, preset="evaluate")
    assert from_file.exported and from_file.class_names == ref_names(tiny_checkpoint)
    for a, b in zip(ref, from_file(images)):
        assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
    with pytest.raises(SSDKitError, match="precision"):
        Detector.from_file(onnx, precision="bf16")
    with pytest.raises(SSDKitError, match="precision"):
        Detector.from_checkpoint(tiny_checkpoint, device="cpu", precision="fp8")


def ref_names(path):
    from ssdkit.checkpoint import load_checkpoint

    return tuple(load_checkpoint(path)["class_names"])
