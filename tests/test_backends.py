"""ssdkit.backends: exported files as runners (load_exported), the decode helpers, refusing foreign files."""

from __future__ import annotations

import pytest
import torch

from ssdkit.backends import EagerRunner, check_settings, detections, load_exported, padded_detections
from ssdkit.checkpoint import model_from_checkpoint
from ssdkit.coder import SSDBoxCoder
from ssdkit.errors import CheckpointError, SSDKitError
from ssdkit.export import export_onnx, export_pt2
from ssdkit.export.graph import example
from ssdkit.export.parity import compare_detections
from ssdkit.inference import resolve_preset

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_checkpoint):
    folder = tmp_path_factory.mktemp("backends")
    export_onnx(tiny_checkpoint, folder / "raw.onnx")
    export_pt2(tiny_checkpoint, folder / "nms.pt2", with_postprocess=True)
    return folder


def _eager(tiny_checkpoint, x, settings):
    model, cfg, _ = model_from_checkpoint(tiny_checkpoint, device="cpu")
    loc, logits = EagerRunner(model, cfg.model, channels_last=False)(x)
    return SSDBoxCoder(cfg.model).decode_batch(loc, logits, **settings, clip=True)


def test_load_exported_raw_onnx(files, tiny_checkpoint, tiny_config, tiny_names):
    runner, cfg, names, info = load_exported(files / "raw.onnx")
    assert cfg.model == tiny_config and names == tiny_names
    assert info == {"path": str(files / "raw.onnx"), "format": "onnx", "runtime": "onnxruntime", "precision": "fp32",
                    "with_postprocess": False, "decode": None, "dynamic_batch": True, "ssdkit_version": info[
                        "ssdkit_version"]}
    assert runner.takes_pixels and runner.decode is None and isinstance(runner, torch.nn.Module)
    assert runner.to("cpu") is runner and runner.eval() is runner  # what Detector.__init__ calls
    x = example(tiny_config, 3)
    loc, logits = runner(x.to(torch.uint8).float())
    assert loc.shape == (3, 8732, 4) and logits.shape == (3, 8732, 4) and loc.dtype == torch.float32
    settings = resolve_preset("evaluate")
    got = detections(runner, runner(x), SSDBoxCoder(cfg.model), settings)
    ref = _eager(tiny_checkpoint, x, settings)
    worst, agree = compare_detections(ref, got)  # order-free: near-tied scores of a random model may swap
    assert agree and worst < 1e-3


def test_postprocess_file_applies_stricter_settings_exactly(files, tiny_checkpoint, tiny_config):
    runner, cfg, _, info = load_exported(files / "nms.pt2")
    assert info["format"] == "pt2" and info["with_postprocess"] and runner.decode["score_thresh"] == 0.01
    x = example(tiny_config, 2)
    outs = runner(x)
    coder = SSDBoxCoder(cfg.model)
    strict = resolve_preset("evaluate", score_thresh=0.3, max_detections=5)
    got = detections(runner, outs, coder, strict)
    ref = _eager(tiny_checkpoint, x, strict)
    for g, r in zip(got, ref):
        assert len(g["boxes"]) == len(r["boxes"]) <= 5 and (g["scores"] > 0.3).all()
    worst, agree = compare_detections(ref, got)
    assert agree and worst < 1e-3
    for bad in ({"nms_thresh": 0.5}, {"score_thresh": 0.001}, {"top_k": 100}):
        with pytest.raises(SSDKitError) as e:
            check_settings(runner, resolve_preset("evaluate", **bad))
        assert "\n" not in str(e.value)
    assert len(padded_detections(outs)) == 2


def test_refuses_files_not_written_by_ssdkit(tmp_path, tiny_checkpoint, files):
    import onnx

    proto = onnx.load(str(files / "raw.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "foreign.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "notes.txt").write_text("hello")
    cases = {tmp_path / "foreign.onnx": "no ssdkit metadata", tmp_path / "junk.onnx": "not a readable ONNX",
             tiny_checkpoint: "checkpoint, not an exported model", tmp_path / "notes.txt": "not an exported ssdkit",
             tmp_path / "missing.onnx": "not found"}
    for path, message in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_exported(path)
        assert message in str(e.value) and str(path) in str(e.value) and "\n" not in str(e.value)


def test_eager_runner_bf16(tiny_checkpoint, tiny_config):
    model, cfg, _ = model_from_checkpoint(tiny_checkpoint, device="cpu")
    x = example(tiny_config, 2)
    ref = EagerRunner(model, cfg.model, channels_last=False)(x)
    model, _, _ = model_from_checkpoint(tiny_checkpoint, device="cpu")
    got = EagerRunner(model, cfg.model, precision="bf16")(x)
    assert got[0].dtype == torch.float32 and got[0].shape == ref[0].shape
    assert (got[1] - ref[1]).abs().max() < 0.5  # bf16 keeps ~3 significant digits
    with pytest.raises(SSDKitError, match="precision"):
        EagerRunner(model, cfg.model, precision="fp16")
