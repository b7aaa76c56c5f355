"""OpenVINO export (optional extra): fp32 parity lives in test_parity; here metadata, int8 and the missing package."""

from __future__ import annotations

import builtins

import pytest

from ssdkit.errors import SSDKitError
from ssdkit.export import check_map, export_openvino

from .conftest import fitted_scenes


def test_missing_package_is_one_line(monkeypatch, tmp_path, tiny_checkpoint):
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(SSDKitError) as e:
        export_openvino(tiny_checkpoint, tmp_path / "m.xml")
    assert "ssdkit[openvino]" in str(e.value) and "\n" not in str(e.value)


def test_openvino_metadata_and_name(exported, tiny_names, tmp_path, tiny_checkpoint):
    ov = pytest.importorskip("openvino")
    model = ov.Core().read_model(str(exported("openvino", False)))
    assert model.get_rt_info(["ssdkit", "format"]).astype(str) == "ssdkit-openvino"
    assert model.get_rt_info(["ssdkit", "precision"]).astype(str) == "fp32"
    with pytest.raises(SSDKitError, match="NAME.xml"):
        export_openvino(tiny_checkpoint, tmp_path / "m.onnx")


def test_openvino_int8_keeps_map(tmp_path, fitted_checkpoint):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    scenes = fitted_scenes()
    path = tmp_path / "int8.xml"
    info = export_openvino(fitted_checkpoint, path, int8=True, calib=scenes, calib_count=16)
    assert info["precision"] == "int8" and path.with_suffix(".bin").is_file()
    result = check_map(fitted_checkpoint, path, scenes, count=len(scenes))
    assert result["runtime"] == "openvino" and result["map_fp32"] > 0.5
    assert result["map_change"] > -0.01, result  # loses less than 1 point (gains are fine)
