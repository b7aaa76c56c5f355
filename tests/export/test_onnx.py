"""ONNX export: dynamic batch, padded outputs, raw outputs, metadata, the dynamo exporter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssdkit.data.preprocess import resize_batch, to_image_tensor
from ssdkit.errors import SSDKitError
from ssdkit.export import export_onnx
from ssdkit.export.parity import check_parity

ort = pytest.importorskip("onnxruntime")


def test_onnx_dynamic_batch_and_padded_outputs(tmp_path, tiny_checkpoint, tiny_names, images):
    path = tmp_path / "nms.onnx"
    export_onnx(tiny_checkpoint, path, with_postprocess=True, score_thresh=0.3, max_detections=50)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(tiny_names) and json.loads(meta["decode"])["score_thresh"] == 0.3
    assert meta["format"] == "ssdkit-onnx" and meta["precision"] == "fp32"
    x = resize_batch([to_image_tensor(im) for im in images], 300).float().numpy()
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


def test_raw_onnx_outputs_and_batch(exported, tiny_config, images):
    path = exported("onnx", False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = resize_batch([to_image_tensor(im) for im in images], 300).float()
    loc1, logits1 = sess.run(None, {"images": x[:1].numpy()})
    loc3, logits3 = sess.run(None, {"images": x.numpy()})
    assert loc3.shape[0] == 3 and logits3.shape[2] == tiny_config.num_classes
    np.testing.assert_allclose(loc1[0], loc3[0], atol=1e-4)


def test_fixed_batch_file_runs_image_by_image(tmp_path, tiny_checkpoint, images):
    path = tmp_path / "b1.onnx"
    export_onnx(tiny_checkpoint, path, dynamic_batch=False)
    result = check_parity(tiny_checkpoint, path, images=images)
    assert result["images"] == 3 and result["labels_agree"] and result["max_box_diff"] < 1e-3


def test_bad_arguments(tmp_path, tiny_checkpoint):
    with pytest.raises(SSDKitError, match="opset"):
        export_onnx(tiny_checkpoint, tmp_path / "a.onnx", opset=10)
    with pytest.raises(SSDKitError, match="exporter"):
        export_onnx(tiny_checkpoint, tmp_path / "a.onnx", exporter="tracer")
    with pytest.raises(SSDKitError, match="calib"):
        export_onnx(tiny_checkpoint, tmp_path / "a.onnx", int8=True)
    with pytest.raises(SSDKitError, match="legacy"):
        export_onnx(tiny_checkpoint, tmp_path / "a.onnx", with_postprocess=True, exporter="dynamo")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_dynamo_exporter_raw_graph(tmp_path, tiny_checkpoint, images):
    pytest.importorskip("onnxscript")
    path = tmp_path / "dynamo.onnx"
    info = export_onnx(tiny_checkpoint, path, exporter="dynamo")
    assert info["format"] == "onnx"
    result = check_parity(tiny_checkpoint, path, images=images)
    assert result["labels_agree"] and result["max_box_diff"] < 1e-3 and result["max_output_diff"] < 1e-3
