"""safetensors: weights with the config and class names in the metadata."""

from __future__ import annotations

import json

import pytest
import torch

from ssdkit.errors import CheckpointError
from ssdkit.export import export_safetensors, load_safetensors


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
