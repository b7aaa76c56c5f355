"""Import trained SSD weights from other implementations: torchvision, amdegroot/lufficc, torchcv.

Each source's state dict is renamed onto an ssdkit :class:`~ssdkit.models.SSD` whose :class:`ModelConfig` reproduces
that implementation's network, default boxes, variances and input normalisation, then written as an ordinary ssdkit
checkpoint. Every ssdkit parameter is assigned from the source except the ones listed in ``report["constants"]``
(torchcv's L2Norm has no weight: it is the fixed scale 20); a source key that nothing uses, a missing key or a
wrong shape raises :class:`CheckpointError` naming the keys.

What each source is (read from its code):

``torchvision`` (``ssd300_vgg16``)
    ``backbone.features`` = VGG16 conv1_1..relu4_3 (same indices as ssdkit's ``extractor.features.layers``),
    ``backbone.scale_weight`` = L2Norm weight, ``backbone.extra.0`` = pool4, conv5_1..conv5_3 (indices 1, 3, 5), then
    ``extra.0.7`` = pool5, fc6 (``.1``, dilated), fc7 (``.3``); ``extra.1..4`` = conv8..conv11 as ``(1x1, 3x3)`` at
    indices 0 and 2; heads ``head.regression_head.module_list.k`` / ``head.classification_head.module_list.k``.
    Head channels are laid out ``anchor * K + k`` as in ssdkit, so no permutation is needed.
    Default boxes: scales 0.07..1.05 of 300 (21, 45, 99, 153, 207, 261, 315), widths/heights clipped to the image
    (``clip=True``); box-coder weights (10, 10, 5, 5) = variances (0.1, 0.2); input ``(x - mean) / (1/255)`` with
    mean (0.48235, 0.45882, 0.40784) on RGB 0-1 images.

``amdegroot`` (ssd.pytorch, and its descendant lufficc/SSD, told apart by key names)
    ``vgg.N`` = VGG16 incl. pool5 (30), dilated conv6 (31) and conv7 (33); ``L2Norm.weight``; ``extras.0..7`` =
    conv8_1..conv11_2; ``loc.k`` / ``conf.k``. lufficc: ``backbone.vgg.N``, ``backbone.l2_norm.weight``,
    ``backbone.extras.N`` (10 for SSD512, with conv12), ``box_head.predictor.reg_headers.k`` / ``cls_headers.k``.
    Default boxes (both repos pick them by class count): 21 classes -> VOC sizes (30, 60, 111, 162, 213, 264, 315),
    otherwise COCO sizes (21, 45, 99, 153, 207, 261, 315); lufficc SSD512: VOC (35.84 .. 460.8, 537.65), COCO (20.48
    .. 460.8, 542.72); all clipped to the image (``clip=True``, centres too). Input: both *train and evaluate on
    RGB* with the per-channel means R 123, G 117, B 104 subtracted and no scaling (amdegroot subtracts ``(104, 117,
    123)`` from the OpenCV BGR image and then reorders to RGB; lufficc's ``PIXEL_MEAN = [123, 117, 104]``, "RGB
    layout"), so ``mean = (123, 117, 104) / 255``, ``std = 1/255``, ``channel_order = "rgb"``.

``torchcv`` (kuangliu/torchcv ``SSD300`` / ``SSD512``, the seed notebook's model)
    Key names are ssdkit's own; ``L2Norm2d`` has no parameter (fixed scale 20). Default boxes as ssdkit's presets,
    not clipped; input ImageNet mean/std on RGB 0-1 images.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssdkit.config import Config, ModelConfig, replace_model, ssd300_config, ssd512_config
from ssdkit.errors import CheckpointError, ConfigError

SOURCES = ("torchvision", "amdegroot", "torchcv")

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


# --------------------------------------------------------------------------------------------------- reading
def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weights file (``torch.load(weights_only=True)``) and return its state dict.

    Accepts a bare state dict or a training checkpoint that wraps one under ``model`` / ``state_dict`` /
    ``model_state_dict`` / ``net`` (lufficc and torchvision's reference scripts save ``{"model": ...}``);
    a ``module.`` prefix (DataParallel) is removed. Raises :class:`CheckpointError` naming the file otherwise.
    """
    from ssdkit.checkpoint import torch_load

    path = Path(path)
    obj = torch_load(path, "weights file")  # pickled code is refused, never run
    try:
        return _unwrap_state_dict(obj)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj.get("format") == "ssdkit-checkpoint":
        raise CheckpointError("already an ssdkit checkpoint; nothing to import")
    if isinstance(obj, dict) and not _is_tensor_dict(obj):
        for key in ("model", "state_dict", "model_state_dict", "net"):
            if isinstance(obj.get(key), dict) and _is_tensor_dict(obj[key]):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not _is_tensor_dict(obj):
        raise CheckpointError(
            f"not a state dict (expected a mapping of parameter names to tensors, got {_describe(obj)})"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:3]
        return f"a dict whose entries {bad} are not tensors" if bad else "an empty dict"
    return type(obj).__name__


# --------------------------------------------------------------------------------------------------- mapping
@dataclasses.dataclass
class _Plan:
    """How one source maps onto ssdkit: config, ssdkit key -> source key, constants, notes."""

    variant: str
    config: ModelConfig
    mapping: dict[str, str]
    constants: dict[str, float]
    notes: list[str]


def _expected_shapes(cfg: ModelConfig) -> tuple[dict[str, torch.Size], list[int], list[str]]:
    """ssdkit state-dict shapes for ``cfg`` (built on the meta device: no memory, no init cost).

    Returns ``(shapes, trunk conv indices in features.layers, tail layer names)``.
    """
    from ssdkit.models import build_model

    with torch.device("meta"):
        model = build_model(cfg)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    convs = [i for i, m in enumerate(model.extractor.features.layers) if isinstance(m, nn.Conv2d)]
    return shapes, convs, list(model.extractor.layer_names)


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


def _plan_torchvision(sd: dict[str, torch.Tensor]) -> _Plan:
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
    num_classes = _infer_num_classes(sd, "head.classification_head.module_list.{}.weight", (4, 6, 6, 6, 4, 4))
    cfg = ssd300_config(
        num_classes,
        box_sizes=tuple(round(s * 300, 6) for s in _TV_SCALES),
        clip_default_boxes=True,
        variances=(0.1, 0.2),
        mean=_TV_MEAN,
        std=_UNIT_STD,
        channel_order="rgb",
    )
    _, convs, tail = _expected_shapes(cfg)
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
    return _Plan("torchvision ssd300_vgg16", cfg, mapping, {}, notes)


def _plan_amdegroot(sd: dict[str, torch.Tensor]) -> _Plan:
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
    anchors = (4, 6, 6, 6, 4, 4) if arch == "ssd300" else (4, 6, 6, 6, 6, 4, 4)
    num_classes = _infer_num_classes(sd, pre["cls"] + ".{}.weight", anchors)
    # amdegroot/lufficc's PriorBox clamps (cx, cy, w, h) alike, centres included
    common = dict(clip_default_boxes=True, clip_default_box_centers=True, variances=(0.1, 0.2),
                  mean=_CAFFE_MEAN_RGB, std=_UNIT_STD, channel_order="rgb")
    if arch == "ssd300":
        sizes, which = (_VOC300, "VOC") if num_classes == 21 else (_COCO300, "COCO")
        cfg = ssd300_config(num_classes, box_sizes=sizes, **common)
    else:
        sizes, which = (_VOC512_LUFFICC, "VOC") if num_classes == 21 else (_COCO512_LUFFICC, "COCO")
        cfg = ssd512_config(num_classes, box_sizes=sizes, **common)
    _, convs, tail = _expected_shapes(cfg)
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
    return _Plan(f"{variant} {arch}", cfg, mapping, {}, notes)


def _plan_torchcv(sd: dict[str, torch.Tensor]) -> _Plan:
    if "extractor.features.layers.0.weight" not in sd or "extractor.conv5_1.weight" not in sd:
        raise CheckpointError(
            "not a torchcv SSD state dict (no extractor.features.layers.0.weight / extractor.conv5_1.weight)"
        )
    arch = "ssd512" if "extractor.conv12_1.weight" in sd else "ssd300"
    anchors = (4, 6, 6, 6, 4, 4) if arch == "ssd300" else (4, 6, 6, 6, 6, 4, 4)
    num_classes = _infer_num_classes(sd, "cls_layers.{}.weight", anchors)
    cfg = (ssd300_config if arch == "ssd300" else ssd512_config)(num_classes)
    shapes, _, _ = _expected_shapes(cfg)
    mapping = {k: k for k in shapes}
    constants: dict[str, float] = {}
    notes = []
    if "extractor.norm4.weight" not in sd:
        del mapping["extractor.norm4.weight"]
        constants["extractor.norm4.weight"] = float(cfg.l2norm_scale)
        notes.append(f"torchcv's L2Norm2d has no weight: extractor.norm4.weight set to its fixed scale "
                     f"{cfg.l2norm_scale:g}")
    return _Plan(f"torchcv {arch}", cfg, mapping, constants, notes)


_PLANNERS = {"torchvision": _plan_torchvision, "amdegroot": _plan_amdegroot, "torchcv": _plan_torchcv}


def _names(keys: Sequence[str]) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def convert_state_dict(
    source: str, state_dict: dict[str, torch.Tensor], num_classes: int | None = None, **model_overrides: Any
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Map another implementation's state dict onto ssdkit.

    Args:
        source: ``"torchvision"``, ``"amdegroot"`` (also lufficc/SSD) or ``"torchcv"``.
        state_dict: the source's parameter names -> tensors (a wrapped checkpoint is unwrapped).
        num_classes: expected class count including background; checked against the heads when given.
        model_overrides: :class:`ModelConfig` fields to change in the derived config (``box_sizes=...`` when an
            amdegroot model was trained with non-default default boxes); the architecture fields must still fit.

    Returns:
        ``(config, ssdkit_state_dict, report)``: the :class:`ModelConfig` that reproduces the source model, a
        complete ssdkit state dict (float32; tensors may share memory with ``state_dict``), and a report dict
        (``source``, ``variant``, ``arch``, ``num_classes``, ``mapped``: ssdkit key -> source key, ``constants``:
        ssdkit key -> value, ``notes``).

    Raises:
        CheckpointError: unknown source; source keys no ssdkit parameter uses; ssdkit parameters with no source
            key; shape mismatches. The message names the keys.
    """
    if source not in _PLANNERS:
        raise CheckpointError(f"source: unknown implementation {source!r}; expected one of {', '.join(SOURCES)}")
    state_dict = _unwrap_state_dict(state_dict)
    plan = _PLANNERS[source](state_dict)
    cfg = plan.config
    if model_overrides:
        try:
            cfg = replace_model(cfg, **model_overrides)
        except ConfigError as e:
            raise ConfigError(f"{source} import: {e}") from None
        arch_fields = {"arch", "num_classes", "input_size", "width_mult", "batch_norm", "aspect_ratios"}
        changed = sorted(f for f in arch_fields if getattr(cfg, f) != getattr(plan.config, f))
        if changed:
            raise ConfigError(
                f"{source} import: {', '.join(changed)} are fixed by the weights and cannot be overridden"
            )
    if num_classes is not None and num_classes != cfg.num_classes:
        cls_key = plan.mapping["cls_layers.0.weight"]
        raise CheckpointError(
            f"{cls_key} gives num_classes={cfg.num_classes} (with background), but num_classes={num_classes} was asked"
        )
    shapes, _, _ = _expected_shapes(cfg)

    unassigned = [k for k in shapes if k not in plan.mapping and k not in plan.constants]
    unassigned += [f"{k} (not an ssdkit parameter)" for k in plan.mapping if k not in shapes]
    missing = [f"{v} (for {k})" for k, v in plan.mapping.items() if v not in state_dict]
    used = set(plan.mapping.values())
    unexpected = [k for k in state_dict if k not in used]
    mismatched = [
        f"{v} {list(state_dict[v].shape)} (ssdkit {k} expects {list(shapes[k])})"
        for k, v in plan.mapping.items()
        if k in shapes and v in state_dict and state_dict[v].shape != shapes[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {_names(mismatched)}")
    if unassigned:  # a bug in the plan, but never let a parameter stay random
        problems.append(f"ssdkit parameters with no source: {_names(unassigned)}")
    if problems:
        raise CheckpointError(f"{plan.variant} weights do not fit: " + "; ".join(problems))

    out: dict[str, torch.Tensor] = {}
    for k, shape in shapes.items():
        if k in plan.constants:
            out[k] = torch.full(tuple(shape), plan.constants[k], dtype=torch.float32)
        else:
            t = state_dict[plan.mapping[k]]
            if not t.is_floating_point():
                raise CheckpointError(f"{plan.mapping[k]}: expected a floating-point tensor, got {t.dtype}")
            t = t.detach().to(torch.float32).contiguous()
            if not math.isfinite(float(t.sum())):  # one reduction: any NaN / inf makes the sum non-finite
                raise CheckpointError(f"{plan.mapping[k]}: contains NaN or infinite values")
            out[k] = t
    report = {
        "source": source,
        "variant": plan.variant,
        "arch": cfg.arch,
        "num_classes": cfg.num_classes,
        "mapped": dict(plan.mapping),
        "constants": dict(plan.constants),
        "notes": list(plan.notes),
    }
    return cfg, out, report


# --------------------------------------------------------------------------------------------------- import
def _class_names(classes: Sequence[str] | str | os.PathLike | None, num_classes: int, source: str) -> list[str]:
    n = num_classes - 1
    if classes is None:
        if source == "torchvision" and num_classes == 91:
            # the COCO category list torchvision ships with its ssd300_vgg16 weights (no download: metadata only)
            from torchvision.models.detection import SSD300_VGG16_Weights

            return list(SSD300_VGG16_Weights.COCO_V1.meta["categories"][1:])
        return [f"class{i + 1}" for i in range(n)]
    if isinstance(classes, (str, os.PathLike)):
        path = Path(classes)
        if not path.is_file():
            raise ConfigError(f"{path}: class names file not found")
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        where = str(path)
    else:
        names = [str(c) for c in classes]
        where = "classes"
    if len(names) == num_classes and names[0].lower() in ("__background__", "background", "bg"):
        names = names[1:]
    if len(names) != n:
        raise ConfigError(
            f"{where}: {len(names)} class names, but the weights have {num_classes} classes with background "
            f"(expected {n} names)"
        )
    return names


def import_weights(
    source: str,
    weights: str | os.PathLike,
    out: str | os.PathLike,
    classes: Sequence[str] | str | os.PathLike | None = None,
    **model_overrides: Any,
) -> dict[str, Any]:
    """Convert another implementation's trained SSD weights file into an ssdkit checkpoint.

    Args:
        source: ``"torchvision"``, ``"amdegroot"`` (also lufficc/SSD) or ``"torchcv"``.
        weights: the source's ``.pth`` file (state dict, or a checkpoint wrapping one under ``model``).
        out: where to write the ssdkit checkpoint (atomically).
        classes: class names without background, as a list or a text file with one name per line (a leading
            ``__background__`` line is dropped); default ``class1``.. (torchvision 91-class weights: the COCO names
            torchvision ships with its model).
        model_overrides: :class:`ModelConfig` fields to change, e.g. ``box_sizes=(...)``.

    Returns:
        The :func:`convert_state_dict` report plus ``weights``, ``out``, ``class_names`` and ``config``
        (the model config as a plain dict).
    """
    from ssdkit.checkpoint import save_checkpoint
    from ssdkit.models import build_model

    sd = read_state_dict(weights)
    try:
        cfg, state, report = convert_state_dict(source, sd, **model_overrides)
    except CheckpointError as e:
        raise CheckpointError(f"{weights}: {e}") from None
    names = _class_names(classes, cfg.num_classes, source)
    with torch.device("meta"):
        model = build_model(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    save_checkpoint(out, model, Config(model=cfg), names, imported_from={"source": source, "weights": str(weights),
                                                                          "variant": report["variant"]})
    report.update(
        weights=str(weights),
        out=str(out),
        class_names=names,
        config={f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)},
    )
    return report
