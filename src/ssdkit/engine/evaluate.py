"""Evaluation on ignite: an evaluator ``Engine`` that detects, rescales and feeds :class:`~ssdkit.metrics.DetectionMAP`.

Per batch: ``images uint8 [B, 3, S, S]`` -> device -> normalise -> model -> ``SSDBoxCoder.decode_batch`` at the
``evaluate`` preset (score > 0.01, NMS 0.45, top-k 200, at most 200 boxes per image) -> boxes scaled from the
``S x S`` network input back to original image pixels -> compared with the original-size ground truth of the
source (as read, not as augmented or resized), so the numbers are those of the dataset's own protocol.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from ignite.engine import Engine

from ssdkit.coder import SSDBoxCoder
from ssdkit.config import Config, ModelConfig
from ssdkit.data.transforms import normalize
from ssdkit.engine.metric import DetectionMAP
from ssdkit.errors import SSDKitError
from ssdkit.runtime import autocast, resolve_device

__all__ = ["create_evaluator", "evaluate_model", "evaluate_checkpoint"]

logger = logging.getLogger("ssdkit.evaluate")


def _eval_preset() -> dict[str, Any]:
    from ssdkit.inference import PRESETS

    return dict(PRESETS["evaluate"])


#: Name of the decoding preset used for mAP (see :data:`ssdkit.inference.PRESETS`).
EVAL_PRESET = "evaluate"


def _model_config(cfg: Config | ModelConfig) -> ModelConfig:
    return cfg.model if isinstance(cfg, Config) else cfg


def _ground_truth(dataset, target: dict) -> dict:
    """Original-pixel ground truth of one loader item, read from the dataset's source (exact, as annotated)."""
    source = getattr(dataset, "source", None)
    if source is not None:
        s = source.sample(target["index"])
        return {"boxes": s.boxes, "labels": s.labels, "ignore": s.ignore, "image_id": s.image_id,
                "size": (s.height, s.width)}
    raise SSDKitError("evaluate: the loader's dataset has no .source to read the original ground truth from")


def create_evaluator(
    model: torch.nn.Module,
    coder: SSDBoxCoder,
    cfg: Config | ModelConfig,
    metric: str = "voc07",
    class_names: tuple[str, ...] | None = None,
    device: str | torch.device = "cpu",
    pixel_offset: bool = False,
    amp: str = "none",
    channels_last: bool = False,
) -> Engine:
    """An ignite evaluator whose ``state.metrics[metric]`` is the :class:`DetectionMAP` result dict.

    Args:
        model: the SSD (DDP-wrapped is fine: the inner module runs, so ranks need not see equal batch counts).
        coder: the model's box coder.
        cfg: run or model config (input size, mean/std/channel order).
        metric: ``"voc07"`` | ``"voc"`` | ``"coco"``.
        class_names: object class names (``num_classes - 1``), result keys.
        pixel_offset: VOC devkit ``+1`` widths (integer VOC boxes); False for continuous coordinates.
        amp: ``"bf16"`` / ``"fp16"`` autocast on CUDA; ignored elsewhere.

    The engine's batches are the loader's ``(images uint8 [B, 3, S, S], targets)``; its output is
    ``(detections, ground_truths)``: per image ``{"boxes" [K, 4] original pixels xyxy, "labels" [K] 0-based,
    "scores" [K]}`` and ``{"boxes" [M, 4], "labels", "ignore", "image_id", "size"}``.
    """
    mcfg = _model_config(cfg)
    device = resolve_device(device)
    inner = getattr(model, "module", model)
    preset = _eval_preset()
    size = mcfg.input_size
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def step(engine: Engine, batch) -> tuple[list[dict], list[dict]]:
        images, targets = batch
        gts = [_ground_truth(engine.state.dataloader.dataset, t) for t in targets]
        if images.shape[0] == 0:
            return [], []
        inner.eval()
        with torch.no_grad():
            x = normalize(images.to(device, non_blocking=True), mcfg.mean, mcfg.std, mcfg.channel_order,
                          memory_format)
            with autocast(amp, device):
                loc, cls = inner(x)
            dets = coder.decode_batch(loc.float(), cls.float(), **preset)
        out = []
        for det, t in zip(dets, targets):
            h, w = t["orig_size"]
            scale = torch.tensor([w / size, h / size, w / size, h / size], device=det["boxes"].device)
            out.append({"boxes": (det["boxes"] * scale).cpu(), "labels": det["labels"].cpu(),
                        "scores": det["scores"].cpu()})
        return out, gts

    evaluator = Engine(step)
    names = tuple(class_names) if class_names is not None else None
    DetectionMAP(mcfg.num_classes - 1, metric=metric, class_names=names, pixel_offset=pixel_offset).attach(
        evaluator, metric
    )
    return evaluator


def evaluate_model(
    model: torch.nn.Module,
    coder: SSDBoxCoder,
    loader,
    cfg: Config | ModelConfig,
    metric: str = "voc07",
    device: str | torch.device = "auto",
    class_names: tuple[str, ...] | None = None,
    progress: bool = False,
) -> dict:
    """mAP of ``model`` over ``loader`` (a :func:`~ssdkit.data.loader.make_loader` loader of an eval-transformed
    :class:`~ssdkit.data.loader.DetectionDataset`).

    Returns:
        The :class:`DetectionMAP` dict (``"map"``, per-class ``"ap"``, ... ; COCO: ``"AP"``, ``"AP50"``, ...) plus
        ``"metric"`` and ``"num_images"``.
    """
    device = resolve_device(device)
    source = loader.dataset.source
    names = class_names if class_names is not None else tuple(source.class_names)
    evaluator = create_evaluator(model, coder, cfg, metric, names, device,
                                 pixel_offset=getattr(source, "format", "") == "voc")
    if progress:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False, desc="evaluate").attach(evaluator)
    evaluator.run(loader)
    result = dict(evaluator.state.metrics[metric])
    result["metric"] = metric
    result["num_images"] = len(source)
    return result


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    data: str,
    split: str | None = None,
    metric: str = "voc07",
    format: str | None = None,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Evaluate a checkpoint on a dataset.

    Args:
        checkpoint: an ssdkit checkpoint (``best.pt``, ``checkpoint_*.pt``, an imported one).
        data: ``"shapes"`` (the checkpoint's shapes settings; validation images unless ``split`` says train) or
            a dataset path; labels are mapped to the checkpoint's class names.
        split: split of ``data`` (VOC ``test``, COCO ``val2017``, ...).
        metric: ``"voc07"`` | ``"voc"`` | ``"coco"``.

    Returns:
        The metric dict (see :func:`evaluate_model`) with ``"map"``.

    Raises:
        CheckpointError: unreadable checkpoint; DataError: unreadable data or classes that differ from the
        checkpoint's.
    """
    from ssdkit.checkpoint import model_from_checkpoint
    from ssdkit.data.loader import DetectionDataset, make_loader
    from ssdkit.data.transforms import SSDEvalTransform
    from ssdkit.engine.data import SHAPES, build_source
    from ssdkit.errors import DataError

    if batch_size < 1:
        raise SSDKitError(f"batch_size: must be >= 1, got {batch_size!r}")
    dev = resolve_device(device)
    model, cfg, class_names = model_from_checkpoint(checkpoint, dev)
    if data == SHAPES and split is None:
        split = "val"
    source = build_source(data, cfg.data, split, format=format, classes=None if data == SHAPES else class_names)
    if tuple(source.class_names) != tuple(class_names):
        raise DataError(
            f"{data}: classes {list(source.class_names)} differ from the checkpoint's {list(class_names)}"
        )
    if len(source) == 0:
        raise DataError(f"{data}: no images to evaluate (split {split!r})")
    loader = make_loader(DetectionDataset(source, SSDEvalTransform(cfg.model.input_size)), batch_size, shuffle=False,
                         num_workers=cfg.data.num_workers)
    coder = SSDBoxCoder(cfg.model)
    result = evaluate_model(model, coder, loader, cfg, metric, dev, tuple(class_names), progress=progress)
    result["checkpoint"] = str(checkpoint)
    result["data"] = str(data)
    return result
