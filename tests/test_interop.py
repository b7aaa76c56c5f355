"""Importing weights from torchvision, amdegroot/lufficc and torchcv SSDs (seeded random weights, nothing downloaded).

References are the other implementations themselves (torchvision's ``ssd300_vgg16`` end to end) or forwards written
here line by line after their code (amdegroot's ``SSD.forward``, torchcv's / amdegroot's prior-box loops).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ssdkit.anchors import default_boxes_for
from ssdkit.checkpoint import load_checkpoint, model_from_checkpoint
from ssdkit.config import ssd300_config, ssd512_config
from ssdkit.errors import CheckpointError, ConfigError
from ssdkit.interop import convert_state_dict, import_weights, read_state_dict
from ssdkit.models import build_model

TV_CLASSES = 4  # background + 3


# ------------------------------------------------------------------------------------------------ helpers
def _images() -> list[torch.Tensor]:
    """Two RGB float 0-1 images of different sizes: 300x300 noise and a 375x500 gradient with noise."""
    g = torch.Generator().manual_seed(1)
    noise = torch.rand(3, 300, 300, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 375), torch.linspace(0, 1, 500), indexing="ij")
    grad = torch.stack([xx, yy, 1 - xx * yy]) * 0.7 + 0.3 * torch.rand(3, 375, 500, generator=g)
    return [noise, grad.clamp(0, 1)]


def _meta_shapes(cfg) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in build_model(cfg).state_dict().items()}


@pytest.fixture(scope="module")
def tv_model():
    from torchvision.models.detection import ssd300_vgg16

    torch.manual_seed(0)
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=TV_CLASSES)
    with torch.no_grad():
        # Xavier heads on random features give logits up to ~30: softmax saturates at exactly 1.0 and ties make the
        # ranking arbitrary. Scaled down, scores spread over (0.5, 0.99) and boxes stay near their default boxes.
        # A non-constant L2Norm scale checks the per-channel weight mapping.
        for conv in [*model.head.classification_head.module_list, *model.head.regression_head.module_list]:
            conv.weight.mul_(0.3)
        model.backbone.scale_weight.copy_(20 + 5 * torch.rand(512))
    return model.eval()


@pytest.fixture(scope="module")
def tv_state(tv_model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in tv_model.state_dict().items()}


# ------------------------------------------------------------------------------------------------ torchvision
def test_torchvision_config_and_default_boxes(tv_model, tv_state):
    from torchvision.models.detection.image_list import ImageList

    cfg, _, report = convert_state_dict("torchvision", tv_state)
    assert report["num_classes"] == TV_CLASSES and cfg.arch == "ssd300"
    assert cfg.box_sizes == (21, 45, 99, 153, 207, 261, 315) and cfg.clip_default_boxes
    assert cfg.variances == (0.1, 0.2)
    assert cfg.mean == (0.48235, 0.45882, 0.40784) and cfg.channel_order == "rgb"
    assert cfg.std == pytest.approx((1 / 255,) * 3)
    # torchvision's own DefaultBoxGenerator on the real feature-map sizes, xyxy input pixels
    images = ImageList(torch.zeros(1, 3, 300, 300), [(300, 300)])
    feats = [torch.zeros(1, 1, f, f) for f in cfg.fm_sizes]
    tv_boxes = tv_model.anchor_generator(images, feats)[0]
    ours = default_boxes_for(cfg)
    ours_xyxy = torch.cat([ours[:, :2] - ours[:, 2:] / 2, ours[:, :2] + ours[:, 2:] / 2], 1)
    torch.testing.assert_close(ours_xyxy, tv_boxes, atol=1e-4, rtol=0)


def test_torchvision_detections_match(tv_model, tv_state, tmp_path):
    from ssdkit.inference import Detector

    out = tmp_path / "tv.pt"
    report = import_weights("torchvision", _save(tv_state, tmp_path / "tv_weights.pth"), out)
    assert report["class_names"] == ["class1", "class2", "class3"]
    images = _images()
    with torch.no_grad():
        expected = tv_model(images)
    # torchvision's postprocess: score > 0.01, top 400 per class, NMS 0.45, best 200
    detector = Detector.from_checkpoint(out, device="cpu", preset="evaluate", top_k=400, max_detections=200)
    got = detector(images)
    for i, (tv, ours) in enumerate(zip(expected, got)):
        assert len(tv["scores"]) > 20, f"image {i}: too few detections for a meaningful comparison"
        assert float(tv["scores"].max()) > 0.5, f"image {i}: scores not spread"
        assert len(ours["scores"]) == len(tv["scores"]), f"image {i}"
        torch.testing.assert_close(ours["labels"], tv["labels"] - 1, msg=f"image {i} labels")
        torch.testing.assert_close(ours["scores"], tv["scores"], atol=1e-5, rtol=0, msg=f"image {i} scores")
        torch.testing.assert_close(ours["boxes"], tv["boxes"], atol=1e-3, rtol=0, msg=f"image {i} boxes")


def _save(obj, path):
    torch.save(obj, path)
    return path


def test_torchvision_unknown_missing_and_mismatched_keys_are_named(tv_state):
    sd = dict(tv_state)
    del sd["backbone.extra.2.2.weight"]
    sd["backbone.extra.9.0.weight"] = torch.zeros(1)
    sd["backbone.extra.1.0.weight"] = torch.zeros(128, 1024, 1, 1)
    with pytest.raises(CheckpointError) as e:
        convert_state_dict("torchvision", sd)
    msg = str(e.value)
    assert "missing keys: backbone.extra.2.2.weight (for extractor.conv9_2.weight)" in msg
    assert "unexpected keys: backbone.extra.9.0.weight" in msg
    assert "backbone.extra.1.0.weight [128, 1024, 1, 1] (ssdkit extractor.conv8_1.weight expects [256, 1024, 1, 1])" \
        in msg


def test_torchvision_num_classes_checked_and_wrapped_checkpoint(tv_state, tmp_path):
    with pytest.raises(CheckpointError, match=r"head\.classification_head\.module_list\.0\.weight gives num_classes=4"):
        convert_state_dict("torchvision", tv_state, num_classes=21)
    # torchvision's reference train.py saves {"model": ..., "optimizer": ..., "epoch": ...}; DataParallel adds module.
    heads = {k: v for k, v in tv_state.items() if k.startswith("head.")}
    wrapped = {"model": {f"module.{k}": v for k, v in heads.items()}, "epoch": 3}
    sd = read_state_dict(_save(wrapped, tmp_path / "wrapped.pth"))
    assert set(sd) == set(heads)


def test_not_a_state_dict_raises(tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pth: not a readable weights file"):
        read_state_dict(tmp_path / "text.pth")
    with pytest.raises(CheckpointError, match="list.pth: not a state dict"):
        read_state_dict(_save([1, 2, 3], tmp_path / "list.pth"))
    with pytest.raises(CheckpointError, match=r"meta.pth: not a state dict .*\['epoch'\]"):
        read_state_dict(_save({"epoch": 3, "w": torch.zeros(2)}, tmp_path / "meta.pth"))
    with pytest.raises(CheckpointError, match="missing.pth: weights file not found"):
        import_weights("torchcv", tmp_path / "missing.pth", tmp_path / "out.pt")
    with pytest.raises(CheckpointError, match="unknown implementation 'caffe'"):
        convert_state_dict("caffe", {"w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="not a torchvision ssd300_vgg16 state dict"):
        convert_state_dict("torchvision", {"vgg.0.weight": torch.zeros(1)})


# ------------------------------------------------------------------------------------------------ torchcv
def _torchcv_default_boxes(fm_sizes, steps, box_sizes, aspect_ratios):
    """torchcv ``SSDBoxCoder._get_default_boxes``, as written there."""
    boxes = []
    for i, fm_size in enumerate(fm_sizes):
        for h, w in itertools.product(range(fm_size), repeat=2):
            cx = (w + 0.5) * steps[i]
            cy = (h + 0.5) * steps[i]
            s = box_sizes[i]
            boxes.append((cx, cy, s, s))
            s = math.sqrt(box_sizes[i] * box_sizes[i + 1])
            boxes.append((cx, cy, s, s))
            s = box_sizes[i]
            for ar in aspect_ratios[i]:
                boxes.append((cx, cy, s * math.sqrt(ar), s / math.sqrt(ar)))
                boxes.append((cx, cy, s / math.sqrt(ar), s * math.sqrt(ar)))
    return torch.tensor(boxes)


@pytest.fixture(scope="module")
def torchcv_voc(tmp_path_factory):
    """A torchcv-format VOC SSD300 weights file (ssdkit's names minus the L2Norm weight) imported with a names file."""
    tmp = tmp_path_factory.mktemp("torchcv")
    torch.manual_seed(3)
    original = build_model(ssd300_config(21)).eval()  # torchcv's names; its L2Norm2d is a fixed scale 20
    sd = {k: v for k, v in original.state_dict().items() if k != "extractor.norm4.weight"}
    weights = _save(sd, tmp / "params.pth")
    names = tmp / "voc.txt"
    names.write_text("__background__\n" + "\n".join(f"c{i}" for i in range(20)) + "\n")
    report = import_weights("torchcv", weights, tmp / "cv.pt", classes=names)
    return {"original": original, "state": sd, "weights": weights, "ckpt": tmp / "cv.pt", "report": report}


def test_torchcv_ssd300_import_reproduces_the_module(torchcv_voc):
    report, original = torchcv_voc["report"], torchcv_voc["original"]
    assert report["constants"] == {"extractor.norm4.weight": 20.0}
    assert report["variant"] == "torchcv ssd300" and report["out"] == str(torchcv_voc["ckpt"])
    assert report["class_names"] == [f"c{i}" for i in range(20)]  # the __background__ line is dropped
    assert load_checkpoint(torchcv_voc["ckpt"])["imported_from"]["source"] == "torchcv"
    model, cfg, names = model_from_checkpoint(torchcv_voc["ckpt"])
    assert names == tuple(report["class_names"]) and cfg.model == ssd300_config(21)
    torch.testing.assert_close(model.extractor.norm4.weight, torch.full((512,), 20.0))
    x = torch.randn(1, 3, 300, 300)
    with torch.no_grad():
        loc0, cls0 = original(x)
        loc1, cls1 = model(x)
    assert torch.equal(loc0, loc1) and torch.equal(cls0, cls1)
    ref = _torchcv_default_boxes(cfg.model.fm_sizes, (8, 16, 32, 64, 100, 300), (30, 60, 111, 162, 213, 264, 315),
                                 ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))
    torch.testing.assert_close(default_boxes_for(cfg.model), ref)


def test_torchcv_ssd512_and_learned_norm_weight():
    shapes = _meta_shapes(ssd512_config(5))
    sd = {k: torch.zeros(tuple(s)) for k, s in shapes.items()}
    sd["extractor.norm4.weight"] = 20 + torch.rand(512)
    sd["extractor.conv12_2.weight"] = torch.randn(tuple(shapes["extractor.conv12_2.weight"]))
    cfg, out, report = convert_state_dict("torchcv", sd)  # this copy has a norm4 weight: it is used, not replaced
    assert cfg == ssd512_config(5) and report["constants"] == {}
    assert torch.equal(out["extractor.norm4.weight"], sd["extractor.norm4.weight"])
    assert torch.equal(out["extractor.conv12_2.weight"], sd["extractor.conv12_2.weight"])
    del sd["extractor.norm4.weight"]
    _, out, report = convert_state_dict("torchcv", sd)
    assert report["variant"] == "torchcv ssd512" and float(out["extractor.norm4.weight"][0]) == 20.0
    sd["extractor.conv7.bias"] = torch.full((1024,), float("nan"))
    with pytest.raises(CheckpointError, match="extractor.conv7.bias: contains NaN"):
        convert_state_dict("torchcv", sd)


# ------------------------------------------------------------------------------------------------ amdegroot
def _amdegroot_net(num_classes: int):
    """amdegroot ssd.pytorch ``build_ssd('train', 300, num_classes)`` modules: vgg, L2Norm weight, extras, loc, conf."""
    layers, cin = [], 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        elif v == "C":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)]
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            cin = v
    layers += [nn.MaxPool2d(kernel_size=3, stride=1, padding=1), nn.Conv2d(512, 1024, kernel_size=3, padding=6,
               dilation=6), nn.ReLU(inplace=True), nn.Conv2d(1024, 1024, kernel_size=1), nn.ReLU(inplace=True)]
    extras, cin, flag = [], 1024, False
    cfg = [256, "S", 512, 128, "S", 256, 128, 256, 128, 256]
    for k, v in enumerate(cfg):
        if cin != "S":
            if v == "S":
                extras += [nn.Conv2d(cin, cfg[k + 1], kernel_size=(1, 3)[flag], stride=2, padding=1)]
            else:
                extras += [nn.Conv2d(cin, v, kernel_size=(1, 3)[flag])]
            flag = not flag
        cin = v
    net = nn.Module()
    net.vgg = nn.ModuleList(layers)
    net.L2Norm = nn.Module()
    net.L2Norm.weight = nn.Parameter(20 + 4 * torch.rand(512))
    net.extras = nn.ModuleList(extras)
    sources = [layers[21].out_channels, layers[-2].out_channels] + [e.out_channels for e in extras[1::2]]
    mbox = [4, 6, 6, 6, 4, 4]
    net.loc = nn.ModuleList(nn.Conv2d(c, n * 4, 3, padding=1) for c, n in zip(sources, mbox))
    net.conf = nn.ModuleList(nn.Conv2d(c, n * num_classes, 3, padding=1) for c, n in zip(sources, mbox))
    return net


def _amdegroot_forward(net, x, num_classes):
    """amdegroot ``SSD.forward`` (train phase) with its ``L2Norm.forward``."""
    sources, loc, conf = [], [], []
    for k in range(23):
        x = net.vgg[k](x)
    norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
    sources.append(net.L2Norm.weight.view(1, -1, 1, 1) * torch.div(x, norm))
    for k in range(23, len(net.vgg)):
        x = net.vgg[k](x)
    sources.append(x)
    for k, v in enumerate(net.extras):
        x = F.relu(v(x), inplace=True)
        if k % 2 == 1:
            sources.append(x)
    for x, lay, c in zip(sources, net.loc, net.conf):
        loc.append(lay(x).permute(0, 2, 3, 1).contiguous())
        conf.append(c(x).permute(0, 2, 3, 1).contiguous())
    loc = torch.cat([o.view(o.size(0), -1) for o in loc], 1)
    conf = torch.cat([o.view(o.size(0), -1) for o in conf], 1)
    return loc.view(loc.size(0), -1, 4), conf.view(conf.size(0), -1, num_classes)


def _amdegroot_priors(cfg):
    """amdegroot ``PriorBox.forward`` (v2), clipped as ``clip: True`` does; relative (cx, cy, w, h)."""
    from math import sqrt

    mean = []
    for k, f in enumerate(cfg["feature_maps"]):
        for i, j in itertools.product(range(f), repeat=2):
            f_k = cfg["min_dim"] / cfg["steps"][k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = cfg["min_sizes"][k] / cfg["min_dim"]
            mean += [cx, cy, s_k, s_k]
            s_k_prime = sqrt(s_k * (cfg["max_sizes"][k] / cfg["min_dim"]))
            mean += [cx, cy, s_k_prime, s_k_prime]
            for ar in cfg["aspect_ratios"][k]:
                mean += [cx, cy, s_k * sqrt(ar), s_k / sqrt(ar)]
                mean += [cx, cy, s_k / sqrt(ar), s_k * sqrt(ar)]
    return torch.tensor(mean).view(-1, 4).clamp_(max=1, min=0)


@pytest.fixture(scope="module")
def amdegroot_net():
    torch.manual_seed(5)
    return _amdegroot_net(21).eval()


def test_amdegroot_forward_matches_reference(amdegroot_net):
    sd = amdegroot_net.state_dict()
    assert "vgg.31.weight" in sd and "vgg.33.weight" in sd and "L2Norm.weight" in sd and "extras.7.weight" in sd
    cfg, out, report = convert_state_dict("amdegroot", sd)
    assert report["variant"] == "amdegroot ssd300" and report["constants"] == {}
    assert cfg.box_sizes == (30, 60, 111, 162, 213, 264, 315) and cfg.clip_default_boxes
    assert cfg.channel_order == "rgb" and cfg.mean == pytest.approx((123 / 255, 117 / 255, 104 / 255))
    model = build_model(cfg)
    model.load_state_dict(out)
    model.eval()
    # amdegroot's input: RGB minus (123, 117, 104); ssdkit's normalisation of the same pixels gives the same tensor
    pixels = torch.rand(1, 3, 300, 300) * 255
    x_ref = pixels - torch.tensor([123.0, 117.0, 104.0]).view(1, 3, 1, 1)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    x_ours = (pixels / 255 - mean) / std
    torch.testing.assert_close(x_ours, x_ref, atol=1e-4, rtol=0)
    with torch.no_grad():
        loc_ref, conf_ref = _amdegroot_forward(amdegroot_net, x_ref, 21)
        loc, conf = model(x_ref)
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    torch.testing.assert_close(loc, loc_ref, rtol=1e-5, atol=1e-5 * float(loc_ref.abs().max()))
    torch.testing.assert_close(conf, conf_ref, rtol=1e-5, atol=1e-5 * float(conf_ref.abs().max()))

    voc = {"feature_maps": [38, 19, 10, 5, 3, 1], "min_dim": 300, "steps": [8, 16, 32, 64, 100, 300],
           "min_sizes": [30, 60, 111, 162, 213, 264], "max_sizes": [60, 111, 162, 213, 264, 315],
           "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]]}
    # amdegroot clamps the *centres* too (clip works on cx, cy, w, h): on the 10x10 map (step 32) the last row and
    # column have centres at 304 px, clamped to 300; the imported config does the same, so every box is equal.
    assert cfg.clip_default_box_centers
    ours = default_boxes_for(cfg) / 300
    theirs = _amdegroot_priors(voc)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    unclipped = default_boxes_for(replace(cfg, clip_default_box_centers=False)) / 300
    assert int(((unclipped - theirs).abs().amax(1) > 1e-6).sum()) == 19 * 6


def test_amdegroot_coco_sizes_and_overrides():
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in _amdegroot_net(81).state_dict().items()}
    sd = {k: torch.zeros(tuple(s)) for k, s in shapes.items()}
    cfg, _, _ = convert_state_dict("amdegroot", sd)
    assert cfg.num_classes == 81 and cfg.box_sizes == (21, 45, 99, 153, 207, 261, 315)
    cfg, _, _ = convert_state_dict("amdegroot", sd, box_sizes=(30, 60, 111, 162, 213, 264, 315))
    assert cfg.box_sizes == (30, 60, 111, 162, 213, 264, 315)
    with pytest.raises(ConfigError, match="aspect_ratios are fixed by the weights"):
        convert_state_dict("amdegroot", sd, aspect_ratios=((2,),) * 6)


def test_lufficc_names_map_like_amdegroot(amdegroot_net):
    sd = amdegroot_net.state_dict()
    rename = {"vgg.": "backbone.vgg.", "L2Norm.": "backbone.l2_norm.", "extras.": "backbone.extras.",
              "loc.": "box_head.predictor.reg_headers.", "conf.": "box_head.predictor.cls_headers."}
    lsd = {}
    for k, v in sd.items():
        prefix = next(p for p in rename if k.startswith(p))
        lsd[rename[prefix] + k[len(prefix):]] = v
    cfg_a, out_a, _ = convert_state_dict("amdegroot", sd)
    cfg_l, out_l, report = convert_state_dict("amdegroot", {"model": lsd, "iteration": torch.tensor(5)})
    assert report["variant"] == "lufficc ssd300" and cfg_l == cfg_a
    assert all(torch.equal(out_a[k], out_l[k]) for k in out_a)


def test_lufficc_ssd512():
    # lufficc SSD512: amdegroot's vgg list, extras '512' (8 convs) plus conv12_1 (1x1) and conv12_2 (4x4, pad 1)
    cfg512 = ssd512_config(21)
    shapes = _meta_shapes(cfg512)
    sd = {}
    for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21):
        for p in ("weight", "bias"):
            sd[f"backbone.vgg.{i}.{p}"] = torch.zeros(tuple(shapes[f"extractor.features.layers.{i}.{p}"]))
    for i, name in zip((24, 26, 28, 31, 33), ("conv5_1", "conv5_2", "conv5_3", "conv6", "conv7")):
        for p in ("weight", "bias"):
            sd[f"backbone.vgg.{i}.{p}"] = torch.zeros(tuple(shapes[f"extractor.{name}.{p}"]))
    extras = [(1024, 256, 1), (256, 512, 3), (512, 128, 1), (128, 256, 3), (256, 128, 1), (128, 256, 3),
              (256, 128, 1), (128, 256, 3), (256, 128, 1), (128, 256, 4)]
    for j, (cin, cout, k) in enumerate(extras):
        sd[f"backbone.extras.{j}.weight"] = torch.zeros(cout, cin, k, k)
        sd[f"backbone.extras.{j}.bias"] = torch.zeros(cout)
    sd["backbone.l2_norm.weight"] = torch.full((512,), 20.0)
    for k, (c, n) in enumerate(zip((512, 1024, 512, 256, 256, 256, 256), (4, 6, 6, 6, 6, 4, 4))):
        for head, width in (("reg_headers", 4), ("cls_headers", 21)):
            sd[f"box_head.predictor.{head}.{k}.weight"] = torch.zeros(n * width, c, 3, 3)
            sd[f"box_head.predictor.{head}.{k}.bias"] = torch.zeros(n * width)
    cfg, out, report = convert_state_dict("amdegroot", sd)
    assert report["variant"] == "lufficc ssd512"
    assert cfg.arch == "ssd512" and cfg.box_sizes == (35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.65)
    assert cfg.fm_sizes == (64, 32, 16, 8, 4, 2, 1) and set(out) == set(shapes)


# ------------------------------------------------------------------------------------------------ files, fine-tuning
def test_class_names_must_fit_the_weights(torchcv_voc, tmp_path):
    names = tmp_path / "two.txt"
    names.write_text("a\nb\n")
    with pytest.raises(ConfigError, match="two.txt: 2 class names, but the weights have 21 classes"):
        import_weights("torchcv", torchcv_voc["weights"], tmp_path / "bad.pt", classes=names)
    assert not (tmp_path / "bad.pt").exists()


def test_fine_tune_from_an_imported_checkpoint_with_a_new_class_list(torchcv_voc):
    from ssdkit.engine.train import init_from_checkpoint

    sd = torchcv_voc["state"]
    model = build_model(ssd300_config(3))
    report = init_from_checkpoint(model, torchcv_voc["ckpt"])
    own = model.state_dict()
    for k, v in own.items():
        if k.startswith("cls_layers."):
            assert k in report["initialised"]
        elif k == "extractor.norm4.weight":
            assert torch.equal(v, torch.full((512,), 20.0))
        else:
            assert torch.equal(v, sd[k]), k
    assert set(report["initialised"]) == {k for k in own if k.startswith("cls_layers.")}
    assert [m.weight.shape[0] for m in model.cls_layers] == [12, 18, 18, 18, 12, 12]


def test_torchvision_coco_weights_get_torchvision_category_names():
    from ssdkit.interop import _class_names

    names = _class_names(None, 91, "torchvision")  # torchvision's metadata, nothing downloaded
    assert len(names) == 90 and names[0] == "person" and names[-1] == "toothbrush"
    assert _class_names(None, 4, "amdegroot") == ["class1", "class2", "class3"]
    assert _class_names(["bg", "a"], 2, "torchcv") == ["a"]
