"""``ssdkit describe``: the seed notebook's walk through a model as data: extractor layers beside VGG16's,
feature-map shapes, anchors per location and level, predictor widths, default-box sizes, parameters and FLOPs."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssdkit.anchors import wh_pairs
from ssdkit.config import ModelConfig
from ssdkit.models import build_model

__all__ = ["describe", "format_description"]


def describe(cfg: ModelConfig | str | None = None, num_classes: int | None = None) -> dict:
    """Everything the notebook printed about a model, as plain data (JSON-able) (``ssdkit describe``).

    Args:
        cfg: a :class:`ModelConfig`, or a preset name / config YAML path (default ``ssd300``).
        num_classes: overrides the config's class count (including background).

    Runs the network on the ``meta`` device: shapes and FLOPs cost no computation.
    """
    from torchvision.models.vgg import vgg16

    from ssdkit.config import model_config_from_arg, replace_model

    if not isinstance(cfg, ModelConfig):
        cfg = model_config_from_arg(cfg, num_classes)
    elif num_classes is not None:
        cfg = replace_model(cfg, num_classes=num_classes)

    with torch.device("meta"):
        model = build_model(cfg).eval()
        vgg = vgg16(num_classes=cfg.num_classes) if cfg.width_mult == 1 and not cfg.batch_norm else None
        x = torch.empty(1, 3, cfg.input_size, cfg.input_size)
        fms = model.extractor(x)
        flops = FlopCounterMode(display=False)
        with flops:
            loc, cls = model(x)
    layers = []
    ext = model.extractor
    for i, layer in enumerate(ext.features.layers):
        layers.append({"name": f"features.layers.{i}", "layer": repr(layer),
                       "vgg16": repr(vgg.features[i]) if vgg is not None else None})
    vgg_tail = {"conv5_1": 24, "conv5_2": 26, "conv5_3": 28}
    for name in ext.layer_names:
        idx = vgg_tail.get(name)
        layers.append({"name": name, "layer": repr(getattr(ext, name)),
                       "vgg16": repr(vgg.features[idx]) if (vgg is not None and idx is not None) else None})
    levels = []
    for k, (fm, f) in enumerate(zip(fms, cfg.fm_sizes)):
        pairs = wh_pairs(cfg.box_sizes[k], cfg.box_sizes[k + 1], cfg.aspect_ratios[k])
        levels.append({
            "level": k,
            "feature_map": list(fm.shape[1:]),
            "anchors_per_location": cfg.num_anchors[k],
            "default_boxes": f * f * cfg.num_anchors[k],
            "step": cfg.steps[k],
            "box_size": cfg.box_sizes[k],
            "box_wh": [[round(w, 4), round(h, 4)] for w, h in pairs],
            "loc_channels": model.loc_layers[k].out_channels,
            "cls_channels": model.cls_layers[k].out_channels,
        })
    return {
        "arch": cfg.arch,
        "input_size": cfg.input_size,
        "num_classes": cfg.num_classes,
        "width_mult": cfg.width_mult,
        "layers": layers,
        "levels": levels,
        "total_default_boxes": int(loc.shape[1]),
        "outputs": {"loc_preds": list(loc.shape), "cls_preds": list(cls.shape)},
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflops_per_image": flops.get_total_flops() / 1e9,  # 2 FLOPs per multiply-add
    }


def format_description(d: dict) -> str:
    """Human-readable text of :func:`describe`'s result."""
    lines = [f"{d['arch'].upper()}  input {d['input_size']}x{d['input_size']}  num_classes {d['num_classes']} "
             f"(incl. background)  width x{d['width_mult']}", "", "Extractor layers (ssdkit  vs  torchvision VGG16):"]
    for layer in d["layers"]:
        other = f"  vs  {layer['vgg16']}" if layer["vgg16"] else ""
        lines.append(f"  {layer['name']:<20} {layer['layer']}{other}")
    lines += ["", f"{'level':>5} {'feature map':>16} {'anchors/loc':>11} {'boxes':>7} {'step':>6} {'loc ch':>7} "
              f"{'cls ch':>7}  default box sizes (w x h)"]
    for lv in d["levels"]:
        fm = "x".join(str(v) for v in lv["feature_map"])
        sizes = ", ".join(f"{w:g}x{h:g}" for w, h in lv["box_wh"])
        lines.append(f"{lv['level']:>5} {fm:>16} {lv['anchors_per_location']:>11} {lv['default_boxes']:>7} "
                     f"{lv['step']:>6} {lv['loc_channels']:>7} {lv['cls_channels']:>7}  {sizes}")
    lines += [
        "",
        f"default boxes: {d['total_default_boxes']}   "
        f"(per level {' + '.join(str(lv['default_boxes']) for lv in d['levels'])})",
        f"outputs: loc_preds {d['outputs']['loc_preds']}, cls_preds {d['outputs']['cls_preds']}",
        f"parameters: {d['parameters']:,}   FLOPs per image: {d['gflops_per_image']:.2f} GFLOPs",
    ]
    return "\n".join(lines)
