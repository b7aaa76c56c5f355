"""Encode / decode outputs of fixed scenes stay what they were when ``tests/data/pinned_coder.json`` was written
(by ``tests/make_pinned.py``, before the coder was split into matching / coder / postprocess).

Integers (matched default boxes, classes, labels) must be equal; floats equal up to the last bits, which may
differ between CPUs (vectorised ``log``/``exp`` differ between AVX2 and AVX-512 builds).
"""

import json
from pathlib import Path

import pytest
import torch
from make_pinned import CONFIGS, compute

PINNED = json.loads((Path(__file__).parent / "data" / "pinned_coder.json").read_text())


@pytest.fixture(scope="module")
def now():
    return compute()


def close(a, b, atol):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    assert a.shape == b.shape
    assert torch.allclose(a, b, rtol=1e-6, atol=atol), float((a - b).abs().max())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_encode_matches_the_pinned_targets(now, name):
    for got, ref in zip(now[name]["encode"], PINNED[name]["encode"], strict=True):
        assert got["index"] == ref["index"] and got["cls"] == ref["cls"]
        close(got["loc"], ref["loc"], 1e-5)
        close(got["unmatched_loc_sum"], ref["unmatched_loc_sum"], 1e-3)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decode_matches_the_pinned_detections(now, name):
    for preset, ref_images in PINNED[name]["decode_batch"].items():
        for got, ref in zip(now[name]["decode_batch"][preset], ref_images, strict=True):
            assert got["labels"] == ref["labels"], preset
            close(got["scores"], ref["scores"], 1e-6)
            close(got["boxes"], ref["boxes"], 1e-4)
    got, ref = now[name]["decode"], PINNED[name]["decode"]
    assert got["labels"] == ref["labels"]
    close(got["scores"], ref["scores"], 1e-6)
    close(got["boxes"], ref["boxes"], 1e-4)
