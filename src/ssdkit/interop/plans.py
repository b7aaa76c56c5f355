"""How each source's state dict maps onto ssdkit: one planner per implementation (what it is, read from its code:
see :mod:`ssdkit.interop`), returning the config that reproduces it and the key mapping."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import torch
from torch import nn

from ssdkit.config import ModelConfig, ssd300_config, ssd512_config
from ssdkit.errors import CheckpointError

__all__ = ["PLANNERS", "Plan", "expected_shapes", "key_list"]

_MAX_LISTED = 8  # key names listed in an error message before "... and N more"

# torchvision ssd300_vgg16: DefaultBoxGenerator(scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]) on 300 px.
_TV_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
_TV_MEAN = (0.48235, 0.45882, 0.40784)
# amdegroot / lufficc: RGB input minus (123, 117, 104), no scaling.
_CAFFE_MEAN_RGB = (123 / 255, 117 / 255, 104 / 255)
_UNIT_STD = (1 / 255, 1 / 255, 1 / 255)
_VOC300 = (30, 60, 111, 162, 213, 264, 315)
_COCO300 = (21, 45, 99, 153, 207, 261, 315)
_VOC512_LUFFICC = (35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.65)
_COCO512_LUFFICC = (20.48, 51.2, 133.12, 215.04, 296.96, 378.88, 460.8, 542.72)


# --------------------------------------------------------------------------------------------------- mapping
@dataclasses.dataclass
class Plan:
    """How one source maps onto ssdkit: config, ssdkit key -> source key, constants, notes."""

    variant: str
    config: ModelConfig
    mapping: dict[str, str]
    constants: dict[str, float]
    notes: list[str]


def expected_shapes(cfg: ModelConfig) -> tuple[dict[str, torch.Size], list[int], list[str]]:
    """ssdkit state-dict shapes for ``cfg`` (built on the meta device: no memory, no init cost).

    Returns ``(shapes, trunk conv indices in features.layers, tail layer names)``.
    """
    from ssdkit.models import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    convs = [i for i, m in enumerate(model.extractor.features.layers) if isinstance(m, nn.Conv2d)]
    return shapes, convs, list(model.extractor.layer_names)


def _anchors_per_cell(arch: str) -> tuple[int, ...]:
    """Default boxes per feature-map cell of each level of ``arch``'s preset: derived from its aspect ratios, as the
    heads' widths are (all three sources use the SSD paper's ratios)."""
    return (ssd300_config if arch == "ssd300" else ssd512_config)(2).num_anchors


def _conv(mapping: dict[str, str], ours: str, theirs: str) -> None:
    mapping[f"{ours}.weight"] = f"{theirs}.weight"
    mapping[f"{ours}.bias"] = f"{theirs}.bias"


def _heads(mapping: dict[str, str], levels: int, loc: str, cls: str) -> None:
    for k in range(levels):
        _conv(mapping, f"loc_layers.{k}", f"{loc}.{k}")
        _conv(mapping, f"cls_layers.{k}", f"{cls}.{k}")


def _infer_num_classes(sd: dict[str, torch.Tensor], cls_key: str, anchors: Sequence[int]) -> int:
    """Classes (with background) from the classification heads ``cls_key.format(k)``, checked on every level."""
    found = {}
    for k, n in enumerate(anchors):
        key = cls_key.format(k)
        if key not in sd:
            raise CheckpointError(f"missing classification head {key!r}; cannot infer the number of classes")
        out = sd[key].shape[0]
        if out % n:
            raise CheckpointError(f"{key} has {out} output channels, not a multiple of the {n} default boxes per cell")
        found[key] = out // n
    values = set(found.values())
    if len(values) != 1:
        raise CheckpointError(f"classification heads disagree on the number of classes: {found}")
    c = values.pop()
    if c < 2:
        raise CheckpointError(f"{cls_key.format(0)} gives {c} class(es); need background + at least one class")
    return c


def _count_indexed(sd: dict[str, torch.Tensor], prefix: str) -> int:
    """How many of ``{prefix}0.*``, ``{prefix}1.*``, ... exist without a gap (a stray higher index is reported later
    as an unexpected key instead of changing the architecture)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
    n = 0
    while n in idx:
        n += 1
    return n


def _plan_torchvision(sd: dict[str, torch.Tensor]) -> Plan:
    if "backbone.scale_weight" not in sd or "backbone.features.0.weight" not in sd:
        raise CheckpointError(
            "not a torchvision ssd300_vgg16 state dict (no backbone.scale_weight / backbone.features.0.weight)"
        )
    blocks = _count_indexed(sd, "backbone.extra.")
    if blocks == 6:
        raise CheckpointError(
            "torchvision SSD512-style backbone (6 extra blocks, highres=True) is not supported: its conv10_2..conv12_2 "
            "are unpadded, unlike the SSD512 of the paper/torchcv/lufficc that ssdkit builds"
        )
    if blocks != 5:
        raise CheckpointError(f"torchvision SSD: expected backbone.extra.0..4 (SSD300), found {blocks} extra blocks")
    num_classes = _infer_num_classes(sd, "head.classification_head.module_list.{}.weight", _anchors_per_cell("ssd300"))
    cfg = ssd300_config(
        num_classes,
        box_sizes=tuple(round(s * 300, 6) for s in _TV_SCALES),
        clip_default_boxes=True,
        variances=(0.1, 0.2),
        mean=_TV_MEAN,
        std=_UNIT_STD,
        channel_order="rgb",
    )
    _, convs, tail = expected_shapes(cfg)
    mapping: dict[str, str] = {}
    for i in convs:
        _conv(mapping, f"extractor.features.layers.{i}", f"backbone.features.{i}")
    mapping["extractor.norm4.weight"] = "backbone.scale_weight"
    fixed = {"conv5_1": "backbone.extra.0.1", "conv5_2": "backbone.extra.0.3", "conv5_3": "backbone.extra.0.5",
             "conv6": "backbone.extra.0.7.1", "conv7": "backbone.extra.0.7.3"}
    for name in tail:
        if name in fixed:
            src = fixed[name]
        else:  # conv8_1 -> extra.1.0, conv8_2 -> extra.1.2, ...
            level, sub = name[4:].split("_")
            src = f"backbone.extra.{int(level) - 7}.{0 if sub == '1' else 2}"
        _conv(mapping, f"extractor.{name}", src)
    _heads(mapping, cfg.num_levels, "head.regression_head.module_list", "head.classification_head.module_list")
    notes = [
        "torchvision labels are 1-based (0 = background): ssdkit label = torchvision label - 1",
        "torchvision's L2Norm is F.normalize (eps 1e-12 on the norm) * weight; ssdkit's clamps the squared norm at "
        "1e-12 (eps 1e-6 on the norm): identical unless a conv4_3 feature vector has norm < 1e-6",
    ]
    return Plan("torchvision ssd300_vgg16", cfg, mapping, {}, notes)


def _plan_amdegroot(sd: dict[str, torch.Tensor]) -> Plan:
    if "vgg.0.weight" in sd:
        variant, pre = "amdegroot", {"vgg": "vgg", "l2": "L2Norm.weight", "extras": "extras", "loc": "loc",
                                     "cls": "conf"}
    elif "backbone.vgg.0.weight" in sd:
        variant, pre = "lufficc", {"vgg": "backbone.vgg", "l2": "backbone.l2_norm.weight",
                                   "extras": "backbone.extras", "loc": "box_head.predictor.reg_headers",
                                   "cls": "box_head.predictor.cls_headers"}
    else:
        raise CheckpointError(
            "not an amdegroot ssd.pytorch (vgg.0.weight) or lufficc SSD (backbone.vgg.0.weight) VGG state dict"
        )
    extras = _count_indexed(sd, pre["extras"] + ".")
    if extras == 8:
        arch = "ssd300"
    elif extras == 10:
        arch = "ssd512"
    else:
        raise CheckpointError(f"{variant}: expected 8 (SSD300) or 10 (SSD512) layers under {pre['extras']}, "
                              f"found {extras}")
    num_classes = _infer_num_classes(sd, pre["cls"] + ".{}.weight", _anchors_per_cell(arch))
    # amdegroot/lufficc's PriorBox clamps (cx, cy, w, h) alike, centres included
    common = dict(clip_default_boxes=True, clip_default_box_centers=True, variances=(0.1, 0.2),
                  mean=_CAFFE_MEAN_RGB, std=_UNIT_STD, channel_order="rgb")
    if arch == "ssd300":
        sizes, which = (_VOC300, "VOC") if num_classes == 21 else (_COCO300, "COCO")
        cfg = ssd300_config(num_classes, box_sizes=sizes, **common)
    else:
        sizes, which = (_VOC512_LUFFICC, "VOC") if num_classes == 21 else (_COCO512_LUFFICC, "COCO")
        cfg = ssd512_config(num_classes, box_sizes=sizes, **common)
    _, convs, tail = expected_shapes(cfg)
    mapping: dict[str, str] = {}
    for i in convs:
        _conv(mapping, f"extractor.features.layers.{i}", f"{pre['vgg']}.{i}")
    mapping["extractor.norm4.weight"] = pre["l2"]
    # vgg list after conv4_3's ReLU (22): pool4 23, conv5_1 24, conv5_2 26, conv5_3 28, pool5 30, conv6 31, conv7 33
    fixed = {"conv5_1": 24, "conv5_2": 26, "conv5_3": 28, "conv6": 31, "conv7": 33}
    extra_names = [n for n in tail if n not in fixed]
    for name, idx in fixed.items():
        _conv(mapping, f"extractor.{name}", f"{pre['vgg']}.{idx}")
    for j, name in enumerate(extra_names):
        _conv(mapping, f"extractor.{name}", f"{pre['extras']}.{j}")
    _heads(mapping, cfg.num_levels, pre["loc"], pre["cls"])
    notes = [
        f"default boxes: {which} sizes {cfg.box_sizes} chosen from num_classes={num_classes} as {variant} does; "
        "pass box_sizes=... if the model was trained with others",
        "input: RGB minus (123, 117, 104), unscaled (what the network was trained on, see module docstring)",
        f"{variant}'s L2Norm divides by (norm + 1e-10); ssdkit's by max(norm, 1e-6): same unless norm < 1e-6",
    ]
    return Plan(f"{variant} {arch}", cfg, mapping, {}, notes)


def _plan_torchcv(sd: dict[str, torch.Tensor]) -> Plan:
    if "extractor.features.layers.0.weight" not in sd or "extractor.conv5_1.weight" not in sd:
        raise CheckpointError(
            "not a torchcv SSD state dict (no extractor.features.layers.0.weight / extractor.conv5_1.weight)"
        )
    arch = "ssd512" if "extractor.conv12_1.weight" in sd else "ssd300"
    num_classes = _infer_num_classes(sd, "cls_layers.{}.weight", _anchors_per_cell(arch))
    cfg = (ssd300_config if arch == "ssd300" else ssd512_config)(num_classes)
    shapes, _, _ = expected_shapes(cfg)
    mapping = {k: k for k in shapes}
    constants: dict[str, float] = {}
    notes = []
    if "extractor.norm4.weight" not in sd:
        del mapping["extractor.norm4.weight"]
        constants["extractor.norm4.weight"] = float(cfg.l2norm_scale)
        notes.append(f"torchcv's L2Norm2d has no weight: extractor.norm4.weight set to its fixed scale "
                     f"{cfg.l2norm_scale:g}")
    return Plan(f"torchcv {arch}", cfg, mapping, constants, notes)


PLANNERS = {"torchvision": _plan_torchvision, "amdegroot": _plan_amdegroot, "torchcv": _plan_torchcv}


def key_list(keys: Sequence[str]) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")
