"""torch.export (``.pt2``) export: an ExportedProgram with a dynamic batch and ssdkit metadata."""

from __future__ import annotations

import json

import torch

from ssdkit.export.graph import ExportModule, example


def test_pt2_program_metadata_and_dynamic_batch(exported, tiny_checkpoint, tiny_names, tiny_config):
    from ssdkit.checkpoint import model_from_checkpoint

    path = exported("pt2", False)
    files = {"ssdkit.json": ""}
    program = torch.export.load(str(path), extra_files=files)
    meta = json.loads(files["ssdkit.json"])
    assert meta["format"] == "ssdkit-pt2" and json.loads(meta["class_names"]) == list(tiny_names)
    model, _, _ = model_from_checkpoint(tiny_checkpoint, device="cpu")
    ref = ExportModule(model, tiny_config).eval()
    for n in (1, 3):  # batch 1 is not specialised away
        x = example(tiny_config, n)
        with torch.no_grad():
            loc, logits = program.module()(x)
            rloc, rlogits = ref(x)
        assert loc.shape == (n, rloc.shape[1], 4)
        torch.testing.assert_close(loc, rloc, atol=1e-5, rtol=0)
        torch.testing.assert_close(logits, rlogits, atol=1e-5, rtol=0)


def test_pt2_with_postprocess_padded_outputs(exported, tiny_config):
    files = {"ssdkit.json": ""}
    program = torch.export.load(str(exported("pt2", True)), extra_files=files)
    assert json.loads(json.loads(files["ssdkit.json"])["decode"])["max_detections"] == 200
    with torch.no_grad():
        boxes, scores, labels, count = program.module()(example(tiny_config, 2))
    assert boxes.shape == (2, 200, 4) and labels.dtype == torch.int64 and count.shape == (2,)
