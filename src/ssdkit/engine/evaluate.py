"""Evaluation on ignite: an evaluator ``Engine`` that runs the :class:`~ssdkit.inference.Detector`'s batched step
and feeds :class:`~ssdkit.engine.metric.DetectionMAP`.

Per batch: ``images uint8 [B, 3, S, S]`` (the eval loader's, resized by the one preprocessing) ->
:meth:`Detector.step` at the ``evaluate`` preset (score > 0.01, NMS 0.45, top-k 200, at most 200 boxes per image) ->
:meth:`Detector.to_original` (boxes in original image pixels) -> compared with the original-size ground truth of
the source (as read, not as augmented or resized), so the numbers are those of the dataset's own protocol, and
the detections are exactly those ``ssdkit predict`` gives for the same images.

Tiled evaluation (``tile=TileSpec(...)``, small objects in large images): the loader yields the full-size images
as a list (:func:`tiled_loader`; decoding stays in its workers), each goes through the tiled Detector (windows at
native resolution, batched, merged; :mod:`ssdkit.tiling`), and the detections meet the same original ground truth
and the same metric code.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import torch
from ignite.engine import Engine, Events
from torch.utils.data import DataLoader

from ssdkit.choices import EVAL_PRESET, SHAPES
from ssdkit.config import Config, ModelConfig
from ssdkit.data.tiles import TileSpec, resolve_tile
from ssdkit.engine.metric import DetectionMAP
from ssdkit.errors import DataError, SSDKitError
from ssdkit.inference import Detector, load_model
from ssdkit.runtime import resolve_device

__all__ = ["create_evaluator", "evaluate_model", "evaluate_checkpoint", "tiled_loader",
           "collate_images"]

logger = logging.getLogger("ssdkit.evaluate")


def _ground_truth(dataset, target: dict) -> dict:
    """Original-pixel ground truth of one loader item, read from the dataset's source (exact, as annotated)."""
    source = getattr(dataset, "source", None)
    if source is None:
        raise SSDKitError("evaluate: the loader's dataset has no .source to read the original ground truth from")
    s = source.sample(target["index"])
    return {"boxes": s.boxes, "labels": s.labels, "ignore": s.ignore, "image_id": s.image_id,
            "size": (s.height, s.width)}


def collate_images(batch: list) -> tuple[list[torch.Tensor], list[dict]]:
    """Collate of full-size images: ``(images list[Tensor[3, H_i, W_i]] uint8, targets list[dict])``, dropping
    ``None`` (unloadable images), so differently sized images travel in one batch."""
    items = [item for item in batch if item is not None]
    return [image for image, _ in items], [target for _, target in items]


def tiled_loader(source, batch_size: int, num_workers: int = 0) -> DataLoader:
    """A loader of full-size images of ``source`` in order (a :class:`~ssdkit.data.loader.DetectionDataset`
    without a transform, :func:`collate_images`): what tiled evaluation reads. Images are decoded in the
    ``num_workers`` worker processes."""
    from ssdkit.data.loader import DetectionDataset

    return DataLoader(DetectionDataset(source), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_images)


def create_evaluator(
    model: torch.nn.Module,
    cfg: Config | ModelConfig,
    class_names: Sequence[str],
    metric: str = "voc07",
    device: str | torch.device = "cpu",
    pixel_offset: bool = False,
    amp: str = "none",
    channels_last: bool = False,
    keep_detections: bool = False,
    tile: TileSpec | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
) -> Engine:
    """An ignite evaluator whose ``state.metrics[metric]`` is the :class:`DetectionMAP` result dict.

    Args:
        model: the SSD (DDP-wrapped is fine: the inner module runs, so ranks need not see equal batch counts).
        cfg: run or model config (input size, mean/std/channel order, default boxes).
        class_names: object class names (``num_classes - 1``), result keys.
        metric: ``"voc07"`` | ``"voc"`` | ``"coco"``.
        pixel_offset: VOC devkit ``+1`` widths (integer VOC boxes); False for continuous coordinates.
        amp: ``"bf16"`` autocast on CUDA and on CPUs with bf16 units, ``"fp16"`` on CUDA; float32 elsewhere.
        channels_last: the memory format the model runs in (the training model keeps its own).
        keep_detections: also collect every image's detections and ground truth in ``state.detections`` and
            ``state.ground_truths`` (lists, loader order).
        tile: tiled inference (:class:`~ssdkit.data.tiles.TileSpec`); the loader must then yield full-size images
            as a list (:func:`tiled_loader`).
        batch_size: windows per forward pass when tiled.
        precision: ``"bf16"`` casts the model's weights (only for a model the evaluator owns, not a training one).

    The engine's batches are the loader's ``(images uint8 [B, 3, S, S], targets)`` (or, for lists of full-size
    images, ``(list[Tensor[3, H_i, W_i]], targets)``, each image run through the Detector whole); its output is
    ``(detections, ground_truths)``: per image ``{"boxes" [K, 4] original pixels xyxy, "labels" [K] 0-based,
    "scores" [K], "names"}`` and ``{"boxes" [M, 4], "labels", "ignore", "image_id", "size"}``.
    """
    mcfg = cfg.model if isinstance(cfg, Config) else cfg
    inner = getattr(model, "module", model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    detector = Detector(inner, mcfg, class_names, device=device, preset=EVAL_PRESET,
                        channels_last=memory_format == torch.channels_last, amp=amp, tile=tile,
                        batch_size=batch_size, precision=precision)

    def step(engine: Engine, batch) -> tuple[list[dict], list[dict]]:
        images, targets = batch
        gts = [_ground_truth(engine.state.dataloader.dataset, t) for t in targets]
        if len(images) == 0:
            return [], []
        inner.eval()
        if isinstance(images, (list, tuple)):  # full-size images: the Detector's own path (tiled or resized)
            dets = detector(list(images))
        else:
            if tile is not None:
                raise SSDKitError("evaluate: tiled evaluation needs full-size images (a tiled_loader), got a "
                                  f"resized batch {list(images.shape)}")
            dets = [detector.to_original(d, *t["orig_size"]) for d, t in zip(detector.step(images), targets)]
        if keep_detections:
            engine.state.detections.extend(dets)
            engine.state.ground_truths.extend(gts)
        return dets, gts

    evaluator = Engine(step)
    if keep_detections:
        def _start(engine: Engine) -> None:
            engine.state.detections, engine.state.ground_truths = [], []

        evaluator.add_event_handler(Events.STARTED, _start)
    DetectionMAP(mcfg.num_classes - 1, metric=metric, class_names=tuple(class_names),
                 pixel_offset=pixel_offset).attach(evaluator, metric)
    return evaluator


def evaluate_model(
    model: torch.nn.Module,
    loader,
    cfg: Config | ModelConfig,
    metric: str = "voc07",
    device: str | torch.device = "auto",
    class_names: Sequence[str] | None = None,
    progress: bool = False,
    channels_last: bool = True,
    return_detections: bool = False,
    tile: TileSpec | None = None,
    batch_size: int = 8,
    precision: str = "fp32",
) -> dict:
    """mAP of ``model`` over ``loader`` (a :func:`~ssdkit.data.loader.make_loader` loader of an eval-transformed
    :class:`~ssdkit.data.loader.DetectionDataset`; with ``tile``, a :func:`tiled_loader` of full-size images, and
    ``batch_size`` windows per forward pass).

    Returns:
        The :class:`DetectionMAP` dict (``"map"``, per-class ``"ap"``, ... ; COCO: ``"AP"``, ``"AP50"``, ...) plus
        ``"metric"`` and ``"num_images"`` (and ``"detections"``, per image in loader order, with
        ``return_detections``).
    """
    device = resolve_device(device)
    source = loader.dataset.source
    names = tuple(class_names) if class_names is not None else tuple(source.class_names)
    evaluator = create_evaluator(model, cfg, names, metric, device, pixel_offset=getattr(source, "format", "") == "voc",
                                 channels_last=channels_last, keep_detections=return_detections, tile=tile,
                                 batch_size=batch_size, precision=precision)
    if progress:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False, desc="evaluate").attach(evaluator)
    evaluator.run(loader)
    result = dict(evaluator.state.metrics[metric])
    result["metric"] = metric
    result["num_images"] = len(source)
    if return_detections:
        result["detections"] = evaluator.state.detections
        result["ground_truths"] = evaluator.state.ground_truths
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
    return_detections: bool = False,
    tile: TileSpec | str | None = "auto",
    precision: str = "fp32",
) -> dict:
    """Evaluate a checkpoint on a dataset (``ssdkit evaluate --checkpoint``).

    Args:
        checkpoint: an ssdkit checkpoint (``best.pt``, ``checkpoint_*.pt``, an imported one), or a file ``ssdkit
            export`` wrote (ONNX, OpenVINO, pt2, TorchScript), run by its runtime.
        precision: ``"fp32"`` or ``"bf16"`` (see :class:`~ssdkit.inference.Detector`).
        data: ``"shapes"`` (the checkpoint's shapes settings; validation images unless ``split`` says train) or
            a dataset path; labels are mapped to the checkpoint's class names.
        split: split of ``data`` (VOC ``test``, COCO ``val2017``, ...).
        metric: ``"voc07"`` | ``"voc"`` | ``"coco"``.
        batch_size: images per forward pass (as ``ssdkit predict --batch``); with ``tile``, images per loader batch
            and windows per forward pass.
        return_detections: also return each image's detections (original pixels) and ground truth, in dataset
            order (``"detections"``, ``"ground_truths"``).
        tile: tiled evaluation (:class:`~ssdkit.data.tiles.TileSpec`): each full-resolution image goes through the
            tiled Detector and is compared with its original ground truth. ``"auto"`` (default): the windows the
            model was trained on (``data.tile_size``), else whole images; None: whole images.

    Returns:
        The metric dict (see :func:`evaluate_model`) with ``"map"``, ``"checkpoint"``, ``"data"``.

    Raises:
        CheckpointError: unreadable checkpoint; DataError: unreadable data or classes that differ from the
        checkpoint's.
    """
    from ssdkit.data.loader import DetectionDataset, make_loader
    from ssdkit.data.preprocess import SSDEvalTransform
    from ssdkit.data.sources import build_source

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SSDKitError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    dev = resolve_device(device)
    model, cfg, class_names = load_model(checkpoint, dev)
    if getattr(model, "takes_pixels", False):
        dev = torch.device("cpu")  # exported runners take and give CPU tensors
    if data == SHAPES and split is None:
        split = "val"
    source = build_source(data, cfg.data, split, format=format, classes=class_names)
    if tuple(source.class_names) != tuple(class_names):
        raise DataError(
            f"{data}: classes {list(source.class_names)} differ from the checkpoint's {list(class_names)}"
        )
    if len(source) == 0:
        raise DataError(f"{data}: no images to evaluate (split {split!r})")
    unknown = [p for p in getattr(source, "problems", ()) if p.kind == "unknown_class"]
    if unknown:  # objects of classes the model does not know: evaluating without them would be silently wrong
        raise DataError(f"{data}: {len(unknown)} object(s) of classes the checkpoint does not have (its classes: "
                        f"{list(class_names)}; first: {unknown[0]})")
    tile = resolve_tile(tile, cfg)  # "auto": the windows the model was trained on, if any
    if tile is None:
        loader = make_loader(DetectionDataset(source, SSDEvalTransform(cfg.model.input_size)), batch_size,
                             shuffle=False, num_workers=cfg.data.num_workers)
    else:
        loader = tiled_loader(source, batch_size, num_workers=cfg.data.num_workers)
    result = evaluate_model(model, loader, cfg, metric, dev, class_names, progress=progress,
                            return_detections=return_detections, tile=tile, batch_size=batch_size,
                            precision=precision)
    result["checkpoint"] = str(checkpoint)
    result["data"] = str(data)
    result["tile"] = None if tile is None else dataclasses.asdict(tile)
    result["class_names"] = list(class_names)
    result["pixel_offset"] = getattr(source, "format", "") == "voc"
    return result
