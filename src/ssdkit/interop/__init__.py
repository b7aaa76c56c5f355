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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssdkit.choices import IMPORT_SOURCES as SOURCES
from ssdkit.config import Config, ModelConfig, replace_model
from ssdkit.errors import CheckpointError, ConfigError
from ssdkit.interop.plans import PLANNERS, expected_shapes, key_list
from ssdkit.safeio import read_text

__all__ = ["SOURCES", "read_state_dict", "convert_state_dict", "import_weights"]


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
    if source not in PLANNERS:
        raise CheckpointError(f"source: unknown implementation {source!r}; expected one of {', '.join(SOURCES)}")
    state_dict = _unwrap_state_dict(state_dict)
    plan = PLANNERS[source](state_dict)
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
    shapes, _, _ = expected_shapes(cfg)

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
        problems.append(f"missing keys: {key_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {key_list(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {key_list(mismatched)}")
    if unassigned:  # a bug in the plan, but never let a parameter stay random
        problems.append(f"ssdkit parameters with no source: {key_list(unassigned)}")
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
        names = [line.strip() for line in read_text(path, "class names file", ConfigError).splitlines()
                 if line.strip()]
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
