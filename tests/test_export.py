"""ONNX / TorchScript / safetensors export: parity with eager PyTorch, dynamic batch, metadata, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ssdkit.data.preprocess import resize_batch, to_image_tensor
from ssdkit.errors import CheckpointError, SSDKitError
from ssdkit.export import check_parity, export, export_onnx, export_safetensors, export_torchscript, load_safetensors

ort = pytest.importorskip("onnxruntime")


def _images() -> list[torch.Tensor]:
    rng = np.random.default_rng(1)
    out = []
    for h, w in [(300, 300), (240, 320), (500, 375)]:
        y, x = np.mgrid[0:h, 0:w]
        img = np.stack([x * 255 // w, y * 255 // h, rng.integers(0, 255, (h, w))], 0)
        out.append(torch.from_numpy(img.astype(np.uint8)))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint):
    """One export per (format, postprocess), shared by the tests of this module."""
    cache = {}

    def get(fmt: str, postprocess: bool):
        if (fmt, postprocess) not in cache:
            folder = tmp_path_factory.mktemp(f"{fmt}_{postprocess}")
            path = folder / ("m.onnx" if fmt == "onnx" else "m.pt")
            exporter = export_onnx if fmt == "onnx" else export_torchscript
            info = exporter(tiny_checkpoint, path, with_postprocess=postprocess)
            assert info["with_postprocess"] is postprocess and info["path"] == str(path)
            assert [p.name for p in folder.iterdir()] == [path.name]  # written atomically, no temp file left
            cache[fmt, postprocess] = path
        return cache[fmt, postprocess]

    return get


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("postprocess", [False, True])
def test_parity_with_eager(exported, tiny_checkpoint, fmt, postprocess):
    path = exported(fmt, postprocess)
    result = check_parity(tiny_checkpoint, path, images=_images())
    assert result["runtime"] == ("onnxruntime" if fmt == "onnx" else "torchscript")
    assert result["images"] == 3 and result["detections"] > 0
    assert result["labels_agree"], result
    assert result["max_box_diff"] < 1e-3, result


def test_onnx_dynamic_batch_and_padded_outputs(tmp_path, tiny_checkpoint, tiny_names):
    path = tmp_path / "nms.onnx"
    export_onnx(tiny_checkpoint, path, with_postprocess=True, score_thresh=0.3, max_detections=50)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(tiny_names) and json.loads(meta["decode"])["score_thresh"] == 0.3
    x = resize_batch([to_image_tensor(im) for im in _images()], 300).float().numpy()
    one = sess.run(None, {"images": x[:1]})
    three = sess.run(None, {"images": x})
    boxes, scores, labels, count = three
    assert boxes.shape == (3, 50, 4) and scores.shape == (3, 50) and labels.shape == (3, 50) and count.shape == (3,)
    assert labels.dtype == np.int64
    np.testing.assert_allclose(one[0][0], boxes[0], atol=1e-3)
    assert one[3][0] == count[0]
    for i, k in enumerate(count):
        assert (scores[i, :k] > 0.3).all() and (scores[i, k:] == 0).all() and (labels[i, k:] == -1).all()
        assert (boxes[i, k:] == 0).all() and (np.diff(scores[i, :k]) <= 0).all()


def test_raw_onnx_outputs_and_batch(exported, tiny_config):
    path = exported("onnx", False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = resize_batch([to_image_tensor(im) for im in _images()], 300).float()
    loc1, logits1 = sess.run(None, {"images": x[:1].numpy()})
    loc3, logits3 = sess.run(None, {"images": x.numpy()})
    assert loc3.shape[0] == 3 and logits3.shape[2] == tiny_config.num_classes
    np.testing.assert_allclose(loc1[0], loc3[0], atol=1e-4)


def test_safetensors_round_trip(tmp_path, tiny_checkpoint, tiny_config, tiny_names):
    from safetensors import safe_open

    path = tmp_path / "w.safetensors"
    export_safetensors(tiny_checkpoint, path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["class_names"]) == list(tiny_names)
    assert json.loads(meta["config"])["model"]["width_mult"] == tiny_config.width_mult
    model, cfg, names = load_safetensors(path)
    ref = torch.load(tiny_checkpoint, weights_only=True)["model"]
    assert cfg.model == tiny_config and names == tiny_names
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    with pytest.raises(CheckpointError, match="missing.safetensors"):
        load_safetensors(tmp_path / "missing.safetensors")


def test_export_command_function(tmp_path, tiny_checkpoint):
    out = tmp_path / "cli.onnx"
    info = export(tiny_checkpoint, "onnx", out=out)
    assert info["path"] == str(out) and info["parity_labels_agree"] and info["parity_max_box_diff"] < 1e-3
    st = export(tiny_checkpoint, "safetensors", out=tmp_path / "w.safetensors")
    assert st["max_weight_diff"] == 0.0 and st["metadata_agrees"]
    with pytest.raises(SSDKitError, match="unknown export format 'tflite'"):
        export(tiny_checkpoint, "tflite")
    with pytest.raises(SSDKitError, match="with-postprocess"):
        export(tiny_checkpoint, "safetensors", with_postprocess=True)
    with pytest.raises(CheckpointError) as e:
        export(tmp_path / "missing.pt", "onnx")
    assert "missing.pt" in str(e.value) and "\n" not in str(e.value)
