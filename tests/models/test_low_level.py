"""The stride-4 prediction level (``model.extra_low_level``, preset ``ssd300_tiny``): the network, its default
boxes and the coder follow from the config."""

import torch
from test_anchors import _torchvision_boxes

from ssdkit import SSD300, SSDBoxCoder
from ssdkit.anchors import default_boxes_for, level_of_default_boxes
from ssdkit.config import tiny_objects_config


def test_tiny_preset_default_boxes_equal_the_generators_definition():
    cfg = tiny_objects_config(4)
    assert cfg.fm_sizes == (75, 38, 19, 10, 5, 3, 1) and cfg.extra_low_level
    ours = default_boxes_for(cfg)
    assert torch.allclose(ours, _torchvision_boxes(cfg, clip=False), atol=1e-3)  # torchvision's DefaultBoxGenerator
    assert torch.bincount(level_of_default_boxes(cfg)).tolist()[0] == 75 * 75 * 4
    first = ours[:4]  # cell (0, 0) of the stride-4 level: centre 2 px, sizes 15 and sqrt(15 * 30)
    assert torch.allclose(first[:, :2], torch.full((4, 2), 2.0))
    assert torch.allclose(first[:2, 2], torch.tensor([15.0, (15 * 30) ** 0.5]))


def test_the_network_predicts_for_every_default_box_and_tiny_objects_get_matched():
    model = SSD300(num_classes=4, config=tiny_objects_config(4), width_mult=0.125, batch_norm=True).eval()
    assert model.extractor.out_channels[0] == 32  # conv3_3 at width 0.125, normalised by its own L2Norm
    loc, cls = model(torch.rand(2, 3, 300, 300))
    assert loc.shape == (2, 31232, 4) and cls.shape == (2, 31232, 4)
    coder = SSDBoxCoder(model)
    boxes = torch.tensor([[100.0, 100.0, 110.0, 110.0], [50.0, 60.0, 58.0, 66.0]])  # 10 px and 8 x 6 px objects
    _, targets = coder.encode(boxes, torch.tensor([0, 2]))
    low = level_of_default_boxes(model.config) == 0
    assert (targets[low] > 0).sum() >= 2  # matched on the stride-4 level, which SSD300 does not have
