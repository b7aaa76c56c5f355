"""TorchScript export (deprecated upstream; kept): metadata in the archive, dynamic batch."""

from __future__ import annotations

import json
import warnings

import torch

from ssdkit.export.graph import example


def test_torchscript_metadata_and_batch(exported, tiny_names, tiny_config):
    path = exported("torchscript", True)
    files = {"ssdkit.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), _extra_files=files)
    meta = json.loads(files["ssdkit.json"])
    assert meta["format"] == "ssdkit-torchscript" and json.loads(meta["class_names"]) == list(tiny_names)
    with torch.no_grad():
        boxes, scores, labels, count = module(example(tiny_config, 3))
    assert boxes.shape == (3, 200, 4) and count.shape == (3,)
