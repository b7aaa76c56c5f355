"""Every fp32 format against eager PyTorch (boxes within 1e-3 px, same labels), and the ``export`` function."""

from __future__ import annotations

import pytest

from ssdkit.errors import CheckpointError, SSDKitError
from ssdkit.export import FORMATS, check_parity, export

RUNTIME = {"onnx": "onnxruntime", "torchscript": "torchscript", "pt2": "pt2", "openvino": "openvino"}
NEEDS = {"onnx": "onnxruntime", "openvino": "openvino"}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2", "openvino"])
@pytest.mark.parametrize("postprocess", [False, True])
def test_parity_with_eager(exported, tiny_checkpoint, images, fmt, postprocess):
    if fmt in NEEDS:
        pytest.importorskip(NEEDS[fmt])
    result = check_parity(tiny_checkpoint, exported(fmt, postprocess), images=images)
    assert result["runtime"] == RUNTIME[fmt]
    assert result["images"] == 3 and result["detections"] > 0
    assert result["labels_agree"], result
    assert result["max_box_diff"] < 1e-3, result


def test_export_command_function(tmp_path, tiny_checkpoint):
    pytest.importorskip("onnxruntime")
    assert {"onnx", "torchscript", "safetensors", "pt2", "openvino"} <= set(FORMATS)
    out = tmp_path / "cli.onnx"
    info = export(tiny_checkpoint, "onnx", out=out)
    assert info["path"] == str(out) and info["parity_labels_agree"] and info["parity_max_box_diff"] < 1e-3
    pt2 = export(tiny_checkpoint, "pt2", out=tmp_path / "m.pt2")
    assert pt2["parity_runtime"] == "pt2" and pt2["parity_max_box_diff"] < 1e-3
    st = export(tiny_checkpoint, "safetensors", out=tmp_path / "w.safetensors")
    assert st["max_weight_diff"] == 0.0 and st["metadata_agrees"]
    with pytest.raises(SSDKitError, match="unknown export format 'tflite'"):
        export(tiny_checkpoint, "tflite")
    with pytest.raises(SSDKitError, match="with-postprocess"):
        export(tiny_checkpoint, "safetensors", with_postprocess=True)
    with pytest.raises(SSDKitError, match="int8"):
        export(tiny_checkpoint, "pt2", int8=True, calib="shapes")
    with pytest.raises(SSDKitError, match="calib"):
        export(tiny_checkpoint, "onnx", int8=True)
    with pytest.raises(CheckpointError) as e:
        export(tmp_path / "missing.pt", "onnx")
    assert "missing.pt" in str(e.value) and "\n" not in str(e.value)


def test_default_names(tiny_checkpoint):
    from ssdkit.export.graph import default_out

    assert default_out(tiny_checkpoint, "onnx", True, int8=True).name == "tiny-nms-int8.onnx"
    assert default_out(tiny_checkpoint, "openvino", False).name == "tiny.xml"
    assert default_out(tiny_checkpoint, "pt2", False).name == "tiny.pt2"
