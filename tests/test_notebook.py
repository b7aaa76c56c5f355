"""The seed notebook's cells, run against ssdkit with only the import lines changed, and its printed numbers."""

import itertools

import pytest
import torch
from torch.nn import functional as F
from torchvision.models.vgg import vgg16

from ssdkit import SSD300, SSDBoxCoder
from ssdkit.boxes import box_iou, change_box_order  # noqa: F401  (the notebook imports them)
from ssdkit.loss import SSDLoss
from ssdkit.utils import to_variable


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SSD300(num_classes=10)


@pytest.fixture(scope="module")
def feature_maps(model):
    x = to_variable(torch.rand(12, 3, 300, 300))
    with torch.no_grad():
        return x, model.extractor(x)


def _same_layer(ours, theirs):
    # The notebook printed ceil_mode=True vs False for the pools; everything else is identical.
    if isinstance(theirs, torch.nn.MaxPool2d):
        assert isinstance(ours, torch.nn.MaxPool2d)
        assert (ours.kernel_size, ours.stride, ours.padding, ours.dilation) == (
            theirs.kernel_size, theirs.stride, theirs.padding, theirs.dilation)
        assert ours.ceil_mode is True and theirs.ceil_mode is False
    else:
        assert repr(ours) == repr(theirs)


def test_cell5_block1_to_4_match_vgg16(model):
    vgg = vgg16(num_classes=10)
    assert len(model.extractor.features.layers) == 23
    for i in range(23):
        _same_layer(model.extractor.features.layers[i], vgg.features[i])


def test_cell6_block5_matches_vgg16(model):
    vgg = vgg16(num_classes=10)
    ours = [model.extractor.conv5_1, model.extractor.conv5_2, model.extractor.conv5_3]
    for l1, l2 in zip(ours, [vgg.features[24], vgg.features[26], vgg.features[28]]):
        assert repr(l1) == repr(l2) == "Conv2d(512, 512, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"


def test_cell8_last_blocks(model):
    expected = {
        "6": "Conv2d(512, 1024, kernel_size=(3, 3), stride=(1, 1), padding=(6, 6), dilation=(6, 6))",
        "7": "Conv2d(1024, 1024, kernel_size=(1, 1), stride=(1, 1))",
        "8_1": "Conv2d(1024, 256, kernel_size=(1, 1), stride=(1, 1))",
        "8_2": "Conv2d(256, 512, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))",
        "9_1": "Conv2d(512, 128, kernel_size=(1, 1), stride=(1, 1))",
        "9_2": "Conv2d(128, 256, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1))",
        "10_1": "Conv2d(256, 128, kernel_size=(1, 1), stride=(1, 1))",
        "10_2": "Conv2d(128, 256, kernel_size=(3, 3), stride=(1, 1))",
        "11_1": "Conv2d(256, 128, kernel_size=(1, 1), stride=(1, 1))",
        "11_2": "Conv2d(128, 256, kernel_size=(3, 3), stride=(1, 1))",
    }
    for n, text in expected.items():
        assert repr(getattr(model.extractor, f"conv{n}")) == text


def test_cell10_feature_maps(feature_maps):
    _, fms = feature_maps
    assert isinstance(fms, list) and len(fms) == 6
    shapes = [tuple(o.shape) for o in fms]
    assert shapes == [(12, 512, 38, 38), (12, 1024, 19, 19), (12, 512, 10, 10), (12, 256, 5, 5),
                      (12, 256, 3, 3), (12, 256, 1, 1)]


def test_cell11_12_predictor_widths(model):
    assert [n * 4 for n in model.num_anchors] == [16, 24, 24, 24, 16, 16]
    assert [n * 10 for n in model.num_anchors] == [40, 60, 60, 60, 40, 40]
    assert [(m.in_channels, m.out_channels) for m in model.loc_layers] == [
        (512, 16), (1024, 24), (512, 24), (256, 24), (256, 16), (256, 16)]
    assert [(m.in_channels, m.out_channels) for m in model.cls_layers] == [
        (512, 40), (1024, 60), (512, 60), (256, 60), (256, 40), (256, 40)]
    for m in [*model.loc_layers, *model.cls_layers]:
        assert m.kernel_size == (3, 3) and m.padding == (1, 1)


def test_cells13_to_16_per_level_predictions(model, feature_maps):
    _, fms = feature_maps
    counts = []
    with torch.no_grad():
        for index in range(6):
            loc_pred = model.loc_layers[index](fms[index]).permute(0, 2, 3, 1).contiguous()
            loc_pred = loc_pred.view(loc_pred.size(0), -1, 4)
            cls_pred = model.cls_layers[index](fms[index]).permute(0, 2, 3, 1).contiguous()
            cls_pred = cls_pred.view(cls_pred.size(0), -1, 10)
            assert loc_pred.shape[0] == cls_pred.shape[0] == 12
            assert loc_pred.shape[1] == cls_pred.shape[1]
            counts.append(loc_pred.shape[1])
    assert counts == [5776, 2166, 600, 150, 36, 4]


def test_cell17_18_concatenated(model, feature_maps):
    x, _ = feature_maps
    with torch.no_grad():
        loc_preds, cls_preds = model(x[:2])
    for loc_pred, cls_pred in zip(loc_preds, cls_preds):
        assert loc_pred.shape == (8732, 4) and cls_pred.shape == (8732, 10)


def test_cell20_centres(model):
    """The notebook printed, per level, the first and last cell's centre ``(w + 0.5) * step`` and box size:
    ssdkit's default boxes of those cells (their first shape, ``(s_k, s_k)``) have exactly those values."""
    steps = (8, 16, 32, 64, 100, 300)
    fm_sizes = (38, 19, 10, 5, 3, 1)
    box_sizes = (30, 60, 111, 162, 213, 264, 315)
    printed = []
    for i, fm_size in enumerate(fm_sizes):
        hws = list(itertools.product(range(fm_size), repeat=2))
        for h, w in [hws[0], hws[-1]]:
            printed.append(((w + 0.5) * steps[i], (h + 0.5) * steps[i], box_sizes[i]))
    assert printed[0] == (4.0, 4.0, 30) and printed[1] == (300.0, 300.0, 30)
    assert printed[-1] == (150.0, 150.0, 264)

    d = SSDBoxCoder(model)._get_default_boxes()
    got, start = [], 0
    for f, k in zip(fm_sizes, model.num_anchors):  # cells row-major, k shapes per cell
        for cell in (0, f * f - 1):
            cx, cy, bw, bh = d[start + cell * k].tolist()
            assert bw == bh
            got.append((cx, cy, bw))
        start += f * f * k
    assert start == len(d) == 8732
    assert got == printed


def test_cell21_default_boxes(model):
    box_coder = SSDBoxCoder(model)
    d = box_coder._get_default_boxes()
    assert d.shape == (8732, 4) and d.dtype == torch.float32
    first = torch.tensor([[4, 4, 30, 30], [4, 4, 42.4264, 42.4264], [4, 4, 42.4264, 21.2132]])
    last = torch.tensor([[150, 150, 288.3748, 288.3748], [150, 150, 373.3524, 186.6762],
                         [150, 150, 186.6762, 373.3524]])
    assert torch.allclose(d[:3], first, atol=5e-5)
    assert torch.allclose(d[-3:], last, atol=5e-5)


def _roundtrip(box_coder, objs, labels, num_cols):
    loc_targets, cls_targets = box_coder.encode(objs, labels)
    cls_preds = torch.zeros(cls_targets.shape[0], num_cols)
    cls_preds.scatter_(1, cls_targets.unsqueeze(1), 0.7)
    boxes, labels, scores = box_coder.decode(loc_targets, cls_preds, score_thresh=0.0, nms_thresh=0.0)
    return loc_targets, cls_targets, boxes, labels, scores


def test_cell75_76_77_small_objects(model):
    box_coder = SSDBoxCoder(model)
    objs = torch.Tensor([[1, 1, 5, 5], [10, 10, 11, 11], [150, 150, 155, 155]])
    labels = torch.LongTensor([1, 0, 2])
    loc_targets, cls_targets, boxes, labels, scores = _roundtrip(box_coder, objs, labels, 4)
    assert loc_targets.shape == (8732, 4) and cls_targets.shape == (8732,)
    expected = torch.tensor([[10, 10, 11, 11], [1, 1, 5, 5], [150, 150, 155, 155]], dtype=torch.float32)
    assert torch.allclose(boxes, expected, atol=5e-5)
    assert torch.allclose(scores, torch.full((3,), 0.7))
    # In[76]: the printed column minima and maxima, exactly
    printed = [
        (-140.00718688964844, 1.53206467628479),
        (-140.00718688964844, 3.06412935256958),
        (-22.681140899658203, -8.341645240783691),
        (-22.681140899658203, -7.225927829742432),
    ]
    for i, (lo, hi) in enumerate(printed):
        assert loc_targets[:, i].min().item() == lo
        assert loc_targets[:, i].max().item() == hi
    # In[77]
    assert (cls_targets.min().item(), cls_targets.max().item()) == (0, 3)


def test_cell74_large_objects(model):
    box_coder = SSDBoxCoder(model)
    objs = torch.Tensor([[1, 1, 50, 50], [150, 150, 255, 255]])
    labels = torch.LongTensor([0, 1])
    loc_targets, cls_targets, boxes, labels, scores = _roundtrip(box_coder, objs, labels, 3)
    assert loc_targets.shape == (8732, 4) and cls_targets.shape == (8732,)
    assert torch.allclose(boxes, objs, atol=1e-4)
    assert torch.allclose(scores, torch.full((2,), 0.7))


def test_cells84_to_110_loss_pieces(model):
    box_coder = SSDBoxCoder(model)
    loss_fn = SSDLoss(num_classes=model.num_classes)
    x = to_variable(torch.rand(1, 3, 300, 300))
    loc_preds, cls_preds = model(x)
    assert cls_preds.shape == (1, 8732, 10)
    objs = torch.Tensor([[1, 1, 5, 5], [10, 10, 11, 11], [150, 150, 155, 155]])
    labels = torch.LongTensor([1, 0, 2])
    loc_targets, cls_targets = box_coder.encode(objs, labels)
    loc_targets = loc_targets.unsqueeze(0)
    cls_targets = cls_targets.unsqueeze(0)
    assert cls_targets.shape == (1, 8732)
    pos = cls_targets > 0
    assert pos.long().sum().item() == 3
    mask = pos.unsqueeze(2).expand_as(loc_preds)
    assert mask.shape == (1, 8732, 4)
    # In[101] with the modern spelling of size_average=False
    loc_loss = F.smooth_l1_loss(loc_preds[mask], to_variable(loc_targets[mask]), reduction="sum")
    assert loc_loss.dim() == 0 and torch.isfinite(loc_loss)
    out = loss_fn(loc_preds, loc_targets, cls_preds, cls_targets)
    assert torch.allclose(out.loc_loss * 3, loc_loss)
