import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from ssdkit.anchors import default_boxes, default_boxes_for, level_of_default_boxes
from ssdkit.config import ModelConfig, ssd300_config, ssd512_config


def _torchvision_boxes(cfg: ModelConfig, clip: bool) -> torch.Tensor:
    scales = [s / cfg.input_size for s in cfg.box_sizes]
    gen = DefaultBoxGenerator([list(a) for a in cfg.aspect_ratios], scales=scales, steps=list(cfg.steps), clip=clip)
    rel = gen._grid_default_boxes([[f, f] for f in cfg.fm_sizes], [cfg.input_size, cfg.input_size])
    return rel * cfg.input_size


@pytest.mark.parametrize("cfg", [ssd300_config(), ssd512_config(), ssd300_config(box_sizes=(3, 6, 11, 16, 21, 26, 31))])
def test_default_boxes_equal_torchvision_generator(cfg):
    ours = default_boxes_for(cfg)
    theirs = _torchvision_boxes(cfg, clip=False)
    assert ours.shape == theirs.shape
    # same order as well as same set
    assert torch.allclose(ours, theirs, atol=1e-3)


def test_clipped_default_boxes_equal_torchvision_clip():
    cfg = ssd300_config(clip_default_boxes=True, box_sizes=(21, 45, 99, 153, 207, 261, 315))
    assert torch.allclose(default_boxes_for(cfg), _torchvision_boxes(cfg, clip=True), atol=1e-3)
    assert default_boxes_for(cfg)[:, 2:].max() <= 300


def test_counts_and_levels():
    assert default_boxes_for(ssd300_config()).shape == (8732, 4)
    assert default_boxes_for(ssd512_config()).shape == (24564, 4)
    lv = level_of_default_boxes(ssd300_config())
    assert torch.bincount(lv).tolist() == [5776, 2166, 600, 150, 36, 4]


def test_length_mismatch_is_rejected():
    with pytest.raises(ValueError, match="one entry per level"):
        default_boxes((38, 19), (8, 16), (30, 60), ((2,), (2,)))
