"""Detector: a trained SSD as a callable on images, and ``predict`` (the ``ssdkit predict`` command).

Inference path (DESIGN.md)::

    image (path / PIL / numpy / tensor) ──to_image_tensor──▶ Tensor[3, H, W] float 0-255 RGB
        ──resize to S x S (bilinear, no letterbox)──▶ InputNormalizer ──▶ SSD ──▶ (loc, cls_logits)
        ──SSDBoxCoder.decode_batch──▶ boxes xyxy input px ──x W/S, y H/S, clip──▶ boxes xyxy original px

Thresholds come from named presets (DESIGN.md habit 9), never from magic numbers at call sites:

    ``visualize``  score > 0.6 (the seed notebook's threshold), NMS IoU 0.45, top-k 200, at most 200 boxes
    ``evaluate``   score > 0.01 (mAP needs the low-score tail), NMS IoU 0.45, top-k 200, at most 200 boxes
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ssdkit.choices import DECODE_PRESETS
from ssdkit.coder import SSDBoxCoder
from ssdkit.config import ModelConfig
from ssdkit.errors import DataError, SSDKitError
from ssdkit.runtime import resolve_device

__all__ = ["PRESETS", "Detector", "InputNormalizer", "predict", "resolve_device", "resolve_preset", "to_image_tensor"]

PRESETS = DECODE_PRESETS

#: Extensions a folder or glob is searched for (matched case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def resolve_preset(preset: str, **overrides: Any) -> dict[str, float | int]:
    """The decode settings of a named preset with keyword overrides (``score_thresh=0.3``) applied.

    Raises:
        SSDKitError: unknown preset name or override key.
    """
    if preset not in PRESETS:
        raise SSDKitError(f"preset: unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    settings = dict(PRESETS[preset])
    for key, value in overrides.items():
        if key not in settings:
            raise SSDKitError(f"{key}: unknown decode setting; expected one of {', '.join(settings)}")
        if value is not None:
            settings[key] = type(settings[key])(value)
    if not 0 <= settings["score_thresh"] < 1:
        raise SSDKitError(f"score_thresh: must be in [0, 1), got {settings['score_thresh']}")
    if not 0 < settings["nms_thresh"] <= 1:
        raise SSDKitError(f"nms_thresh: must be in (0, 1], got {settings['nms_thresh']}")
    if settings["top_k"] < 1 or settings["max_detections"] < 1:
        raise SSDKitError(f"top_k / max_detections: must be >= 1, got {settings['top_k']} / "
                          f"{settings['max_detections']}")
    return settings


class InputNormalizer(nn.Module):
    """``Tensor[N, 3, H, W]`` RGB pixels in 0-255 (any float or uint8 dtype) -> the network input.

    Computes ``(x / 255 - mean) / std`` in the config's ``channel_order`` as one fused ``(x - a) * b``. The same
    module runs in :class:`Detector` and inside exported graphs, so both normalise with identical arithmetic.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.bgr = config.channel_order == "bgr"
        mean = torch.tensor(config.mean, dtype=torch.float32) * 255.0
        inv_std = 1.0 / (torch.tensor(config.std, dtype=torch.float32) * 255.0)
        if self.bgr:  # mean/std are given in channel_order; the input is RGB, flipped before subtracting
            mean, inv_std = mean.flip(0), inv_std.flip(0)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", inv_std.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) * self.inv_std
        return x.flip(1) if self.bgr else x


def to_image_tensor(image: Any) -> torch.Tensor:
    """Any supported image -> ``Tensor[3, H, W]`` float32 RGB in 0-255 (on the image's device for tensors).

    Accepted: a path (``str`` / ``Path``, decoded by :func:`ssdkit.data.image.load_image`, EXIF-rotated); a PIL
    image (any mode, converted to RGB); a numpy ``HxWx3`` (or ``HxW`` gray) array, uint8 0-255 or float 0-1; a
    ``Tensor[3, H, W]`` (or ``[1, H, W]``) uint8 0-255 or float 0-1.

    Raises:
        DataError: an unreadable file. SSDKitError: an unsupported type, shape or value range.
    """
    if isinstance(image, (str, os.PathLike)):
        from ssdkit.data.image import load_image

        return load_image(image).float()
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from PIL import ImageOps

        image = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None].repeat(3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise SSDKitError(f"image: expected a numpy HxWx3 (or HxW) array, got shape {image.shape}")
        if not image.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
            image = image.copy()
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise SSDKitError(
            f"image: expected a path, PIL image, numpy array or Tensor[3, H, W], got {type(image).__name__}"
        )
    if image.dim() != 3 or image.shape[0] not in (1, 3) or image.shape[1] < 1 or image.shape[2] < 1:
        raise SSDKitError(f"image: expected a Tensor[3, H, W], got shape {list(image.shape)}")
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if image.dtype == torch.uint8:
        return image.float()
    if not image.is_floating_point():
        raise SSDKitError(f"image: expected a uint8 (0-255) or float (0-1) tensor, got {image.dtype}")
    peak = float(image.max()) if image.numel() else 0.0
    if peak > 1.0 + 1e-3:
        raise SSDKitError(
            f"image: float images must be in 0-1 (got values up to {peak:.1f}); pass uint8 for 0-255 pixels"
        )
    return image.float() * 255.0


def resize_batch(images: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """N ``Tensor[3, H_i, W_i]`` float 0-255 -> ``Tensor[N, 3, S, S]`` float 0-255, ``S = size``.

    Plain bilinear resize to the square input, no letterbox (as the SSD paper and torchvision's SSD transform),
    ``align_corners=False, antialias=False``. Images of one size are resized in one call.
    """
    out = []
    i = 0
    while i < len(images):
        j = i + 1
        while j < len(images) and images[j].shape == images[i].shape:
            j += 1
        group = torch.stack(list(images[i:j]))
        if group.shape[-2:] != (size, size):
            group = F.interpolate(group, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        out.append(group)
        i = j
    return torch.cat(out) if len(out) > 1 else out[0]


class Detector:
    """A trained SSD as a callable: images in, detections in original image pixels out.

    Args:
        model: an SSD (``forward(Tensor[N, 3, S, S] normalised) -> (loc [N, A, 4], logits [N, A, C])``).
        config: the model's :class:`ModelConfig` (input size, preprocessing, default boxes).
        class_names: ``C - 1`` names, indexed by 0-based label.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a ``torch.device``.
        preset: ``"visualize"`` or ``"evaluate"`` (see :data:`PRESETS`).
        batch_size: images per forward pass.
        channels_last: run the network in channels_last memory format (the model is converted in place).
            Measured faster for SSD300 end to end on this project's 2-core CPU (1.75 vs 1.34 img/s at batch 8,
            1.83 vs 1.53 at batch 1, interleaved runs) and the usual choice on CUDA; ``False`` for NCHW.
        **overrides: ``score_thresh``, ``nms_thresh``, ``top_k``, ``max_detections`` over the preset's values.

    Calling it (see :meth:`__call__`) accepts one image or a list of images.
    """

    def __init__(
        self,
        model: nn.Module,
        config: ModelConfig,
        class_names: Sequence[str],
        device: str | torch.device = "cpu",
        preset: str = "visualize",
        batch_size: int = 8,
        channels_last: bool = True,
        **overrides: Any,
    ) -> None:
        if len(class_names) != config.num_classes - 1:
            raise SSDKitError(
                f"class_names: expected {config.num_classes - 1} names (num_classes - 1), got {len(class_names)}"
            )
        if batch_size < 1:
            raise SSDKitError(f"batch_size: must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.config = config
        self.class_names = tuple(class_names)
        self.preset = preset
        self.settings = resolve_preset(preset, **overrides)
        self.batch_size = int(batch_size)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).eval()
        self.normalizer = InputNormalizer(config).to(self.device)
        self.coder = SSDBoxCoder(config)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device = "auto", preset: str = "visualize", **kwargs: Any
    ) -> Detector:
        """Build from an ssdkit checkpoint. Raises :class:`ssdkit.errors.CheckpointError` on a bad file."""
        from ssdkit.checkpoint import model_from_checkpoint

        dev = resolve_device(device)
        model, cfg, class_names = model_from_checkpoint(path, device=dev)
        return cls(model, cfg.model, class_names, device=dev, preset=preset, **kwargs)

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def preprocess(self, images: Sequence[Any]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Images -> (``Tensor[N, 3, S, S]`` float 0-255 RGB on the device, original ``(H, W)`` of each)."""
        tensors = [to_image_tensor(im).to(self.device) for im in images]
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
        return resize_batch(tensors, self.input_size), sizes

    @torch.inference_mode()
    def forward_resized(self, batch: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """``Tensor[N, 3, S, S]`` float 0-255 RGB -> N dicts ``boxes`` (xyxy input px) / ``labels`` / ``scores``."""
        x = self.normalizer(batch.to(self.device)).contiguous(memory_format=self.memory_format)
        loc, logits = self.model(x)
        s = self.settings
        return self.coder.decode_batch(
            loc, logits, score_thresh=s["score_thresh"], nms_thresh=s["nms_thresh"], top_k=s["top_k"],
            max_detections=s["max_detections"], clip=True,
        )  # fmt: skip

    def __call__(self, images: Any, batch_size: int | None = None) -> dict[str, Any] | list[dict[str, Any]]:
        """Detect objects.

        Args:
            images: one image or a list of images; each a path, PIL image, numpy ``HxWx3`` uint8 array, or
                ``Tensor[3, H, W]`` uint8 (0-255) / float (0-1) RGB (see :func:`to_image_tensor`).
            batch_size: images per forward pass (default: the detector's).

        Returns:
            For each image a dict: ``boxes`` ``Tensor[K, 4]`` float32 xyxy in that image's original pixels,
            ``labels`` ``Tensor[K]`` int64 0-based, ``scores`` ``Tensor[K]`` float32 (decreasing),
            ``names`` ``list[str]`` (K). One dict for a single image, a list for a list. Tensors are on the CPU.
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        bs = batch_size or self.batch_size
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), bs):
            batch, sizes = self.preprocess(items[start:start + bs])
            for det, (h, w) in zip(self.forward_resized(batch), sizes):
                results.append(self._to_original(det, h, w))
        return results[0] if single else results

    def _to_original(self, det: dict[str, torch.Tensor], h: int, w: int) -> dict[str, Any]:
        s = float(self.input_size)
        scale = torch.tensor([w / s, h / s, w / s, h / s], device=det["boxes"].device)
        boxes = det["boxes"] * scale
        boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device))
        labels = det["labels"].cpu()
        return {
            "boxes": boxes.cpu(),
            "labels": labels,
            "scores": det["scores"].cpu(),
            "names": [self.class_names[c] for c in labels.tolist()],
        }


# ----------------------------------------------------------------------------------------------------------------
# predict


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Files, folders (searched recursively) and globs -> (image files in order, without repeats; problems).

    Folder and glob matches are filtered by :data:`IMAGE_EXTENSIONS` (any case); a file named explicitly is
    always taken (an unreadable one is reported when it is read).
    """
    files: list[Path] = []
    problems: list[str] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            files.append(p)

    def add_dir(d: Path) -> None:
        found = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            problems.append(f"{d}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        for p in found:
            add(p)

    for item in inputs:
        p = Path(item)
        if p.is_dir():
            add_dir(p)
        elif p.is_file():
            add(p)
        elif glob.has_magic(str(item)):
            matches = sorted(glob.glob(str(item), recursive=True))
            hits = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_EXTENSIONS]
            for d in (Path(m) for m in matches if Path(m).is_dir()):
                hits.extend(sorted(q for q in d.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS))
            if not hits:
                problems.append(f"{item}: no image files match this pattern")
            for h in hits:
                add(h)
        else:
            problems.append(f"{item}: no such file or folder")
    return files, problems


def _image_ids(files: Sequence[Path]) -> list[Any]:
    """COCO ``image_id`` per file: ``int(stem)`` when every stem is a number (COCO's own naming, so a COCO
    ground-truth file matches), else the stem when stems are unique, else the 0-based index."""
    stems = [p.stem for p in files]
    if len(set(stems)) == len(stems):
        if stems and all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
            return [int(s) for s in stems]
        return stems
    return list(range(len(files)))


def _output_names(files: Sequence[Path]) -> list[str]:
    """Drawn-image file names in ``out_dir``: the input's name; ``stem_2.ext`` ... when names repeat."""
    used: set[str] = set()
    names = []
    for p in files:
        suffix = p.suffix.lower() if p.suffix.lower() in IMAGE_EXTENSIONS else ".png"
        name, k = f"{p.stem}{suffix}", 1
        while name.lower() in used:
            k += 1
            name = f"{p.stem}_{k}{suffix}"
        used.add(name.lower())
        names.append(name)
    return names


def predict(
    checkpoint: str | os.PathLike,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike = "predictions",
    score: float = 0.5,
    batch: int = 8,
    device: str = "auto",
    draw: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a checkpoint on files, folders and globs; write COCO results, an image index and drawn images.

    Writes (atomically) into ``out_dir``:

    - ``detections.json``: COCO results ``[{"image_id", "category_id" (label + 1), "bbox": [x, y, w, h] original
      pixels, "score"}, ...]`` (what ``ssdkit evaluate --gt GT --detections detections.json`` reads);
    - ``images.json``: ``{"images": [{"id", "file_name", "path", "width", "height"}], "categories": [{"id",
      "name"}]}``, a COCO-style index of the images read (ground truth can be joined on ``id``);
    - one drawn image per input (same name; ``name_2.jpg`` for repeated names) when ``draw``.

    ``image_id`` is ``int(stem)`` when all file stems are numbers, else the stem, else the index (repeated stems).
    Unreadable files are skipped and reported (a line on stderr while the progress bar runs, and in the summary).

    Returns:
        ``{"images": read, "detections": total, "skipped": ["<path>: <reason>", ...], "out_dir", "detections_json",
        "images_json", "drawn": [paths]}``.

    Raises:
        CheckpointError: the checkpoint is missing or unreadable. SSDKitError: no input names an image file.
    """
    from tqdm.auto import tqdm

    from ssdkit.data.image import load_image
    from ssdkit.metrics import detections_to_coco_results
    from ssdkit.utils import atomic_write_text

    if batch < 1:
        raise SSDKitError(f"batch: must be >= 1, got {batch}")
    detector = Detector.from_checkpoint(checkpoint, device=device, preset="visualize", score_thresh=score,
                                        batch_size=batch)
    files, skipped = expand_inputs(inputs)
    if not files:
        raise SSDKitError(f"inputs: no image files found ({'; '.join(skipped) or 'nothing given'})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def report(msg: str) -> None:
        if progress:
            tqdm.write(f"skipped: {msg}", file=sys.stderr)

    for msg in skipped:
        report(msg)

    ok_files: list[Path] = []
    sizes: list[tuple[int, int]] = []
    detections: list[dict[str, Any]] = []
    drawn: list[str] = []
    out_names = dict(zip(files, _output_names(files)))
    bar = tqdm(total=len(files), unit="img", desc="predict", disable=not progress, dynamic_ncols=True)
    try:
        for start in range(0, len(files), batch):
            chunk, images = [], []
            for path in files[start:start + batch]:
                try:
                    images.append(load_image(path))
                    chunk.append(path)
                except DataError as e:
                    skipped.append(str(e))
                    report(str(e))
            if images:
                results = detector(images)
                for path, image, det in zip(chunk, images, results):
                    ok_files.append(path)
                    sizes.append((int(image.shape[1]), int(image.shape[2])))
                    detections.append(det)
                    if draw:
                        from ssdkit.viz import draw_detections, save_image

                        target = out / out_names[path]
                        save_image(draw_detections(image, det["boxes"], det["labels"], det["scores"],
                                                   detector.class_names), target)
                        drawn.append(str(target))
            bar.update(len(files[start:start + batch]))
    finally:
        bar.close()

    ids = _image_ids(ok_files)
    num_labels = len(detector.class_names)
    results_json = detections_to_coco_results(detections, ids, [c + 1 for c in range(num_labels)])
    index = {
        "images": [
            {"id": i, "file_name": p.name, "path": str(p), "width": w, "height": h}
            for i, p, (h, w) in zip(ids, ok_files, sizes)
        ],
        "categories": [{"id": c + 1, "name": n} for c, n in enumerate(detector.class_names)],
    }
    det_path, index_path = out / "detections.json", out / "images.json"
    atomic_write_text(det_path, json.dumps(results_json))
    atomic_write_text(index_path, json.dumps(index, indent=1))
    return {
        "images": len(ok_files),
        "detections": len(results_json),
        "skipped": skipped,
        "out_dir": str(out),
        "detections_json": str(det_path),
        "images_json": str(index_path),
        "drawn": drawn,
    }
